"""P3: each reduction against one pass over memory (``jnp.mean``), in float32.

    python -m benchmarks.perf --part p3 [--quick]
    python -m benchmarks.perf.p3_reductions [--min-n 1000] [--max-n 10000000] [--repeats 7] [--no-sort]

Every function is jitted and warmed up; then the rounds run every function once in turn
(interleaved, so a drift of the machine hits all alike) and each time is the median over
the rounds (``block_until_ready``). For each reduction the table gives its time divided by
``jnp.mean``'s, for the value alone and for the value and the gradient with respect to the
losses (against ``jax.value_and_grad(jnp.mean)``); ``kl_penalty`` also against
``jax.nn.logsumexp`` (the same closed form), value and value and gradient alike. The sort
column keeps the earlier baseline (one ``jnp.sort`` of the vector) for continuity.

Goals (P3): ``erm`` <= 2x the mean, ``kl_penalty`` <= 1.5x ``logsumexp``, every
other reduction <= 20x the mean for the value and <= 10x for the value and gradient.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import robustlearn as rl
from benchmarks import _timing
from benchmarks.perf._common import captured, machine_line

# One setting per reduction (the hyperparameters of the earlier tables), from the registry.
SETTINGS = {"alpha": 0.1, "radius": 1.0, "k": 1.5, "lam": 1.0}
SPECIAL = {"tv": {"radius": 0.1}}


def reductions() -> dict:
    """``{name: (label, fn)}`` for every reduction of the registry."""
    out = {}
    for name, record in rl.REDUCTIONS.items():
        hyper = {h.name: SPECIAL.get(name, {}).get(h.name, SETTINGS[h.name]) for h in record.hyper}
        label = f"{name}({', '.join(str(v) for v in hyper.values())})"
        out[name] = (label, lambda x, _name=name, _hyper=hyper: getattr(rl, _name)(x, **_hyper))
    return out


GOALS = {"erm": ("mean", 2.0, 2.0), "kl_penalty": ("lse", 1.5, 1.5)}
DEFAULT_GOAL = ("mean", 20.0, 10.0)
_FLUSH = functools.cache(_timing.cache_flush)  # one 128 MB buffer per process


def interleaved_medians(fns: dict, x, repeats: int) -> dict:
    """Median seconds of each ``fn(x)`` over ``repeats`` interleaved rounds, after a warm-up."""
    calls = {name: functools.partial(fn, x) for name, fn in fns.items()}
    return _timing.interleaved_medians(calls, repeats, before=_FLUSH())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-n", type=int, default=1_000)
    parser.add_argument("--max-n", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-sort", action="store_true", help="skip the sort column (3 s per call at 1e7 on CPU)")
    args = parser.parse_args(argv)

    sizes = [n for n in (10**e for e in range(3, 9)) if args.min_n <= n <= args.max_n]
    red = reductions()
    fns = {"mean": jax.jit(jnp.mean), "lse": jax.jit(jax.nn.logsumexp)}
    fns |= {
        "mean+grad": jax.jit(jax.value_and_grad(jnp.mean)),
        "lse+grad": jax.jit(jax.value_and_grad(jax.nn.logsumexp)),
    }
    for name, (_, fn) in red.items():
        fns[name] = jax.jit(fn)
        fns[name + "+grad"] = jax.jit(jax.value_and_grad(fn))
    sort = jax.jit(jnp.sort)

    print(machine_line())
    print(
        f"float32, median of {args.repeats} interleaved rounds after warm-up, "
        "every timed call after an untimed pass over 128 MB (no call finds its input in cache)\n"
    )
    header = ["n", "mean (ms)", "mean+grad (ms)", "logsumexp (ms)"] + ([] if args.no_sort else ["sort (ms)"])
    header += [label for label, _ in red.values()]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    worst, misses = 0.0, []
    for n in sizes:
        x = jnp.asarray(np.random.default_rng(n).normal(size=n).astype(np.float32))
        t = interleaved_medians(fns, x, args.repeats)
        cells = [f"{n:.0e}", f"{1e3 * t['mean']:.3g}", f"{1e3 * t['mean+grad']:.3g}", f"{1e3 * t['lse']:.3g}"]
        if not args.no_sort:
            cells.append(f"{1e3 * statistics.median(_sort_times(sort, x, max(1, args.repeats // 2))):.3g}")
        for name in red:
            r_mean = t[name] / t["mean"], t[name + "+grad"] / t["mean+grad"]
            cell = f"{r_mean[0]:.1f} / {r_mean[1]:.1f}"
            base, goal_value, goal_grad = GOALS.get(name, DEFAULT_GOAL)
            ratios = r_mean
            if base == "lse":
                ratios = t[name] / t["lse"], t[name + "+grad"] / t["lse+grad"]
                cell += f" (lse {ratios[0]:.2f} / {ratios[1]:.2f})"
            if ratios[0] > goal_value or ratios[1] > goal_grad:
                misses.append(f"{name} at n={n:.0e}")
                cell += " *"
            worst = max(worst, *r_mean)
            cells.append(cell)
        print("| " + " | ".join(cells) + " |", flush=True)
    print(
        "\nEach reduction: time / jnp.mean's time, value / value and gradient (against value_and_grad of the "
        "mean); kl_penalty also against jax.nn.logsumexp. * marks a cell over its goal (erm <= 2x the mean, "
        "kl_penalty <= 1.5x logsumexp, the others <= 20x / <= 10x the mean)."
    )
    print(f"Largest ratio: {worst:.2f} (against jnp.mean). Over the goal: {', '.join(misses) if misses else 'none'}.")


def _sort_times(sort, x, repeats):
    jax.block_until_ready(sort(x))
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(sort(x))
        out.append(time.perf_counter() - start)
    return out


def run(quick: bool = False) -> str:
    """The table as text: n up to 1e7, or 1e5 with ``quick``."""
    return captured(
        "P3: reductions against one pass over memory (jnp.mean)", main, ["--max-n", "100000" if quick else "10000000"]
    )


if __name__ == "__main__":
    main()

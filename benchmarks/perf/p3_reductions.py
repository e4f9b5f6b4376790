"""Time of each reduction against ``jnp.mean`` and one ``jnp.sort`` of the same vector.

    python -m benchmarks.perf --part p3 [--quick]
    python -m benchmarks.perf.p3_reductions [--min-n 1000] [--max-n 10000000] [--repeats 5]

Every function is jitted and warmed up, then timed as the median of ``--repeats`` runs
(``block_until_ready``). The table reports the sort and mean times in milliseconds and,
for each reduction, its time divided by the sort time, for the value alone and for the
value and the gradient with respect to the losses. All numbers in one table come from
one run on one machine; the goal is every ratio at most 2.
"""

from __future__ import annotations

import argparse
import platform

import jax
import jax.numpy as jnp
import numpy as np

import robustlearn as rl
from benchmarks._timing import median_seconds
from benchmarks.perf._common import captured

REDUCTIONS = {
    "erm": lambda x: rl.erm(x),
    "cvar": lambda x: rl.cvar(x, 0.1),
    "chi_square": lambda x: rl.chi_square(x, 1.0),
    "kl": lambda x: rl.kl(x, 1.0),
    "cressie_read": lambda x: rl.cressie_read(x, 1.0, 1.5),
    "chi_square_penalty": lambda x: rl.chi_square_penalty(x, 1.0),
    "kl_penalty": lambda x: rl.kl_penalty(x, 1.0),
}


def median_time(fn, x, repeats: int) -> float:
    return median_seconds(lambda: fn(x), repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-n", type=int, default=1_000)
    parser.add_argument("--max-n", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    sizes = [n for n in (10**e for e in range(3, 9)) if args.min_n <= n <= args.max_n]
    sort = jax.jit(jnp.sort)
    mean = jax.jit(jnp.mean)
    value = {name: jax.jit(fn) for name, fn in REDUCTIONS.items()}
    value_grad = {name: jax.jit(jax.value_and_grad(fn)) for name, fn in REDUCTIONS.items()}

    cpu = platform.processor() or platform.machine()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {cpu}, {len(jax.devices())} device(s)")
    print(f"jax {jax.__version__}, float32, median of {args.repeats} runs after warm-up\n")
    header = ["n", "sort (ms)", "mean (ms)"] + list(REDUCTIONS)
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    worst = 0.0
    for n in sizes:
        x = jnp.asarray(np.random.default_rng(n).normal(size=n).astype(np.float32))
        t_sort = median_time(sort, x, args.repeats)
        t_mean = median_time(mean, x, args.repeats)
        cells = [f"{n:.0e}", f"{1e3 * t_sort:.3g}", f"{1e3 * t_mean:.3g}"]
        for name in REDUCTIONS:
            r_value = median_time(value[name], x, args.repeats) / t_sort
            r_grad = median_time(value_grad[name], x, args.repeats) / t_sort
            worst = max(worst, r_value, r_grad)
            cells.append(f"{r_value:.2f} / {r_grad:.2f}")
        print("| " + " | ".join(cells) + " |", flush=True)
    print("\nEach reduction cell: time / sort time, for value / value and gradient.")
    print(f"Largest ratio: {worst:.2f} (goal: at most 2).")


def run(quick: bool = False) -> str:
    """The table as text: n up to 1e7, or 1e5 with ``quick``."""
    return captured("P3: reductions against one jnp.sort", main, ["--max-n", "100000" if quick else "10000000"])


if __name__ == "__main__":
    main()

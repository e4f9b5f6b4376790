"""P3 and P2 on the default JAX backend (a GPU when there is one), on both reduction paths.

    python -m benchmarks.perf.accelerator [--quick] [--parts p3,p2,slope] [--paths loop-free,loops] [--out FILE]

On a non-CPU backend the reductions take their loop-free path by default (a fixed number
of unrolled Newton steps from an analytic start, one ``lax.cond`` fallback; see
``robustlearn._src.reductions.engine.loop_free``), because every iteration of a
data-dependent ``while_loop`` costs a round trip to the host there. This script measures
that choice instead of assuming it: P3 (each reduction against ``jnp.mean``, float32, n from
``--min-n`` to ``--max-n``, default 1e6 and 1e7) and P2's step times (the Trainer's
minibatch MLP, both widths) once with the loop-free path and once with the loops, in one
process, then P2's hand-written baselines on the default path, then (``slope``) the step
time as the slope between epochs of two lengths, free of each ``fit`` call's fixed cost.
Each table says which path it ran. The path ``counting`` is the loop-free path without its
sort: CVaR and TV then find the value-at-risk of every vector by counting passes, as they
do on the loop-free path above ``engine.SORT_MAX`` examples, and the chi-square ball and
penalty run their unrolled Newton steps; ``sorting`` sorts every vector.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time

import jax

from benchmarks._timing import interleaved_medians, per_step
from benchmarks.perf import p2_minibatch as p2
from benchmarks.perf import p3_reductions as p3
from benchmarks.perf._common import captured, machine_line, table
from robustlearn._src.reductions import engine

# path name -> (loop-free, longest vector whose tail is found by a sort)
ALL_PATHS = {
    "loop-free": (True, engine.SORT_MAX),
    "counting": (True, 0),
    "sorting": (True, 2**31 - 1),
    "loops": (False, engine.SORT_MAX),
}
DEFAULT_PATHS = ("loop-free", "loops")


@contextlib.contextmanager
def on_path(name: str):
    flag, sort_max = ALL_PATHS[name]
    with engine.force_loop_free(flag), engine.sort_limit(sort_max):
        yield


def _device_line() -> str:
    device = jax.devices()[0]
    return f"device: {device.device_kind} ({device.platform}); default reduction path: " + (
        "loop-free" if engine.loop_free() else "loops"
    )


def p3_tables(quick: bool, min_n: int, max_n: int, paths=DEFAULT_PATHS) -> list[str]:
    argv = ["--min-n", "1000", "--max-n", "100000"] if quick else ["--min-n", str(min_n), "--max-n", str(max_n)]
    out = []
    for path in paths:
        with on_path(path):
            out.append(captured(f"P3 ({path} path): reductions against jnp.mean", p3.main, argv))
    return out


def p2_tables(quick: bool, paths=DEFAULT_PATHS) -> list[str]:
    steps, repeats = (20, 3) if quick else (100, 15)
    data = p2.make_data(steps * p2.BATCH)
    out = []
    for hidden in (p2.HIDDEN, p2.WIDE):
        times = {}
        for path in paths:
            with on_path(path):
                times[path] = p2._step_times(data, repeats, hidden)
        base = {path: t["erm"] for path, t in times.items()}
        rows = [
            [name] + [f"{1e3 * times[p][name] / steps:.3g} ({times[p][name] / base[p]:.3f})" for p in paths]
            for name in times[paths[0]]
        ]
        title = f"### P2 ({' and '.join(paths)} paths): MLP {p2.DIM}-{hidden}-{hidden}-2, batch {p2.BATCH}, Trainer"
        note = (
            f"Step time in ms (ratio to ERM on the same path): one epoch of {steps} steps via Trainer.fit, median of "
            f"{repeats} interleaved rounds, divided by {steps}. ERM has no reduction to choose, so its two columns "
            "measure the same program twice."
        )
        out.append("\n\n".join([title, note, table(["objective"] + [f"{p} path" for p in paths], rows)]))
    for hidden in (p2.HIDDEN, p2.WIDE):
        rows = p2._hand_written_rows(data, steps, repeats, hidden)
        out.append(
            "\n".join(
                [
                    f"### P2: what a user would write instead (plain optax loop, MLP {p2.DIM}-{hidden}-{hidden}-2), "
                    "default path",
                    "",
                    table(["reduction in the loop", "step (ms)", "/ mean", "|value - exact|"], rows),
                ]
            )
        )
    return out


SLOPE_OBJECTIVES = ("erm", "cvar(0.1)", "chi_square(1.0)", "kl(1.0)", "kl_penalty(1.0)")
SLOPE_LOOPS = ("mean (ERM)", "robustlearn.cvar(0.1)", "hand-written CVaR: sort", "robustlearn.chi_square(1.0)")


def slope_tables(quick: bool) -> list[str]:
    """Per-step time as the slope between epochs of two lengths, which removes each call's fixed cost.

    P2 divides one ``Trainer.fit`` epoch by its steps, so the fixed cost of a ``fit`` call
    (preparing the data and programs, reading results back) counts as step time; on a GPU,
    where a step is tens of microseconds, that cost can dominate. Here every epoch is timed
    at ``short`` and ``long`` steps: step = (t_long - t_short) / (long - short), and
    fixed = t_short - short * step.
    """
    short, long, repeats = (10, 40, 3) if quick else (100, 1000, 7)
    out = []
    for hidden in (p2.HIDDEN, p2.WIDE):
        fns = {}
        for steps in (short, long):
            data = p2.make_data(steps * p2.BATCH)
            for name in SLOPE_OBJECTIVES:
                tr = p2.trainer(p2.OBJECTIVES[name](), hidden=hidden)
                fns[("Trainer", name, steps)] = functools.partial(p2.fit_one_epoch, tr, data)
            xs = jax.numpy.asarray(data["x"]).reshape(steps, p2.BATCH, p2.DIM)
            ys = jax.numpy.asarray(data["y"]).reshape(steps, p2.BATCH)
            for name in SLOPE_LOOPS:
                epoch, params, state = p2._plain_loop(p2.HAND_WRITTEN[name], steps, hidden)
                fns[("plain loop", name, steps)] = functools.partial(epoch, params, state, xs, ys)
        t = interleaved_medians(fns, repeats)
        rows = []
        for kind, names, base in (("Trainer", SLOPE_OBJECTIVES, "erm"), ("plain loop", SLOPE_LOOPS, "mean (ERM)")):
            slopes = {n: per_step(t[(kind, n, short)], t[(kind, n, long)], short, long) for n in names}
            for n, (step, fixed) in slopes.items():
                rows.append([kind, n, f"{1e3 * step:.3g}", f"{step / slopes[base][0]:.3f}", f"{1e3 * fixed:.3g}"])
        title = f"### P2 by slope: MLP {p2.DIM}-{hidden}-{hidden}-2, batch {p2.BATCH}, default path"
        note = (
            f"Epochs of {short} and {long} steps, median of {repeats} interleaved rounds each; step = difference of "
            f"the two epoch times / {long - short}; fixed = the {short}-step epoch minus {short} steps."
        )
        header = ["program", "reduction", "step (ms)", "/ ERM (same program)", "fixed per call (ms)"]
        out.append("\n\n".join([title, note, table(header, rows)]))
    return out


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a check that it runs)")
    parser.add_argument("--parts", default="p3,p2,slope", help="comma-separated: p3, p2, slope (default all)")
    parser.add_argument("--min-n", type=int, default=1_000_000, help="P3's smallest size")
    parser.add_argument("--max-n", type=int, default=10_000_000, help="P3's largest size")
    parser.add_argument("--paths", default=",".join(DEFAULT_PATHS), help=f"comma-separated, of {', '.join(ALL_PATHS)}")
    parser.add_argument("--out", help="also write the report to this markdown file")
    args = parser.parse_args(argv)
    paths = tuple(args.paths.split(","))
    unknown = [p for p in paths if p not in ALL_PATHS]
    if unknown:
        parser.error(f"--paths: unknown {unknown}; choose from {', '.join(ALL_PATHS)}")
    sections = [machine_line() + "\n" + _device_line()]
    print(sections[0] + "\n", flush=True)
    parts = {
        "p3": lambda: p3_tables(args.quick, args.min_n, args.max_n, paths),
        "p2": lambda: p2_tables(args.quick, paths),
        "slope": lambda: slope_tables(args.quick),
    }
    for part in [p.strip() for p in args.parts.split(",") if p.strip()]:
        start = time.perf_counter()
        texts = parts[part]()
        texts[-1] += f"\n\n({part} ran in {time.perf_counter() - start:.0f} s)"
        for text in texts:
            print(text + "\n", flush=True)
            sections.append(text)
            if args.out:  # written as it goes: a run stopped at a time limit keeps what it measured
                with open(args.out, "w") as f:
                    f.write("\n\n".join(sections) + "\n")
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    main()

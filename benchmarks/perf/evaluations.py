"""How many evaluations the one-dimensional duals' root finder takes, over a grid of problems.

    python -m benchmarks.perf.evaluations [--n 1024] [--float64] [--full-passes]

A machine-independent cost: each evaluation of a KL, chi-square or Cressie--Read dual is a
pass or two over the losses (on a minibatch, about 50 XLA:CPU thunks). For each reduction
and hyperparameter, the value and gradient of 21 loss vectors of length ``n`` (7
distributions, seeds 11-13) are computed in one jitted call each, and the root finder's
evaluations counted (every solve: subsamples included). ``--full-passes`` counts the passes
over the full vector instead (``Data.E`` at length ``n``: the cost on a long vector, where
the subsample solves are cheap). Prints the mean and largest count per problem and the total.
"""

from __future__ import annotations

import argparse
import collections
import contextlib

import jax
import jax.numpy as jnp
import numpy as np

import robustlearn as rl
from robustlearn._src.reductions import engine, kernels

PROBLEMS = (
    [("kl", (rho,)) for rho in (0.01, 0.1, 0.5, 1.0, 3.0)]
    + [("chi_square", (rho,)) for rho in (0.1, 1.0, 3.0)]
    + [("cressie_read", (rho, k)) for k in (1.2, 1.5, 3.0, 6.0) for rho in (0.05, 0.2, 1.0, 3.0)]
)
DISTRIBUTIONS = {
    "exponential": lambda g, n: g.exponential(size=n),
    "cross-entropy-like": lambda g, n: -np.log(g.uniform(0.02, 1, size=n)),
    "normal": lambda g, n: g.normal(size=n),
    "lognormal": lambda g, n: g.lognormal(size=n),
    "uniform": lambda g, n: g.uniform(size=n),
    "gamma(0.3)": lambda g, n: g.gamma(0.3, size=n),
    "ties": lambda g, n: np.round(g.exponential(size=n), 1),
}
SEEDS = (11, 12, 13)


def vectors(n: int, dtype: str = "float64") -> list[np.ndarray]:
    """The 21 loss vectors of length ``n``: each distribution for seeds 11-13."""
    out = []
    for seed in SEEDS:
        g = np.random.default_rng(seed)
        out += [draw(g, n).astype(dtype) for draw in DISTRIBUTIONS.values()]
    return out


@contextlib.contextmanager
def counting(full_passes_of: int | None = None, clear_programs: bool = True):
    """Counts, in the yielded ``Counter``'s ``"n"``, the root finder's evaluations run by
    programs traced inside (or, with ``full_passes_of=n``, their passes over vectors of
    length ``n``). The library's functions are wrapped while inside; the reductions' cached
    programs are emptied on entry and exit (``clear_programs``), so that public calls are
    traced with the counting and later ones without it."""
    counter = collections.Counter()

    def tick():
        jax.debug.callback(lambda *_: counter.__setitem__("n", counter["n"] + 1))

    real_newton, real_e = kernels.newton, engine.Data.E

    def newton(evaluate, derivative, *args, **kw):
        def counted(x):
            tick()
            return evaluate(x)

        return real_newton(counted, derivative, *args, **kw)

    def passes(self, f, **kw):
        if self.losses.shape[0] == full_passes_of:
            tick()
        return real_e(self, f, **kw)

    def clear():
        if clear_programs:
            engine._compiled.cache_clear()
            engine._batched.cache_clear()

    clear()
    if full_passes_of is None:
        kernels.newton = newton
    else:
        engine.Data.E = passes
    try:
        yield counter
    finally:
        kernels.newton, engine.Data.E = real_newton, real_e
        clear()


def count(n: int, dtype: str, full_passes: bool, problems=PROBLEMS) -> list[tuple[str, list[int]]]:
    """``[(problem, counts over the 21 vectors)]``: value and gradient, one jitted call each."""
    rows = []
    data = [jnp.asarray(x) for x in vectors(n, dtype)]
    with counting(n if full_passes else None) as counter:
        for name, hyper in problems:
            fn = jax.jit(jax.value_and_grad(lambda v, name=name, hyper=hyper: getattr(rl, name)(v, *hyper)))
            jax.block_until_ready(fn(data[0]))  # traces and compiles once per problem
            counts = []
            for x in data:
                jax.effects_barrier()
                counter.clear()
                jax.block_until_ready(fn(x))
                jax.effects_barrier()
                counts.append(counter["n"])
            rows.append((f"{name}{hyper}", counts))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--float64", action="store_true")
    parser.add_argument("--full-passes", action="store_true")
    args = parser.parse_args()
    dtype = "float64" if args.float64 else "float32"
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    rows = count(args.n, dtype, args.full_passes)
    what = "full-vector passes" if args.full_passes else "root-finder evaluations"
    print(f"{what}, value and gradient, n = {args.n}, {dtype}, {len(DISTRIBUTIONS) * len(SEEDS)} vectors each\n")
    print("| problem | mean | largest |\n| --- | --- | --- |")
    for label, counts in rows:
        print(f"| {label} | {np.mean(counts):.2f} | {max(counts)} |")
    total = sum(sum(c) for _, c in rows)
    print(f"\ntotal {total}, largest {max(max(c) for _, c in rows)}")


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    main()

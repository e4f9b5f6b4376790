"""Largest error of every reduction in float32 (x64 off, what users run) and float64, against
the independent float64 references of ``tests/_references.py``, relative to the largest |loss|.

Random problems: 8 losses of a random scale (10^-3 to 10^3), random weights half the time,
random hyperparameters (radius log-uniform in [1e-4, 5], alpha in [1e-3, 1], lam log-uniform
in [1e-2, 10], k in [1.1, 5]; TV radius in [0, 1]). Extreme rows: the float32 table of
``tests/test_float32.py`` (the review's reproductions, hyperparameters at both ends of their
range, weights and losses at the float32 limits), each against its reference or documented
limit. The float32 reference is the float64 optimum of the float32-rounded problem.

Weights (the gradient, ``--weights``): each reduction's float32 gradient against its
float64 gradient on the float32-rounded losses (the float64 weights are checked against
the references by the tests), on the 21 vectors of 1,024 losses of
``benchmarks.perf.evaluations`` (7 distributions, 3 seeds), at a few hyperparameters:
the largest and the median over vectors of ``max_i |q32_i - q64_i| / max_i q64_i``, in
float32 eps.

    python -m benchmarks.float32_error [--problems 40] [--seed 0] [--weights]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import robustlearn as rl
from tests import _references as ref
from tests.strategies import CASES
from tests.test_float32 import TABLE

EPS32 = float(np.finfo(np.float32).eps)


def _hyper(case, rng):
    draws = {
        "radius": lambda: float(rng.uniform(0, 1)) if case.name == "tv" else float(10 ** rng.uniform(-4, np.log10(5))),
        "alpha": lambda: float(rng.uniform(1e-3, 1)),
        "lam": lambda: float(10 ** rng.uniform(-2, 1)),
        "k": lambda: float(rng.uniform(1.1, 5)),
    }
    return {h.name: float(np.float32(draws[h.name]())) for h in case.record.hyper}


def random_errors(case, problems: int, seed: int) -> tuple[float, float]:
    """Largest |value - reference| / max|loss| over random problems, in float32 and float64."""
    rng = np.random.default_rng(seed)
    worst32 = worst64 = 0.0
    for _ in range(problems):
        losses = (rng.normal(size=8) * 10 ** rng.uniform(-3, 3)).astype(np.float32).astype(np.float64)
        w = rng.uniform(0.01, 5, size=8).astype(np.float32).astype(np.float64) if rng.random() < 0.5 else None
        hyper = _hyper(case, rng)
        p = ref.nominal(8, w)
        want = ref.value(case.name, losses, p, hyper)
        scale = float(np.abs(losses).max())
        w32 = None if w is None else w.astype(np.float32)
        with jax.enable_x64(False):
            v32 = float(case.value(losses.astype(np.float32), **hyper, weights=w32))
        with jax.enable_x64(True):
            v64 = float(case.value(losses, **hyper, weights=w))
        worst32 = max(worst32, abs(v32 - want) / scale)
        worst64 = max(worst64, abs(v64 - want) / scale)
    return worst32, worst64


def extreme_errors() -> dict[str, tuple[float, str]]:
    """Per reduction: the largest error / max|loss| over its rows of the float32 extreme table."""
    worst: dict[str, tuple[float, str]] = {}
    for label, name, hyper, losses, weights, expected, _extra in TABLE:
        with jax.enable_x64(False):
            value = float(getattr(rl, name)(losses, **hyper, weights=weights))
        l64 = losses.astype(np.float64)
        err = abs(value - expected(l64, ref.nominal(len(l64), weights))) / float(np.abs(l64).max())
        if err >= worst.get(name, (-1.0, ""))[0]:
            worst[name] = (err, label)
    return worst


WEIGHT_GRID = {
    "cvar": [{"alpha": 0.05}, {"alpha": 0.5}],
    "chi_square": [{"radius": r} for r in (0.01, 0.1, 1.0)],
    "kl": [{"radius": r} for r in (0.01, 0.1, 1.0)],
    "cressie_read": [{"radius": r, "k": k} for k in (1.5, 4.0) for r in (0.01, 0.1, 1.0)],
    "tv": [{"radius": 0.1}, {"radius": 0.5}],
    "chi_square_penalty": [{"lam": 0.1}, {"lam": 1.0}],
    "kl_penalty": [{"lam": 0.1}, {"lam": 1.0}],
}


def weights_errors() -> list[tuple[str, dict, float, float]]:
    """``(reduction, hyper, largest, median)`` of the float32 weights' error, in eps of the largest weight."""
    from benchmarks.perf.evaluations import vectors as loss_vectors  # noqa: PLC0415

    vectors = loss_vectors(1024, "float32")
    rows = []
    for case in CASES:
        for hyper in WEIGHT_GRID.get(case.name, []):
            grad = jax.jit(jax.grad(lambda x, hyper=hyper, case=case: case.value(x, **hyper)))
            errors = []
            for losses in vectors:
                with jax.enable_x64(False):
                    q32 = np.asarray(grad(losses), np.float64)
                with jax.enable_x64(True):
                    q64 = np.asarray(grad(losses.astype(np.float64)))
                errors.append(float(np.max(np.abs(q32 - q64)) / np.max(q64)) / EPS32)
            rows.append((case.name, hyper, max(errors), float(np.median(errors))))
    return rows


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", action="store_true", help="also the weights' error on 1,024 losses")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    extreme = extreme_errors()
    lines = [
        f"Largest error / max|loss| ({args.problems} random problems per reduction, seed {args.seed}; "
        f"float32 eps = {EPS32:.2e}; tests allow 32 eps = {32 * EPS32:.1e} in float32)",
        "",
        "| reduction | float32 random | float64 random | float32 extreme rows | worst extreme row |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in CASES:
        e32, e64 = random_errors(case, args.problems, args.seed)
        x, label = extreme.get(case.name, (float("nan"), "-"))
        lines.append(f"| {case.name} | {e32:.1e} | {e64:.1e} | {x:.1e} | {label} |")
    if args.weights:
        lines += [
            "",
            "Float32 weights against float64, max_i |q32 - q64| / max q64 in eps, 21 vectors of 1,024 losses",
            "",
            "| reduction | hyperparameters | largest | median |",
            "| --- | --- | --- | --- |",
        ]
        for name, hyper, worst, median in weights_errors():
            lines.append(f"| {name} | {hyper} | {worst:.1f} | {median:.1f} |")
    lines.append(f"\n({time.perf_counter() - start:.0f} s)")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()

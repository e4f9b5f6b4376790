"""Hypothesis strategies and the table of reductions under test."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robustlearn as rl


class Case(NamedTuple):
    name: str
    value: object
    weights: object
    hyper: dict
    # "radius" for balls, "alpha" for CVaR, "lam" for penalties, None for ERM.
    knob: str | None
    record: rl.Reduction


# One hyperparameter value per name, inside every reduction's range.
DEFAULT_HYPER = {"alpha": 0.3, "radius": 0.4, "k": 1.5, "lam": 0.7}

# Derived from the registry: a new reduction is tested by every table below.
CASES = [
    Case(
        r.name,
        getattr(rl, r.name),
        getattr(rl, f"{r.name}_weights"),
        {h.name: DEFAULT_HYPER[h.name] for h in r.hyper},
        r.hyper[0].name if r.hyper else None,
        r,
    )
    for r in rl.REDUCTIONS.values()
]
CASE_IDS = [c.name for c in CASES]
ROBUST = [c for c in CASES if c.name != "erm"]


@st.composite
def loss_vectors(draw, min_n=1, max_n=8):
    """Continuous losses, or losses from a tiny pool so that ties are common.

    Sizes come from a short list: every new size costs a compilation.
    """
    n = draw(st.sampled_from([m for m in (1, 3, 8) if min_n <= m <= max_n]))
    if draw(st.booleans()):
        elements = st.floats(-10, 10, allow_nan=False, allow_subnormal=False)
    else:
        elements = st.sampled_from([-1.0, 0.0, 0.5, 2.0])
    return draw(hnp.arrays(np.float64, n, elements=elements))


@st.composite
def problems(draw, min_n=1, max_n=8):
    """(losses, weights or None, where or None) with a non-empty support."""
    losses = draw(loss_vectors(min_n, max_n))
    n = losses.shape[0]
    weights = None
    where = None
    if draw(st.booleans()):
        weights = draw(hnp.arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 1.0, 3.0]) | st.floats(0.01, 5)))
        if weights.sum() == 0:
            weights[draw(st.integers(0, n - 1))] = 1.0
    if draw(st.booleans()):
        where = draw(hnp.arrays(np.bool_, n))
        keep = np.ones(n) if weights is None else weights
        if not np.any(where & (keep > 0)):
            where[int(np.argmax(keep))] = True
    return losses, weights, where


radii = st.one_of(st.just(0.0), st.floats(1e-4, 5.0), st.sampled_from([1e-3, 0.1, 1.0, 20.0]))
alphas = st.one_of(st.just(1.0), st.floats(1e-3, 1.0), st.sampled_from([0.1, 0.25, 0.5, 1 / 3]))
lams = st.one_of(st.floats(1e-2, 10.0), st.sampled_from([0.05, 1.0, 100.0]))
ks = st.one_of(st.floats(1.1, 5.0), st.sampled_from([1.5, 2.0, 3.0]))

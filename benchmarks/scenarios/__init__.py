"""Benchmark scenarios: synthetic training data with a known flaw, and real data to measure the gap on.

Each scenario is a falsifiable prediction about when a robust objective beats ERM on real data after training
on synthetic (or mostly synthetic) data. ``SCENARIOS[name](seed, quick, **params)`` returns a :class:`Scenario`;
everything is numpy, deterministic in ``seed``, and loads real data offline (``benchmarks/data`` or package
wheels).

Splits (each ``{"x": float32 (n, d), "y": int32 (n,), "group": int32 (n,), "source": int32 (n,)}``):

- ``synthetic``: the generated training set (``source`` 1, or ``1 + generation`` for model collapse);
- ``real_train``: a small real labelled set (may have 0 rows), a subset of ``real_full_train``;
- ``real_val``: real validation data for tuning;
- ``real_test``: real test data, disjoint from every other split (``info["row_ids"]`` proves it);
- ``real_full_train``: all real training data (for the ERM-on-real ceiling).

Features are standardized with the statistics of ``synthetic`` + ``real_train`` only.
"""

from __future__ import annotations

from collections.abc import Callable

from ._common import SPLIT_NAMES, Scenario
from .collapse import MODES, make_model_collapse, take_generations
from .images import make_colored_mnist, make_sim_to_real_digits, render_digit, render_digits
from .tabular import make_label_noise, make_mode_dropping, make_support_cut

SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "mode_dropping": make_mode_dropping,
    "label_noise": make_label_noise,
    "colored_mnist": make_colored_mnist,
    "sim_to_real_digits": make_sim_to_real_digits,
    "support_cut": make_support_cut,
    "model_collapse": make_model_collapse,
}

__all__ = [
    "MODES",
    "SCENARIOS",
    "SPLIT_NAMES",
    "Scenario",
    "make_colored_mnist",
    "make_label_noise",
    "make_mode_dropping",
    "make_model_collapse",
    "make_sim_to_real_digits",
    "make_support_cut",
    "render_digit",
    "render_digits",
    "take_generations",
]

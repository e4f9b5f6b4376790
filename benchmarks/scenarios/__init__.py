"""Benchmark scenarios: synthetic training data with a known flaw, and real data to measure the gap on.

Each scenario is a falsifiable prediction about when a robust objective beats ERM on real data after training
on synthetic (or mostly synthetic) data. ``SCENARIOS[name](seed, quick, **params)`` returns a :class:`Scenario`;
everything is numpy, deterministic in ``seed``, and loads real data offline (``benchmarks/data`` or package
wheels). :data:`VARIANTS` names the parameterizations worth running (e.g. with and without a small real set).

Splits (each ``{"x": float32 (n, d), "y": int32 (n,), "group": int32 (n,), "source": int32 (n,)}``):

- ``synthetic``: the generated training set (``source`` 1, or ``1 + generation`` for model collapse);
- ``synthetic_val``: more generated data, held out: drawn like ``synthetic`` but disjoint from it (other samples
  of the generator, or other resampled rows), never used to fit a generator. Selection without real data
  (selection rule (b)) tunes on it;
- ``real_train``: a small real labelled set (may have 0 rows), a subset of ``real_full_train``;
- ``real_val``: real validation data for tuning (selection rule (a));
- ``real_test``: real test data, disjoint from every other split (``info["row_ids"]`` proves it);
- ``real_full_train``: all real training data (for the ERM-on-real ceiling); every generator is trained on it
  (or on part of it) and on nothing else.

Features are standardized with the statistics of ``synthetic`` + ``real_train`` only.

``info`` always holds ``"row_ids"`` (per split: indices into the scenario's pool of real rows, -1 for generated
rows), ``"feature_names"``, ``"standardization"``, ``"primary_metric"`` (``(metric, maximize)``),
``"n_real_train"``, ``"training_rows"`` (one sentence: which rows a learner trains on) and ``"negative_control"``
(False, or a string saying for which learner or variant the scenario is a negative control). Scenarios with a
learned generator (``copula_adult``, ``vae_digits``) add ``"generator"``::

    {"name", "config", "trained_on": "real_full_train", "train_rows", "train_seconds", "cached",
     "quality": {"c2st_auc", "c2st_auc_quadratic", "c2st_rows", "tstr_accuracy", "trtr_accuracy", "evaluated_on"}}

``c2st_auc`` is the held-out AUC of a logistic regression telling ``real_val`` from ``synthetic_val`` (0.5: a
linear classifier cannot tell them apart), ``c2st_auc_quadratic`` the same on the features and their squares;
``tstr_accuracy`` is the ``real_val`` accuracy of a linear classifier
fitted on ``synthetic`` and ``trtr_accuracy`` that of the same classifier fitted on ``real_full_train``
(:func:`generators.quality`). ``train_seconds`` is the time of the run that filled the cache. Generated data are
cached in ``$ROBUSTLEARN_BENCH_CACHE`` (default ``~/.cache/robustlearn-benchmarks``; ``off`` disables it).

``python -m benchmarks.scenarios`` prints each variant's floor and ceiling (ERM on synthetic data against ERM on
all real data, linear model) and its generator's quality.
"""

from __future__ import annotations

from collections.abc import Callable

from ._common import SPLIT_NAMES, Scenario
from .collapse import MODES, make_model_collapse, take_generations
from .images import make_colored_mnist, make_sim_to_real_digits, make_vae_digits, render_digit, render_digits
from .tabular import make_copula_adult, make_label_noise, make_mode_dropping, make_support_cut

SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "mode_dropping": make_mode_dropping,
    "copula_adult": make_copula_adult,
    "label_noise": make_label_noise,
    "colored_mnist": make_colored_mnist,
    "sim_to_real_digits": make_sim_to_real_digits,
    "vae_digits": make_vae_digits,
    "support_cut": make_support_cut,
    "model_collapse": make_model_collapse,
}

# Variants worth running: name -> (scenario, parameters). Each scenario's default first.
VARIANTS: dict[str, tuple[str, dict]] = {
    "mode_dropping": ("mode_dropping", {}),
    "mode_dropping_100_real": ("mode_dropping", {"n_real_train": 100}),
    "copula_adult": ("copula_adult", {}),
    "label_noise": ("label_noise", {}),
    "label_noise_30": ("label_noise", {"flip_rate": 0.3}),  # for the neural learner: a gap there (see docs)
    "colored_mnist": ("colored_mnist", {}),
    "sim_to_real_digits": ("sim_to_real_digits", {}),
    "sim_to_real_digits_50_real": ("sim_to_real_digits", {"n_real_train": 50}),
    "vae_digits": ("vae_digits", {}),
    "vae_digits_50_real": ("vae_digits", {"n_real_train": 50}),
    "support_cut": ("support_cut", {}),
    "support_cut_no_real": ("support_cut", {"n_real_train": 0}),
    "model_collapse": ("model_collapse", {"mode": "replace"}),
    "model_collapse_accumulate": ("model_collapse", {"mode": "accumulate"}),
    "model_collapse_mix": ("model_collapse", {"mode": "mix"}),
}

__all__ = [
    "MODES",
    "SCENARIOS",
    "SPLIT_NAMES",
    "VARIANTS",
    "Scenario",
    "make_colored_mnist",
    "make_copula_adult",
    "make_label_noise",
    "make_mode_dropping",
    "make_model_collapse",
    "make_sim_to_real_digits",
    "make_support_cut",
    "make_vae_digits",
    "render_digit",
    "render_digits",
    "take_generations",
]

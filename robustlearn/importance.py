"""Importance weighting: density ratios between real and synthetic data, weight transforms and
diagnostics, per-source and per-generation weights.

Weights computed here enter training as the batch's ``"weight"`` column: the nominal
distribution of every reduction and Objective (see docs/importance.md). Group DRO over
groups or sources lives in :mod:`robustlearn.objectives` (``group_dro``, ``worst_group``).
"""

from robustlearn._src.contamination.means import contamination_covariance, generation_weights
from robustlearn._src.objectives.group_dro import group_means
from robustlearn._src.weighting.density_ratio import (
    KLIEP,
    KMM,
    ULSIF,
    DensityRatioWarning,
    KernelMemoryWarning,
    ProbabilisticClassifier,
    RuLSIF,
    median_distance,
)
from robustlearn._src.weighting.divergence import DiscreteRatio, DivergenceEstimate, SupportWarning, divergence
from robustlearn._src.weighting.weights import (
    ImportanceWeightWarning,
    MixtureSelection,
    WeightDiagnostics,
    clip_mixture,
    effective_sample_size,
    select_mixture,
    simplex_grid,
    source_weights,
    transform_weights,
    weight_diagnostics,
)

__all__ = [
    "KLIEP",
    "DiscreteRatio",
    "DivergenceEstimate",
    "KMM",
    "ULSIF",
    "DensityRatioWarning",
    "ImportanceWeightWarning",
    "KernelMemoryWarning",
    "MixtureSelection",
    "ProbabilisticClassifier",
    "RuLSIF",
    "SupportWarning",
    "WeightDiagnostics",
    "clip_mixture",
    "contamination_covariance",
    "divergence",
    "effective_sample_size",
    "generation_weights",
    "group_means",
    "median_distance",
    "select_mixture",
    "simplex_grid",
    "source_weights",
    "transform_weights",
    "weight_diagnostics",
]

"""Wasserstein distributionally robust objectives."""

from robustlearn._wasserstein_linear import dual_norm, linear_classification, linear_classification_objective
from robustlearn._wrm import wrm, wrm_certificate, wrm_perturb

__all__ = [
    "dual_norm",
    "linear_classification",
    "linear_classification_objective",
    "wrm",
    "wrm_certificate",
    "wrm_perturb",
]

"""Wasserstein distributionally robust objectives."""

from robustlearn._wasserstein_linear import dual_norm, linear_classification
from robustlearn._wrm import wrm, wrm_certificate, wrm_perturb

__all__ = ["dual_norm", "linear_classification", "wrm", "wrm_certificate", "wrm_perturb"]

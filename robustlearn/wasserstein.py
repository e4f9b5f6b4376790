"""Wasserstein distributionally robust objectives."""

from robustlearn._wasserstein_linear import dual_norm, linear_classification

__all__ = ["dual_norm", "linear_classification"]

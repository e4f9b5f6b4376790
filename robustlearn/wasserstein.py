"""Wasserstein distributionally robust objectives."""

from robustlearn._src.transport.linear import (
    dual_norm,
    linear_classification,
    linear_classification_objective,
    linear_regression,
)
from robustlearn._src.transport.sinkhorn import sample_cloud_dual, sinkhorn
from robustlearn._src.transport.wrm import wrm, wrm_certificate, wrm_perturb

__all__ = [
    "dual_norm",
    "linear_classification",
    "linear_classification_objective",
    "linear_regression",
    "sample_cloud_dual",
    "sinkhorn",
    "wrm",
    "wrm_certificate",
    "wrm_perturb",
]

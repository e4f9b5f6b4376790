"""Radii from data and certificates of the real risk (docs/radius.md).

``statistical_radius`` sizes a ball for the sampling error of n rows, ``importance.divergence``
(behind ``radius``) for the shift between the real and the synthetic distribution,
``combine_radii`` composes them, and ``certificate`` turns held-out losses and a radius into
an upper bound on the real risk. ``fit_robust`` does it all in one call for a linear model.
"""

from robustlearn._src.calibration.fit import RobustFit, fit_robust, joint_sample
from robustlearn._src.calibration.radius import (
    Certificate,
    Radius,
    certificate,
    combine_radii,
    radius,
    statistical_radius,
)

__all__ = [
    "Certificate",
    "Radius",
    "RobustFit",
    "certificate",
    "combine_radii",
    "fit_robust",
    "joint_sample",
    "radius",
    "statistical_radius",
]

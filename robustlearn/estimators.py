"""scikit-learn-style estimators: robust linear and MLP models for tabular data.

Needs scikit-learn: ``pip install "robustlearn[sklearn]"``.
"""

from robustlearn._src.optional import require

require("sklearn", "scikit-learn", "sklearn")

from robustlearn._src.estimators import RobustClassifier, RobustRegressor  # noqa: E402

__all__ = ["RobustClassifier", "RobustRegressor"]

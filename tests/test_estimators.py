"""scikit-learn estimator checks and the estimators' own behaviour."""

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from robustlearn.estimators import RobustClassifier, RobustRegressor


@parametrize_with_checks([RobustClassifier(), RobustRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _blobs(seed=0, n=200):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 2)) + 3.0 * np.stack([np.cos(2 * np.pi * y / 3), np.sin(2 * np.pi * y / 3)], 1)
    return x, y


@pytest.mark.parametrize(
    "objective", ["erm", "cvar", "chi_square", "kl", "cressie_read", "chi_square_penalty", "kl_penalty"]
)
def test_every_objective_fits_a_linear_classifier(objective):
    x, y = _blobs()
    clf = RobustClassifier(objective, alpha=0.3, radius=0.5, k=1.5, lam=1.0, l2=1e-3).fit(x, y)
    assert clf.score(x, y) > 0.9
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert clf.get_params()["objective"] == objective


def test_mlp_classifier_and_regressor():
    x, y = _blobs(1)
    clf = RobustClassifier("cvar", alpha=0.5, model="mlp", hidden=(16,), epochs=100, learning_rate=0.02).fit(x, y)
    assert clf.score(x, y) > 0.9
    reg = RobustRegressor("kl", radius=0.1, model="mlp", hidden=(16,), epochs=300, batch_size=64).fit(x, x[:, 0] ** 2)
    assert reg.score(x, x[:, 0] ** 2) > 0.8


def test_set_params_changes_the_objective():
    x, y = _blobs(2)
    clf = RobustClassifier("erm").set_params(objective="cvar", alpha=0.2)
    assert clf.fit(x, y).get_params()["alpha"] == 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objective": "wasserstein"}, "`objective` must be one of"),
        ({"objective": "cvar", "alpha": 0.0}, r"`alpha` must be in \(0, 1\]"),
        ({"model": "tree"}, "`model` must be 'linear' or 'mlp'"),
        ({"l2": -1.0}, r"`l2` must be in \[0, inf\)"),
    ],
)
def test_bad_estimator_parameters(kwargs, match):
    x, y = _blobs()
    with pytest.raises(ValueError, match=match):
        RobustClassifier(**kwargs).fit(x, y)

"""The estimators: scikit-learn's estimator checks, and fits against sklearn/scipy references."""

import pickle

import jax
import numpy as np
import pytest
from scipy import optimize
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

import robustlearn as rl
from robustlearn.estimators import RobustClassifier, RobustRegressor

# The cheapest configuration of each model type (ERM: one smooth solve; a small MLP).
MLP = {"model": "mlp", "hidden": (8,), "epochs": 60, "learning_rate": 0.05}
ESTIMATORS = [
    RobustClassifier("erm"),
    RobustRegressor("erm"),
    RobustClassifier("erm", **MLP),
    RobustRegressor("erm", **MLP),
]
# Every check runs for every model type. For the MLP (each fit trains a network: ~4 min of
# CPU for all its checks) the default run keeps the checks of its prediction path and of
# its data handling; all of them run with `-m slow`.
MLP_DEFAULT_CHECKS = {
    "check_methods_subset_invariance",
    "check_methods_sample_order_invariance",
    "check_sample_weight_equivalence_on_dense_data",
}


def _check_params():
    decorator = parametrize_with_checks(ESTIMATORS)
    (argnames, cases), ids = decorator.args, decorator.kwargs["ids"]
    params = []
    for estimator, check in cases:
        marks = [pytest.mark.slow] if estimator.model == "mlp" and ids(check) not in MLP_DEFAULT_CHECKS else []
        params.append(pytest.param(estimator, check, marks=marks, id=f"{ids(estimator)}-{ids(check)}"))
    return argnames, params


@pytest.mark.parametrize(*_check_params())
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _blobs(seed=0, n=60, classes=3):
    # Most tests use 60 rows and 2 features: the linear fits then share compiled solvers.
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    angle = 2 * np.pi * y / classes
    x = rng.normal(size=(n, 2)) + 3.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
    return x, y


# ----------------------------------------------------------------- against references


@pytest.mark.parametrize("classes", [2, 3])
def test_weighted_erm_is_sklearn_logistic_regression(classes):
    # Ours: sum_i p_i loss_i + l2/2 |coef|^2 with p = w / sum(w); sklearn: C sum_i w_i loss_i + |coef|^2/2.
    x, y = _blobs(1, classes=classes)
    w = np.random.default_rng(1).uniform(0.2, 3.0, size=len(y))
    l2 = 0.05
    ours = RobustClassifier("erm", l2=l2).fit(x, y, sample_weight=w)
    ref = LogisticRegression(C=1.0 / (l2 * w.sum()), tol=1e-12, max_iter=10000).fit(x, y, sample_weight=w)
    assert ours.coef_.shape == ref.coef_.shape and ours.intercept_.shape == ref.intercept_.shape
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-6)
    if classes == 2:  # the same parametrization as LogisticRegression's
        np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-5)
        np.testing.assert_allclose(ours.decision_function(x), ref.decision_function(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target_scale", [1.0, 100.0], ids=["raw", "1e4"])
def test_regressor_matches_ridge_on_diabetes(target_scale):
    # Must-show (issue 11): raw targets (y ~ 1e2) and targets of scale 1e4. Ridge(alpha)
    # minimizes sum r^2 + alpha |w|^2, our ERM mean r^2/2 + l2/2 |w|^2: l2 = alpha / n.
    x, y = load_diabetes(return_X_y=True)
    y = y * target_scale
    train, test = slice(0, 350), slice(350, None)
    alpha = 0.1
    ridge = Ridge(alpha=alpha).fit(x[train], y[train])
    ours = RobustRegressor("erm", l2=alpha / 350).fit(x[train], y[train])
    # Relative to the norm: the solver stops on the gradient's norm, which bounds the
    # error of the coefficient vector, not of each entry (coef_[0] is 1e-3 of the largest;
    # on an AMD EPYC its entrywise error was 4e-6, the vector's 4e-8).
    error = np.linalg.norm(ours.coef_ - ridge.coef_) / np.linalg.norm(ridge.coef_)
    assert error <= 1e-6, error
    r2_ridge, r2_ours = ridge.score(x[test], y[test]), ours.score(x[test], y[test])
    assert abs(r2_ours - r2_ridge) <= 0.01 * abs(r2_ridge)
    # A robust objective on the same data: R^2 within 1% of Ridge's too (its own optimum).
    robust = RobustRegressor("chi_square", radius=0.01, l2=alpha / 350).fit(x[train], y[train])
    assert abs(robust.score(x[test], y[test]) - r2_ridge) <= 0.01 * abs(r2_ridge)


def test_weighted_squared_erm_is_sklearn_ridge():
    x, _ = _blobs(2)
    y = x @ np.array([3.0, -2.0]) + np.random.default_rng(2).normal(size=60)
    w = np.random.default_rng(3).integers(1, 5, size=60).astype(float)
    l2 = 0.01
    ours = RobustRegressor("erm", l2=l2).fit(x, y, sample_weight=w)
    ref = Ridge(alpha=l2 * w.sum()).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-7)
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-7)


def test_wasserstein_classifier_matches_scipy():
    # kappa = inf, l2 norm: mean logistic loss + radius |coef|_2 + l2/2 |coef|^2 (closed form of the worst case).
    x, y = _blobs(4, classes=2)
    radius, l2 = 0.1, 0.01
    clf = RobustClassifier("wasserstein", radius=radius, l2=l2).fit(x, y)

    def fun(t):
        z = (2 * y - 1) * (x @ t[:2] + t[2])
        return np.mean(np.logaddexp(0, -z)) + radius * np.linalg.norm(t[:2]) + 0.5 * l2 * t[:2] @ t[:2]

    ref = optimize.minimize(fun, np.array([0.1, 0.1, 0.0]), method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})  # fmt: skip
    np.testing.assert_allclose(np.r_[clf.coef_[0], clf.intercept_], ref.x, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------- sample weights, groups


@pytest.mark.parametrize("objective", ["cvar", "worst_group"])
def test_integer_weights_are_repeated_rows_bit_for_bit(objective):
    x, y = _blobs(5)
    groups = np.arange(60) % 2
    w = np.random.default_rng(5).integers(0, 4, size=60)
    weighted = RobustClassifier(objective, alpha=0.3).fit(x, y, sample_weight=w, groups=groups)
    repeated = RobustClassifier(objective, alpha=0.3).fit(
        np.repeat(x, w, axis=0), np.repeat(y, w), groups=np.repeat(groups, w)
    )
    np.testing.assert_array_equal(weighted.coef_, repeated.coef_)
    # ... and the weights matter: uniform weights give another solution.
    uniform = RobustClassifier(objective, alpha=0.3).fit(x, y, groups=groups)
    assert np.max(np.abs(uniform.coef_ - weighted.coef_)) > 1e-3


def test_worst_group_classifier_lowers_the_worst_group_loss():
    rng = np.random.default_rng(6)
    x, y = _blobs(6, classes=2)
    groups = np.where(rng.uniform(size=60) < 0.2, "minority", "majority")
    x[groups == "minority"] += np.array([2.0, -2.0])  # a shifted minority group

    def worst(clf):
        proba = clf.predict_proba(x)[np.arange(60), y]
        return max(np.mean(-np.log(proba[groups == g])) for g in ("minority", "majority"))

    erm = RobustClassifier("erm", l2=1e-3).fit(x, y)
    robust = RobustClassifier("worst_group", l2=1e-3).fit(x, y, groups=groups)
    assert worst(robust) < worst(erm) - 1e-3
    with pytest.raises(ValueError, match="needs `groups`"):
        RobustClassifier("worst_group").fit(x, y)


def test_mlp_trains_online_group_dro():
    x, y = _blobs(7, classes=2)
    clf = RobustClassifier("group_dro", random_state=0, **MLP).fit(x, y, groups=np.arange(60) % 3)
    assert clf.score(x, y) > 0.9 and clf.n_iter_ == MLP["epochs"]


# ----------------------------------------------------------------------- model outputs


def test_coefficients_and_outputs_have_sklearn_shapes():
    x, y = _blobs(8)
    multi = RobustClassifier("kl", radius=0.1).fit(x, y)
    assert multi.coef_.shape == (3, 2) and multi.intercept_.shape == (3,)
    np.testing.assert_allclose(multi.decision_function(x), x @ multi.coef_.T + multi.intercept_, rtol=1e-12)
    binary = RobustClassifier("kl", radius=0.1).fit(x, y == 1)
    assert binary.coef_.shape == (1, 2) and binary.intercept_.shape == (1,)
    assert binary.decision_function(x).shape == (60,) and isinstance(binary.n_iter_, int) and binary.n_iter_ > 0
    reg = RobustRegressor("cvar", alpha=0.5).fit(x, x[:, 0])
    assert reg.coef_.shape == (2,) and isinstance(reg.intercept_, float)


@pytest.mark.parametrize("objective", list(rl.REDUCTIONS))
def test_every_reduction_fits_a_linear_classifier(objective):
    x, y = _blobs()
    clf = RobustClassifier(objective, alpha=0.3, radius=0.5, k=1.5, lam=1.0, l2=1e-3).fit(x, y)
    assert clf.score(x, y) > 0.9
    np.testing.assert_allclose(clf.predict_proba(x).sum(1), 1.0, rtol=1e-12)


def test_mlp_regressor_is_equivariant_to_the_target_scale():
    # Targets are standardized: fitting y * 1e4 gives 1e4 times the predictions (minibatches here).
    x, _ = _blobs(9)
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1]
    base = RobustRegressor("kl", radius=0.1, random_state=0, batch_size=32, **MLP).fit(x, y)
    scaled = RobustRegressor("kl", radius=0.1, random_state=0, batch_size=32, **MLP).fit(x, 1e4 * y)
    np.testing.assert_allclose(scaled.predict(x), 1e4 * base.predict(x), rtol=1e-4, atol=1e-3)
    assert base.score(x, y) > 0.8


def test_random_state_accepts_none_int_and_randomstate():
    # An int seeds a RandomState, which draws the seed: int 3 and RandomState(3) train alike.
    x, y = _blobs(10)
    first = RobustClassifier("erm", random_state=3, **MLP).fit(x, y)
    again = RobustClassifier("erm", random_state=np.random.RandomState(3), **MLP).fit(x, y)
    np.testing.assert_array_equal(first.predict_proba(x), again.predict_proba(x))
    assert RobustClassifier("erm", random_state=None, **MLP).fit(x, y).score(x, y) > 0.9
    clone = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(clone.predict_proba(x), first.predict_proba(x))


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("estimator", "fit_kwargs", "error", "match"),
    [
        (RobustClassifier("wasser"), {}, ValueError, "`objective` must be one of"),
        (RobustClassifier("cvar", alpha=0.0), {}, ValueError, r"`alpha` must be in \(0, 1\]"),
        (RobustClassifier(model="tree"), {}, ValueError, "`model` must be 'linear' or 'mlp'"),
        (RobustClassifier(l2=-1.0), {}, ValueError, r"`l2` must be in \[0, inf\)"),
        (RobustClassifier(max_iter="many"), {}, ValueError, "`max_iter` must be a positive int"),
        (RobustClassifier(tol=-1.0), {}, ValueError, r"`tol` must be in \[0, inf\)"),
        (RobustClassifier(model="mlp", epochs=0), {}, ValueError, "`epochs` must be a positive int"),
        (RobustClassifier(model="mlp", hidden=(0,)), {}, ValueError, "`hidden` must be a tuple of positive ints"),
        (RobustClassifier(model="mlp", learning_rate=0.0), {}, ValueError, r"`learning_rate` must be in \(0, inf\)"),
        (RobustClassifier(random_state="seed"), {}, ValueError, "`random_state` must be None, an int or"),
        (RobustClassifier("wasserstein"), {}, ValueError, "binary linear classifier; y has more than 2 classes"),
        (RobustRegressor("wasserstein"), {}, ValueError, "not available for RobustRegressor"),
        (RobustClassifier("wasserstein", radius=-1.0), {"binary": True}, ValueError, r"`radius` must be in \[0, inf\)"),
        (RobustClassifier("wasserstein", model="mlp"), {"binary": True}, ValueError, "needs model='linear'"),
        (RobustClassifier("group_dro"), {}, ValueError, "needs `groups`"),
        (RobustClassifier("worst_group"), {"groups": np.zeros(10)}, ValueError, "`groups` must have one label per row"),
        (RobustClassifier(), {"sample_weight": -np.ones(60)}, ValueError, "Negative values in data passed to"),
        (RobustClassifier(), {"sample_weight": np.zeros(60)}, ValueError, "`sample_weight` must have a positive"),
        (RobustClassifier(), {"sample_weight": np.ones(10)}, ValueError, r"sample_weight.shape == \(10,\)"),
    ],
)
def test_bad_estimator_parameters(estimator, fit_kwargs, error, match):
    x, y = _blobs()
    if fit_kwargs.pop("binary", False):
        y = y == 1
    with pytest.raises(error, match=match):
        estimator.fit(x, y, **fit_kwargs)


# ------------------------------------------------------------------- radius="auto"


def _shifted_pair(seed=0, n=400, m=60):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    rx = rng.normal(0.3, 1.0, (m, 2))
    ry = (rx[:, 0] + 0.5 * rng.normal(size=m) > 0).astype(int)
    return x, y, rx, ry


def test_auto_radius_is_calibrate_fit_robust_and_certifies():
    from robustlearn import calibrate

    x, y, rx, ry = _shifted_pair()
    labels = np.array(["neg", "pos"])
    clf = RobustClassifier("chi_square", radius="auto", l2=1e-3, random_state=3).fit(
        x, labels[y], real=(rx, labels[ry])
    )
    seed = int(np.random.RandomState(3).randint(np.iinfo(np.int32).max))
    with jax.enable_x64(True):
        ref = calibrate.fit_robust(x, y, rx, ry, kind="chi_square", loss="logistic", l2=1e-3, seed=seed)
    np.testing.assert_allclose(clf.coef_[0], ref.params["w"], rtol=1e-10)
    assert clf.radius_.total == ref.train_radius.total > 0
    cert = clf.certificate_
    assert cert.bound == ref.certificate.bound > cert.empirical_risk
    assert clf.predict(rx).shape == (len(rx),) and set(clf.predict(rx)) <= set(labels)


@pytest.mark.parametrize(
    ("estimator", "fit_kwargs", "message"),
    [
        (RobustClassifier("cvar", radius="auto"), {"real": True}, r"radius='auto' is available for objective in"),
        (RobustClassifier("chi_square", radius="auto", model="mlp"), {"real": True}, r"with model='linear'"),
        (RobustClassifier("chi_square", radius="big"), {}, r"`radius` must be a number or 'auto'"),
        (RobustClassifier("chi_square", radius="auto"), {}, r"needs a small real sample"),
        (RobustClassifier("chi_square", radius=0.1), {"real": True}, r"`real` is used by radius='auto' only"),
        (RobustClassifier("chi_square", radius="auto", confidence=1.0), {"real": True}, r"`confidence` must be in"),
        (RobustClassifier("chi_square", radius="auto"), {"real": True, "sw": True}, r"does not take `sample_weight`"),
    ],
)
def test_auto_radius_bad_inputs(estimator, fit_kwargs, message):
    x, y, rx, ry = _shifted_pair(n=40, m=10)
    kwargs = {}
    if fit_kwargs.get("real"):
        kwargs["real"] = (rx, ry)
    if fit_kwargs.get("sw"):
        kwargs["sample_weight"] = np.ones(len(y))
    with pytest.raises(ValueError, match=message):
        estimator.fit(x, y, **kwargs)


def test_auto_radius_rejects_mismatched_real_sample():
    x, y, rx, ry = _shifted_pair(n=40, m=10)
    with pytest.raises(ValueError, match="`real` has 3 features; X has 2"):
        RobustClassifier("kl", radius="auto").fit(x, y, real=(np.ones((5, 3)), ry[:5]))
    with pytest.raises(ValueError, match="labels absent from y"):
        RobustClassifier("kl", radius="auto").fit(x, y, real=(rx, ry + 5))

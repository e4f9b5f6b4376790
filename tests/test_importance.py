"""Importance weighting: density-ratio estimators, weight transforms and diagnostics, group DRO,
source- and generation-aware weights. References are closed forms, scipy solvers, or Monte Carlo."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import optimize, stats

import robustlearn as rl
from robustlearn import importance as imp
from robustlearn import objectives

# --------------------------------------------------------------------------- density ratios

SHIFT = 0.7


def _gaussian_pair(rng):
    """real N((0.7, 0), I) vs synthetic N(0, I): log-ratio linear in x0."""
    real = rng.normal(size=(300, 2)) + np.array([SHIFT, 0.0])
    syn = rng.normal(size=(600, 2))

    def ratio(x):
        return np.exp(SHIFT * x[:, 0] - SHIFT**2 / 2)

    return real, syn, ratio


def _gaussian_vs_mixture(rng):
    """real: two tight Gaussians at (±1.5, 0); synthetic: one broad Gaussian. Ratio not monotone."""
    comp = rng.integers(0, 2, 300)
    real = rng.normal(size=(300, 2)) * 0.5 + np.where(comp[:, None] == 0, -1.5, 1.5) * np.array([1.0, 0.0])
    syn = rng.normal(size=(600, 2)) * 1.5
    cov_r, cov_s = 0.25 * np.eye(2), 2.25 * np.eye(2)

    def ratio(x):
        pr = 0.5 * stats.multivariate_normal([-1.5, 0], cov_r).pdf(x) + 0.5 * stats.multivariate_normal(
            [1.5, 0], cov_r
        ).pdf(x)
        return pr / stats.multivariate_normal([0, 0], cov_s).pdf(x)

    return real, syn, ratio


PROBLEMS = {"gaussian_shift": _gaussian_pair, "gaussian_vs_mixture": _gaussian_vs_mixture}
ESTIMATORS = {
    "ulsif": lambda: imp.ULSIF(folds=3),
    "rulsif": lambda: imp.RuLSIF(alpha=0.1, folds=3),
    "kliep": lambda: imp.KLIEP(folds=3),
    "kmm": lambda: imp.KMM(folds=3),
    "logistic": lambda: imp.ProbabilisticClassifier("logistic", l2=(1e-3,)),
    "mlp": lambda: imp.ProbabilisticClassifier("mlp", l2=(1e-3, 1e-1)),
}
# A linear logit can only represent a log-linear ratio: theory says logistic fails on the mixture.
EXPECTED_TO_RANK = {(p, e) for p in PROBLEMS for e in ESTIMATORS} - {("gaussian_vs_mixture", "logistic")}


@functools.cache
def _fitted(problem, estimator):
    real, syn, ratio = PROBLEMS[problem](np.random.default_rng(0))
    est = ESTIMATORS[estimator]().fit(real, syn)
    return real, syn, ratio, est


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weights_rank_like_the_true_ratio(problem, estimator):
    _, syn, ratio, est = _fitted(problem, estimator)
    w = est.weights(syn)
    assert w.shape == (len(syn),) and np.all(w >= 0) and np.all(np.isfinite(w))
    rho = stats.spearmanr(w, ratio(syn)).statistic
    if (problem, estimator) in EXPECTED_TO_RANK:
        assert rho >= 0.9
    else:
        assert rho < 0.9  # the model class cannot represent this ratio


def _real_risk(problem):
    """A fixed loss and its exact expectation under the real distribution."""
    if problem == "gaussian_shift":  # E(x0 - 1)^2 + x1^2 with x0 ~ N(0.7, 1), x1 ~ N(0, 1)
        return (lambda x: (x[:, 0] - 1) ** 2 + x[:, 1] ** 2), 1 + (SHIFT - 1) ** 2 + 1
    # E x0^2 under the mixture: 0.25 + 1.5^2; E x1^2 = 0.25. Synthetic gives 2.25 + 2.25.
    return (lambda x: x[:, 0] ** 2 + 4 * x[:, 1] ** 2), 0.25 + 1.5**2 + 4 * 0.25


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weighted_risk_is_closer_to_the_real_risk(problem, estimator):
    if (problem, estimator) not in EXPECTED_TO_RANK:
        pytest.skip("the model class cannot represent this ratio (see the ranking test)")
    _, syn, _, est = _fitted(problem, estimator)
    loss, truth = _real_risk(problem)
    ell = loss(syn)
    iw = float(rl.erm(jnp.asarray(ell), weights=est.weights(syn)))
    assert abs(iw - truth) < 0.5 * abs(ell.mean() - truth)


def test_importance_weighted_least_squares_beats_erm_under_covariate_shift():
    """Shimodaira's setting: a misspecified linear fit, training x ~ N(0, 1), target x ~ N(1, 0.5^2)."""
    rng = np.random.default_rng(1)

    def f(x):
        return np.sinc(x) + 0.1 * x**2

    x_s, x_r = rng.normal(size=500), rng.normal(1.0, 0.5, 200)
    y_s = f(x_s) + 0.1 * rng.normal(size=500)
    x_test = rng.normal(1.0, 0.5, 20000)
    w = imp.ULSIF(folds=3).fit(x_r[:, None], x_s[:, None]).weights(x_s[:, None])

    def fit_and_test(weights):
        a = np.stack([x_s, np.ones_like(x_s)], 1) * np.sqrt(weights)[:, None]
        coef = np.linalg.lstsq(a, y_s * np.sqrt(weights), rcond=None)[0]
        return np.mean((coef[0] * x_test + coef[1] - f(x_test)) ** 2)

    assert fit_and_test(w) < 0.7 * fit_and_test(np.ones_like(w))


def test_ulsif_solution_matches_the_closed_form():
    real, syn, _ = _gaussian_pair(np.random.default_rng(2))
    est = imp.ULSIF(sigmas=(1.0,), lambdas=(0.1,), folds=2).fit(real, syn)
    centers, theta, sigma = est.state_

    def phi(x):
        return np.exp(-((x[:, None, :] - centers[None]) ** 2).sum(-1) / (2 * sigma**2))

    h_mat = phi(syn).T @ phi(syn) / len(syn)
    ref = np.linalg.solve(h_mat + 0.1 * np.eye(len(centers)), phi(real).mean(0))
    np.testing.assert_allclose(theta, ref, rtol=1e-6, atol=1e-9)


def test_kliep_solution_satisfies_the_kkt_conditions():
    real, syn, _ = _gaussian_pair(np.random.default_rng(3))
    est = imp.KLIEP(sigmas=(1.0,), folds=2, tol=1e-7, max_iter=200_000).fit(real, syn)
    assert est.kkt_gap_ <= 1e-7
    centers, theta, sigma = est.state_

    def phi(x):
        return np.exp(-((x[:, None, :] - centers[None]) ** 2).sum(-1) / (2 * sigma**2))

    assert np.mean(phi(syn) @ theta) == pytest.approx(1.0, rel=1e-6)  # normalization constraint
    grad = phi(real).T @ (1 / (phi(real) @ theta)) / len(real)  # d/dtheta of the mean log-likelihood
    b = phi(syn).mean(0)
    # KKT with multiplier 1 in pi = theta * b (on the simplex): grad/b <= 1, and complementary
    # slackness sum_l pi_l (1 - grad_l / b_l) = 0.
    pi = theta * b
    assert np.all(grad / b <= 1 + 1e-6)
    assert np.sum(pi * np.abs(1 - grad / b)) < 1e-5


def test_kmm_solves_its_quadratic_program():
    rng = np.random.default_rng(4)
    real, syn = rng.normal(0.5, 1, (40, 2)), rng.normal(0, 1, (30, 2))
    est = imp.KMM(sigmas=(1.0,), folds=2, bound=5.0, iterations=20000, tol=1e-10).fit(real, syn)
    beta, sigma = est.beta_, est.sigma_
    k = np.exp(-((syn[:, None] - syn[None]) ** 2).sum(-1) / (2 * sigma**2))
    kappa = 30 / 40 * np.exp(-((syn[:, None] - real[None]) ** 2).sum(-1) / (2 * sigma**2)).sum(1)
    eps = (np.sqrt(30) - 1) / np.sqrt(30)

    def qp(b):
        return 0.5 * b @ k @ b - kappa @ b

    cons = [{"type": "ineq", "fun": lambda b: 30 * eps - abs(b.sum() - 30)}]
    ref = optimize.minimize(qp, np.ones(30), bounds=[(0, 5)] * 30, constraints=cons, method="SLSQP", tol=1e-12)
    assert np.all(beta >= -1e-9) and np.all(beta <= 5 + 1e-9) and abs(beta.sum() - 30) <= 30 * eps + 1e-6
    assert qp(beta) <= ref.fun + 1e-5 * abs(ref.fun)


def test_rulsif_estimates_the_bounded_relative_ratio():
    _, syn, ratio, est = _fitted("gaussian_shift", "rulsif")
    w, r = est.weights(syn), ratio(syn)
    relative = r / (0.1 * r + 0.9)
    assert np.max(w) <= 1 / 0.1 * 1.2
    assert np.median(np.abs(w - relative)) < 0.15


# --------------------------------------------------------------------------- density ratios: bad input, folds, scale


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: imp.KLIEP(max_iter=0), r"`max_iter` must be an int in \[1, inf\)"),
        (lambda: imp.KLIEP(max_iter=2.5), r"`max_iter` must be an int in \[1, inf\)"),
        (lambda: imp.KLIEP(tol=-1.0), r"`tol` must be a finite number in \(0, inf\)"),
        (lambda: imp.KLIEP(tol=0.0), r"`tol` must be a finite number in \(0, inf\)"),
        (lambda: imp.KLIEP(tol=np.nan), r"`tol` must be a finite number in \(0, inf\)"),
        (lambda: imp.KMM(iterations=-5), r"`iterations` must be an int in \[1, inf\)"),
        (lambda: imp.KMM(iterations=0), r"`iterations` must be an int in \[1, inf\)"),
        (lambda: imp.KMM(tol=-1.0), r"`tol` must be a finite number in \(0, inf\)"),
        (lambda: imp.KMM(bound=np.inf), r"`bound` must be a finite number in \(0, inf\)"),
        (lambda: imp.KMM(bound=0.0), r"`bound` must be a finite number in \(0, inf\)"),
        (lambda: imp.KMM(epsilon=-1.0), r"`epsilon` must be a finite number in \[0, inf\)"),
        (lambda: imp.KMM(epsilon=np.nan), r"`epsilon` must be a finite number in \[0, inf\)"),
        (lambda: imp.KMM(approximation="nystroem"), "`approximation` must be 'auto', 'exact' or 'subset'"),
        (lambda: imp.KMM(subset_size=1), r"`subset_size` must be an int in \[2, inf\)"),
        (lambda: imp.ULSIF(num_centers=0), r"`num_centers` must be an int in \[1, inf\)"),
        (lambda: imp.ULSIF(num_centers=2.0), r"`num_centers` must be an int in \[1, inf\)"),
        (lambda: imp.ULSIF(folds=1), "`folds` must be an int >= 2"),
        (lambda: imp.ULSIF(seed=-1), r"`seed` must be an int in \[0, inf\)"),
        (lambda: imp.ULSIF(lambdas=(0.1, -1.0)), r"`lambdas` must be positive finite numbers"),
        (lambda: imp.RuLSIF(alpha=1.0), r"`alpha` must be in \[0, 1\)"),
        (lambda: imp.median_distance(np.ones((3, 2)), max_points=1), r"`max_points` must be an int in \[2, inf\)"),
    ],
)
def test_bad_density_ratio_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_numpy_integers_are_accepted_as_counts():
    est = imp.KLIEP(max_iter=np.int64(50), num_centers=np.int32(5), folds=np.int64(2), seed=np.int64(1))
    assert (est.max_iter, est.num_centers, est.folds, est.seed) == (50, 5, 2, 1)


def _record_row_sets(monkeypatch):
    """Records the row sets each kernel evaluation sees (rows as tuples of the transformed data)."""
    from robustlearn._src.weighting import density_ratio

    calls = []
    original = density_ratio._sq_dist

    def spy(a, b):
        calls.append({tuple(r) for r in a})
        return original(a, b)

    monkeypatch.setattr(density_ratio, "_sq_dist", spy)
    return calls


def test_cross_validation_never_scores_held_out_rows_that_were_trained_on(monkeypatch):
    """Fewer synthetic rows than folds: as many folds as the smaller sample allows, each
    synthetic row held out exactly once and never in its fold's training rows."""
    rng = np.random.default_rng(11)
    real, syn = rng.normal(0.5, 1, (20, 2)), rng.normal(0, 1, (3, 2))
    calls = _record_row_sets(monkeypatch)
    with pytest.warns(imp.DensityRatioWarning, match="3 cross-validation folds instead of 5"):
        est = imp.ULSIF(folds=5, sigmas=(0.5, 1.0), lambdas=(0.1,)).fit(real, syn)
    assert est.folds_ == 3
    folds = [calls[4 * i : 4 * i + 4] for i in range(3)]  # per fold: train real, train syn, held real, held syn
    held_syn = [f[3] for f in folds]
    for train_r, train_s, held_r, held_s in folds:
        assert not (train_s & held_s) and not (train_r & held_r)
        assert len(train_s | held_s) == 3 and len(train_r | held_r) == 20
    assert set.union(*held_syn) == folds[0][1] | folds[0][3] and sum(len(h) for h in held_syn) == 3


@pytest.mark.parametrize("make", [imp.ULSIF, imp.KLIEP, imp.KMM, imp.RuLSIF])
def test_one_row_samples_raise_clearly_or_fit_without_cross_validation(make):
    rng = np.random.default_rng(12)
    real, syn = rng.normal(0.5, 1, (10, 2)), rng.normal(0, 1, (10, 2))
    for r, s in ((real[:1], syn), (real, syn[:1])):
        with pytest.raises(ValueError, match="needs at least 2 rows in each: `real` has"):
            make().fit(r, s)
        single = {"sigmas": (1.0,)} | ({"lambdas": (0.1,)} if make in (imp.ULSIF, imp.RuLSIF) else {})
        est = make(**single).fit(r, s)
        assert est.folds_ == 0 and est.cv_scores_ == {} and est.sigma_ == 1.0
        w = est.weights(syn)
        assert w.shape == (10,) and np.all(np.isfinite(w)) and np.all(w >= 0)


@pytest.mark.parametrize("make", [lambda: imp.ULSIF(folds=2), lambda: imp.KLIEP(folds=2), lambda: imp.KMM(folds=2)])
@pytest.mark.parametrize("scale,shift", [(1e150, 0.0), (1e-150, 0.0), (3.0, 1e6), (2.0**-40, -3e-7), (1e306, 1e307)])
def test_estimators_are_invariant_to_feature_scale_and_offset(make, scale, shift):
    """Kernels depend on distances and the default bandwidths on the median distance: an affine
    change of units must not change the weights (the reference is the same fit on unit-scale data)."""
    rng = np.random.default_rng(13)
    real, syn, probe = rng.normal(0.5, 1, (40, 2)), rng.normal(0, 1, (50, 2)), rng.normal(0, 1, (7, 2))
    ref = make().fit(real, syn)
    est = make().fit(real * scale + shift, syn * scale + shift)
    assert est.sigma_ == pytest.approx(ref.sigma_ * scale, rel=1e-6)
    np.testing.assert_allclose(est.weights(probe * scale + shift), ref.weights(probe), rtol=1e-5, atol=1e-9)


def test_median_distance_matches_pdist_at_every_scale():
    from scipy.spatial.distance import pdist

    x = np.random.default_rng(14).normal(size=(30, 3))
    for scale in (1e-200, 1.0, 1e200):
        assert imp.median_distance(x * scale + 7 * scale) == pytest.approx(np.median(pdist(x)) * scale, rel=1e-12)


def test_kliep_likelihood_matches_scipy():
    """The Newton solver reaches the constrained maximum likelihood found by SLSQP on the original problem."""
    rng = np.random.default_rng(15)
    real, syn = rng.normal(0.5, 1, (60, 2)), rng.normal(0, 1, (80, 2))
    est = imp.KLIEP(sigmas=(0.8,), num_centers=8, tol=1e-9).fit(real, syn)
    centers, theta, sigma = est.state_

    def phi(x):
        return np.exp(-((x[:, None, :] - centers[None]) ** 2).sum(-1) / (2 * sigma**2))

    pr, ps = phi(real), phi(syn)
    res = optimize.minimize(
        lambda b: -np.mean(np.log(pr @ b)), np.full(8, 1.0 / np.mean(ps.sum(1))), bounds=[(0, None)] * 8,
        constraints=[{"type": "eq", "fun": lambda b: np.mean(ps @ b) - 1}], method="SLSQP", options={"ftol": 1e-14},
    )  # fmt: skip
    assert res.success
    assert np.mean(ps @ theta) == pytest.approx(1.0, rel=1e-9)
    assert np.mean(np.log(pr @ theta)) >= -res.fun - 1e-9
    assert np.mean(np.log(pr @ theta)) <= -res.fun + 1e-6  # SLSQP is the feasible, slightly looser side
    assert est.kkt_gap_ <= 1e-9 and est.n_iter_ < 200


def test_kliep_warns_when_stopped_by_max_iter():
    rng = np.random.default_rng(16)
    with pytest.warns(imp.DensityRatioWarning, match="KLIEP stopped after max_iter=1 Newton steps"):
        est = imp.KLIEP(sigmas=(1.0,), max_iter=1).fit(rng.normal(0.5, 1, (30, 2)), rng.normal(0, 1, (30, 2)))
    assert est.kkt_gap_ > est.tol


def test_kmm_subset_solves_the_quadratic_program_on_its_support():
    """approximation='subset': the QP over the drawn synthetic rows, matched to the kernel mean of all real rows."""
    rng = np.random.default_rng(17)
    real, syn = rng.normal(0.5, 1, (60, 2)), rng.normal(0, 1, (100, 2))
    est = imp.KMM(sigmas=(1.0,), bound=5.0, approximation="subset", subset_size=30, iterations=20000, tol=1e-10)
    est.fit(real, syn)
    assert est.approximation_ == "subset" and len(np.unique(est.support_)) == 30
    pts = syn[est.support_]
    k = np.exp(-((pts[:, None] - pts[None]) ** 2).sum(-1) / 2)
    kappa = 30 / 60 * np.exp(-((pts[:, None] - real[None]) ** 2).sum(-1) / 2).sum(1)
    eps = (np.sqrt(30) - 1) / np.sqrt(30)

    def qp(b):
        return 0.5 * b @ k @ b - kappa @ b

    cons = [{"type": "ineq", "fun": lambda b: 30 * eps - abs(b.sum() - 30)}]
    ref = optimize.minimize(qp, np.ones(30), bounds=[(0, 5)] * 30, constraints=cons, method="SLSQP", tol=1e-12)
    assert qp(est.beta_) <= ref.fun + 1e-5 * abs(ref.fun)
    # weights(x) smooths beta over the support only.
    kx = np.exp(-((syn[:5, None] - pts[None]) ** 2).sum(-1) / 2)
    np.testing.assert_allclose(est.weights(syn[:5]), kx @ est.beta_ / kx.sum(1), rtol=1e-9)
    auto_small = imp.KMM(sigmas=(1.0,), subset_size=200).fit(real, syn)
    assert auto_small.approximation_ == "exact" and len(auto_small.support_) == 100
    assert imp.KMM(sigmas=(1.0,), subset_size=50).fit(real, syn).approximation_ == "subset"


def test_kmm_subset_still_ranks_like_the_true_ratio():
    real, syn, ratio = _gaussian_pair(np.random.default_rng(0))
    est = imp.KMM(folds=3, subset_size=150).fit(real, syn)  # 150 of the 600 synthetic rows carry the QP
    assert est.approximation_ == "subset"
    assert stats.spearmanr(est.weights(syn), ratio(syn)).statistic >= 0.9


def test_large_kernel_allocations_warn_first():
    rng = np.random.default_rng(18)
    real, syn = rng.normal(0.5, 1, (30, 2)), rng.normal(0, 1, (40, 2))
    est = imp.KMM(sigmas=(1.0,), approximation="exact")
    est.memory_limit = 6 * 40 * 40 * 8 - 1  # about six (40, 40) float64 matrices live at once on the exact path
    with pytest.warns(imp.KernelMemoryWarning, match=r"shape \(40, 40\)"):
        est.fit(real, syn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", imp.KernelMemoryWarning)
        imp.KMM(sigmas=(1.0,), approximation="exact").fit(real, syn)  # the default limit: 1 GiB
    ulsif = imp.ULSIF(sigmas=(1.0,), lambdas=(0.1,))
    ulsif.memory_limit = 1000
    with pytest.warns(imp.KernelMemoryWarning, match="distances to the kernel centers"):
        ulsif.fit(real, syn)


# --------------------------------------------------------------------------- weights and diagnostics


@given(st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 100)), min_size=1, max_size=30).filter(lambda v: sum(v) > 0))
def test_ess_equals_n_over_one_plus_squared_coefficient_of_variation(w):
    w = np.asarray(w)
    cv2 = np.var(w) / np.mean(w) ** 2
    assert imp.effective_sample_size(w) == pytest.approx(len(w) / (1 + cv2), rel=1e-9)


@pytest.mark.parametrize("k,n", [(1, 5), (3, 10), (10, 10)])
def test_ess_of_k_equal_weights_is_k(k, n):
    w = np.zeros(n)
    w[:k] = 3.7
    assert imp.effective_sample_size(w) == pytest.approx(k)


@pytest.mark.parametrize("mu", [0.3, 1.0])
def test_ess_of_gaussian_shift_ratio_matches_its_limit(mu):
    """w = N(mu,1)/N(0,1) on x ~ N(0,1): ESS/n -> E[w]^2 / E[w^2] = exp(-mu^2)."""
    x = np.random.default_rng(5).normal(size=400_000)
    frac = imp.effective_sample_size(np.exp(mu * x - mu**2 / 2)) / x.size
    assert frac == pytest.approx(np.exp(-(mu**2)), rel=0.05)


def test_diagnostics_warn_when_ess_is_small():
    w = np.r_[np.full(99, 0.01), 100.0]
    with pytest.warns(imp.ImportanceWeightWarning, match="effective sample size"):
        d = imp.weight_diagnostics(w, warn_below=0.1)
    assert d.ess < 1.1 and d.max_weight == pytest.approx(100 / w.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imp.weight_diagnostics(np.ones(10))


def test_transform_weights_power_and_clipping():
    w = np.array([0.5, 1.0, 2.0, 8.0])
    np.testing.assert_allclose(imp.transform_weights(w, power=0.0), 1.0)
    np.testing.assert_allclose(imp.transform_weights(w, power=0.5, normalize=False), np.sqrt(w))
    np.testing.assert_allclose(imp.transform_weights(w, clip=2.0, normalize=False), [0.5, 1.0, 2.0, 2.0])
    q = np.quantile(w, 0.5)
    np.testing.assert_allclose(imp.transform_weights(w, clip_quantile=0.5, normalize=False), np.minimum(w, q))
    assert imp.transform_weights(w).mean() == pytest.approx(1.0)
    assert imp.effective_sample_size(imp.transform_weights(w, power=0.5)) > imp.effective_sample_size(w)


def test_weights_are_the_nominal_distribution_of_every_reduction():
    losses = jnp.array([0.1, 2.0, 0.5, 3.0])
    w = np.array([1.0, 0.0, 2.0, 1.0])
    # Zero weight drops an example; DRO around the reweighted distribution.
    kept = jnp.array([0.1, 0.5, 3.0])
    np.testing.assert_allclose(rl.cvar(losses, 0.5, weights=w), rl.cvar(jnp.repeat(kept, jnp.array([1, 2, 1])), 0.5))
    obj = objectives.importance_weighted(self_normalize=False)
    value, _ = obj.loss(lambda p, b: b["x"], None, {"x": losses, "weight": jnp.asarray(w)}, (), None)
    assert float(value) == pytest.approx(float(jnp.mean(w * losses)))
    value, _ = objectives.importance_weighted().loss(lambda p, b: b["x"], None, {"x": losses, "weight": w}, (), None)
    assert float(value) == pytest.approx(float(np.sum(w * losses) / w.sum()))


# --------------------------------------------------------------------------- group DRO


def _two_groups(rng, n, minority):
    """Group g's label is the sign of feature g: no single linear rule serves both. The minority's
    labels are also 10% noisy, so it stays the worst group at the minimax solution."""
    group = (rng.random(n) < minority).astype(np.int32)
    x = rng.normal(size=(n, 2))
    y = (np.where(group == 0, x[:, 0], x[:, 1]) > 0).astype(np.int32)
    y = np.where((group == 1) & (rng.random(n) < 0.1), 1 - y, y)
    return {"x": x, "y": y, "group": group}


def _linear(params, x):
    return x @ params["w"] + params["b"][None, :]


def _train(objective, data, batch_size, epochs=40):
    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    trainer = rl.train.Trainer(
        _linear,
        optax.softmax_cross_entropy_with_integer_labels,
        objective,
        optax.adam(0.05),
        params=params,
        batch_size=batch_size,
        verbose=False,
    )
    trainer.fit(data, epochs=epochs)
    return trainer


def _worst_group_loss(trainer, data):
    losses = optax.softmax_cross_entropy_with_integer_labels(trainer.predict(data["x"]), data["y"])
    means, _ = imp.group_means(losses, data["group"], 2)
    return float(jnp.max(means))


def test_group_dro_concentrates_on_the_worst_group_and_beats_erm_there():
    rng = np.random.default_rng(6)
    train, test = _two_groups(rng, 2000, 0.05), _two_groups(rng, 4000, 0.5)
    erm = _train(objectives.erm(), train, 128)
    counts = np.bincount(train["group"], minlength=2)
    gdro = _train(objectives.group_dro(2, step_size=0.05, adjustment=1.0, group_counts=counts), train, 128)
    q = np.asarray(gdro.state.obj_state.weights)
    losses = optax.softmax_cross_entropy_with_integer_labels(erm.predict(train["x"]), train["y"])
    worst = int(jnp.argmax(imp.group_means(losses, train["group"], 2)[0]))
    assert worst == 1 and np.argmax(q) == worst
    assert q[worst] > 0.6  # it holds 5% of the data
    assert _worst_group_loss(gdro, test) < _worst_group_loss(erm, test) - 0.05
    full = _train(objectives.worst_group(2), train, None, epochs=150)
    assert _worst_group_loss(full, test) < _worst_group_loss(erm, test) - 0.05


def test_group_dro_step_matches_exponentiated_gradient():
    losses = np.array([1.0, 3.0, 2.0, 5.0])
    groups = np.array([0, 0, 2, 2])  # group 1 absent from the batch
    counts = np.array([10.0, 5.0, 40.0])
    obj = objectives.group_dro(3, step_size=0.3, adjustment=2.0, group_counts=counts)
    state = objectives.GroupDROState(jnp.array([0.2, 0.3, 0.5]))
    value, (new, metrics) = obj.loss(lambda p, b: b["x"], None, {"x": losses, "group": groups}, state, None)
    adjusted = np.array([2.0, 0.0, 3.5]) + 2.0 / np.sqrt(counts)
    q = np.array([0.2, 0.3, 0.5]) * np.exp(0.3 * np.where([True, False, True], adjusted, 0.0))
    q /= q.sum()
    np.testing.assert_allclose(new.weights, q, rtol=1e-6)
    assert float(value) == pytest.approx(q[0] * adjusted[0] + q[2] * adjusted[2], rel=1e-6)
    assert float(metrics["worst_group_loss"]) == pytest.approx(3.5)


@given(st.lists(st.tuples(st.floats(0, 10), st.integers(0, 3), st.booleans()), min_size=1, max_size=12))
def test_worst_group_equals_brute_force(rows):
    losses, groups, live = (np.asarray(c) for c in zip(*rows, strict=True))
    batch = {"x": jnp.asarray(losses), "group": jnp.asarray(groups, jnp.int32), "mask": jnp.asarray(live)}
    value, _ = objectives.worst_group(4).loss(lambda p, b: b["x"], None, batch, (), None)
    means = [losses[(groups == g) & live].mean() for g in range(4) if np.any((groups == g) & live)]
    assert float(value) == pytest.approx(max(means) if means else 0.0)


def test_group_dro_gradient_is_the_q_weighted_group_gradient():
    x = jnp.array([1.0, 2.0, 3.0])
    groups = jnp.array([0, 1, 1])
    obj = objectives.group_dro(2, step_size=1.0)
    state = obj.init(None)

    def value(theta):
        return obj.loss(lambda p, b: p * b["x"], theta, {"x": x, "group": groups}, state, None)[0]

    q = jax.nn.softmax(jnp.array([1.0, 2.5]))  # group means at theta = 1
    assert float(jax.grad(value)(1.0)) == pytest.approx(float(q[0] * 1.0 + q[1] * 2.5), rel=1e-6)


# --------------------------------------------------------------------------- sources and generations


def test_source_weights_give_each_source_its_mass():
    source = np.array([0, 0, 1, 1, 1, 2])
    w = imp.source_weights(source, [0.5, 0.3, 0.2])
    np.testing.assert_allclose([w[source == k].sum() / len(w) for k in range(3)], [0.5, 0.3, 0.2])
    uniform = imp.source_weights(source, np.bincount(source))
    np.testing.assert_allclose(uniform, 1.0)


def test_validation_chosen_source_weights_beat_uniform_on_a_contaminated_mixture():
    """Mean estimation from real + two biased generators; a small real validation set picks the mixture."""
    rng = np.random.default_rng(7)
    d, mu = 5, np.zeros(5)
    source = np.repeat([0, 1, 2], [40, 400, 400])
    errors = {"uniform": [], "selected": []}
    for _ in range(100):
        x = np.concatenate(
            [
                rng.normal(size=(40, d)),  # real
                rng.normal(size=(400, d)) + 0.3,  # generator: biased
                0.2 * rng.normal(size=(400, d)) + 0.2,  # collapsed generator: biased, low variance
            ]
        )
        val = rng.normal(size=(40, d))

        def fit(w, x=x):
            return (w[:, None] * x).sum(0) / w.sum()

        def score(m, val=val):
            return float(np.mean(np.sum((val - m) ** 2, 1)))

        chosen = imp.select_mixture(source, fit, score, resolution=5)
        errors["selected"].append(np.sum((chosen.result - mu) ** 2))
        errors["uniform"].append(np.sum((x.mean(0) - mu) ** 2))
    assert np.mean(errors["selected"]) < 0.5 * np.mean(errors["uniform"])


def _recursive_means(rng, alpha, counts, d, reps):
    """Sample-level recursive contamination: each generation mixes alpha of samples from the previous
    uniform-ERM model N(Y, I) with 1 - alpha real samples N(0, I)."""
    out = np.zeros((reps, len(counts), d))
    for r in range(reps):
        total, n_total = np.zeros(d), 0
        for t, n in enumerate(counts):
            n_syn = 0 if t == 0 else int(round(alpha * n))
            y = total / max(n_total, 1)
            x = np.concatenate([rng.normal(size=(n - n_syn, d)), y + rng.normal(size=(n_syn, d))])
            out[r, t] = x.mean(0)
            total, n_total = total + x.sum(0), n_total + n
    return out


def test_generation_weights_beat_uniform_erm_under_recursive_contamination():
    rng = np.random.default_rng(8)
    alpha, counts, d = 0.8, [50, 50, 50, 50, 50, 50], 4
    means = _recursive_means(rng, alpha, counts, d, 1500)
    sigma = imp.contamination_covariance(alpha, counts)
    beta = imp.generation_weights(alpha, counts)
    uniform = np.asarray(counts) / np.sum(counts)
    mse = {k: np.mean(np.sum(np.einsum("rtd,t->rd", means, b) ** 2, 1)) for k, b in (("u", uniform), ("b", beta))}
    # Monte Carlo agrees with the covariance formula (unit noise, d coordinates) ...
    assert mse["u"] == pytest.approx(d * uniform @ sigma @ uniform, rel=0.1)
    assert mse["b"] == pytest.approx(d * beta @ sigma @ beta, rel=0.1)
    # ... and the best linear unbiased weights have lower error than uniform ERM.
    assert mse["b"] < 0.9 * mse["u"]
    assert imp.generation_weights(0.0, counts) == pytest.approx(uniform)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make,real,syn,match",
    [
        (imp.ULSIF, np.zeros((5, 2)), np.zeros((5, 3)), "same number of features"),
        (imp.KLIEP, np.zeros((0, 2)), np.zeros((5, 2)), "`real` is empty"),
        (imp.KMM, np.zeros((5, 2)), np.zeros((0, 2)), "`synthetic` is empty"),
        (imp.ProbabilisticClassifier, np.zeros((5, 2)), np.full((5, 2), np.nan), "NaN"),
    ],
)
def test_bad_samples_raise(make, real, syn, match):
    with pytest.raises(ValueError, match=match):
        make().fit(real, syn)


@pytest.mark.parametrize("make", [imp.ULSIF, imp.RuLSIF, imp.KLIEP, imp.KMM])
@pytest.mark.parametrize("sigmas", [(0.0,), (-1.0, 1.0), (np.nan,)])
def test_non_positive_bandwidth_raises(make, sigmas):
    with pytest.raises(ValueError, match=r"`sigmas` must be positive.*\(0, inf\)"):
        make(sigmas=sigmas)


def test_weights_before_fit_and_wrong_dimension_raise():
    with pytest.raises(RuntimeError, match="not fitted"):
        imp.ULSIF().weights(np.zeros((2, 2)))
    _, _, _, est = _fitted("gaussian_shift", "ulsif")
    with pytest.raises(ValueError, match="fitted on 2"):
        est.weights(np.zeros((2, 3)))


@pytest.mark.parametrize("fn", [imp.effective_sample_size, imp.transform_weights, imp.weight_diagnostics])
@pytest.mark.parametrize(
    "w,match", [([1.0, np.nan], "finite"), ([1.0, -1.0], r"\[0, inf\)"), ([0.0, 0.0], "positive total")]
)
def test_bad_weights_raise(fn, w, match):
    with pytest.raises(ValueError, match=match):
        fn(np.asarray(w))


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1.0, 1e200, 1e300])
def test_ess_transform_and_diagnostics_are_exact_at_every_scale(scale):
    base = np.array([1.0, 3.0, 0.5, 0.0, 2.0])
    expected_ess = base.sum() ** 2 / np.sum(base**2)  # on well-scaled weights: an independent reference
    assert imp.effective_sample_size(scale * base) == pytest.approx(expected_ess, rel=1e-14)
    np.testing.assert_allclose(imp.transform_weights(scale * base), base / base.mean(), rtol=1e-14)
    d = imp.weight_diagnostics(scale * base)
    assert d.ess == pytest.approx(expected_ess, rel=1e-14)
    assert d.max_weight == pytest.approx(base.max() / base.mean(), rel=1e-14)
    # source 0 gets mass 1/4 on 1 example, source 1 gets 3/4 on 2 examples; mean 1 over 3 examples.
    np.testing.assert_allclose(imp.source_weights([0, 1, 1], scale * np.array([1.0, 3.0])), [0.75, 1.125, 1.125])


@pytest.mark.parametrize(
    "w,expected",
    [([1e308, 1e308], [1.0, 1.0]), ([1e-320, 1e-320], [1.0, 1.0]), ([1e308, 0.0], [2.0, 0.0])],
)
def test_transform_weights_near_the_float64_limits(w, expected):
    np.testing.assert_allclose(imp.transform_weights(w), expected, rtol=1e-14)


def test_low_ess_warns_whatever_the_scale():
    w = np.r_[1e200, np.full(99, 1e-200)]  # ESS 1 of 100
    with pytest.warns(imp.ImportanceWeightWarning, match="effective sample size 1.0 of 100"):
        d = imp.weight_diagnostics(w)
    assert d.ess == pytest.approx(1.0)


def test_bad_transform_arguments_raise():
    with pytest.raises(ValueError, match=r"`power` must be in \[0, 1\]"):
        imp.transform_weights([1.0], power=2.0)
    with pytest.raises(ValueError, match=r"`clip_quantile` must be in \(0, 1\]"):
        imp.transform_weights([1.0], clip_quantile=0.0)
    with pytest.raises(ValueError, match=r"`clip` must be in \(0, inf\]"):
        imp.transform_weights([1.0], clip=-1.0)
    with pytest.raises(ValueError, match=r"`power` must be in \[0, 1\]"):
        imp.transform_weights([1.0], power=np.nan)
    with pytest.raises(TypeError, match="`power` must be a real number"):
        imp.transform_weights([1.0], power="1")
    with pytest.raises(TypeError, match="`normalize` must be a bool"):
        imp.transform_weights([1.0], normalize="yes")
    with pytest.raises(ValueError, match=r"`warn_below` must be in \[0, 1\]"):
        imp.weight_diagnostics([1.0], warn_below=np.nan)


def test_group_ids_out_of_range_or_missing_raise():
    data = _two_groups(np.random.default_rng(9), 64, 0.5)
    obj = objectives.group_dro(2)
    with pytest.raises(ValueError, match=r"`group` ids must be in \[0, 1\]"):
        _train(obj, {**data, "group": data["group"] + 1}, 16, epochs=1)
    with pytest.raises(ValueError, match="needs group ids in the batch under 'group'"):
        _train(objectives.worst_group(2), {"x": data["x"], "y": data["y"]}, None, epochs=1)
    with pytest.raises(ValueError, match="needs group ids"):
        obj.loss(lambda p, b: b["x"], None, {"x": jnp.ones(3)}, obj.init(None), None)
    with pytest.raises(ValueError, match="ids must be in"):
        obj.loss(lambda p, b: b["x"], None, {"x": jnp.ones(2), "group": np.array([0, 5])}, obj.init(None), None)
    # Traced out-of-range ids cannot raise: the value becomes NaN (and the trainer stops on it).
    traced = jax.jit(
        lambda g: obj.loss(lambda p, b: b["x"], None, {"x": jnp.ones(2), "group": g}, obj.init(None), None)[0]
    )
    assert np.isnan(traced(jnp.array([0, 5])))
    with pytest.raises(ValueError, match="`num_groups` must be a positive int"):
        objectives.group_dro(0)
    with pytest.raises(ValueError, match="needs `group_counts`"):
        objectives.group_dro(2, adjustment=1.0)


def test_nan_weights_in_training_data_raise():
    data = _two_groups(np.random.default_rng(10), 32, 0.5)
    w = np.ones(32)
    w[3] = np.nan
    with pytest.raises(ValueError, match=r"`train\['weight'\]` must be 32 finite non-negative"):
        _train(objectives.importance_weighted(), {**data, "weight": w}, 16, epochs=1)
    with pytest.raises(ValueError, match="positive mass to sources without examples"):
        imp.source_weights(np.array([0, 0]), [0.5, 0.5])
    with pytest.raises(ValueError, match=r"`source` ids must be in \[0, 1\]"):
        imp.source_weights(np.array([0, 2]), [0.5, 0.5])


# --------------------------------------------------------------------------- mixtures: grids and projections


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("r", [1, 2, 4])
def test_simplex_grid_equals_brute_force_enumeration(k, r):
    import itertools

    brute = sorted(c for c in itertools.product(range(r + 1), repeat=k) if sum(c) == r)
    np.testing.assert_array_equal(imp.simplex_grid(k, r), np.asarray(brute, float) / r)


def test_simplex_grid_generates_large_grids_directly():
    from math import comb

    grid = imp.simplex_grid(16, 4)  # (4 + 1)^16 = 1.5e11 tuples would take hours to enumerate
    assert grid.shape == (comb(19, 15), 16)
    np.testing.assert_allclose(grid.sum(1), 1.0)
    assert len({tuple(row) for row in grid}) == len(grid) and np.all(np.round(grid * 4) == grid * 4)
    assert imp.simplex_grid(np.int64(3), np.int32(2)).shape == (6, 3)


@pytest.mark.parametrize(
    "args",
    [(2.5, 3), (3, 2.0), (0, 3), (3, 0), (-1, 2), (True, 2), ("3", 2), (3, None)],
)
def test_simplex_grid_bad_arguments_raise(args):
    with pytest.raises(ValueError, match=r"must be a positive int, in \[1, inf\)"):
        imp.simplex_grid(*args)


def test_simplex_grid_refuses_astronomical_grids():
    with pytest.raises(ValueError, match="would have .* rows"):
        imp.simplex_grid(30, 40)


def test_select_mixture_rejects_bad_candidates_and_callables():
    source = np.array([0, 0, 1, 1])
    fit, score = (lambda w: w), (lambda r: float(r[0]))
    for bad in ([[np.nan, 1.0]], [[-0.5, 1.5]], np.zeros((0, 2))):
        with pytest.raises(ValueError, match="`candidates` must"):
            imp.select_mixture(source, fit, score, candidates=np.asarray(bad))
    with pytest.raises(TypeError, match="`fit` and `score` must be callables"):
        imp.select_mixture(source, None, score)
    with pytest.raises(ValueError, match="`resolution` must be a positive int"):
        imp.select_mixture(source, fit, score, resolution=2.5)


def _simplex_projection_reference(beta):
    """argmin ||a - beta||^2 over the simplex, by scipy's SLSQP (independent of the sorting formula)."""
    k = len(beta)
    res = optimize.minimize(
        lambda a: np.sum((a - beta) ** 2), np.full(k, 1 / k), jac=lambda a: 2 * (a - beta), bounds=[(0, None)] * k,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}], method="SLSQP", options={"ftol": 1e-15},
    )  # fmt: skip
    return res.x


@given(st.lists(st.floats(-3, 3), min_size=1, max_size=6))
def test_clip_mixture_is_the_euclidean_projection(beta):
    beta = np.asarray(beta)
    got = imp.clip_mixture(beta)
    assert np.all(got >= 0) and got.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(got, _simplex_projection_reference(beta), atol=1e-6)


def test_clip_mixture_huge_entries_use_shift_invariance():
    np.testing.assert_allclose(imp.clip_mixture([1e308, 1e308]), [0.5, 0.5])
    np.testing.assert_allclose(imp.clip_mixture([1e308, -1e308, 1e308]), [0.5, 0.0, 0.5], atol=1e-12)
    # Shifted by 1e10, [0, -0.5] projects to [0.75, 0.25]; -1e308 is far below and gets nothing.
    np.testing.assert_allclose(imp.clip_mixture([1e10, 1e10 - 0.5, -1e308]), [0.75, 0.25, 0.0], atol=1e-12)
    np.testing.assert_allclose(imp.clip_mixture(1e300 + np.array([0.0, 0.0, 0.0])), [1 / 3] * 3)


@pytest.mark.parametrize(
    "beta,error,match",
    [
        ([np.nan, 1.0], ValueError, "`beta` must be finite"),
        ([np.inf, 1.0], ValueError, "`beta` must be finite"),
        ([], ValueError, "non-empty vector"),
        ([[0.5, 0.5]], ValueError, "non-empty vector"),
        (["a", "b"], TypeError, "real numbers"),
    ],
)
def test_clip_mixture_bad_inputs_raise(beta, error, match):
    with pytest.raises(error, match=match):
        imp.clip_mixture(beta)

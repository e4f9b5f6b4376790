"""importance.divergence and the default ProbabilisticClassifier.

References are closed forms (Gaussian and discrete f-divergences, checked here against
numerical integration), exact-proportion samples with the true ratio (no sampling error),
and Monte Carlo coverage with binomial tolerances. The 500-simulation coverage runs are in
benchmarks/radius_coverage.py (results in docs/radius.md); the fast versions here can fail.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from robustlearn import importance as imp

# --------------------------------------------------------------------------- closed forms


def gaussian_power_integral(mu_p, cov_p, mu_q, cov_q, k):
    """log of the integral of p^k q^(1-k) for Gaussians p, q (finite iff k/cov_p + (1-k)/cov_q is PD)."""
    ip, iq = np.linalg.inv(cov_p), np.linalg.inv(cov_q)
    a = k * ip + (1 - k) * iq
    if np.min(np.linalg.eigvalsh(a)) <= 0:
        return np.inf
    b = k * ip @ mu_p + (1 - k) * iq @ mu_q
    c = k * mu_p @ ip @ mu_p + (1 - k) * mu_q @ iq @ mu_q
    logdet = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    quad = b @ np.linalg.solve(a, b) - c
    return -k / 2 * logdet(cov_p) - (1 - k) / 2 * logdet(cov_q) - 0.5 * logdet(a) + 0.5 * quad


def gaussian_divergence(kind, mu_p, cov_p, mu_q, cov_q, k=2.0):
    """D(P||Q) in the library's conventions: chi_square = (E_Q w^2 - 1)/2, Cressie-Read f_k, KL."""
    mu_p, mu_q, cov_p, cov_q = map(np.asarray, (mu_p, mu_q, cov_p, cov_q))
    if kind == "kl":
        iq, d = np.linalg.inv(cov_q), len(mu_p)
        diff = mu_q - mu_p
        logdet = np.linalg.slogdet(cov_q)[1] - np.linalg.slogdet(cov_p)[1]
        return 0.5 * (np.trace(iq @ cov_p) + diff @ iq @ diff - d + logdet)
    return (np.exp(gaussian_power_integral(mu_p, cov_p, mu_q, cov_q, k)) - 1) / (k * (k - 1))


def discrete_divergence(kind, p, q, k=2.0):
    p, q = np.asarray(p, float), np.asarray(q, float)
    if kind == "kl":
        return float(np.sum(np.where(p > 0, p * np.log(p / q), 0.0)))
    return float((np.sum(p**k * q ** (1 - k)) - 1) / (k * (k - 1)))


@pytest.mark.parametrize("kind,k", [("chi_square", 2.0), ("kl", None), ("cressie_read", 1.5), ("cressie_read", 3.0)])
@pytest.mark.parametrize("mu_p,s_p,mu_q,s_q", [(0.7, 1.0, 0.0, 1.0), (0.3, 0.8, -0.2, 1.3), (0.0, 1.2, 0.5, 1.0)])
def test_gaussian_closed_form_matches_numerical_integration(kind, k, mu_p, s_p, mu_q, s_q):
    p, q = stats.norm(mu_p, s_p), stats.norm(mu_q, s_q)
    if kind == "kl":
        integrand = lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x))  # noqa: E731
    else:
        # q f_k(p/q) = (p^k q^(1-k) - k p + (k-1) q) / (k(k-1)), the power in log space.
        def integrand(x):
            power = np.exp(k * p.logpdf(x) + (1 - k) * q.logpdf(x))
            return (power - k * p.pdf(x) + (k - 1) * q.pdf(x)) / (k * (k - 1))

    ref = integrate.quad(integrand, -40, 40, limit=400, epsabs=1e-12)[0]
    closed = gaussian_divergence(kind, [mu_p], [[s_p**2]], [mu_q], [[s_q**2]], k or 2.0)
    assert closed == pytest.approx(ref, rel=1e-7)


# --------------------------------------------------------------------------- exact constants


class Oracle:
    """A 'ratio estimator' that returns the true ratio: isolates the estimator's formulas."""

    def __init__(self, ratio):
        self.ratio = ratio

    def fit(self, real, synthetic):
        return self

    def weights(self, x):
        return self.ratio(np.asarray(x, float))


@given(
    p0=st.floats(0.05, 0.95),
    q0=st.floats(0.05, 0.95),
    kind_k=st.sampled_from([("chi_square", None), ("kl", None), ("cressie_read", 1.5), ("cressie_read", 2.5)]),
)
def test_exact_proportions_with_the_true_ratio_give_the_closed_form(p0, q0, kind_k):
    # Samples whose category frequencies ARE p and q (to 1/1000): with the true ratio the
    # estimator's sample means are the population expectations, so the estimate is exact.
    kind, k = kind_k
    n = 1000
    p, q = np.array([round(p0 * n), n - round(p0 * n)]) / n, np.array([round(q0 * n), n - round(q0 * n)]) / n
    real = np.repeat([0.0, 1.0], (p * n).astype(int))[:, None]
    syn = np.repeat([0.0, 1.0], (q * n).astype(int))[:, None]
    oracle = Oracle(lambda x: (p / q)[x[:, 0].astype(int)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", imp.SupportWarning)
        d = imp.divergence(real, syn, kind, k=k, estimator=oracle)
    assert d.estimate == pytest.approx(discrete_divergence(kind, p, q, k or 2.0), rel=1e-9, abs=1e-12)
    assert d.upper >= d.estimate


def test_chi_square_is_cressie_read_with_k_2_and_equal_distributions_give_zero():
    rng = np.random.default_rng(0)
    real, syn = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 0.3
    est = imp.DiscreteRatio()  # any estimator: the two kinds share the fits
    a = imp.divergence(np.round(real), np.round(syn), "chi_square", estimator=est)
    b = imp.divergence(np.round(real), np.round(syn), "cressie_read", k=2.0, estimator=est)
    assert (a.estimate, a.upper) == pytest.approx((b.estimate, b.upper), rel=1e-12)
    same = imp.divergence(real, real, "kl", estimator=Oracle(lambda x: np.ones(len(x))))
    assert same.estimate == 0.0 and same.std_error == 0.0 and same.ess_fraction == pytest.approx(1.0)


# --------------------------------------------------------------------------- against closed forms


@pytest.mark.parametrize(
    "name,mu_p,s_p,s_q",
    [("mean_shift", 0.7, 1.0, 1.0), ("unequal_covariance", 0.5, 1.0, 1.3)],
)
def test_gaussian_divergences_match_the_closed_form(name, mu_p, s_p, s_q):
    # n = 1,000 / 1,000 in 2-D with the default estimator. Tolerance: 4 standard errors plus
    # 10% (the ratio model's second-order bias, see docs/radius.md); a wrong constant
    # (e.g. chi^2 without the 1/2, or the E_Q w^2 form) is off by 100% and fails.
    d = 2
    rng = np.random.default_rng(1)
    real = rng.normal(size=(1000, d)) * s_p + np.array([mu_p, 0.0])
    syn = rng.normal(size=(1000, d)) * s_q
    for kind in ("chi_square", "kl"):
        truth = gaussian_divergence(kind, [mu_p, 0.0], s_p**2 * np.eye(d), np.zeros(d), s_q**2 * np.eye(d))
        est = imp.divergence(real, syn, kind, seed=1)
        assert abs(est.estimate - truth) <= 4 * est.std_error + 0.1 * truth, (kind, est.estimate, truth)
        assert est.upper > est.estimate > 0 and est.uncovered_fraction < 0.05
        assert 0 < est.ess_fraction < 1


def test_discrete_divergences_match_the_closed_form():
    rng = np.random.default_rng(2)
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.25, 0.25, 0.25, 0.25])
    real = rng.choice(4, 2000, p=p)[:, None].astype(float)
    syn = rng.choice(4, 2000, p=q)[:, None].astype(float)
    for kind, k in [("chi_square", None), ("kl", None), ("cressie_read", 1.5)]:
        truth = discrete_divergence(kind, p, q, k or 2.0)
        est = imp.divergence(real, syn, kind, k=k, estimator=imp.DiscreteRatio())
        assert abs(est.estimate - truth) <= 4 * est.std_error, (kind, est.estimate, truth)
        assert est.std_error < 0.5 * truth


def test_upper_bound_coverage_fast_version():
    # 60 simulations of a 4-category pair (n = 400/400) at two levels. At the 90% level a
    # correct bound covers Bin(60, 0.9): >= 46 with probability > 0.999; a bound without the
    # standard-error term covers about half the time. At the 50% level the bound is the
    # estimate itself: coverage must be near 1/2 (within [0.3, 0.7], probability > 0.99
    # under a bias-free estimator), which fails if the estimator is biased by one s.e.
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.25, 0.25, 0.25, 0.25])
    truth = discrete_divergence("chi_square", p, q)
    hits90, hits50 = 0, 0
    for s in range(60):
        rng = np.random.default_rng(100 + s)
        real = rng.choice(4, 400, p=p)[:, None].astype(float)
        syn = rng.choice(4, 400, p=q)[:, None].astype(float)
        est = imp.divergence(real, syn, "chi_square", estimator=imp.DiscreteRatio(), confidence=0.9, seed=s)
        hits90 += est.upper >= truth
        hits50 += est.estimate >= truth
    assert hits90 >= 46
    assert 18 <= hits50 <= 42


def test_upper_bound_covers_with_the_true_ratio_in_one_dimension():
    # With the oracle ratio the only error is the sample means': coverage is the CLT's.
    def ratio(x):
        return np.exp(0.5 * x[:, 0] - 0.125)  # N(0.5, 1) over N(0, 1)

    truth = 0.5 * (np.exp(0.25) - 1)
    hits = 0
    for s in range(60):
        rng = np.random.default_rng(200 + s)
        real, syn = rng.normal(0.5, 1, (400, 1)), rng.normal(0, 1, (400, 1))
        hits += imp.divergence(real, syn, "chi_square", estimator=Oracle(ratio), confidence=0.9).upper >= truth
    assert hits >= 46


def test_jackknife_correction_removes_the_second_order_bias():
    # 20 categories, 300/300 rows: the plug-in ratio is noisy and the uncorrected estimate
    # loses about half of chi^2 (its bias is -E_Q (w_hat - w)^2 / 2). Over 60 samples the
    # corrected mean must be within 15% of the truth (its Monte Carlo s.e. is ~5%) while the
    # uncorrected one is more than 30% low.
    from robustlearn._src.weighting.divergence import bound, cross_fit

    p = np.random.default_rng(0).dirichlet(np.full(20, 2.0))
    q = np.full(20, 0.05)
    for kind in ("chi_square", "kl"):
        truth = discrete_divergence(kind, p, q)
        raw, corrected = [], []
        for s in range(60):
            rng = np.random.default_rng(10 + s)
            real = rng.choice(20, 300, p=p)[:, None].astype(float)
            syn = rng.choice(20, 300, p=q)[:, None].astype(float)
            fit = cross_fit(real, syn, imp.DiscreteRatio(), 5, s, support=False)
            k = 2.0 if kind == "chi_square" else None
            raw.append(bound(fit, kind, k, 0.9, correct=False).estimate)
            est = bound(fit, kind, k, 0.9)
            corrected.append(est.estimate)
            assert est.bias_correction >= 0 and est.estimate == pytest.approx(raw[-1] + est.bias_correction)
        assert abs(np.mean(corrected) - truth) < 0.15 * truth, (kind, np.mean(corrected), truth)
        assert np.mean(raw) < 0.7 * truth


# --------------------------------------------------------------------------- diagnostics


def test_support_mismatch_warns_and_overlap_does_not():
    rng = np.random.default_rng(3)
    syn = rng.normal(size=(800, 2))
    inside = rng.normal(size=(400, 2)) * 0.8
    cluster = rng.normal(size=(100, 2)) * 0.3 + 6.0  # a region the generator never visits
    with pytest.warns(imp.SupportWarning, match="outside the region the synthetic sample covers"):
        bad = imp.divergence(np.concatenate([inside, cluster]), syn, "kl", estimator=imp.DiscreteRatio())
    assert 0.15 <= bad.uncovered_fraction <= 0.25  # the cluster is 20% of the real rows
    with warnings.catch_warnings():
        warnings.simplefilter("error", imp.SupportWarning)
        good = imp.divergence(inside, syn, "kl", estimator=imp.DiscreteRatio())
    assert good.uncovered_fraction <= 0.01


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_confidence_outside_the_unit_interval_raises(confidence):
    with pytest.raises(ValueError, match=r"`confidence` must be in \(0, 1\)"):
        imp.divergence(np.zeros((5, 1)), np.ones((5, 1)), confidence=confidence)


@pytest.mark.parametrize(
    "real,syn,match",
    [
        (np.zeros((0, 2)), np.zeros((5, 2)), r"`real` needs at least 2 rows; got 0"),
        (np.zeros((1, 2)), np.zeros((5, 2)), r"`real` needs at least 2 rows; got 1"),
        (np.zeros((5, 2)), np.zeros((1, 2)), r"`synthetic` needs at least 2 rows; got 1"),
        (np.zeros((5, 2)), np.zeros((5, 3)), "same number of features; got 2 and 3"),
        (np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]), np.zeros((5, 2)), r"`real` has 1 rows with NaN.*row 1"),
        (np.zeros((5, 2)), np.full((5, 2), np.inf), "`synthetic` has 5 rows with NaN or inf"),
        (np.zeros((5, 2, 2)), np.zeros((5, 2)), r"`real` must have shape \(n, d\)"),
    ],
)
def test_bad_samples_raise(real, syn, match):
    with pytest.raises(ValueError, match=match):
        imp.divergence(real, syn)


def test_bad_arguments_raise():
    x = np.zeros((5, 1))
    with pytest.raises(ValueError, match="`kind` must be one of"):
        imp.divergence(x, x, "tv")
    with pytest.raises(ValueError, match=r"`k` must be in \(1, inf\)"):
        imp.divergence(x, x, "cressie_read")
    with pytest.raises(ValueError, match="only used with kind='cressie_read'"):
        imp.divergence(x, x, "kl", k=2.0)
    with pytest.raises(ValueError, match="`folds` must be an int >= 2"):
        imp.divergence(x, x, folds=1)
    with pytest.raises(TypeError, match="`estimator` must have fit"):
        imp.divergence(x, x, estimator=object())
    with pytest.raises(ValueError, match=r"`smoothing` must be in \(0, inf\)"):
        imp.DiscreteRatio(smoothing=0.0)
    with pytest.raises(RuntimeError, match="not fitted"):
        imp.DiscreteRatio().weights(x)


# --------------------------------------------------------------------------- the default classifier


def _pair(kind, rng, d=2):
    """(real, synthetic, true ratio): a variance shift or a mean shift between Gaussians."""
    if kind == "variance":
        mr, sr, ms, ss = np.zeros(d), 1.0, np.full(d, 0.5), 1.5
    else:
        mr, sr, ms, ss = np.r_[0.7, np.zeros(d - 1)], 1.0, np.zeros(d), 1.0
    real, syn = rng.normal(size=(300, d)) * sr + mr, rng.normal(size=(600, d)) * ss + ms
    pr, ps = stats.multivariate_normal(mr, sr**2 * np.eye(d)), stats.multivariate_normal(ms, ss**2 * np.eye(d))
    return real, syn, lambda x: np.exp(pr.logpdf(x) - ps.logpdf(x))


@pytest.mark.parametrize("shift", ["variance", "mean"])
def test_default_classifier_ranks_like_the_true_ratio(shift):
    real, syn, ratio = _pair(shift, np.random.default_rng(4))
    est = imp.ProbabilisticClassifier().fit(real, syn)
    assert stats.spearmanr(est.weights(syn), ratio(syn)).statistic >= 0.9
    assert est.model_ != "logistic" or shift == "mean"
    # The failure: a linear logit cannot represent a variance shift.
    if shift == "variance":
        linear = imp.ProbabilisticClassifier("logistic").fit(real, syn)
        assert stats.spearmanr(linear.weights(syn), ratio(syn)).statistic < 0.8


def test_default_classifier_is_calibrated():
    # Reliability on fresh data drawn in the training proportions (1 real : 1 synthetic), by
    # deciles of the predicted P(real | x) = w / (1 + w). The true posterior scores an
    # expected calibration error (ECE) of about 0.01 here (binomial noise, 1,200 rows per
    # bin); the fitted one must stay within 0.03, every decile within 0.06, and the
    # temperature that would be optimal on the fresh data within [0.8, 1.25] of ours.
    from robustlearn._src.weighting.density_ratio import _temperature

    rng = np.random.default_rng(5)

    def draw(n):
        return rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) * 1.5 + 0.5

    est = imp.ProbabilisticClassifier().fit(*draw(1000))
    fresh_r, fresh_s = draw(6000)
    x = np.concatenate([fresh_r, fresh_s])
    is_real = np.r_[np.ones(6000), np.zeros(6000)]
    logit = np.log(est.weights(x))
    prob = 1 / (1 + np.exp(-logit))
    bins = np.quantile(prob, np.linspace(0, 1, 11))
    idx = np.clip(np.searchsorted(bins, prob, side="right") - 1, 0, 9)
    gaps = np.array([abs(prob[idx == b].mean() - is_real[idx == b].mean()) for b in range(10)])
    assert np.mean(gaps) <= 0.03 and np.max(gaps) <= 0.06, gaps
    assert 0.8 <= _temperature(logit, is_real) <= 1.25


def test_classifier_model_argument():
    assert imp.ProbabilisticClassifier()._candidates == ("logistic", "quadratic", "mlp")
    assert imp.ProbabilisticClassifier(("mlp", "logistic"))._candidates == ("logistic", "mlp")
    with pytest.raises(ValueError, match="`model` must be 'auto'"):
        imp.ProbabilisticClassifier("cubic")
    with pytest.raises(ValueError, match="`model` must be 'auto'"):
        imp.ProbabilisticClassifier(())

"""Recursive contamination, mean estimation and alpha: every identity against an independent reference.

References used here: the scalar recursion V_t = (1 + a/(t-1))^2 V_{t-1} + 1 (derived in the test),
closed forms (alpha = 0, alpha = 1 via the trigamma function, the innovations BLUE), a Monte Carlo
simulation of the mean model written in the test, and binomial/Monte Carlo checks of alpha.
"""

import math

import numpy as np
import pytest
from scipy import special, stats

import robustlearn as rl
from robustlearn import contamination as rc

ALPHAS = (0.0, 0.2, 0.5, 0.7, 0.9, 1.0)


def _recursion_variance(alpha, t):
    """Var(Y_t)/Sigma from g_t = t (Y_t - mu) = (1 + alpha/(t-1)) g_{t-1} + U_t, g_1 = U_1."""
    v = 1.0
    for s in range(2, t + 1):
        v = (1 + alpha / (s - 1)) ** 2 * v + 1.0
    return v / t**2


@pytest.mark.parametrize("alpha", ALPHAS)
def test_uniform_variance_equals_the_recursion(alpha):
    ts = [1, 2, 3, 10, 100, 1000]
    got = rc.uniform_variance(alpha, np.array(ts))
    for t, g in zip(ts, got, strict=True):
        ref = _recursion_variance(alpha, t)
        assert g == pytest.approx(ref, rel=1e-12)
        assert rc.uniform_variance(alpha, t) == pytest.approx(ref, rel=1e-12)  # scalar (fsum) path


def test_uniform_variance_at_one_million_rounds():
    t = 10**6
    assert rc.uniform_variance(0.0, t) == pytest.approx(1 / t, rel=1e-13)
    # alpha = 1: variance 1/t^2 + sum_{k<t} 1/k^2 = pi^2/6 - psi'(t) + 1/t^2 (psi' the trigamma function).
    exact = np.pi**2 / 6 - special.polygamma(1, t) + 1 / t**2
    assert rc.uniform_variance(1.0, t) == pytest.approx(exact, rel=1e-13)
    # The float recursion accumulates ~t eps of relative rounding error.
    assert rc.uniform_variance(0.7, t) == pytest.approx(_recursion_variance(0.7, t), rel=1e-8)
    # Theorem 1's rate below 1/2: t Var -> 1/(1 - 2 alpha), with an O(t^(2 alpha - 1)) correction.
    assert t * rc.uniform_variance(0.3, t) == pytest.approx(1 / (1 - 0.6), rel=2e-2)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("t", [1, 2, 5, 17, 60])
def test_uniform_variance_equals_the_covariance_for_equal_counts(alpha, t):
    cov = rc.contamination_covariance(alpha, [1] * t)
    assert rc.uniform_variance(alpha, t) == pytest.approx(cov.sum() / t**2, rel=1e-10, abs=1e-14)
    # Same for rounds of n examples: the covariance scales by 1/n.
    cov_n = rc.contamination_covariance(alpha, [7] * t)
    assert rc.uniform_variance(alpha, t) / 7 == pytest.approx(cov_n.sum() / t**2, rel=1e-10)


def test_uniform_variance_against_a_monte_carlo_simulation():
    rng = np.random.default_rng(20260)
    reps, d, t_max = 4000, 5, 20
    checks = [(a, t) for a in (0.3, 0.9, 1.0) for t in (2, 5, 20)]
    # Family-wise 95%: each check at 1 - 0.05 / 9 (Bonferroni).
    q = 0.05 / len(checks)
    for alpha in (0.3, 0.9, 1.0):
        u = rng.standard_normal((t_max, reps, d))
        total = np.zeros((reps, d))
        y = np.zeros((t_max, reps, d))
        for t in range(t_max):  # mu = 0; X_t = alpha Y_{t-1} + U_t, Y_t = mean of X_1..X_t
            x = u[t] if t == 0 else alpha * y[t - 1] + u[t]
            total += x
            y[t] = total / (t + 1)
        for t in (2, 5, 20):
            s2 = np.mean(y[t - 1] ** 2)  # known mean 0: n s2 / sigma2 ~ chi2(n), n = reps * d
            n = reps * d
            lo, hi = n * s2 / stats.chi2.ppf(1 - q / 2, n), n * s2 / stats.chi2.ppf(q / 2, n)
            assert lo <= rc.uniform_variance(alpha, t) <= hi, (alpha, t, s2)


def test_simulate_means_matches_both_variances():
    both = {"erm": rc.uniform_variance(0.8, 12), "blue": rc.blue_variance(0.8, 12)}  # 0.774 and 0.694
    for estimator, other in (("erm", "blue"), ("blue", "erm")):
        sim = rc.simulate_means(0.8, 12, dim=4, reps=3000, estimator=estimator, seed=5)
        s2 = np.mean(sim.estimates[:, -1] ** 2)
        n = 3000 * 4
        lo, hi = n * s2 / stats.chi2.ppf(0.9975, n), n * s2 / stats.chi2.ppf(0.0025, n)
        assert lo <= both[estimator] <= hi
        assert not lo <= both[other] <= hi  # the simulation tells the two estimators apart


def test_simulate_means_is_deterministic_in_the_seed():
    a = rc.simulate_means(0.5, 4, dim=2, reps=3, seed=7)
    b = rc.simulate_means(0.5, 4, dim=2, reps=3, seed=7)
    c = rc.simulate_means(0.5, 4, dim=2, reps=3, seed=8)
    np.testing.assert_array_equal(a.means, b.means)
    assert not np.array_equal(a.means, c.means)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_generation_weights_reach_the_innovations_blue(alpha):
    # Innovations Z_1 = X_1, Z_s = (X_s - alpha Y_{s-1}) / (1 - alpha): independent, variances
    # sigma^2/n_1 and sigma^2/((1-alpha)^2 n_s), so the BLUE's variance is 1 / (n_1 + (1-alpha)^2 sum n_s).
    counts = np.array([3.0, 10.0, 1.0, 25.0, 7.0])
    w = rc.generation_weights(alpha, counts)
    cov = rc.contamination_covariance(alpha, counts)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w @ cov @ w == pytest.approx(1 / (counts[0] + (1 - alpha) ** 2 * counts[1:].sum()), rel=1e-10)
    equal = rc.generation_weights(alpha, [1] * 9)
    assert equal @ rc.contamination_covariance(alpha, [1] * 9) @ equal == pytest.approx(
        rc.blue_variance(alpha, 9), rel=1e-10
    )


def test_old_names_still_work():
    assert rl.importance.generation_weights is rc.generation_weights
    assert rl.importance.contamination_covariance is rc.contamination_covariance


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: rc.contamination_covariance(0.5, [10, np.nan]), ValueError, "counts"),
        (lambda: rc.generation_weights(0.5, [10, np.inf]), ValueError, "counts"),
        (lambda: rc.generation_weights(0.5, [10, 0]), ValueError, "counts"),
        (lambda: rc.generation_weights(0.5, []), ValueError, "counts"),
        (lambda: rc.generation_weights(0.5, ["a", "b"]), TypeError, "counts"),
        (lambda: rc.generation_weights(-0.1, [1, 2]), ValueError, r"alpha.*\[0, 1\]"),
        (lambda: rc.generation_weights(1.5, [1, 2]), ValueError, r"alpha.*\[0, 1\]"),
        (lambda: rc.contamination_covariance(np.nan, [1, 2]), ValueError, "alpha"),
        (lambda: rc.contamination_covariance("0.5", [1, 2]), TypeError, "alpha"),
        (lambda: rc.contamination_covariance(True, [1, 2]), TypeError, "alpha"),
        (lambda: rc.contamination_covariance([0.5], [1, 2]), ValueError, "alpha"),
        (lambda: rc.uniform_variance(0.5, 0), ValueError, "`t`"),
        (lambda: rc.uniform_variance(0.5, 2.5), TypeError, "`t`"),
        (lambda: rc.uniform_variance(1.01, 3), ValueError, "alpha"),
        (lambda: rc.blue_variance(0.5, -1), ValueError, "`t`"),
        (lambda: rc.simulate_means(0.5, 0), ValueError, "rounds"),
        (lambda: rc.simulate_means(0.5, 3, estimator="median"), ValueError, "estimator"),
        (lambda: rc.simulate_means(0.5, 3, counts=[1, 2]), ValueError, "counts"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------ estimating alpha


def _means_coverage(alpha, rounds, dim, sims, seed):
    sim = rc.simulate_means(alpha, rounds, dim=dim, reps=sims, seed=seed)
    est = [rc.estimate_alpha(means=sim.means[r], deployed=sim.estimates[r, :-1]) for r in range(sims)]
    a = np.array([e.alpha for e in est])
    covered = np.mean([e.low <= alpha <= e.high for e in est])
    return a.mean() - alpha, a.std(), covered


@pytest.mark.slow
def test_estimate_alpha_means_coverage_slow():
    # Measured regime where the likelihood-ratio interval is calibrated (T = 20, d = 300).
    for alpha in (0.3, 0.7):
        bias, sd, covered = _means_coverage(alpha, 20, 300, 600, seed=100 + int(10 * alpha))
        assert abs(covered - 0.95) <= 0.03, (alpha, covered)
        assert abs(bias) <= 0.2 * sd, (alpha, bias, sd)


def test_estimate_alpha_means_smoke_coverage():
    bias, sd, covered = _means_coverage(0.7, 20, 300, 150, seed=3)
    # A coarse check (150 simulations: binomial sd of the coverage 1.8 points).
    assert covered >= 0.88
    assert abs(bias) < 0.05


def test_estimate_alpha_means_recovers_a_known_alpha_with_much_data():
    sim = rc.simulate_means(0.4, 40, dim=3000, seed=9)
    est = rc.estimate_alpha(means=sim.means[0], deployed=sim.estimates[0, :-1])
    assert est.low <= 0.4 <= est.high
    assert est.high - est.low < 0.1


def test_estimate_alpha_means_needs_no_known_mean_or_scale():
    # The estimate is invariant to shifting and scaling each coordinate (deployed estimates too).
    sim = rc.simulate_means(0.6, 15, dim=50, seed=2)
    x, y = sim.means[0], sim.estimates[0, :-1]
    shift, scale = np.linspace(-5, 5, 50), np.linspace(0.1, 10, 50)
    a = rc.estimate_alpha(means=x, deployed=y)
    b = rc.estimate_alpha(means=x * scale + shift, deployed=y * scale + shift)
    assert a.alpha == pytest.approx(b.alpha, abs=1e-6)
    assert a.low == pytest.approx(b.low, abs=1e-6) and a.high == pytest.approx(b.high, abs=1e-6)


def _label_rounds(rng, alpha, rounds=5, size=300, n_clean=200):
    """f*(x) = [x > 0.5] on U(0, 1); round s copies f_{s-1}(x) = [x > theta_s] with probability alpha."""
    xc = rng.random(n_clean)
    yc = (xc > 0.5).astype(int)
    ys, ps, cps, refs = [], [], [], []
    for _ in range(rounds):
        theta = 0.5 + rng.choice([-1, 1]) * rng.uniform(0.03, 0.2)
        x = rng.random(size)
        f_star, prev = (x > 0.5).astype(int), (x > theta).astype(int)
        ys.append(np.where(rng.random(size) < alpha, prev, f_star))
        ps.append(prev)
        cps.append((xc > theta).astype(int))
        refs.append(f_star)
    return ys, ps, yc, cps, refs


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.9])
def test_estimate_alpha_labels_with_a_clean_set_bias_and_coverage(alpha):
    rng = np.random.default_rng(int(100 * alpha))
    sims = 600
    est = []
    for _ in range(sims):
        ys, ps, yc, cps, _ = _label_rounds(rng, alpha)
        est.append(rc.estimate_alpha(labels=ys, previous=ps, clean_labels=yc, clean_previous=cps))
    a = np.array([e.alpha for e in est])
    covered = np.mean([e.low <= alpha <= e.high for e in est])
    assert abs(covered - 0.95) <= 0.03, covered
    # The ratio estimator's O(1/n) bias stays well below its spread.
    assert abs(a.mean() - alpha) <= 0.2 * a.std(), (a.mean(), a.std())


@pytest.mark.parametrize("alpha", [0.3, 0.9])
def test_estimate_alpha_labels_with_an_exact_reference_is_binomial(alpha):
    rng = np.random.default_rng(7 + int(10 * alpha))
    est = [
        rc.estimate_alpha(labels=ys, previous=ps, reference=refs)
        for ys, ps, _, _, refs in (_label_rounds(rng, alpha) for _ in range(600))
    ]
    a = np.array([e.alpha for e in est])
    covered = np.mean([e.low <= alpha <= e.high for e in est])
    assert abs(covered - 0.95) <= 0.03, covered
    assert abs(a.mean() - alpha) <= 4 * a.std() / math.sqrt(len(a))  # unbiased: within 4 standard errors


def test_estimate_alpha_region_bias_follows_the_formula():
    # A reference that is wrong on part of the region: the rate in A is (1 - alpha) P(D | A),
    # so E[alpha_hat] = 1 - (1 - alpha) * |A & D| / |A| (per simulation, A and D known).
    rng = np.random.default_rng(3)
    alpha, gaps, predicted = 0.5, [], []
    for _ in range(600):
        x = rng.random(2000)
        f_star, prev = (x > 0.5).astype(int), (x > 0.7).astype(int)  # D = (0.5, 0.7]
        ref = (x > 0.45).astype(int)  # A = (0.45, 0.7]: a quarter of it is outside D
        y = np.where(rng.random(x.size) < alpha, prev, f_star)
        e = rc.estimate_alpha(labels=y, previous=prev, reference=ref)
        in_a = ref != prev
        precision = np.mean((f_star != prev)[in_a])
        predicted.append(1 - (1 - alpha) * precision)
        gaps.append(e.alpha)
    gaps, predicted = np.array(gaps), np.array(predicted)
    assert np.mean(predicted) > alpha + 0.05  # the bias is real (0.1 here) ...
    se = np.std(gaps - predicted) / math.sqrt(len(gaps))
    assert abs(np.mean(gaps - predicted)) <= 4 * se  # ... and is what the formula says


def test_estimate_alpha_refuses_what_is_not_identified():
    y, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    with pytest.raises(ValueError, match="not identified"):
        rc.estimate_alpha(labels=y, previous=p)
    with pytest.raises(ValueError, match="either"):
        rc.estimate_alpha(labels=y, previous=p, means=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="either"):
        rc.estimate_alpha()
    with pytest.raises(ValueError, match="confidence"):
        rc.estimate_alpha(labels=y, previous=p, reference=1 - p, confidence=1.0)
    with pytest.raises(ValueError, match="empty"):
        rc.estimate_alpha(labels=y, previous=p, reference=p)
    with pytest.raises(ValueError, match="previous"):
        rc.estimate_alpha(labels=y, previous=np.array([0, -2, 0, 0]), reference=1 - p)
    with pytest.raises(ValueError, match="T >= 2"):
        rc.estimate_alpha(means=np.zeros((1, 3)), deployed=np.zeros((0, 3)))
    with pytest.raises(ValueError, match="deployed"):
        rc.estimate_alpha(means=np.zeros((4, 3)), deployed=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="finite"):
        rc.estimate_alpha(means=np.full((4, 3), np.nan), deployed=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="clean_previous"):
        rc.estimate_alpha(labels=[y], previous=[p], clean_labels=y, clean_previous=[None])

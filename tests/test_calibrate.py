"""robustlearn.calibrate: statistical radii, their composition with a shift radius, certificates.

References: normal and chi-square quantiles (scipy), the closed form of the chi-square
robust value when the simplex constraint is slack, the small-radius expansion shared by
every ball with f''(1) = 1, exact discrete divergences, and Monte Carlo coverage with
binomial tolerances. The long coverage tables are in benchmarks/radius_coverage.py.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import robustlearn as rl
from robustlearn import calibrate, importance

# --------------------------------------------------------------------------- the statistical radius


@pytest.mark.parametrize("n", [1, 50, 5000])
@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.999])
def test_statistical_radius_is_the_halved_chi_square_quantile(n, confidence):
    delta = 1 - confidence
    r = calibrate.statistical_radius(n, confidence)
    assert r == pytest.approx(stats.norm.ppf(confidence) ** 2 / (2 * n), rel=1e-12)
    # DGN's two-sided rho = chi2_{1, 1 - alpha} at alpha = 2 delta, over 2n with f2 = (t - 1)^2 / 2.
    assert r == pytest.approx(stats.chi2.ppf(1 - 2 * delta, df=1) / (2 * n), rel=1e-9)


def test_statistical_radius_union_bound():
    assert calibrate.statistical_radius(100, 0.9, num_models=10) == pytest.approx(
        stats.norm.ppf(1 - 0.1 / 10) ** 2 / 200, rel=1e-12
    )


@given(
    losses=st.lists(st.floats(0, 10, allow_nan=False), min_size=40, max_size=40),  # one shape: one compile
    n_scale=st.sampled_from([1, 4]),
)
def test_chi_square_value_at_the_radius_is_the_normal_upper_bound(losses, n_scale):
    # sup {q.l : sum p f2(q/p) <= r} = mean + sqrt(2 r) sd(l) when q = p (1 + v) stays >= 0.
    ell = np.asarray(losses * n_scale)
    n, sd = len(ell), ell.std()
    r = calibrate.statistical_radius(n, 0.95)
    v = math.sqrt(2 * r) * (ell - ell.mean()) / sd if sd > 0 else np.zeros(n)
    if np.min(v) < -1:  # the simplex constraint binds: the closed form is only an upper bound
        assert float(rl.chi_square(ell, r)) <= ell.mean() + math.sqrt(2 * r) * sd + 1e-9
        return
    normal_ucb = ell.mean() + stats.norm.ppf(0.95) * sd / math.sqrt(n)
    assert float(rl.chi_square(ell, r)) == pytest.approx(normal_ucb, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("kind,k", [("chi_square", None), ("kl", None), ("cressie_read", 1.5), ("cressie_read", 3.0)])
def test_every_ball_has_the_same_small_radius_expansion(kind, k):
    # (value - mean) / sqrt(2 r) -> sd as r -> 0 for every f with f''(1) = 1: the reason one
    # statistical radius serves every ball. The next term is O(r): check the rate.
    ell = np.random.default_rng(0).exponential(size=200)
    sd = ell.std()
    errs = []
    for r in (1e-4, 1e-6):
        hyper = (r, k) if k is not None else (r,)
        value = float(rl.REDUCTIONS[kind].value(ell, *hyper))
        errs.append(abs((value - ell.mean()) / math.sqrt(2 * r) - sd))
    assert errs[1] < 2e-3 * sd and (errs[1] < 0.2 * errs[0] or errs[0] < 1e-9 * sd)  # chi_square: exact


def test_statistical_radius_coverage_fast_version():
    # 400 samples of n = 200 Beta(2, 5) losses; the 90% certificate covers the mean with
    # probability ~0.90: within [0.855, 0.945] (3 binomial s.e.). Twice the radius covers
    # ~0.97, half of it ~0.82, so a wrong constant fails.
    rng = np.random.default_rng(1)
    losses = rng.beta(2, 5, size=(400, 200))
    r = calibrate.statistical_radius(200, 0.9)
    values = np.asarray(rl.chi_square(losses, r, axis=-1))
    coverage = np.mean(values >= 2 / 7)
    assert 0.855 <= coverage <= 0.945, coverage


# --------------------------------------------------------------------------- composition


@given(a=st.floats(0, 10), b=st.floats(0, 10))
def test_combined_radius_adds_square_roots(a, b):
    c = calibrate.combine_radii(a, b)
    assert math.sqrt(c) == pytest.approx(math.sqrt(a) + math.sqrt(b), rel=1e-12, abs=1e-300)
    assert c >= a + b - 1e-12 and c == pytest.approx(calibrate.combine_radii(b, a), rel=1e-12)


def test_radius_without_real_data_is_the_statistical_radius():
    r = calibrate.radius(400, confidence=0.9)
    assert r.shift == 0.0 and r.divergence is None
    assert r.total == r.statistical == calibrate.statistical_radius(400, 0.9)


def test_radius_splits_the_miss_probability_between_its_parts():
    rng = np.random.default_rng(2)
    real = rng.choice(4, 300, p=[0.1, 0.2, 0.3, 0.4])[:, None].astype(float)
    syn = rng.choice(4, 600)[:, None].astype(float)
    r = calibrate.radius(600, real=real, synthetic=syn, confidence=0.9, estimator=importance.DiscreteRatio())
    assert r.divergence.confidence == pytest.approx(0.95)
    ref = importance.divergence(real, syn, "chi_square", estimator=importance.DiscreteRatio(), confidence=0.95)
    assert r.shift == pytest.approx(max(ref.upper, 0.0), rel=1e-12)
    assert r.statistical == pytest.approx(stats.norm.ppf(0.95) ** 2 / 1200, rel=1e-12)
    assert r.total == pytest.approx((math.sqrt(r.statistical) + math.sqrt(r.shift)) ** 2, rel=1e-12)
    again = calibrate.radius(600, confidence=0.9, divergence_estimate=ref)
    assert again.total == pytest.approx(r.total, rel=1e-12)


def test_certificate_covers_the_real_risk_under_shift_and_needs_the_shift_part():
    # Discrete synthetic Q and real P, a fixed loss per category: 150 replicates of
    # 400 synthetic and 200 real rows, 90% certificates. Coverage must be >= 0.84 (a
    # 0.90 rate gives >= 0.84 with probability > 0.99). The sampling-only radius ignores
    # the shift, which raises the risk here by 2.5 standard errors: it must cover < 50%.
    p, q = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.25, 0.25, 0.25, 0.25])
    loss = np.array([0.0, 0.2, 0.5, 1.0])
    real_risk = float(p @ loss)
    hits, hits_no_shift = 0, 0
    for s in range(150):
        rng = np.random.default_rng(300 + s)
        real = rng.choice(4, 200, p=p)[:, None].astype(float)
        syn_idx = rng.choice(4, 400, p=q)
        rad = calibrate.radius(
            400, real=real, synthetic=syn_idx[:, None].astype(float), confidence=0.9,
            estimator=importance.DiscreteRatio(), seed=s,
        )  # fmt: skip
        hits += calibrate.certificate(loss[syn_idx], "chi_square", rad).bound >= real_risk
        no_shift = calibrate.statistical_radius(400, 0.9)
        hits_no_shift += calibrate.certificate(loss[syn_idx], "chi_square", no_shift).bound >= real_risk
    assert hits >= 0.84 * 150, hits
    assert hits_no_shift < 0.5 * 150, hits_no_shift


# --------------------------------------------------------------------------- certificate


def test_certificate_parts():
    ell = np.array([0.2, 0.4, 0.1, 0.9, 0.3, 0.5, 0.2, 0.6])
    r = 0.05
    c = calibrate.certificate(ell, "chi_square", r)
    assert c.empirical_risk == pytest.approx(ell.mean())
    assert c.bound == pytest.approx(ell.mean() + math.sqrt(2 * r) * ell.std(), rel=1e-9)  # slack simplex
    assert c.premium == pytest.approx(c.bound - c.empirical_risk)
    assert (c.radius, c.confidence, c.kind, c.k, c.n) == (r, None, "chi_square", 2.0, 8)
    w = np.array([1.0, 2.0, 1.0, 0.5, 1.0, 1.0, 3.0, 1.0])
    cw = calibrate.certificate(ell, "kl", r, weights=w)
    assert cw.empirical_risk == pytest.approx(w @ ell / w.sum())
    assert cw.bound == pytest.approx(float(rl.kl(ell, r, weights=w)), rel=1e-9)
    cr = calibrate.certificate(ell, "cressie_read", r, k=3.0)
    assert cr.bound == pytest.approx(float(rl.cressie_read(ell, r, 3.0)), rel=1e-9)
    rad = calibrate.radius(8, confidence=0.9)
    cc = calibrate.certificate(ell, "chi_square", rad)
    assert cc.confidence == 0.9 and cc.radius == rad.total


# --------------------------------------------------------------------------- one call


def _toy(rng, n, shift):
    x = rng.normal(size=(n, 2)) + np.array([shift, 0.0])
    y = (x[:, 0] - 0.5 * x[:, 1] + 0.7 * rng.normal(size=n) > 0).astype(np.int64)
    return x, y


def test_fit_robust_trains_at_the_radius_and_certifies_on_held_out_rows():
    rng = np.random.default_rng(4)
    x, y = _toy(rng, 400, 0.0)
    rx, ry = _toy(rng, 60, 0.4)
    est = importance.DiscreteRatio()  # cheap; coarse rows are categories (test of the wiring)
    fit = calibrate.fit_robust(np.round(x), y, np.round(rx), ry, loss="logistic", estimator=est, seed=1)
    train = fit.train_index
    cert = np.setdiff1d(np.arange(400), train)
    assert len(cert) == 100 and fit.radius.n == 100 and fit.train_radius.n == 300
    assert fit.train_radius.shift == fit.radius.shift > 0
    assert fit.train_radius.total < fit.radius.total  # more rows, smaller statistical part
    # The model is fit_linear at the training radius on the training rows.
    ref = rl.train.fit_linear(
        np.round(x)[train].astype(np.float32), y[train], rl.objectives.chi_square(fit.train_radius.total),
        loss="logistic", l2=1e-3,
    )  # fmt: skip
    np.testing.assert_allclose(fit.params["w"], np.asarray(ref.params["w"]), rtol=1e-5, atol=1e-6)
    # The certificate is the robust value of the held-out logistic losses.
    scores = np.round(x)[cert] @ fit.params["w"] + fit.params["b"]
    losses = np.logaddexp(0, -(2 * y[cert] - 1) * scores)
    assert fit.certificate.bound == pytest.approx(float(rl.chi_square(losses, fit.radius.total)), rel=1e-6)
    assert fit.certificate.confidence == 0.95


def test_joint_sample():
    np.testing.assert_array_equal(
        calibrate.joint_sample([[1.0], [2.0]], [1, 0], loss="logistic"), [[1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]
    )
    np.testing.assert_array_equal(calibrate.joint_sample([[1.0]], [2.5], loss="squared"), [[1.0, 2.5]])
    with pytest.raises(ValueError, match=r"class ids in \[0, 1\]"):
        calibrate.joint_sample([[1.0]], [3], loss="logistic")
    with pytest.raises(ValueError, match="integer class ids"):
        calibrate.joint_sample([[1.0]], [0.5])


# --------------------------------------------------------------------------- bad input


def _tiny():
    return np.zeros((8, 1)), np.zeros(8, int), np.zeros((4, 1)), np.zeros(4, int)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -1.0, 2.0, float("nan")])
def test_confidence_outside_the_unit_interval_raises(confidence):
    with pytest.raises(ValueError, match=r"`confidence` must be in \(0, 1\)"):
        calibrate.statistical_radius(10, confidence)
    with pytest.raises(ValueError, match=r"`confidence` must be in \(0, 1\)"):
        calibrate.radius(10, confidence=confidence)
    with pytest.raises(ValueError, match=r"`confidence` must be in \(0, 1\)"):
        calibrate.fit_robust(*_tiny(), confidence=confidence)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="`n` must be >= 1"):
        calibrate.statistical_radius(0)
    with pytest.raises(TypeError, match="`n` must be a positive int"):
        calibrate.statistical_radius(10.5)
    with pytest.raises(ValueError, match="`num_models` must be >= 1"):
        calibrate.statistical_radius(10, num_models=0)
    with pytest.raises(ValueError, match=r"`shift` must be in \[0, inf\)"):
        calibrate.combine_radii(0.1, -0.1)
    with pytest.raises(ValueError, match="`kind` must be one of"):
        calibrate.radius(10, kind="tv")
    with pytest.raises(ValueError, match="given together"):
        calibrate.radius(10, real=np.zeros((5, 1)))
    ell = np.array([0.1, 0.2])
    with pytest.raises(ValueError, match=r"`radius` must be in \[0, inf\)"):
        calibrate.certificate(ell, "chi_square", -1.0)
    with pytest.raises(ValueError, match="`losses` must be finite"):
        calibrate.certificate(np.array([0.1, np.nan]), "chi_square", 0.1)
    with pytest.raises(ValueError, match="non-empty vector"):
        calibrate.certificate(np.zeros(0), "chi_square", 0.1)
    with pytest.raises(TypeError, match="real floating dtype"):
        calibrate.certificate(np.array([1, 2]), "chi_square", 0.1)
    with pytest.raises(ValueError, match="computed for 'chi_square'"):
        calibrate.certificate(ell, "kl", calibrate.radius(10))
    with pytest.raises(ValueError, match=r"`k` must be in \(1, inf\)"):
        calibrate.certificate(ell, "cressie_read", 0.1)
    est = importance.divergence(np.zeros((5, 1)), np.zeros((5, 1)), estimator=importance.DiscreteRatio())
    with pytest.raises(ValueError, match="must be at confidence 1 - delta/2 = 0.975"):
        calibrate.radius(10, divergence_estimate=est)
    with pytest.raises(ValueError, match="is for kind='chi_square'"):
        calibrate.radius(10, kind="kl", divergence_estimate=est)
    with pytest.raises(ValueError, match=r"`certify_fraction` must be in \(0, 1\)"):
        calibrate.fit_robust(*_tiny(), certify_fraction=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="`loss` must be one of"):
            calibrate.fit_robust(np.zeros((8, 1)), np.zeros(8), np.zeros((4, 1)), np.zeros(4), loss="hinge")

"""The benchmarks' learned generators: deterministic in the seed, samples with the properties the scenarios state.

References are computed here from the real data (empirical margins, rank correlations, a classifier fitted on
real digits), from scipy/sklearn (binomial log-pmf, ROC AUC), or by Monte Carlo with a stated tolerance.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from benchmarks.scenarios import generators as gen
from benchmarks.scenarios._adult import load_adult
from benchmarks.scenarios._common import class_counts
from benchmarks.scenarios.images import _digits, make_vae_digits
from benchmarks.scenarios.tabular import make_copula_adult

pytestmark = pytest.mark.usefixtures("bench_cache")  # tests/conftest.py: one cache per test run


# ------------------------------------------------------------------------------------------------ copula


@functools.cache
def _adult_train(n=3000, seed=0):
    adult = load_adult()
    rows = np.random.default_rng(seed).choice(np.flatnonzero(~adult.is_test), n, replace=False)
    return adult, adult.x[rows], adult.y[rows]


@functools.cache
def _copula(seed, calibration_rows=20000):
    adult, x, y = _adult_train()
    columns = gen.adult_columns(adult.feature_names)
    return gen.GaussianCopula(columns, 2, calibration_rows=calibration_rows).fit(x, y, seed)


def test_copula_is_deterministic_in_the_seed():
    a, b, c = _copula(0, 4000), _copula.__wrapped__(0, 4000), _copula(1, 4000)
    xa, ya = a.sample(np.random.default_rng(5), [300, 100])
    xb, yb = b.sample(np.random.default_rng(5), [300, 100])
    xc, _ = c.sample(np.random.default_rng(5), [300, 100])
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)  # the seed draws the tie-breaking of the fit


def test_copula_samples_are_valid_rows_with_the_real_margins():
    adult, x, y = _adult_train()
    cop = _copula(0)
    counts = class_counts(4000, np.bincount(y) / len(y))
    xs, ys = cop.sample(np.random.default_rng(1), counts)
    names = adult.feature_names
    np.testing.assert_array_equal(np.bincount(ys), counts)  # the requested class balance, exactly
    occ = [i for i, n in enumerate(names) if n.startswith("occupation_")]
    wc = [i for i, n in enumerate(names) if n.startswith("workclass_")]
    assert set(np.unique(xs[:, occ + wc + [5, 6, 7, 8]])) <= {0.0, 1.0}
    np.testing.assert_array_equal(xs[:, occ].sum(1), 1.0)  # occupation stays one-hot
    assert xs[:, wc].sum(1).max() <= 1.0  # workclass: one-hot or the all-zero "other" level
    for c in (0, 1):
        real, syn = x[y == c], xs[ys == c]
        for j in range(5):  # numeric columns: only seen values, and the class's distribution (99% KS bound)
            assert set(np.unique(syn[:, j])) <= set(np.unique(real[:, j]))
            ks = stats.ks_2samp(real[:, j], syn[:, j]).statistic
            assert ks <= 1.63 * np.sqrt(1 / len(real) + 1 / len(syn)), (names[j], c, ks)
        for cols in [[5], [6], [7], [8], wc, occ]:  # categorical levels: frequencies within 4 binomial sd
            p_real, p_syn = real[:, cols].mean(0), syn[:, cols].mean(0)
            sd = np.sqrt(p_real * (1 - p_real) * (1 / len(real) + 1 / len(syn)))
            assert np.all(np.abs(p_real - p_syn) <= 4 * sd + 1e-9), ([names[i] for i in cols], c)


def test_copula_keeps_the_rank_dependence_of_the_real_data():
    adult, x, y = _adult_train()
    cop = _copula(0)
    xs, ys = cop.sample(np.random.default_rng(2), [6000, 2000])
    cols = list(range(9))  # numeric and binary variables
    for c in (0, 1):
        real = stats.spearmanr(x[y == c][:, cols]).statistic
        syn = stats.spearmanr(xs[ys == c][:, cols]).statistic
        off = ~np.eye(len(cols), dtype=bool)
        assert np.max(np.abs(real - syn)[off]) <= 0.1
        assert np.max(np.abs(real[off])) >= 0.2  # the check has something to find: dependence is not ~0


def test_copula_rejects_bad_input():
    adult, x, y = _adult_train()
    with pytest.raises(ValueError, match="shrinkage"):
        gen.GaussianCopula(gen.adult_columns(adult.feature_names), 2, shrinkage=2.0)
    with pytest.raises(ValueError, match="class 1"):
        gen.GaussianCopula(gen.adult_columns(adult.feature_names), 2).fit(x[y == 0], y[y == 0], 0)


# --------------------------------------------------------------------------------------------------- cVAE


def test_binomial_likelihood_matches_scipy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5))
    counts = rng.integers(0, 17, size=(3, 5)).astype(float)
    got = np.asarray(gen.binomial_nll(jnp.asarray(logits), jnp.asarray(counts), 16))
    want = -stats.binom.logpmf(counts, 16, 1 / (1 + np.exp(-logits))).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-6)


@functools.cache
def _tiny_vae():
    from flax import nnx

    model = gen._cvae_module()(6, 3, 2, 8, nnx.Rngs(0))
    return nnx.split(model)


def test_elbo_objective_kl_matches_monte_carlo_and_mask_drops_padding():
    graphdef, params = _tiny_vae()
    obj = gen.elbo_objective(graphdef, 6, 16)
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 17, size=(4, 6)).astype(float)
    x = np.concatenate([counts / 16, np.eye(3)[[0, 1, 2, 0]]], axis=1)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(counts)}
    loss_fn = lambda p, b: gen.binomial_nll(nnx_apply(graphdef, p, b["x"]), b["y"], 16)  # noqa: E731
    objective = jax.jit(lambda p, b, k: obj.loss(loss_fn, p, b, (), k))
    value, (_, metrics) = objective(params, batch, jax.random.PRNGKey(0))
    # KL(q || N(0, I)) by Monte Carlo: E_q[log q(z) - log p(z)], 20,000 draws per example.
    from flax import nnx

    mu, logvar = (np.asarray(a, np.float64) for a in nnx.merge(graphdef, params).encode(jnp.asarray(x)))
    sd = np.exp(0.5 * logvar)
    z = mu[:, None] + sd[:, None] * rng.standard_normal((4, 20000, mu.shape[1]))
    log_ratio = (stats.norm.logpdf(z, mu[:, None], sd[:, None]) - stats.norm.logpdf(z)).sum(-1)
    mc, se = log_ratio.mean(), log_ratio.mean(1).std() / 2 + log_ratio.std() / np.sqrt(log_ratio.size)
    assert abs(float(metrics["kl"]) - mc) <= 4 * se + 1e-3
    assert np.isfinite(float(value)) and float(value) > 0
    # Padding rows (mask False) do not count: changing their content leaves the value unchanged (same key).
    mask = jnp.array([1, 1, 1, 1, 0, 0], bool)
    pad_a = {k: jnp.concatenate([v, v[:2]]) for k, v in batch.items()} | {"mask": mask}
    pad_b = dict(pad_a, y=pad_a["y"].at[4:].set(16.0 - pad_a["y"][4:]))
    v_a, _ = objective(params, pad_a, jax.random.PRNGKey(0))
    v_b, _ = objective(params, pad_b, jax.random.PRNGKey(0))
    v_all, _ = objective(params, dict(pad_b, mask=jnp.ones(6, bool)), jax.random.PRNGKey(0))
    assert float(v_a) == float(v_b) and float(v_all) != float(v_b)


def nnx_apply(graphdef, params, x):
    from flax import nnx

    return nnx.merge(graphdef, params)(x)


@functools.cache
def _vae_scenario():
    return make_vae_digits(0, True, n_synthetic=1000, quality=False)


def test_cvae_is_deterministic_in_the_seed(monkeypatch, tmp_path):
    # Two trainings from scratch with the same seed (20 epochs: a difference from thread order
    # or a stray key shows in the first steps), the first through the cache.
    monkeypatch.setenv("ROBUSTLEARN_BENCH_CACHE", str(tmp_path))
    first = make_vae_digits(0, True, n_synthetic=1000, quality=False, epochs=20)
    monkeypatch.setenv("ROBUSTLEARN_BENCH_CACHE", "off")
    again = make_vae_digits(0, True, n_synthetic=1000, quality=False, epochs=20)
    assert not first.info["generator"]["cached"] and not again.info["generator"]["cached"]
    for split in ("synthetic", "synthetic_val"):
        for key in ("x", "y"):
            np.testing.assert_array_equal(again.splits[split][key], first.splits[split][key])
    assert again.info["generator"]["best_epoch"] == first.info["generator"]["best_epoch"]


def test_cvae_samples_are_in_range_and_class_conditional():
    s = _vae_scenario()
    st = s.info["standardization"]
    xs = s.splits["synthetic"]["x"].astype(np.float64) * st["scale"] + st["mean"]
    ys = s.splits["synthetic"]["y"]
    assert xs.min() >= -1e-3 and xs.max() <= 16 + 1e-3
    np.testing.assert_allclose(xs, np.round(xs), atol=1e-3)  # integer counts, like the real pixels
    x_real, y_real = _digits()
    full = s.info["row_ids"]["real_full_train"]
    np.testing.assert_array_equal(
        np.bincount(ys, minlength=10), class_counts(1000, np.bincount(y_real[full]) / len(full))
    )
    # A classifier fitted on real digits only (sklearn, independent of the generator) recognizes the samples'
    # conditioning class far above chance (0.1).
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000).fit(x_real[full], y_real[full])
    assert clf.score(np.round(xs), ys) >= 0.7
    # Per class, the mean sampled image is nearer the same class's real mean than any other class's.
    syn_means = np.stack([xs[ys == c].mean(0) for c in range(10)])
    real_means = np.stack([x_real[full][y_real[full] == c].mean(0) for c in range(10)])
    dist = np.linalg.norm(syn_means[:, None] - real_means[None], axis=-1)
    assert np.mean(np.argmin(dist, axis=1) == np.arange(10)) >= 0.9
    gen_info = s.info["generator"]
    assert gen_info["name"] == "cvae" and gen_info["train_rows"] == len(full) and gen_info["train_seconds"] > 0
    assert 1 <= gen_info["best_epoch"] <= gen_info["config"]["epochs"]


# ------------------------------------------------------------------------------------- quality and cache


@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(ties):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    if ties:
        scores = np.round(scores)
    assert gen.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_c2st_is_half_for_one_distribution_and_near_one_for_two():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(800, 3)), rng.normal(size=(800, 3))
    auc_same, m = gen.c2st_auc(a, b, 0)
    se = np.sqrt((m / 2 + m / 2 + 1) / (12 * (m / 2) ** 2))  # sd of the AUC under H0 (Mann-Whitney)
    assert m == 800 and abs(auc_same - 0.5) <= 4 * se
    auc_diff, _ = gen.c2st_auc(a, b + np.array([1.5, 0, 0]), 0)
    assert auc_diff >= 0.8


def test_copula_scenario_reports_its_quality():
    s = make_copula_adult(0, True)
    q = s.info["generator"]["quality"]
    assert set(q) >= {"c2st_auc", "c2st_auc_quadratic", "c2st_rows", "tstr_accuracy", "trtr_accuracy"}
    assert q["c2st_rows"] == min(len(s.splits["real_val"]["y"]), len(s.splits["synthetic_val"]["y"]))
    # The copula matches margins and rank dependence: a linear classifier barely tells it apart from real rows,
    # and one fitted on its samples is within 3 points of one fitted on real rows (on real_val, 500 rows).
    assert q["c2st_auc"] <= 0.6
    assert q["tstr_accuracy"] >= q["trtr_accuracy"] - 0.03
    again = make_copula_adult(0, True)  # second call: from the cache, same data
    assert again.info["generator"]["cached"]
    np.testing.assert_array_equal(again.splits["synthetic"]["x"], s.splits["synthetic"]["x"])


def test_cache_round_trips_and_can_be_turned_off(monkeypatch, tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(3.0)}, {"train_seconds": 1.5}

    monkeypatch.setenv("ROBUSTLEARN_BENCH_CACHE", str(tmp_path))
    arrays, info = gen.cached("t", {"k": 1}, [np.ones(2)], build)
    again, info2 = gen.cached("t", {"k": 1}, [np.ones(2)], build)
    np.testing.assert_array_equal(again["a"], arrays["a"])
    assert (info["cached"], info2["cached"], info2["train_seconds"], len(calls)) == (False, True, 1.5, 1)
    gen.cached("t", {"k": 2}, [np.ones(2)], build)  # other parameters: another entry
    gen.cached("t", {"k": 1}, [np.zeros(2)], build)  # other training data: another entry
    assert len(calls) == 3
    monkeypatch.setenv("ROBUSTLEARN_BENCH_CACHE", "off")
    assert gen.cache_dir() is None
    gen.cached("t", {"k": 1}, [np.ones(2)], build)
    assert len(calls) == 4

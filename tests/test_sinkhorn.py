"""Entropic (Sinkhorn) Wasserstein DRO: the sample-cloud dual against scipy, and its limits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import optimize, special

import robustlearn as rl
from robustlearn import wasserstein


def _scipy_upper(losses, budget, p):
    """min over beta > 0 of (budget + sum_i p_i log mean_j exp(beta l_ij)) / beta, and its limit."""
    m = losses.shape[0]

    def dual(log_beta):
        beta = np.exp(log_beta)
        return (budget + np.sum(p * (special.logsumexp(beta * losses, axis=0) - np.log(m)))) / beta

    res = optimize.minimize_scalar(dual, bounds=(-25, 25), method="bounded", options={"xatol": 1e-12})
    return min(float(res.fun), float(np.sum(p * losses.max(axis=0))))


@given(
    losses=hnp.arrays(np.float64, (6, 4), elements=st.floats(-5, 5)),
    budget=st.floats(1e-3, 3.0),
    weights=hnp.arrays(np.float64, 4, elements=st.floats(0.1, 3.0)),
)
def test_sample_cloud_dual_is_certified_by_scipy(losses, budget, weights):
    p = weights / weights.sum()
    value, w = wasserstein.sample_cloud_dual(losses, budget, weights)
    w = np.asarray(w)
    assert np.allclose(w.sum(axis=0), 1.0) and np.all(w >= 0)
    kl = np.sum(p * np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1) * w.shape[0]), 0), axis=0))
    assert kl <= budget + 1e-8
    lower = float(np.sum(p * np.sum(w * losses, axis=0)))
    upper = _scipy_upper(losses, budget, p)
    scale = max(1.0, float(np.abs(losses).max()))
    assert lower <= upper + 1e-9 * scale
    assert abs(float(value) - upper) <= 1e-6 * scale
    grad = jax.grad(lambda v: wasserstein.sample_cloud_dual(v, budget, weights)[0])(jnp.asarray(losses))
    np.testing.assert_allclose(grad, p[None, :] * w, atol=1e-12)


def test_sample_cloud_dual_limits():
    losses = np.array([[0.0, 1.0], [2.0, -1.0], [1.0, 0.5]])
    zero, _ = wasserstein.sample_cloud_dual(losses, 0.0)
    assert float(zero) == pytest.approx(losses.mean(), abs=1e-12)
    large, _ = wasserstein.sample_cloud_dual(losses, 50.0)
    assert float(large) == pytest.approx(losses.max(axis=0).mean(), abs=1e-9)


def _logistic_problem(seed=0, n=32, d=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    theta = np.array([1.5, -1.0])[:d]
    y = (x @ theta + 0.3 * rng.normal(size=n) > 0).astype(np.int32)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}

    def loss_fn(w, b):
        return jax.nn.softplus(-(2 * b["y"] - 1) * (b["x"] @ w))

    return loss_fn, jnp.asarray(theta), batch


@pytest.mark.parametrize("eps", [1e-1, 1e-3, 1e-5])
def test_zero_radius_is_the_smoothed_risk_and_tends_to_erm(eps):
    loss_fn, theta, batch = _logistic_problem()
    obj = wasserstein.sinkhorn(0.0, eps, num_samples=64)
    value, (_, metrics) = obj.loss(loss_fn, theta, batch, obj.init(None), jax.random.PRNGKey(0))
    assert float(value) == pytest.approx(float(metrics["smoothed_loss"]), rel=1e-12)
    erm = float(jnp.mean(loss_fn(theta, batch)))
    # Antithetic pairs + a convex loss in x: the smoothed risk is >= ERM, within O(eps).
    assert erm <= float(value) <= erm + 2 * eps * float(jnp.sum(theta**2))


def test_value_is_at_least_erm_and_grows_with_the_radius():
    loss_fn, theta, batch = _logistic_problem(1)
    key = jax.random.PRNGKey(1)
    erm = float(jnp.mean(loss_fn(theta, batch)))
    objs = [wasserstein.sinkhorn(r, 0.05, num_samples=32) for r in (0.0, 0.01, 0.05, 0.1)]
    # Budgets r / eps stay below log(32): no cap.
    values = [float(obj.loss(loss_fn, theta, batch, obj.init(None), key)[0]) for obj in objs]
    assert erm <= values[0] and np.all(np.diff(values) > 0), values


def test_sinkhorn_trains_through_the_trainer():
    loss_fn, _, batch = _logistic_problem(2, n=128)

    def apply(w, x):
        return x @ w

    def margin_loss(score, y):
        return jax.nn.softplus(-(2 * y - 1) * score)

    trainer = rl.train.Trainer(
        apply, margin_loss, wasserstein.sinkhorn(0.1, 0.05, num_samples=16), optax.adam(0.05),
        params=jnp.zeros(2), batch_size=32, verbose=False,
    )  # fmt: skip
    history = trainer.fit({"x": np.asarray(batch["x"]), "y": np.asarray(batch["y"])}, epochs=15)
    assert history.rows[-1]["train_objective"] < 0.8 * history.rows[0]["train_objective"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": -0.1, "entropic_eps": 0.1}, r"`radius` must be in \[0, inf\)"),
        ({"radius": 0.1, "entropic_eps": 0.0}, r"`entropic_eps` must be in \(0, inf\)"),
        ({"radius": np.nan, "entropic_eps": 0.1}, r"`radius` must be in \[0, inf\)"),
        ({"radius": 0.1, "entropic_eps": 0.1, "num_samples": 3}, "`num_samples` must be a positive even int"),
        ({"radius": 0.1, "entropic_eps": 0.1, "num_samples": 4.0}, "`num_samples` must be a positive even int"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wasserstein.sinkhorn(**kwargs)


L3 = np.array([[0.0, 1.0, 4.0], [2.0, -1.0, 4.0], [1.0, 0.5, 3.0]])  # (m=3 samples, n=3 examples)


@pytest.mark.parametrize(
    "losses,budget,weights,error,match",
    [
        (L3, -1.0, None, ValueError, r"`budget` must be in \[0, inf\]"),
        (L3, np.nan, None, ValueError, r"`budget` must be in \[0, inf\]"),
        (L3, 0.5, [1.0, -0.5, 1.0], ValueError, r"`weights` must be finite and in \[0, inf\)"),
        (L3, 0.5, [1.0, np.nan, 1.0], ValueError, r"`weights` must be finite and in \[0, inf\)"),
        (L3, 0.5, [1.0, 1.0], ValueError, "does not broadcast"),
        (L3[0], 0.5, None, ValueError, r"`losses` must have shape \(m, n\)"),
        (np.zeros((0, 3)), 0.5, None, ValueError, r"`losses` must have shape \(m, n\)"),
        (L3.astype(int), 0.5, None, TypeError, "real floating dtype"),
    ],
    ids=["negative_budget", "nan_budget", "negative_weight", "nan_weight", "weights_shape", "1d", "empty", "int"],
)
def test_sample_cloud_dual_bad_inputs_raise(losses, budget, weights, error, match):
    with pytest.raises(error, match=match):
        wasserstein.sample_cloud_dual(losses, budget, None if weights is None else np.asarray(weights))


def test_sample_cloud_dual_traced_bad_budget_or_weights_give_nan():
    fn = jax.jit(lambda b, w: wasserstein.sample_cloud_dual(jnp.asarray(L3), b, w)[0])
    assert np.isnan(fn(-1.0, jnp.ones(3)))
    assert np.isnan(fn(0.5, jnp.array([1.0, -0.5, 1.0])))
    assert np.isfinite(fn(0.5, jnp.ones(3)))


def test_sample_cloud_dual_all_zero_weights_give_zero_eagerly_and_under_jit():
    for fn in (wasserstein.sample_cloud_dual, jax.jit(wasserstein.sample_cloud_dual)):
        value, w = fn(jnp.asarray(L3), 0.5, jnp.zeros(3))
        assert float(value) == 0.0
        np.testing.assert_allclose(w, 1 / 3)


@pytest.mark.parametrize("budget", [np.log(3), 5.0, np.inf])
def test_sample_cloud_dual_slack_budget_is_the_mean_column_maximum(budget):
    p = np.array([0.2, 0.3, 0.5])
    value, w = wasserstein.sample_cloud_dual(L3, budget, p)
    assert float(value) == pytest.approx(np.sum(p * L3.max(axis=0)), rel=1e-12)
    np.testing.assert_allclose(w[:, 2], [0.5, 0.5, 0.0])  # a tie at the maximum shares the mass


def test_sample_cloud_dual_float32_huge_weights_are_the_uniform_problem():
    with jax.enable_x64(False):
        big, _ = wasserstein.sample_cloud_dual(jnp.asarray(L3, jnp.float32), 0.3, jnp.full(3, 3e38, jnp.float32))
        uniform, _ = wasserstein.sample_cloud_dual(jnp.asarray(L3, jnp.float32), 0.3)
    assert big.dtype == jnp.float32 and float(big) == pytest.approx(float(uniform), rel=1e-6)
    assert float(uniform) == pytest.approx(_scipy_upper(L3, 0.3, np.full(3, 1 / 3)), rel=1e-5)


def test_entropic_eps_is_the_name_and_eps_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="`eps` is deprecated"):
        old = wasserstein.sinkhorn(0.1, eps=0.05)
    new = wasserstein.sinkhorn(0.1, entropic_eps=0.05)
    assert old.hyperparams == new.hyperparams and old.hyperparams["entropic_eps"] == 0.05
    assert "entropic_eps=0.05" in new.name


def test_sinkhorn_reads_its_hyperparameters_from_the_state():
    loss_fn, theta, batch = _logistic_problem(3, n=8)
    key = jax.random.PRNGKey(3)
    a, b = wasserstein.sinkhorn(0.1, 0.05, num_samples=8), wasserstein.sinkhorn(0.02, 0.2, num_samples=8)

    def program(obj):
        return str(jax.make_jaxpr(lambda s: obj.loss(loss_fn, theta, batch, s, key)[0])(obj.init(None)))

    assert program(a) == program(b)  # a grid over (radius, entropic_eps) compiles once
    swapped = float(a.loss(loss_fn, theta, batch, b.init(None), key)[0])
    assert swapped == float(b.loss(loss_fn, theta, batch, b.init(None), key)[0])
    # Independent check of the same value: the perturbations are sqrt(0.2) * N(0, 1) draws from the key.
    half = jax.random.normal(key, (4, 8, 2), jnp.float64) * np.sqrt(0.2)
    z = batch["x"][None] + jnp.concatenate([half, -half])
    losses = np.stack([np.asarray(loss_fn(theta, {**batch, "x": zj})) for zj in z])
    assert swapped == pytest.approx(_scipy_upper(losses, 0.02 / 0.2, np.full(8, 1 / 8)), rel=1e-6)
    bad = rl.objectives.ReductionState({"radius": jnp.asarray(0.1), "entropic_eps": jnp.asarray(-1.0)})
    assert np.isnan(jax.jit(lambda s: a.loss(loss_fn, theta, batch, s, key)[0])(bad))


def test_sinkhorn_extreme_entropic_eps_in_float32_is_finite():
    loss_fn, theta, batch = _logistic_problem(4, n=8)
    batch32 = {"x": batch["x"].astype(np.float32), "y": batch["y"]}
    erm = float(np.mean(np.logaddexp(0, -(2 * np.asarray(batch["y"]) - 1) * (np.asarray(batch["x"]) @ theta))))
    with jax.enable_x64(False):
        for radius in (0.0, 0.1):
            obj = wasserstein.sinkhorn(radius, 1e-300, num_samples=2)
            value, _ = obj.loss(loss_fn, theta.astype(np.float32), batch32, obj.init(None), jax.random.PRNGKey(0))
            # No noise survives sqrt(tiny): every sample is x, so any radius gives the plain mean loss.
            assert value.dtype == jnp.float32 and float(value) == pytest.approx(erm, rel=1e-5)


def test_sinkhorn_rejects_integer_or_missing_inputs():
    obj = wasserstein.sinkhorn(0.1, 0.1, num_samples=2)
    key = jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="must be real floating"):
        obj.loss(lambda p, b: b["x"][:, 0] * 1.0, None, {"x": jnp.ones((3, 2), jnp.int32)}, obj.init(None), key)
    with pytest.raises(ValueError, match="perturbs batch\\['x'\\]"):
        obj.loss(lambda p, b: b["z"][:, 0], None, {"z": jnp.ones((3, 2))}, obj.init(None), key)

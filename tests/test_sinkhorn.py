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
    value, (_, metrics) = wasserstein.sinkhorn(0.0, eps, num_samples=64).loss(
        loss_fn, theta, batch, (), jax.random.PRNGKey(0)
    )
    assert float(value) == pytest.approx(float(metrics["smoothed_loss"]), rel=1e-12)
    erm = float(jnp.mean(loss_fn(theta, batch)))
    # Antithetic pairs + a convex loss in x: the smoothed risk is >= ERM, within O(eps).
    assert erm <= float(value) <= erm + 2 * eps * float(jnp.sum(theta**2))


def test_value_is_at_least_erm_and_grows_with_the_radius():
    loss_fn, theta, batch = _logistic_problem(1)
    key = jax.random.PRNGKey(1)
    erm = float(jnp.mean(loss_fn(theta, batch)))
    values = [
        float(wasserstein.sinkhorn(r, 0.05, num_samples=32).loss(loss_fn, theta, batch, (), key)[0])
        for r in (0.0, 0.01, 0.05, 0.1)  # budgets r / eps stay below log(32): no cap
    ]
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
        ({"radius": -0.1, "eps": 0.1}, r"`radius` must be in \[0, inf\)"),
        ({"radius": 0.1, "eps": 0.0}, r"`eps` must be in \(0, inf\)"),
        ({"radius": 0.1, "eps": 0.1, "num_samples": 3}, "`num_samples` must be a positive even int"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wasserstein.sinkhorn(**kwargs)

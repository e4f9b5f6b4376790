"""WRM against the closed form of the squared loss, and its certificate against attacks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import robustlearn as rl
from robustlearn import wasserstein


def squared(w, batch):
    return 0.5 * (batch["y"] - batch["x"] @ w) ** 2


def _data(seed=0, n=16, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    return {"x": jnp.asarray(x), "y": jnp.asarray(x @ w + 0.5 * rng.normal(size=n))}, jnp.asarray(0.6 * w)


def closed_form(w, batch, gamma):
    """sup_z (y - w.z)^2/2 - gamma |z - x|^2 = gamma r^2 / (2 gamma - |w|^2) for 2 gamma > |w|^2."""
    r = batch["y"] - batch["x"] @ w
    return gamma * r**2 / (2 * gamma - jnp.sum(w**2))


@pytest.mark.parametrize("factor", [0.6, 1.0, 3.0, 20.0])
def test_inner_maximum_matches_the_closed_form(factor):
    batch, w = _data()
    gamma = factor * float(jnp.sum(w**2))  # 2 gamma > |w|^2 holds for factor > 0.5
    z, phi = wasserstein.wrm_perturb(squared, w, batch, gamma, steps=400)
    np.testing.assert_allclose(phi, closed_form(w, batch, gamma), rtol=1e-8)
    # The maximizer moves x along w, by |r| |w| / (2 gamma - |w|^2).
    r = batch["y"] - batch["x"] @ w
    dist = jnp.linalg.norm(z - batch["x"], axis=1)
    np.testing.assert_allclose(dist, jnp.abs(r) * jnp.linalg.norm(w) / (2 * gamma - jnp.sum(w**2)), rtol=1e-6)


def test_objective_gradient_is_the_danskin_gradient():
    batch, w = _data(1)
    gamma = 2.0 * float(jnp.sum(w**2))
    objective = wasserstein.wrm(gamma, steps=400)
    value, (_, metrics) = objective.loss(squared, w, batch, (), None)
    assert float(value) == pytest.approx(float(jnp.mean(closed_form(w, batch, gamma))), rel=1e-8)
    grad = jax.grad(lambda v: objective.loss(squared, v, batch, (), None)[0])(w)
    expected = jax.grad(lambda v: jnp.mean(closed_form(v, batch, gamma)))(w)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert float(metrics["perturbed_loss"]) >= float(metrics["mean_loss"])


def _pga_attack(w, batch, rho, steps=500, lr=0.05):
    """Projected gradient ascent on mean loss s.t. mean |z - x|^2 <= rho."""
    x = batch["x"]

    def project(z):
        delta = z - x
        size = jnp.mean(jnp.sum(delta**2, axis=1))
        return x + delta * jnp.minimum(1.0, jnp.sqrt(rho / jnp.maximum(size, 1e-30)))

    z = x + 1e-3 * jnp.sign(batch["y"] - x @ w)[:, None] * w[None, :]  # start off the clean point
    for _ in range(steps):
        z = project(z + lr * jax.grad(lambda z: jnp.mean(squared(w, {**batch, "x": z})))(z))
    return float(jnp.mean(squared(w, {**batch, "x": z})))


@pytest.mark.parametrize("rho", [0.01, 0.1, 0.5, 2.0])
def test_certificate_bounds_attacks_of_size_rho(rho):
    batch, w = _data(2)
    gamma = 1.5 * float(jnp.sum(w**2))
    value, _ = wasserstein.wrm(gamma, steps=400).loss(squared, w, batch, (), None)
    bound = float(wasserstein.wrm_certificate(value, gamma, rho))
    attacked = _pga_attack(w, batch, rho)
    clean = float(jnp.mean(squared(w, batch)))
    assert clean < attacked <= bound


def test_wrm_trains_through_the_trainer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 2))
    data = {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}

    def apply(params, x):
        return x @ params["w"] + params["b"][None, :]

    params = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    objective = wasserstein.wrm(gamma=2.0, steps=5)
    trainer = rl.train.Trainer(
        apply, optax.softmax_cross_entropy_with_integer_labels, objective, optax.adam(0.05), params=params,
        batch_size=32, verbose=False,
    )  # fmt: skip
    history = trainer.fit(data, epochs=10)
    objectives_by_epoch = history.columns()["train_objective"]
    assert objectives_by_epoch[-1] < 0.8 * objectives_by_epoch[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": 0.0}, r"`gamma` must be in \(0, inf\)"),
        ({"gamma": -1.0}, r"`gamma` must be in \(0, inf\)"),
        ({"gamma": 1.0, "steps": -1}, r"`steps` must be an int in \[0, inf\)"),
        ({"gamma": 1.0, "step_size": 0.0}, r"`step_size` must be in \(0, inf\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wasserstein.wrm(**kwargs)

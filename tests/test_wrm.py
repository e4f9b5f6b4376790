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
    state = objective.init(None)
    value, (_, metrics) = objective.loss(squared, w, batch, state, None)
    assert float(value) == pytest.approx(float(jnp.mean(closed_form(w, batch, gamma))), rel=1e-8)
    grad = jax.grad(lambda v: objective.loss(squared, v, batch, state, None)[0])(w)
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
    objective = wasserstein.wrm(gamma, steps=400)
    value, _ = objective.loss(squared, w, batch, objective.init(None), None)
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
        ({"gamma": np.nan}, r"`gamma` must be in \(0, inf\)"),
        ({"gamma": 1.0, "steps": 2.5}, r"`steps` must be an int in \[0, inf\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wasserstein.wrm(**kwargs)


@pytest.mark.parametrize("radius", [-2.0, np.nan, [0.1, -0.5]], ids=["negative", "nan", "array_with_negative"])
def test_certificate_rejects_negative_or_nan_radius(radius):
    with pytest.raises(ValueError, match=r"`radius` must be in \[0, inf\]"):
        wasserstein.wrm_certificate(1.0, 1.0, radius)


def test_certificate_is_gamma_radius_plus_surrogate_and_nan_for_traced_negative_radius():
    radius = np.array([0.0, 0.25, 3.0])
    np.testing.assert_allclose(wasserstein.wrm_certificate(1.5, 2.0, radius), 1.5 + 2.0 * radius, rtol=1e-15)
    traced = jax.jit(lambda r: wasserstein.wrm_certificate(1.5, 2.0, r))(jnp.array([0.5, -2.0]))
    assert float(traced[0]) == 2.5 and np.isnan(traced[1])
    with pytest.raises(ValueError, match=r"`gamma` must be in \(0, inf\)"):
        wasserstein.wrm_certificate(1.0, 0.0, 0.5)
    with pytest.warns(DeprecationWarning, match="`rho` is deprecated"):
        assert float(wasserstein.wrm_certificate(1.5, 2.0, rho=0.25)) == 2.0


def test_wrm_reads_gamma_and_step_size_from_its_state():
    batch, w = _data(3)
    a, b = wasserstein.wrm(3.0, steps=50), wasserstein.wrm(5.0, steps=50, step_size=0.05)

    def program(obj):
        return str(jax.make_jaxpr(lambda s: obj.loss(squared, w, batch, s, None)[0])(obj.init(None)))

    assert program(a) == program(b)  # a grid over gamma / step_size compiles once
    assert float(a.init(None).hyperparams["step_size"]) == 1 / 6  # the default 1 / (2 gamma), stored
    value, _ = a.loss(squared, w, batch, wasserstein.wrm(20.0).init(None), None)
    assert float(value) == pytest.approx(float(jnp.mean(closed_form(w, batch, 20.0))), rel=1e-8)
    bad = rl.objectives.ReductionState({"gamma": jnp.asarray(-1.0), "step_size": jnp.asarray(0.1)})
    assert np.isnan(jax.jit(lambda s: a.loss(squared, w, batch, s, None)[0])(bad))


def test_wrm_huge_gamma_in_float32_is_the_clean_loss():
    batch, w = _data(4)
    batch32 = jax.tree.map(lambda a: a.astype(jnp.float32), batch)
    clean = np.mean(0.5 * (np.asarray(batch["y"]) - np.asarray(batch["x"]) @ np.asarray(w)) ** 2)
    with jax.enable_x64(False):
        obj = wasserstein.wrm(1e300, steps=3)
        value, _ = obj.loss(squared, w.astype(jnp.float32), batch32, obj.init(None), None)
    assert value.dtype == jnp.float32 and float(value) == pytest.approx(clean, rel=1e-5)


def test_wrm_perturb_rejects_integer_inputs_and_accepts_numpy_steps():
    batch, w = _data(5)
    with pytest.raises(TypeError, match="must be real floating"):
        wasserstein.wrm_perturb(squared, w, {**batch, "x": jnp.ones((16, 3), jnp.int32)}, 1.0)
    z, _ = wasserstein.wrm_perturb(squared, w, batch, 1.0, steps=np.int64(2))
    assert z.shape == batch["x"].shape

"""nnx models with Dropout and BatchNorm: RNG streams, batch statistics, modes, resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import robustlearn as rl
from robustlearn import objectives

CE = optax.softmax_cross_entropy_with_integer_labels


class Net(nnx.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear."""

    def __init__(self, rngs, hidden=16, rate=0.2):
        self.l1 = nnx.Linear(2, hidden, rngs=rngs)
        self.bn = nnx.BatchNorm(hidden, rngs=rngs)
        self.drop = nnx.Dropout(rate, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(jax.nn.relu(self.bn(self.l1(x)))))


def _data(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32) * np.float32(3.0) + np.float32(1.0)  # not standardized
    return {"x": x, "y": (x[:, 0] - x[:, 1] > 0).astype(np.int32)}


TRAIN, VAL = _data(0, 160), _data(1, 64)


def _trainer(model=None, **kwargs):
    kwargs = {"batch_size": 32, "verbose": False, "seed": 5} | kwargs
    return rl.train.Trainer(model or Net(nnx.Rngs(0)), CE, objectives.cvar(0.5), optax.adam(0.02), **kwargs)


def _eval_reference(trainer, x):
    """Evaluation-mode forward pass in numpy: running statistics, no dropout."""
    p, s = trainer.params, trainer.model_state
    h = x @ np.asarray(p["l1"]["kernel"][...]) + np.asarray(p["l1"]["bias"][...])
    mean, var = np.asarray(s["bn"]["mean"][...]), np.asarray(s["bn"]["var"][...])
    h = (h - mean) / np.sqrt(var + 1e-5) * np.asarray(p["bn"]["scale"][...]) + np.asarray(p["bn"]["bias"][...])
    h = np.maximum(h, 0)
    return h @ np.asarray(p["l2"]["kernel"][...]) + np.asarray(p["l2"]["bias"][...])


def test_dropout_batchnorm_mlp_trains_and_evaluates_deterministically():
    model = Net(nnx.Rngs(0))
    trainer = _trainer(model, restore_best=False)
    history = trainer.fit(TRAIN, VAL, epochs=6)
    objective = history.columns()["train_objective"]
    assert objective[-1] < 0.7 * objective[0], objective
    assert history.rows[-1]["val_accuracy"] > 0.85
    # Batch statistics moved from their initial (0, 1) towards the data's.
    assert np.max(np.abs(np.asarray(trainer.model_state["bn"]["mean"][...]))) > 0.05
    # Evaluation mode: deterministic, uses the running statistics, no dropout.
    first, second = trainer.predict(VAL["x"]), trainer.predict(VAL["x"])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, _eval_reference(trainer, VAL["x"]), rtol=1e-4, atol=1e-4)
    # Validation ran in evaluation mode: its loss is the loss of these predictions.
    assert history.rows[-1]["val_loss"] == pytest.approx(float(jnp.mean(CE(first, VAL["y"]))), rel=1e-5)
    # The module got the trained state and kept its own (training) mode.
    assert model.drop.deterministic is False and model.bn.use_running_average is False
    np.testing.assert_array_equal(model.bn.mean[...], trainer.model_state["bn"]["mean"][...])
    train_mode = nnx.clone(model)(jnp.asarray(VAL["x"]))  # batch statistics of VAL, dropout on (on a copy:
    # a training-mode call moves the running statistics)
    assert not np.allclose(train_mode, first, atol=1e-3)
    model.eval()
    np.testing.assert_allclose(model(jnp.asarray(VAL["x"])), first, rtol=1e-5, atol=1e-6)


def _fit(directory, epochs, resume):
    trainer = _trainer(Net(nnx.Rngs(0)), checkpoint_dir=directory)
    trainer.fit(TRAIN, VAL, epochs=epochs, resume=resume)
    return trainer


def _arrays(tree):
    """The leaves as numpy arrays (PRNG keys as their key data)."""
    leaves = jax.tree.leaves(tree)
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x) for x in leaves]


def test_resume_with_dropout_and_batchnorm_is_bit_identical(tmp_path):
    full = _fit(tmp_path / "full", 4, resume=False)
    _fit(tmp_path / "part", 2, resume=False)
    resumed = _fit(tmp_path / "part", 4, resume=True)  # a new Trainer and a new module
    for tree in ("state", "params", "model_state"):
        for a, b in zip(_arrays(getattr(full, tree)), _arrays(getattr(resumed, tree)), strict=True):
            np.testing.assert_array_equal(a, b)
    assert full.history.rows == resumed.history.rows
    assert np.asarray(full.model_state["bn"]["var"][...]).std() > 0  # the statistics are not trivial


class _Probe(nnx.Module):
    """x * dropout mask, summed: the loss reveals the mask."""

    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones(()))
        self.drop = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.drop(x * self.w[...])


def _probe_objective():
    """Calls loss_fn twice per step; reports the difference and the first call's value."""

    def loss(loss_fn, params, batch, state, key):
        first, second = loss_fn(params, batch), loss_fn(params, batch)
        value = jnp.mean(first)
        return value, (state, {"objective": value, "twice": jnp.max(jnp.abs(first - second))})

    return rl.objectives.Objective(lambda key: (), loss, "probe")


def _probe_run(seed, epochs=4):
    x = np.ones((8, 20), np.float32)
    trainer = rl.train.Trainer(
        _Probe(nnx.Rngs(1)), lambda out, y: jnp.sum(out, axis=1), _probe_objective(), optax.sgd(0.0),
        seed=seed, verbose=False, restore_best=False,
    )  # fmt: skip
    return trainer.fit({"x": x, "y": np.zeros(8, np.float32)}, epochs=epochs).columns()


def test_every_call_of_a_step_sees_the_same_masks_and_steps_draw_new_ones():
    columns = _probe_run(seed=0)
    assert columns["train_twice"] == [0.0] * 4  # loss_fn twice in one step: the same masks
    values = columns["train_objective"]
    assert len(set(values)) == len(values)  # a new mask every step (full batch: one step per epoch)
    assert 16.0 < np.mean(values) < 24.0  # rate 0.5: each of 20 inputs kept with p = 1/2, scaled by 2: E = 20
    assert _probe_run(seed=0)["train_objective"] == values  # determined by (seed, epoch, step)
    assert _probe_run(seed=1)["train_objective"] != values


def test_batch_statistics_update_once_per_step_from_the_clean_batch():
    # An objective that also evaluates the loss on inputs shifted by 100 (as a perturbation
    # objective would): the running statistics must see only the clean batch, once.
    class Norm(nnx.Module):
        def __init__(self, rngs):
            self.bn = nnx.BatchNorm(2, momentum=0.9, rngs=rngs)
            self.out = nnx.Linear(2, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(self.bn(x))

    def loss(loss_fn, params, batch, state, key):
        shifted = loss_fn(params, {**batch, "x": batch["x"] + 100.0})
        value = jnp.mean(loss_fn(params, batch)) + 0.0 * jnp.mean(shifted)
        return value, (state, {"objective": value})

    objective = rl.objectives.Objective(lambda key: (), loss, "shifted")
    trainer = rl.train.Trainer(Norm(nnx.Rngs(0)), CE, objective, optax.sgd(0.1), verbose=False, restore_best=False)
    x = TRAIN["x"][:40].astype(np.float64)
    trainer.fit({"x": TRAIN["x"][:40], "y": TRAIN["y"][:40]}, epochs=2)  # full batch: 2 steps
    # Reference: two momentum updates from (0, 1) with the batch's mean and biased variance.
    mean, var = np.zeros(2), np.ones(2)
    for _ in range(2):
        mean, var = 0.9 * mean + 0.1 * x.mean(0), 0.9 * var + 0.1 * x.var(0)
    np.testing.assert_allclose(trainer.model_state["bn"]["mean"][...], mean, rtol=1e-5)
    np.testing.assert_allclose(trainer.model_state["bn"]["var"][...], var, rtol=1e-5)

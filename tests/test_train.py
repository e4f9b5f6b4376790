"""The Objective interface and the Trainer: training, selection, resume, NaN, errors."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import robustlearn as rl
from robustlearn import objectives

FACTORIES = [
    objectives.erm(),
    objectives.cvar(0.3),
    objectives.chi_square(0.5),
    objectives.kl(0.5),
    objectives.cressie_read(0.5, 1.5),
    objectives.chi_square_penalty(1.0),
    objectives.kl_penalty(1.0),
]
CE = optax.softmax_cross_entropy_with_integer_labels


class MLP(nnx.Module):
    def __init__(self, d_in, d_out, rngs, hidden=16):
        self.l1 = nnx.Linear(d_in, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, d_out, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.tanh(self.l1(x)))


def linear_apply(params, x):
    return x @ params["w"] + params["b"][None, :]


def linear_params(d, c, dtype=jnp.float64):
    return {"w": jnp.zeros((d, c), dtype), "b": jnp.zeros((c,), dtype)}


def group_shift_data(seed, n, minority):
    """Group 0's label is the sign of x0, group 1's the sign of x1 (no label noise)."""
    rng = np.random.default_rng(seed)
    group = (rng.random(n) < minority).astype(np.int32)
    x = rng.normal(size=(n, 2))
    y = (np.where(group == 0, x[:, 0], x[:, 1]) > 0).astype(np.int32)
    return {"x": x, "y": y, "group": group}


@pytest.mark.parametrize("objective", FACTORIES, ids=[o.name for o in FACTORIES])
@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_every_objective_trains_mlp_and_linear(objective, model):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 2))
    data = {"x": x, "y": (x[:, 0] + x[:, 1] > 0).astype(np.int32)}  # linearly separable
    if model == "mlp":
        kwargs = {"model": MLP(2, 2, nnx.Rngs(0))}
    else:
        kwargs = {"model": linear_apply, "params": linear_params(2, 2)}
    trainer = rl.train.Trainer(
        loss=CE, objective=objective, optimizer=optax.adam(0.05), batch_size=64, verbose=False, **kwargs
    )
    value0 = float(objective.loss(trainer.loss_fn, trainer.init_params, data, objective.init(None), None)[0])
    history = trainer.fit(data, epochs=8)
    value1 = float(objective.loss(trainer.loss_fn, trainer.params, data, objective.init(None), None)[0])
    assert len(history) == 8 and all(np.isfinite(history.columns()["train_objective"]))
    assert value1 < 0.8 * value0, (value0, value1)


def test_nnx_module_is_updated_in_place():
    model = MLP(2, 2, nnx.Rngs(0))
    before = np.asarray(model.l1.kernel[...]).copy()
    trainer = rl.train.Trainer(model, CE, objectives.erm(), optax.sgd(0.1), verbose=False)
    trainer.fit(group_shift_data(0, 64, 0.2), epochs=2)
    assert not np.array_equal(before, np.asarray(model.l1.kernel[...]))
    np.testing.assert_array_equal(model(jnp.ones((1, 2))), trainer.predict(jnp.ones((1, 2))))


def _gradient_weights(objective, losses):
    """d objective / d losses through the Objective interface: the weight of each example."""
    return np.asarray(
        jax.grad(lambda v: objective.loss(lambda p, b: v, None, {}, objective.init(None), None)[0])(jnp.asarray(losses))
    )


def _train_linear(objective, data, epochs=300):
    trainer = rl.train.Trainer(linear_apply, CE, objective, optax.adam(0.05), params=linear_params(2, 2), verbose=False)
    trainer.fit(data, epochs=epochs)
    return np.asarray(trainer.loss_fn(trainer.params, data))


def test_robust_objectives_weight_the_hard_group_and_help_it():
    # Minority group (5%) with a different boundary: ERM sacrifices it. At the ERM
    # solution the robust objectives must put well over 5% of the weight on it, and
    # training with them must lower the minority's loss.
    train = group_shift_data(1, 2000, 0.05)
    minority = train["group"] == 1
    erm_losses = _train_linear(objectives.erm(), train)
    assert _gradient_weights(objectives.erm(), erm_losses)[minority].sum() == pytest.approx(minority.mean())
    for objective in FACTORIES[1:]:
        weight = _gradient_weights(objective, erm_losses)[minority].sum()
        assert weight > 2 * minority.mean(), (objective.name, weight)
    for objective in (objectives.cvar(0.1), objectives.kl(1.0)):
        robust_losses = _train_linear(objective, train)
        assert robust_losses[minority].mean() < 0.9 * erm_losses[minority].mean(), objective.name


def _fit(tmp_path, epochs, resume, seed=3):
    trainer = rl.train.Trainer(
        MLP(2, 2, nnx.Rngs(1)),
        CE,
        objectives.cvar(0.4),
        optax.adam(0.01),
        batch_size=48,
        seed=seed,
        checkpoint_dir=tmp_path,
        num_groups=2,
        verbose=False,
    )
    data = group_shift_data(2, 200, 0.3)
    trainer.fit(data, {k: v[:80] for k, v in data.items()}, epochs=epochs, resume=resume)
    return trainer


def test_resume_is_bit_identical(tmp_path):
    full = _fit(tmp_path / "a", 5, resume=False)
    _fit(tmp_path / "b", 2, resume=False)
    resumed = _fit(tmp_path / "b", 5, resume=True)
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert full.history.rows == resumed.history.rows


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_finite_state(tmp_path):
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(64, 3)), "y": rng.normal(size=(64,))}

    def squared(out, y):
        return (out[:, 0] - y) ** 2

    trainer = rl.train.Trainer(
        linear_apply,
        squared,
        objectives.erm(),
        optax.sgd(3.0),  # diverges: the loss overflows to inf after a few epochs
        params=linear_params(3, 1),
        batch_size=16,
        checkpoint_dir=tmp_path,
        verbose=False,
    )
    with pytest.raises(FloatingPointError, match=r"non-finite objective or gradient at step \d+ \(epoch (\d+)\)") as e:
        trainer.fit(data, epochs=500)
    bad_epoch = int(e.value.args[0].split("(epoch ")[1].split(")")[0])
    assert bad_epoch > 1
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(trainer.state))
    assert f"checkpoint of epoch {bad_epoch - 1} is kept" in str(e.value)
    resumed = rl.train.Trainer(
        linear_apply, squared, objectives.erm(), optax.sgd(3.0), params=linear_params(3, 1),
        batch_size=16, checkpoint_dir=tmp_path, verbose=False,
    )  # fmt: skip
    history = resumed.fit(data, epochs=bad_epoch - 1, resume=True)
    assert len(history) == bad_epoch - 1


def test_early_stopping_keeps_the_best_epoch():
    data = group_shift_data(3, 300, 0.2)
    val = group_shift_data(4, 300, 0.5)
    trainer = rl.train.Trainer(
        MLP(2, 2, nnx.Rngs(0)),
        CE,
        objectives.erm(),
        optax.adam(0.3),  # large steps: the validation metric is noisy
        batch_size=32,
        monitor="val_worst_group_accuracy",
        patience=3,
        num_groups=2,
        verbose=False,
    )
    history = trainer.fit(data, val, epochs=40)
    scores = history.columns()["val_worst_group_accuracy"]
    best = int(np.argmax(scores))
    assert trainer.best_epoch == best + 1
    assert len(history) <= 40 and len(history) - 1 - best <= 3
    # The kept parameters reproduce the best score.
    out = trainer.predict(val["x"])
    correct = np.asarray(jnp.argmax(out, -1)) == val["y"]
    worst = min(correct[val["group"] == g].mean() for g in (0, 1))
    assert worst == pytest.approx(scores[best], abs=1e-6)


def test_history_and_progress_output(capsys):
    trainer = rl.train.Trainer(
        MLP(2, 2, nnx.Rngs(0)), CE, objectives.kl(0.3), optax.adam(0.01), num_groups=2, verbose=True
    )
    history = trainer.fit(group_shift_data(0, 40, 0.5), group_shift_data(1, 40, 0.5), epochs=3)
    err = capsys.readouterr().err
    assert "epoch 3/3" in err and "val_loss=" in err
    table = history.to_markdown(["epoch", "val_loss", "val_worst_group_accuracy"])
    assert table.splitlines()[0] == "| epoch | val_loss | val_worst_group_accuracy |"
    assert len(table.splitlines()) == 5


@pytest.fixture
def no_compile(caplog):
    """Fails the test if JAX compiles anything inside the block."""
    caplog.set_level(logging.WARNING)
    with jax.log_compiles(True):
        yield
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled


GOOD = {"x": np.zeros((10, 2)), "y": np.zeros(10, np.int32)}


@pytest.mark.parametrize(
    ("train", "kwargs", "fit_kwargs", "error", "match"),
    [
        ({"x": np.zeros((10, 2)), "y": np.zeros(9, np.int32)}, {}, {}, ValueError, "disagree on the number"),
        ({"x": np.zeros((0, 2)), "y": np.zeros(0, np.int32)}, {}, {}, ValueError, "is empty"),
        ({"x": np.zeros((10, 2))}, {}, {}, ValueError, "must contain the key 'y'"),
        (GOOD, {"batch_size": 11}, {}, ValueError, r"`batch_size` \(11\) must be at most"),
        (GOOD, {"monitor": "val_acc"}, {}, ValueError, "unknown `monitor` metric 'val_acc'"),
        (GOOD, {"monitor": "val_loss"}, {}, ValueError, "unknown `monitor` metric 'val_loss'"),
        ({"x": np.zeros((10, 2)), "y": np.full(10, 2, np.int32)}, {}, {}, ValueError, r"must be in \[0, 1\]"),
        ({"x": np.zeros((10, 2)), "y": np.full(10, -1, np.int32)}, {}, {}, ValueError, r"must be in \[0, 1\]"),
        (GOOD, {}, {"epochs": 0}, ValueError, "`epochs` must be a positive int"),
        (dict(GOOD, group=np.full(10, -1)), {}, {}, ValueError, "non-negative group ids"),
        ([np.zeros((10, 2))], {}, {}, TypeError, "must be a dict"),
    ],
)
def test_bad_arguments_fail_before_compiling(train, kwargs, fit_kwargs, error, match, no_compile):
    trainer = rl.train.Trainer(
        linear_apply, CE, objectives.erm(), optax.sgd(0.1), params=linear_params(2, 2), verbose=False, **kwargs
    )
    with pytest.raises(error, match=match):
        trainer.fit(train, **fit_kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "`batch_size` must be a positive int"),
        ({"patience": 0}, ValueError, "`patience` must be a positive int"),
        ({"objective": rl.cvar}, TypeError, "`objective` must be a robustlearn.objectives.Objective"),
        ({"optimizer": "adam"}, TypeError, "`optimizer` must be an optax.GradientTransformation"),
        ({"params": None}, ValueError, "`params` is required"),
    ],
)
def test_bad_trainer_construction(kwargs, error, match):
    args = {"objective": objectives.erm(), "optimizer": optax.sgd(0.1), "params": linear_params(2, 2)} | kwargs
    with pytest.raises(error, match=match):
        rl.train.Trainer(linear_apply, CE, **args)


def test_loss_must_be_per_example():
    trainer = rl.train.Trainer(
        linear_apply, lambda o, y: CE(o, y).mean(), objectives.erm(), optax.sgd(0.1), params=linear_params(2, 2)
    )
    with pytest.raises(ValueError, match="one loss per example"):
        trainer.fit(GOOD)


def test_objective_factories_validate_hyperparameters():
    with pytest.raises(ValueError, match=r"`alpha` must be in \(0, 1\]"):
        objectives.cvar(0.0)
    with pytest.raises(ValueError, match=r"`k` must be in \(1, inf\)"):
        objectives.cressie_read(0.1, 1.0)


def test_history_plot_draws_each_metric():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = rl.train.History([{"epoch": e, "train_objective": 1.0 / e, "val_loss": 2.0 / e} for e in (1, 2, 3)])
    fig, ax = plt.subplots()
    history.plot(("train_objective", "val_loss"), ax=ax)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["train_objective", "val_loss"]
    np.testing.assert_allclose(lines[1].get_ydata(), [2.0, 1.0, 2.0 / 3])
    plt.close(fig)


@pytest.mark.parametrize("objective", FACTORIES, ids=[o.name for o in FACTORIES])
def test_objective_reads_weight_and_mask_from_the_batch(objective):
    losses = jnp.asarray([0.3, 2.0, 0.1, 1.2, 0.7])
    batch = {"weight": jnp.asarray([1.0, 0.5, 2.0, 1.0, 3.0]), "mask": jnp.asarray([True, True, False, True, True])}
    state0 = objective.init(None)
    value, (state, metrics) = objective.loss(lambda p, b: losses, None, batch, state0, None)
    public = getattr(rl, objective.reduction.name)
    expected = public(losses, **objective.hyperparams, weights=batch["weight"], where=batch["mask"])
    assert float(value) == float(expected) == float(metrics["objective"])
    assert float(metrics["mean_loss"]) == pytest.approx(float(losses[batch["mask"]].mean()))
    assert state == state0


@pytest.mark.parametrize("n", [24, 22])  # minibatches of 8: exact, and a padded last one
def test_each_epoch_visits_every_example_once_in_the_documented_order(n):
    # The labels carry the example ids; the loss records each step's ids and mask.
    seen = []

    def loss(outputs, y):
        jax.debug.callback(lambda ids: seen.append(np.asarray(ids).astype(int)), y, ordered=True)
        return jnp.sum(outputs, axis=-1) * 0.0 + y

    data = {"x": np.zeros((n, 2)), "y": np.arange(n, dtype=np.float64)}  # float labels: a regression

    def run(seed):
        seen.clear()
        trainer = rl.train.Trainer(
            model=linear_apply, params=linear_params(2, 1), loss=loss, objective=objectives.erm(),
            optimizer=optax.sgd(0.1), batch_size=8, seed=seed, verbose=False,
        )  # fmt: skip
        trainer.fit(data, epochs=3)
        jax.effects_barrier()
        steps = -(-n // 8)
        return np.concatenate(seen[-3 * steps :]).reshape(3, steps * 8)

    orders = run(5)
    for epoch, order in enumerate(orders, start=1):
        expected = np.random.default_rng([5, epoch]).permutation(n)  # NumPy's draw from (seed, epoch)
        np.testing.assert_array_equal(order[:n], expected)
        np.testing.assert_array_equal(order[n:], expected[: len(order) - n])  # the padding repeats the first rows
    assert not np.array_equal(orders[0], orders[1])
    np.testing.assert_array_equal(run(5), orders)  # same seed, same order
    assert not np.array_equal(run(6)[0], orders[0])

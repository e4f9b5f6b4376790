"""Validation: no state advance, columns required of training data only, weight-aware group metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import robustlearn as rl
from robustlearn import objectives

CE = optax.softmax_cross_entropy_with_integer_labels


def linear_apply(params, x):
    return x @ params["w"] + params["b"][None, :]


def _params():
    return {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}


def _groups(seed, n, minority=0.25):
    rng = np.random.default_rng(seed)
    group = (rng.random(n) < minority).astype(np.int32)
    x = rng.normal(size=(n, 2))
    y = (np.where(group == 0, x[:, 0], x[:, 1]) > 0).astype(np.int32)
    return {"x": x, "y": y, "group": group}


TRAIN, VAL = _groups(0, 128), _groups(1, 64, 0.5)


def _trainer(objective, **kwargs):
    kwargs = {"batch_size": 32, "verbose": False, "restore_best": False} | kwargs
    return rl.train.Trainer(linear_apply, CE, objective, optax.adam(0.1), params=_params(), **kwargs)


def _ce(trainer, data):
    return np.asarray(CE(trainer.predict(data["x"]), data["y"]))


def test_validation_never_advances_the_objective_state():
    objective = objectives.group_dro(2, step_size=0.5)
    with_val = _trainer(objective)
    with_val.fit(TRAIN, VAL, epochs=3)
    without = _trainer(objective)
    without.fit(TRAIN, epochs=3)
    for a, b in zip(jax.tree.leaves(with_val.state), jax.tree.leaves(without.state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_group_dro_validation_value_uses_the_current_weights_without_a_step():
    counts = np.bincount(TRAIN["group"], minlength=2)
    objective = objectives.group_dro(2, step_size=0.5, adjustment=0.5, group_counts=counts)
    trainer = _trainer(objective)
    last = trainer.fit(TRAIN, VAL, epochs=3).rows[-1]
    q = np.asarray(trainer.state.obj_state.weights)
    losses = _ce(trainer, VAL)
    means = np.array([losses[VAL["group"] == g].mean() for g in (0, 1)])
    assert last["val_objective"] == pytest.approx(float(q @ (means + 0.5 / np.sqrt(counts))), rel=1e-9)
    np.testing.assert_allclose(last["val_group_weights"], q, rtol=1e-12)
    assert last["val_worst_group_loss"] == pytest.approx(means.max(), rel=1e-9)
    # Training metrics: the group weights after each step, averaged over the epoch (a distribution).
    assert len(last["train_group_weights"]) == 2 and sum(last["train_group_weights"]) == pytest.approx(1.0)
    assert max(last["train_group_weights"]) <= last["train_max_group_weight"] + 1e-12


def test_columns_the_objective_needs_are_required_of_training_data_only():
    trainer = _trainer(objectives.group_dro(2))
    val = {"x": VAL["x"], "y": VAL["y"]}  # no "group": the objective's validation metrics are skipped
    history = trainer.fit(TRAIN, val, epochs=2)
    assert "val_objective" not in history.rows[-1] and "val_group_weights" not in history.rows[-1]
    assert history.rows[-1]["val_loss"] == pytest.approx(_ce(trainer, val).mean(), rel=1e-9)
    with pytest.raises(ValueError, match=r"in `train`: .*needs group ids in the batch under 'group'"):
        trainer.fit({"x": TRAIN["x"], "y": TRAIN["y"]}, VAL, epochs=1)
    plain = objectives.erm()._replace(requires=("previous",))  # no check of its own: the trainer's message
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['previous'\] in the training data `train`"):
        _trainer(plain).fit({"x": TRAIN["x"], "y": TRAIN["y"]}, epochs=1)
    weighted = _trainer(objectives.importance_weighted())
    names = weighted.metric_names(dict(TRAIN, weight=np.ones(128)), val)
    assert "val_objective" not in names and "val_loss" in names


def test_validation_metrics_are_weight_aware():
    rng = np.random.default_rng(5)
    val = dict(VAL, weight=rng.uniform(0.0, 3.0, size=64))
    val["weight"][:5] = 0.0
    trainer = _trainer(objectives.erm(), num_groups=2)
    last = trainer.fit(TRAIN, val, epochs=2).rows[-1]
    losses, w, g = _ce(trainer, val), val["weight"], val["group"]
    correct = (np.asarray(trainer.predict(val["x"])).argmax(-1) == val["y"]).astype(float)
    assert last["val_loss"] == pytest.approx(np.sum(w * losses) / np.sum(w), rel=1e-9)
    assert last["val_accuracy"] == pytest.approx(np.sum(w * correct) / np.sum(w), rel=1e-9)
    group_loss = [np.sum((w * losses)[g == k]) / np.sum(w[g == k]) for k in (0, 1)]
    group_acc = [np.sum((w * correct)[g == k]) / np.sum(w[g == k]) for k in (0, 1)]
    assert last["val_worst_group_loss"] == pytest.approx(max(group_loss), rel=1e-9)
    assert last["val_worst_group_accuracy"] == pytest.approx(min(group_acc), rel=1e-9)


def test_group_metrics_count_a_group_absent_from_validation_as_absent():
    # num_groups comes from the objective (3), not from the largest id seen (1).
    trainer = _trainer(objectives.group_dro(3))
    train = dict(TRAIN, group=np.where(np.arange(128) % 7 == 0, 2, TRAIN["group"]).astype(np.int32))
    last = trainer.fit(train, VAL, epochs=1).rows[-1]
    assert len(last["val_group_weights"]) == 3
    losses = _ce(trainer, VAL)
    assert last["val_worst_group_loss"] == pytest.approx(max(losses[VAL["group"] == k].mean() for k in (0, 1)))


@pytest.mark.parametrize(
    ("objective", "kwargs", "val", "match"),
    [
        (objectives.erm(), {}, VAL, r"`val` has 'group' ids but the number of groups is unknown"),
        (objectives.erm(), {"num_groups": 1}, VAL, r"`val\['group'\]` ids must be in \[0, 0\] for num_groups=1"),
        (objectives.group_dro(2), {"num_groups": 3}, VAL, r"`num_groups` \(3\) differs from the objective's"),
        (objectives.group_dro(2), {}, dict(VAL, group=VAL["group"] * 2), r"in `val`: `group` ids must be in \[0, 1\]"),
    ],
)
def test_the_number_of_groups_is_given_never_guessed(objective, kwargs, val, match):
    with pytest.raises(ValueError, match=match):
        _trainer(objective, **kwargs).fit(TRAIN, val, epochs=1)


def test_group_means_rejects_negative_weights():
    losses, groups = jnp.array([1.0, 2.0, 3.0]), jnp.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"`weights` must be finite and in \[0, inf\)"):
        rl.importance.group_means(losses, groups, 2, weights=jnp.array([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match=r"`weights` must be finite"):
        rl.importance.group_means(losses, groups, 2, weights=np.array([1.0, np.nan, 2.0]))
    traced = jax.jit(lambda w: rl.importance.group_means(losses, groups, 2, weights=w))
    means, mass = traced(jnp.array([1.0, -1.0, 2.0]))
    assert np.all(np.isnan(means)) and np.all(np.isnan(mass))
    means, mass = traced(jnp.array([1.0, 1.0, 3.0]))
    np.testing.assert_allclose(means, [1.0, (2.0 + 9.0) / 4.0])
    np.testing.assert_allclose(mass, [1.0, 4.0])


def test_group_dro_keeps_its_hyperparameters_in_its_state():
    state = objectives.group_dro(2, step_size=0.3, adjustment=1.0, group_counts=[10, 40]).init(None)
    assert float(state.hyperparams["step_size"]) == pytest.approx(0.3)
    assert float(state.hyperparams["adjustment"]) == 1.0
    np.testing.assert_array_equal(state.hyperparams["group_counts"], [10.0, 40.0])
    assert state.weights.dtype == jnp.result_type(float)

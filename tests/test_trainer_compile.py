"""The Trainer compiles its epoch once per program: grids over traced hyperparameters share it."""

import contextlib

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax import monitoring

import robustlearn as rl
from robustlearn import objectives
from robustlearn._src.training import compile_cache

CE = optax.softmax_cross_entropy_with_integer_labels
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(2, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def _data(seed=0, n=96, groups=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    data = {"x": x, "y": (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)}
    if groups:
        data["group"] = (x[:, 1] > 0.5).astype(np.int32)
    return data


@contextlib.contextmanager
def backend_compiles():
    """Names of the programs XLA compiles inside the block (jax's own compile event)."""
    names = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            names.append(kwargs.get("fun_name", "?"))

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        monitoring.unregister_event_duration_listener(listener)


def _count(names, program):
    return sum(program in name for name in names)


def _fit(objective, optimizer, seed=0, epochs=2, val=True):
    groups = "group" in objective.requires
    trainer = rl.train.Trainer(MLP(nnx.Rngs(seed)), CE, objective, optimizer, batch_size=32, verbose=False)
    trainer.fit(_data(groups=groups), _data(1, 40, groups=groups) if val else None, epochs=epochs)
    return trainer


@pytest.mark.parametrize(
    "grid",
    [
        [(objectives.kl(r), optax.adam(0.05)) for r in (0.05, 0.2, 0.5, 1.0)],
        [
            (objectives.cvar(0.3), optax.inject_hyperparams(optax.adam)(learning_rate=lr))
            for lr in (0.003, 0.01, 0.03, 0.1)
        ],
        [(objectives.group_dro(2, step_size=s), optax.adam(0.05)) for s in (0.01, 0.1, 0.5, 2.0)],
    ],
    ids=["kl-radius", "adam-learning-rate", "group-dro-step-size"],
)
def test_a_grid_over_a_traced_hyperparameter_compiles_the_epoch_once(grid):
    compile_cache.clear()
    trainers = []
    with backend_compiles() as names:
        for i, (objective, optimizer) in enumerate(grid):
            trainers.append(_fit(objective, optimizer, seed=i))  # other initial weights too
    assert _count(names, "robustlearn_epoch") == 1, names
    assert _count(names, "robustlearn_eval") == 1, names
    # The points really differ: the shared executable reads each trainer's values.
    finals = [t.history.rows[-1]["train_objective"] for t in trainers]
    assert len(set(finals)) == len(finals), finals


def test_a_grid_point_trains_as_a_freshly_compiled_trainer_would():
    # The reused executable gives bit for bit what a private compilation gives.
    compile_cache.clear()
    _fit(objectives.kl_penalty(0.2), optax.adam(0.05), val=False)
    reused = _fit(objectives.kl_penalty(0.7), optax.adam(0.05), seed=3, val=False)
    compile_cache.clear()
    fresh = _fit(objectives.kl_penalty(0.7), optax.adam(0.05), seed=3, val=False)
    assert reused.history.rows == fresh.history.rows
    for a, b in zip(jax.tree.leaves(reused.params), jax.tree.leaves(fresh.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_closed_over_constant_is_a_different_program():
    # The learning rate of plain optax.adam is a constant of the program: another value
    # must compile (and train) another program, never reuse the first one.
    compile_cache.clear()
    with backend_compiles() as names:
        slow = _fit(objectives.erm(), optax.adam(0.001), val=False)
        fast = _fit(objectives.erm(), optax.adam(0.1), val=False)
    assert _count(names, "robustlearn_epoch") == 2, names
    assert fast.history.rows[-1]["train_objective"] < slow.history.rows[-1]["train_objective"]


def test_changing_the_objective_or_optimizer_after_fit_trains_the_new_one():
    trainer = _fit(objectives.erm(), optax.adam(0.05), val=False)
    erm_rows = trainer.history.rows
    trainer.objective = objectives.cvar(0.2)
    trainer.fit(_data(), epochs=2)
    reference = _fit(objectives.cvar(0.2), optax.adam(0.05), val=False)
    assert trainer.history.rows == reference.history.rows
    assert trainer.history.rows != erm_rows
    trainer.optimizer = optax.sgd(0.5)
    trainer.fit(_data(), epochs=2)
    assert trainer.history.rows == _fit(objectives.cvar(0.2), optax.sgd(0.5), val=False).history.rows


def test_refitting_the_same_trainer_neither_traces_nor_compiles_again(monkeypatch):
    trainer = _fit(objectives.erm(), optax.adam(0.05))
    lowered = []
    original = compile_cache.compiled
    monkeypatch.setattr(compile_cache, "compiled", lambda fn, *args: lowered.append(fn) or original(fn, *args))
    with backend_compiles() as names:
        trainer.fit(_data(), _data(1, 40), epochs=2)
    assert lowered == []
    assert _count(names, "robustlearn") == 0, names


def test_refitting_reuses_the_traced_shapes_but_checks_every_call_s_labels():
    # fit traces the model and the loss for shapes and metric names once per signature of the
    # data; another call with new values of the same signature traces nothing, but the label
    # values are still checked, and a new signature (here: no val) is traced again.
    traced = []

    def loss(outputs, y):
        traced.append(outputs.shape)
        return CE(outputs, y)

    trainer = rl.train.Trainer(MLP(nnx.Rngs(0)), loss, objectives.erm(), optax.adam(0.05), batch_size=32, verbose=False)
    trainer.fit(_data(), _data(1, 40), epochs=1)
    assert traced
    traced.clear()
    trainer.fit(_data(2), _data(3, 40), epochs=1)
    assert traced == []
    assert set(trainer.history.rows[-1]) >= {"train_objective", "val_loss", "val_accuracy"}
    bad = _data(4)
    bad["y"][5] = 2  # a class the 2-output model does not have
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        trainer.fit(bad, epochs=1)
    bad_val = _data(5, 40)
    bad_val["y"][0] = -1
    with pytest.raises(ValueError, match=r"val\['y'\]"):
        trainer.fit(_data(), bad_val, epochs=1)
    trainer.fit(_data(), epochs=1)  # no val: other metric names
    assert not any(k.startswith("val_") for k in trainer.history.rows[-1])
    assert traced  # a new signature is traced


def test_programs_differing_in_one_entry_of_a_large_constant_do_not_share_an_executable():
    compile_cache.clear()
    big = np.zeros(1_000_000, np.float32)
    other = big.copy()
    other[123_456] = 1.0
    x = jax.numpy.ones(1_000_000, np.float32)

    def make(constant):
        def f(x):
            return jax.numpy.sum(x * constant)

        return f

    assert float(compile_cache.compiled(make(big), x)(x)) == 0.0
    assert float(compile_cache.compiled(make(other), x)(x)) == 1.0
    assert compile_cache.stats == {"hits": 0, "misses": 2}
    assert float(compile_cache.compiled(make(other.copy()), x)(x)) == 1.0  # equal values: the same program
    assert compile_cache.stats == {"hits": 1, "misses": 2}

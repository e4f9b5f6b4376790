"""Inputs that used to crash or pass silently: a clear error before compiling, or a documented conversion."""

import logging

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


def _trainer(**kwargs):
    kwargs = {"params": {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}, "verbose": False} | kwargs
    objective = kwargs.pop("objective", objectives.erm())
    return rl.train.Trainer(linear_apply, kwargs.pop("loss", CE), objective, optax.sgd(0.1), **kwargs)


X = np.random.default_rng(0).normal(size=(12, 2))
Y = (X[:, 0] > 0).astype(np.int32)
GOOD = {"x": X, "y": Y}


@pytest.fixture
def no_compile(caplog):
    """Fails the test if JAX compiles anything inside the block."""
    jax.random.PRNGKey(0)  # warm the tiny helpers the checks use
    caplog.set_level(logging.WARNING)
    with jax.log_compiles(True):
        yield
    compiled = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled


def test_python_lists_are_converted():
    from_lists = _trainer().fit({"x": X.tolist(), "y": Y.tolist()}, {"x": X.tolist(), "y": Y.tolist()}, epochs=2)
    from_arrays = _trainer().fit(GOOD, GOOD, epochs=2)
    assert from_lists.rows == from_arrays.rows


def _with(**columns):
    return dict(GOOD, **columns)


def _nan_at(a, i, value=np.nan):
    a = np.array(a, dtype=np.float64)
    a.flat[i] = value
    return a


@pytest.mark.parametrize(
    ("train", "val", "kwargs", "error", "match"),
    [
        (_with(x=[["a", "b"]] * 12), None, {}, TypeError, r"`train\['x'\]` must hold numbers; got dtype <U1"),
        (_with(x=[[1.0, 2.0], [3.0]] + [[0.0, 0.0]] * 10), None, {}, TypeError, r"`train\['x'\]` must be a rect"),
        (_with(x=_nan_at(X, 7)), None, {}, ValueError, r"`train\['x'\]` contains NaN or inf .* example 3"),
        (GOOD, _with(x=_nan_at(X, 0, np.inf)), {}, ValueError, r"`val\['x'\]` contains NaN or inf"),
        (
            GOOD,
            _with(weight=_nan_at(np.ones(12), 4)),
            {},
            ValueError,
            r"`val\['weight'\]` must be 12 finite non-negative numbers, in \[0, inf\).*; got nan at example 4",
        ),
        (
            _with(weight=-np.ones(12)),
            None,
            {},
            ValueError,
            r"`train\['weight'\]` must be 12 finite non-negative .*; got -1.0 at example 0",
        ),
        (
            _with(y=Y.astype(np.float32)),
            None,
            {},
            TypeError,
            r"`train\['y'\]` holds labels of dtype float32, but the l",
        ),
        (GOOD, _with(y=Y + 0.5), {}, TypeError, r"`val\['y'\]` holds labels of dtype float64, .*integer_labels"),
        (_with(mask=np.ones(12, bool)), None, {}, ValueError, r"must not contain 'mask'"),
        (GOOD, None, {"epochs": 2.0}, ValueError, r"`epochs` must be a positive int, in \[1, inf\); got 2.0"),
        (GOOD, None, {"resume": "yes"}, TypeError, r"`resume` must be a bool"),
        ({1: X, "x": X, "y": Y}, None, {}, TypeError, r"the keys of `train` must be strings"),
    ],
)
def test_bad_data_is_a_clear_error_before_compiling(train, val, kwargs, error, match, no_compile):
    epochs = kwargs.pop("epochs", 1)
    with pytest.raises(error, match=match):
        _trainer().fit(train, val, epochs=epochs, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patience": 1.5}, ValueError, r"`patience` must be a positive int or None, in \[1, inf\); got 1.5"),
        ({"patience": True}, ValueError, r"`patience` must be a positive int or None"),
        ({"batch_size": 2.5}, ValueError, r"`batch_size` must be a positive int or None"),
        ({"seed": -1}, ValueError, r"`seed` must be an int in \[0, 2\*\*32\) or None"),
        ({"seed": "0"}, ValueError, r"`seed` must be an int"),
        ({"seed": 1.0}, ValueError, r"`seed` must be an int"),
        ({"monitor": 3}, TypeError, r"`monitor` must be a metric name"),
        ({"restore_best": 1}, TypeError, r"`restore_best` must be a bool"),
        ({"verbose": "yes"}, TypeError, r"`verbose` must be a bool"),
        ({"num_groups": 0}, ValueError, r"`num_groups` must be a positive int or None"),
        ({"callbacks": rl.train.EarlyStopping()}, TypeError, r"`callbacks` must be a sequence"),
        ({"callbacks": [print]}, TypeError, r"`callbacks` must be a sequence of Callback objects"),
        ({"checkpoint_dir": 3}, TypeError, r"`checkpoint_dir` must be a path or None"),
        ({"loss": "ce"}, TypeError, r"`loss` must be a function"),
        ({"devices": []}, ValueError, r"`devices` must name at least one device"),
    ],
)
def test_bad_trainer_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _trainer(**kwargs)


def test_seed_none_draws_a_recorded_seed():
    a, b = _trainer(seed=None), _trainer(seed=None)
    assert isinstance(a.seed, int) and 0 <= a.seed < 2**31 and a.seed != b.seed
    again = _trainer(seed=a.seed, batch_size=4)
    a.batch_size = 4
    assert a.fit(GOOD, epochs=2).rows == again.fit(GOOD, epochs=2).rows  # the recorded seed reproduces the run


def test_a_loss_that_fails_on_the_data_says_where():
    def bad_loss(out, y):
        return out @ jnp.ones(3) - y  # out has 2 columns

    with pytest.raises(TypeError) as e:
        _trainer(loss=bad_loss).fit(GOOD, epochs=1)
    assert "while evaluating loss(model(train['x']), train['y']) on 2 training examples" in "".join(
        getattr(e.value, "__notes__", [])
    )

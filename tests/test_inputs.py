"""Bad input fails loudly, naming the argument and the allowed range."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robustlearn as rl
from tests.strategies import CASE_IDS, CASES

LOSSES = np.array([0.5, 1.0, 2.0])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(
    "losses",
    [np.array([1, 2, 3]), [1, 2], np.array([True, False]), np.array([1 + 2j]), np.array(["a", "b"]), ["0.1", "0.2"]]
    + [np.array([0.1, None], dtype=object)],
)
def test_non_float_losses_raise_type_error(case, losses):
    for fn in (case.value, case.weights):
        with pytest.raises(TypeError, match="`losses` must have a real floating dtype"):
            fn(losses, **case.hyper)


@pytest.mark.parametrize(
    ("fn", "kwargs", "message"),
    [
        (rl.cvar, {"alpha": 0.0}, r"`alpha` must be in \(0, 1\]"),
        (rl.cvar, {"alpha": 1.5}, r"`alpha` must be in \(0, 1\]"),
        (rl.cvar, {"alpha": float("nan")}, r"`alpha` must be in \(0, 1\]"),
        (rl.cvar_weights, {"alpha": -0.1}, r"`alpha` must be in \(0, 1\]"),
        (rl.chi_square, {"radius": -1e-3}, r"`radius` must be in \[0, inf\)"),
        (rl.chi_square_weights, {"radius": -1.0}, r"`radius` must be in \[0, inf\)"),
        (rl.kl, {"radius": -1.0}, r"`radius` must be in \[0, inf\)"),
        (rl.kl_weights, {"radius": float("inf")}, r"`radius` must be in \[0, inf\)"),
        (rl.cressie_read, {"radius": -1.0, "k": 2.0}, r"`radius` must be in \[0, inf\)"),
        (rl.cressie_read, {"radius": 1.0, "k": 1.0}, r"`k` must be in \(1, inf\)"),
        (rl.cressie_read_weights, {"radius": 1.0, "k": 0.5}, r"`k` must be in \(1, inf\)"),
        (rl.chi_square_penalty, {"lam": 0.0}, r"`lam` must be in \(0, inf\)"),
        (rl.chi_square_penalty_weights, {"lam": -1.0}, r"`lam` must be in \(0, inf\)"),
        (rl.kl_penalty, {"lam": 0.0}, r"`lam` must be in \(0, inf\)"),
        (rl.kl_penalty_weights, {"lam": -2.0}, r"`lam` must be in \(0, inf\)"),
        (rl.tv, {"radius": 1.5}, r"`radius` must be in \[0, 1\]"),
        (rl.tv_weights, {"radius": -0.5}, r"`radius` must be in \[0, 1\]"),
    ],
)
def test_hyperparameter_out_of_range(fn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fn(LOSSES, **kwargs)


@pytest.mark.parametrize("bad", [np.array([0.1, 0.2]), "0.1", None, True])
def test_hyperparameter_wrong_kind(bad):
    with pytest.raises((TypeError, ValueError), match="`alpha` must be"):
        rl.cvar(LOSSES, bad)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"weights": np.array([1.0, -0.5, 1.0])}, ValueError, r"`weights` must be finite and in \[0, inf\)"),
        ({"weights": np.array([1.0, np.nan, 1.0])}, ValueError, r"`weights` must be finite and in \[0, inf\)"),
        ({"weights": np.ones(4)}, ValueError, r"`weights` of shape \(4,\) does not broadcast"),
        ({"weights": np.array(["a", "b", "c"])}, TypeError, "`weights` must be real numbers"),
        ({"where": np.array([True, False])}, ValueError, r"`where` of shape \(2,\) does not broadcast"),
        ({"where": np.ones((2, 3), bool)}, ValueError, r"`where` of shape \(2, 3\) does not broadcast"),
        ({"where": np.array([1, 0, 1])}, TypeError, "`where` must be a boolean mask"),
        ({"axis": 1}, ValueError, r"`axis` must be in \[-1, 0\]"),
        ({"axis": 0.0}, TypeError, "`axis` must be an int"),
        ({"axis": (0, 0)}, ValueError, "`axis` names an axis twice"),
        ({"axis": ()}, ValueError, "`axis` must name at least one axis"),
    ],
)
def test_bad_weights_mask_and_axis(case, kwargs, error, message):
    for fn in (case.value, case.weights):
        with pytest.raises(error, match=message):
            fn(LOSSES, **case.hyper, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4)])
def test_empty_losses_raise_eagerly_and_under_jit(case, shape):
    losses = jnp.zeros(shape)
    for fn in (case.value, case.weights):
        with pytest.raises(ValueError, match="`losses` has no examples to reduce"):
            fn(losses, **case.hyper, axis=None)
        with pytest.raises(ValueError, match="`losses` has no examples to reduce"):
            jax.jit(lambda x, fn=fn: fn(x, **case.hyper, axis=None))(losses)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_all_zero_weights_leave_no_example_eagerly_and_under_jit(case):
    # Like an all-False mask: value 0 and weights 0, documented, the same under jit.
    zeros = np.zeros(3)
    for fn in (
        lambda w: case.value(LOSSES, **case.hyper, weights=w),
        lambda w: case.weights(LOSSES, **case.hyper, weights=w),
    ):
        eager = np.asarray(fn(zeros))
        assert np.all(eager == 0)
        np.testing.assert_array_equal(np.asarray(jax.jit(fn)(jnp.asarray(zeros))), eager)
    masked = case.value(LOSSES, **case.hyper, where=np.zeros(3, bool))
    assert float(masked) == 0.0


def test_scalar_losses_raise():
    with pytest.raises(ValueError, match="at least one dimension"):
        rl.erm(jnp.float32(1.0))


@pytest.mark.parametrize(
    ("fn", "bad"),
    [
        (lambda x, h: rl.cvar(x, h), 0.0),
        (lambda x, h: rl.kl(x, h), -1.0),
        (lambda x, h: rl.chi_square(x, h), -1.0),
        (lambda x, h: rl.cressie_read(x, 0.5, h), 1.0),
        (lambda x, h: rl.kl_penalty(x, h), 0.0),
        (lambda x, h: rl.chi_square_penalty(x, h), -3.0),
        (lambda x, h: rl.tv(x, h), 1.5),
    ],
)
def test_traced_bad_hyperparameter_gives_nan(fn, bad):
    # Under jit the value cannot be checked at trace time: it must not become a number.
    out = jax.jit(fn)(jnp.asarray(LOSSES), jnp.asarray(bad))
    assert np.isnan(float(out))


def test_traced_negative_weights_give_nan():
    out = jax.jit(lambda w: rl.cvar(LOSSES, 0.5, weights=w))(jnp.asarray([1.0, -1.0, 1.0]))
    assert np.isnan(float(out))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_non_finite_loss_in_a_long_vector_gives_nan(case):
    # From ~10^4 elements XLA:CPU's vectorized max and min can skip a NaN (jax 0.10); with
    # weights, CVaR's counting passes then dropped the example and returned a number.
    n = 20_000
    losses = np.random.default_rng(5).normal(size=n).astype(np.float32)
    ones = np.ones(n, np.float32)
    unweighted = jax.jit(lambda x: case.value(x, **case.hyper))
    weighted = jax.jit(lambda x, w: case.value(x, **case.hyper, weights=w))
    for bad in (np.nan, np.inf, -np.inf):
        for pos in (3, n // 2, n - 1):
            x = losses.copy()
            x[pos] = bad
            assert np.isnan(float(unweighted(x))), (bad, pos)
            assert np.isnan(float(weighted(x, ones))), (bad, pos)
    # A non-finite loss outside the support (weight 0) is not part of the problem.
    x = losses.copy()
    x[7] = np.nan
    w = ones.copy()
    w[7] = 0.0
    assert np.isfinite(float(weighted(x, w)))
    # Traced weights that are not finite and non-negative give NaN too.
    for bad in (np.nan, np.inf, -1.0):
        w = ones.copy()
        w[n // 2] = bad
        assert np.isnan(float(weighted(losses, w))), bad

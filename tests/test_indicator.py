"""The counting passes' indicator ``[a > b]``, written as arithmetic that fuses, is a comparison exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from robustlearn._src.reductions.kernels import _gt

# The engine scales the losses so that every |y| <= 2^100 (engine.prepare).
LIMIT = 2.0**100


def _hard_pairs(dtype):
    """Pairs whose difference is subnormal, zero, or near the limits, in ``dtype``."""
    fi = np.finfo(dtype)
    tiny = dtype(fi.tiny)
    up = lambda v: np.nextafter(dtype(v), dtype(np.inf))  # noqa: E731
    down = lambda v: np.nextafter(dtype(v), dtype(-np.inf))  # noqa: E731
    values = [tiny, up(tiny), up(up(tiny)), dtype(2) * tiny, -tiny, dtype(0), dtype(-0.0), dtype(1), up(1), down(1)]
    values += [dtype(LIMIT), down(LIMIT), -dtype(LIMIT), dtype(3) * tiny, up(dtype(3) * tiny)]
    a, b = np.meshgrid(np.array(values, dtype), np.array(values, dtype))
    return a.ravel(), b.ravel()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_pairs(dtype):
    a, b = _hard_pairs(dtype)
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(jax.jit(_gt)(jnp.asarray(a), jnp.asarray(b)))
        # Inside a reduction, where XLA fuses it (the reason it is arithmetic).
        total = float(jax.jit(lambda a, b: jnp.sum(_gt(a, b)))(jnp.asarray(a), jnp.asarray(b)))
    expected = (a > b).astype(dtype)
    np.testing.assert_array_equal(got, expected)
    assert total == expected.sum()


def _floats(dtype):
    width = 32 if dtype == np.float32 else 64
    tiny = float(np.finfo(dtype).tiny)
    normal = st.floats(-LIMIT, LIMIT, width=width, allow_subnormal=False)
    near_tiny = st.floats(-64 * tiny, 64 * tiny, width=width, allow_subnormal=False)
    return st.one_of(normal, near_tiny, st.just(0.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
@example(data=None)
def test_matches_the_comparison(dtype, data):
    if data is None:  # one fixed draw: the strategy's bounds themselves
        a = np.array([LIMIT, -LIMIT, 0.0], dtype)
        b = np.array([-LIMIT, LIMIT, 0.0], dtype)
    else:
        pairs = data.draw(st.lists(st.tuples(_floats(dtype), _floats(dtype)), min_size=1, max_size=16))
        a = np.array([p[0] for p in pairs], dtype)
        b = np.array([p[1] for p in pairs], dtype)
    with jax.enable_x64(dtype == np.float64):
        got = np.asarray(jax.jit(lambda a, b: _gt(a, b))(jnp.asarray(a), jnp.asarray(b)))
    np.testing.assert_array_equal(got, (a > b).astype(dtype))

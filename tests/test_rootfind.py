"""The safeguarded Newton root finder behind the KL and Cressie--Read duals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustlearn._src.reductions.rootfind import newton


def _solve(undefined_above, x0, lo, hi):
    """Root of ``x - 0.3`` (NaN above ``undefined_above``) and the number of evaluations."""
    calls = []

    def evaluate(x):
        jax.debug.callback(lambda: calls.append(1))
        f = jnp.where(x > undefined_above, jnp.nan, x - 0.3)
        return f, ()

    def derivative(x, extras):
        return jnp.ones_like(x)

    root = jax.jit(lambda: newton(evaluate, derivative, x0, lo, hi, tol=1e-14))()
    jax.block_until_ready(root.x)
    return float(root.x), len(calls)


def test_a_nan_at_a_trial_point_is_left_by_bisection():
    # f(1.5) is NaN; the bisection step to the midpoint 0.5 of [-1, 2] recovers.
    x, _ = _solve(1.0, 1.5, -1.0, 2.0)
    assert x == pytest.approx(0.3, abs=1e-12)


def test_a_nan_at_the_midpoint_too_stops_instead_of_retrying_it():
    # NaN at the start and at the midpoint 1.5 of [-1, 4]: the bracket cannot move, so
    # every later step would evaluate 1.5 again (it ran to the 100-step limit).
    x, evaluations = _solve(1.0, 3.0, -1.0, 4.0)
    assert np.isclose(x, 1.5) and evaluations <= 3, (x, evaluations)

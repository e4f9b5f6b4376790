"""Safeguarded Newton root finding for scalar monotone functions.

Used for the one-dimensional duals (KL, Cressie--Read). Newton steps give quadratic
convergence near the root; a bisection step is taken whenever Newton would leave the
bracket or fails to halve the step, so convergence is guaranteed (Press et al.,
*Numerical Recipes*, ``rtsafe``). Iteration stops when the step falls below a few
ulps of the iterate, i.e. at float precision, not after a fixed small count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class _State(NamedTuple):
    lo: jax.Array
    hi: jax.Array
    x: jax.Array
    f: jax.Array
    df: jax.Array
    dx: jax.Array
    dx_old: jax.Array
    it: jax.Array
    done: jax.Array


def increasing_root(
    fn: Callable[[jax.Array], jax.Array],
    lo: jax.Array,
    hi: jax.Array,
    max_iter: int = 200,
) -> jax.Array:
    """Returns x in [lo, hi] with fn(x) = 0 for a non-decreasing scalar ``fn``.

    If ``fn(lo) >= 0`` the result is ``lo``; if ``fn(hi) <= 0`` it is ``hi``. The
    derivative is taken by forward-mode autodiff. ``max_iter`` is a safety cap: the
    bisection fallback alone reaches float precision in well under 200 steps for any
    bracket the callers build.
    """
    eps = jnp.finfo(lo.dtype).eps

    def eval_fn(x):
        return jax.jvp(fn, (x,), (jnp.ones_like(x),))

    f_lo = fn(lo)
    f_hi = fn(hi)
    x0 = 0.5 * (lo + hi)
    f0, df0 = eval_fn(x0)
    width = hi - lo
    state = _State(lo, hi, x0, f0, df0, width, width, jnp.zeros((), jnp.int32), f0 == 0)

    def cond(s: _State):
        return (~s.done) & (s.it < max_iter)

    def body(s: _State) -> _State:
        lo = jnp.where(s.f < 0, s.x, s.lo)
        hi = jnp.where(s.f < 0, s.hi, s.x)
        newton = s.x - s.f / s.df
        use_newton = (
            jnp.isfinite(newton) & (newton > lo) & (newton < hi) & (jnp.abs(2.0 * s.f) <= jnp.abs(s.dx_old * s.df))
        )
        x_new = jnp.where(use_newton, newton, 0.5 * (lo + hi))
        dx = jnp.abs(x_new - s.x)
        f, df = eval_fn(x_new)
        tol = 4.0 * eps * jnp.maximum(jnp.abs(x_new), 1.0)
        done = (f == 0) | (dx <= tol) | (hi - lo <= tol)
        return _State(lo, hi, x_new, f, df, dx, s.dx, s.it + 1, done)

    out = jax.lax.while_loop(cond, body, state)
    root = jnp.where(f_lo >= 0, lo, jnp.where(f_hi <= 0, hi, out.x))
    return root

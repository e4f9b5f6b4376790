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


class _NewtonState(NamedTuple):
    lo: jax.Array
    hi: jax.Array
    x: jax.Array
    f: jax.Array
    df: jax.Array
    extras: object
    dx_old: jax.Array
    it: jax.Array
    done: jax.Array


def newton(evaluate, derivative, x0, lo, hi, *, tol, ok=True, max_iter: int = 100, unrolled: int = 0):
    """Root of a non-decreasing scalar function by safeguarded Newton, from a starting point.

    ``evaluate(x) -> (f, extras)`` returns the function and anything the caller needs at
    ``x`` (the sums that give the value), ``derivative(x, extras) -> df`` its derivative;
    they are separate because each costs passes over the data: the last evaluation is
    reused instead of repeated, and a point is accepted without its derivative when the
    Newton step that reached it was small and ``|f| <= tol * max(|x|, 1) * |df|`` with
    the derivative of the previous point (the next step would be below the tolerance).

    The root is assumed in ``[lo, hi]`` (``f(lo) <= 0 <= f(hi)``; if not, the result is
    the nearer end). Each step is Newton's when it stays inside the current bracket and at
    least halves the step before last (``rtsafe``), else a bisection, so convergence is
    guaranteed. Iteration stops once the next step ``|f / df|`` (or the bracket) is below
    ``tol * max(|x|, 1)``.

    ``unrolled > 0`` is the loop-free variant for accelerators, where a data-dependent
    ``while_loop`` costs a device round trip per iteration: that many steps are unrolled
    (a converged state stays put; the derivative is always computed), and the
    ``while_loop`` runs, behind one ``lax.cond``, only if they did not converge.
    ``ok=False`` (a reduction with no valid input) stops at once.

    Returns:
        ``(x, extras, converged)``.
    """
    x0 = jnp.clip(x0, lo, hi)
    f0, ex0 = evaluate(x0)
    df0 = derivative(x0, ex0)
    width = hi - lo

    def tolerance(x):
        return tol * jnp.maximum(jnp.abs(x), 1.0)

    def converged(x, f, df, lo, hi):
        t = tolerance(x)
        return (f == 0) | (jnp.isfinite(df) & (jnp.abs(f) <= t * jnp.abs(df))) | (hi - lo <= t)

    state = _NewtonState(
        lo, hi, x0, f0, df0, ex0, width, jnp.zeros((), jnp.int32), converged(x0, f0, df0, lo, hi) | ~jnp.asarray(ok)
    )

    def step(s: _NewtonState, always_derivative: bool) -> _NewtonState:
        lo = jnp.where(s.f < 0, s.x, s.lo)
        hi = jnp.where(s.f > 0, s.x, s.hi)
        delta = s.f / s.df
        guess = s.x - delta
        use_newton = jnp.isfinite(guess) & (guess > lo) & (guess < hi) & (jnp.abs(2.0 * delta) <= jnp.abs(s.dx_old))
        x = jnp.where(use_newton, guess, 0.5 * (lo + hi))
        f, ex = evaluate(x)
        t = tolerance(x)
        small_step = use_newton & (jnp.abs(delta) <= 64 * t)
        cheap_done = (f == 0) | (hi - lo <= t) | (small_step & jnp.isfinite(s.df) & (jnp.abs(f) <= t * jnp.abs(s.df)))
        if always_derivative:
            df = derivative(x, ex)
            done = cheap_done | converged(x, f, df, lo, hi)
        else:
            df = jax.lax.cond(cheap_done, lambda: s.df, lambda: derivative(x, ex))
            done = cheap_done | converged(x, f, df, lo, hi)
        return _NewtonState(lo, hi, x, f, df, ex, jnp.abs(x - s.x), s.it + 1, done)

    def cond(s: _NewtonState):
        return (~s.done) & (s.it < max_iter)

    def keep_if_done(s: _NewtonState) -> _NewtonState:
        new = step(s, True)
        return jax.tree.map(lambda a, b: jnp.where(s.done, a, b), s, new)

    def loop(s):
        return jax.lax.while_loop(cond, lambda s: step(s, False), s)

    for _ in range(unrolled):
        state = keep_if_done(state)
    if unrolled:
        state = jax.lax.cond(state.done, lambda s: s, loop, state)
    else:
        state = loop(state)
    return state.x, state.extras, state.done

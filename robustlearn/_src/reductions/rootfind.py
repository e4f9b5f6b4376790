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
    # Row 0: the low side, row 1 the high side; columns: the bracket's end, then the last
    # point on that side (x, f, extras...), then whether there is one (0/1). One array
    # updated by one ``where`` (see ``bracket`` in :func:`newton`).
    sides: jax.Array
    x: jax.Array
    f: jax.Array
    df: jax.Array
    extras: object
    dx_old: jax.Array
    it: jax.Array
    done: jax.Array


class Root(NamedTuple):
    """What :func:`newton` found: the last point, and the last points on either side of the root."""

    x: jax.Array
    extras: object
    converged: jax.Array
    low: tuple
    high: tuple
    have_low: jax.Array
    have_high: jax.Array
    df: jax.Array  # the derivative (or secant slope) last used: a slope for a solve started here

    def blend(self, tol):
        """``theta`` for mixing the extras of :attr:`low` and :attr:`high`, and whether to.

        When both sides are known within ``64 tol`` (always once the bracket closes on a
        jump), ``theta = f_low / (f_low - f_high)`` in ``[0, 1]`` is where the secant
        through them crosses zero; callers mix the two solutions with it (a secant step for
        a smooth function; for a function with a jump, the fraction of the mass of the
        examples at the jump, as CVaR's boundary example).
        """
        (x_lo, f_lo, _), (x_hi, f_hi, _) = self.low, self.high
        close = jnp.abs(x_hi - x_lo) <= 64 * tol * jnp.maximum(jnp.maximum(jnp.abs(x_lo), jnp.abs(x_hi)), 1.0)
        use = self.have_low & self.have_high & close
        den = f_hi - f_lo
        theta = jnp.where(use & (den > 0), -f_lo / jnp.where(den > 0, den, 1), 0.0)
        return use, jnp.clip(theta, 0.0, 1.0)


def newton(
    evaluate,
    derivative,
    x0,
    lo,
    hi,
    *,
    tol,
    ok=True,
    trust=True,
    max_iter: int = 100,
    unrolled: int = 0,
    fallback=True,
    df0=None,
    free_derivative: bool = False,
):
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
    ``tol * max(|x|, 1)``. A step within 64 tolerances need not halve the one before: there
    ``f`` is at its rounding (a small KL radius: ``f`` within 1e-7 and a slope of 0.02 in
    float32), its Newton steps wander by a few tolerances, and the bisection they used to
    trigger was of the whole bracket when every point so far lay on one side of the root
    (its far end still the search limit): 20-30 evaluations more, seen on float32 KL and
    Cressie--Read solves of 1,024 losses.

    The bracket and the last point on each side of the root (``x``, ``f``, the extras) are
    one array, updated by one ``where``. XLA:CPU may compute a scalar such as ``f`` again
    inside each fusion that uses it, rounded differently, and with ``f`` within rounding of
    0 the bracket's two ends, updated separately, saw opposite signs, so neither moved; the
    solve then cycled or bisected from the far end (Cressie--Read, ``k = 6``, float32: 101
    evaluations, the ``max_iter`` cap, on 1,024 exponential losses). One array also keeps
    this bookkeeping in one fusion: with a ``where`` per scalar it was a dozen, each a
    thunk of its own in every iteration (KL's loop body 31 -> 23 fusions; its value and
    gradient at 1,024 losses 17 -> 14 us on 2 CPU cores). The extras must be scalars of
    the dtype of ``x``; a NaN ``f`` moves no side.

    ``trust=False`` (a traced flag) is for functions whose derivative may be unbounded
    near the root (Cressie--Read with ``k > 2``: ``x^a`` with ``a < 1`` has an infinite
    slope where an example enters the active set; in floating point the function may even
    jump there): a small ``|f / df|`` proves nothing, so iteration stops only when the
    bracket closes, and a Newton step below the tolerance is replaced by a step of 0.9
    tolerances the same way: past the root when the step was right, so the bracket with
    the last point closes at that evaluation (the bracket is checked with each new point;
    it used to be checked one evaluation later, after an overshoot of a full tolerance past
    the Newton point: 2-3 evaluations more than trusted Newton, now at most 1).
    :meth:`Root.blend` then interpolates between its two sides.

    ``unrolled > 0`` is the loop-free variant for accelerators, where a data-dependent
    ``while_loop`` costs a device round trip per iteration: that many steps are unrolled
    (a converged state stays put; the derivative is always computed), and the
    ``while_loop`` runs, behind one ``lax.cond``, only if they did not converge
    (``fallback=False``: never; for starting points, which the full solve verifies).
    ``ok=False`` (a reduction with no valid input) stops at once.

    ``free_derivative=True`` (static) says that ``derivative`` reads only its extras (the
    evaluation's pass computed its sums): it is then computed at every step instead of
    behind a ``lax.cond`` that skips it at the last one (on XLA:CPU a conditional costs
    more than a few scalar operations).

    ``df0`` (the slope at ``x0`` of a close function, such as the same dual on a
    subsample; ignored when ``unrolled``) turns the steps into secant steps: the first
    uses ``df0``, each later one the slope through the last two points, so no step
    computes ``derivative`` (a pass over the data or two) unless that slope is not a
    positive finite number. From a start whose error is ``e0`` and a ``df0`` off by a
    relative ``delta``, the first step leaves an error of about ``delta e0 + C e0^2`` and the
    secant step after it ``C e1 e0``: from the 65536-example subsample (``e0, delta`` about
    1/256) two steps usually reach float32 precision, as Newton's two, without their
    derivatives. The stopping rules are the same, with the slope for the derivative; two
    safeguards differ. A step need not halve the one before while no point beyond the root
    is known either (a subsample's slope can be far off under heavy tails, and the
    bisection would be of the whole search interval); and a slope over a run of 64
    tolerances or less is not trusted: the last one is kept.

    Returns:
        A :class:`Root`.
    """
    secant = df0 is not None and not unrolled
    x0 = jnp.clip(x0, lo, hi)
    f0, ex0 = evaluate(x0)
    if secant:
        usable = jnp.isfinite(df0) & (df0 > 0)
        df0 = jax.lax.cond(usable, lambda: jnp.where(usable, df0, 1).astype(f0.dtype), lambda: derivative(x0, ex0))
    else:
        df0 = derivative(x0, ex0)
    width = hi - lo
    trust = jnp.asarray(trust)

    def tolerance(x):
        return tol * jnp.maximum(jnp.abs(x), 1.0)

    def converged(x, f, df, lo, hi):
        t = tolerance(x)
        by_step = trust & jnp.isfinite(df) & (jnp.abs(f) <= t * jnp.abs(df))
        return (f == 0) | by_step | (hi - lo <= t)

    dtype = jnp.result_type(x0)
    ex_leaves, ex_tree = jax.tree.flatten(ex0)
    if any(jnp.shape(e) != () or jnp.result_type(e) != dtype for e in ex_leaves):
        raise TypeError(f"newton: `evaluate`'s extras must be scalars of the dtype of x ({dtype}).")

    def bracket(x, f, ex, sides):
        # The end and the point of the side of x move to x (a NaN moves neither), in one
        # where: XLA:CPU may compute a scalar such as f again inside each fusion that uses
        # it, rounded differently (see above); one where also keeps the loop body's
        # bookkeeping in one fusion instead of one per scalar.
        row = jnp.stack([x, x, f, *jax.tree.leaves(ex), jnp.ones((), dtype)])
        return jnp.where(jnp.stack([f <= 0, f > 0])[:, None], row, sides)

    def point(sides, i):
        return sides[i, 1], sides[i, 2], ex_tree.unflatten(list(sides[i, 3:-1]))

    done0 = converged(x0, f0, df0, lo, hi) | ~jnp.asarray(ok)
    start = [x0, f0, *ex_leaves, jnp.zeros((), dtype)]
    sides0 = jnp.stack([jnp.stack([jnp.asarray(lo, dtype), *start]), jnp.stack([jnp.asarray(hi, dtype), *start])])
    sides0 = bracket(x0, f0, ex0, sides0)
    state = _NewtonState(sides0, x0, f0, df0, ex0, width, jnp.zeros((), jnp.int32), done0)

    def step(s: _NewtonState, always_derivative: bool) -> _NewtonState:
        lo, hi = s.sides[0, 0], s.sides[1, 0]
        delta = s.f / s.df
        t_old = tolerance(s.x)
        # Without a trusted derivative, a Newton step below the tolerance goes 0.9 tolerances:
        # past the root if the step was right, and the bracket with the last point closes.
        delta = jnp.where(~trust & (jnp.abs(delta) <= t_old), jnp.sign(s.f) * 0.9 * t_old, delta)
        guess = s.x - delta
        # Within 64 tolerances the rounding of f, not a wrong slope, moves the steps.
        halves = (jnp.abs(2.0 * delta) <= jnp.abs(s.dx_old)) | (jnp.abs(delta) <= 64 * t_old)
        if secant:
            # Nor need a secant step halve the last one while no point lies beyond the root:
            # a first slope from a subsample may be far off, and the bisection would be of
            # the whole search interval.
            halves = halves | ~((s.sides[0, -1] > 0) & (s.sides[1, -1] > 0))
        use_newton = jnp.isfinite(guess) & (guess > lo) & (guess < hi) & halves
        x = jnp.where(use_newton, guess, 0.5 * (lo + hi))
        f, ex = evaluate(x)
        t = tolerance(x)
        # The bracket with the new point: closed now, not one evaluation later.
        sides = bracket(x, f, ex, s.sides)
        lo_x, hi_x = sides[0, 0], sides[1, 0]
        small_step = trust & use_newton & (jnp.abs(delta) <= jnp.maximum(jnp.abs(x), 1.0) / 64)
        # A NaN moves neither end of the bracket, so the step after a NaN bisects it; a NaN
        # there too would be retried at the same midpoint at every later step: stop.
        stuck = jnp.isnan(f) & jnp.isnan(s.f)
        small_enough = small_step & jnp.isfinite(s.df) & (jnp.abs(f) <= t * jnp.abs(s.df))
        cheap_done = (f == 0) | (hi_x - lo_x <= t) | stuck | small_enough
        if secant:
            # Over a run of a few tolerances the difference of f is at its rounding: keep
            # the last slope (a chord step). Non-decreasing f: a resolved slope is >= 0, and
            # 0 only on a flat piece, where the derivative itself is needed.
            run = x - s.x
            slope = (f - s.f) / jnp.where(run != 0, run, 1)
            resolved = jnp.abs(run) > 64 * t
            usable = jnp.isfinite(slope) & (slope > 0)
            keep = ~resolved & jnp.isfinite(s.df) & (s.df > 0)
            df = jax.lax.cond(
                keep | usable,
                lambda: jnp.where(keep, s.df, jnp.where(usable, slope, 1)),
                lambda: derivative(x, ex),
            )
        elif always_derivative or free_derivative:
            df = derivative(x, ex)
        else:
            df = jax.lax.cond(cheap_done, lambda: s.df, lambda: derivative(x, ex))
        done = cheap_done | converged(x, f, df, lo_x, hi_x)
        return _NewtonState(sides, x, f, df, ex, jnp.abs(x - s.x), s.it + 1, done)

    def cond(s: _NewtonState):
        return (~s.done) & (s.it < max_iter)

    def keep_if_done(s: _NewtonState) -> _NewtonState:
        new = step(s, True)
        return jax.tree.map(lambda a, b: jnp.where(s.done, a, b), s, new)

    def loop(s):
        return jax.lax.while_loop(cond, lambda s: step(s, False), s)

    for _ in range(unrolled):
        state = keep_if_done(state)
    if not unrolled:
        state = loop(state)
    elif fallback:
        state = jax.lax.cond(state.done, lambda s: s, loop, state)
    sides = state.sides
    low, high = point(sides, 0), point(sides, 1)
    return Root(state.x, state.extras, state.done, low, high, sides[0, -1] > 0, sides[1, -1] > 0, state.df)

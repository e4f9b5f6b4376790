"""The machinery behind every reduction: nominal distribution, standardization,
exact gradients, batching and the final NaN policy.

A reduction is defined by a *kernel* acting on one 1-D loss vector that has been
standardized to ``ls = (l - max l) / range`` (so ``ls`` lies in [-1, 0] on the support
and the maximum is exactly 0). Kernels return the worst-case weights ``q`` and the
penalty in standardized units (0 for constrained problems); the engine returns
``sum(q * l) - range * penalty``. All constrained problems in this
package are invariant to the affine map, and penalized ones are invariant once the
penalty strength is divided by the same range, so standardization loses nothing and
keeps squares and exponentials of huge losses (±1e30) finite.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from robustlearn import _checks

# kernel(ls, p, scale, *hyper) -> (q, penalty_in_standardized_units)
Kernel = Callable[..., tuple[jax.Array, jax.Array]]


def _solve(kernel: Kernel, losses: jax.Array, w: jax.Array, *hyper: jax.Array):
    """Value and worst-case weights for one 1-D loss vector (compute dtype)."""
    support = w > 0
    mass = jnp.sum(jnp.where(support, w, 0))
    empty = mass == 0
    p = jnp.where(support, w / jnp.where(empty, 1, mass), 0)
    finite = jnp.all(jnp.isfinite(losses) | ~support)
    l_max = jnp.max(jnp.where(support, losses, -jnp.inf))
    l_min = jnp.min(jnp.where(support, losses, jnp.inf))
    well_posed = finite & ~empty
    l_max = jnp.where(well_posed, l_max, 0)
    spread = jnp.where(well_posed, l_max - l_min, 0)
    # Guard against a zero or overflowed range (all-equal losses, or ±3e38 in float32).
    scale = jnp.where((spread > 0) & jnp.isfinite(spread), spread, 1)
    ls = jnp.where(support & well_posed, (losses - l_max) / scale, -1)
    q, penalty = kernel(ls, p, scale, *hyper)
    # Sum in the original units: shifting by l_max would cancel digits when the value
    # is small next to the largest loss.
    value = jnp.sum(jnp.where(support & well_posed, q * losses, 0)) - scale * penalty
    # Every reduction lies between the smallest and largest loss; clipping removes the
    # rounding of sum(q) = 1 (all-equal losses then return that loss exactly).
    value = jnp.clip(value, jnp.where(well_posed, l_min, 0), l_max)
    value = jnp.where(empty, 0, jnp.where(finite, value, jnp.nan))
    q = jnp.where(empty, 0, jnp.where(finite, q, jnp.nan))
    return value, q


def _value_fn(kernel: Kernel):
    """1-D value with the Danskin derivative d value / d losses = q."""

    @jax.custom_jvp
    def value(losses, w, *hyper):
        return _solve(kernel, losses, w, *hyper)[0]

    @value.defjvp
    def value_jvp(primals, tangents):
        v, q = _solve(kernel, *primals)
        return v, jnp.sum(q * tangents[0])

    return value


@functools.cache
def _compiled(kernel: Kernel, n_hyper: int, want_weights: bool):
    signature = "(n),(n)" + ",()" * n_hyper + ("->(n)" if want_weights else "->()")
    if want_weights:
        fn = lambda *args: _solve(kernel, *args)[1]  # noqa: E731
    else:
        fn = _value_fn(kernel)
    vectorized = jnp.vectorize(fn, signature=signature)

    def run(losses, w, ok, *hyper):
        # Hyperparameters and nominal weights are constants for differentiation: the
        # gradient flows to the losses only (Danskin).
        w = jax.lax.stop_gradient(w)
        hyper = tuple(jax.lax.stop_gradient(h) for h in hyper)
        out = vectorized(losses, w, *hyper)
        if want_weights:
            out = jax.lax.stop_gradient(out)
        return jnp.where(ok, out, jnp.nan)

    return jax.jit(run)


def prepare(losses, weights, where, axis):
    """Validates the common arguments and moves the reduced axis last.

    Returns ``(losses, w, ok, axis, dtype)`` with ``losses`` and ``w`` in the compute
    dtype (at least float32) and the mask folded into ``w`` (masked weight 0).
    """
    losses = _checks.as_float_losses(losses)
    axis = _checks.normalize_axis(axis, losses.ndim)
    dtype = losses.dtype
    compute = jnp.promote_types(dtype, jnp.float32)
    if weights is None:
        w, ok = jnp.ones(losses.shape, compute), jnp.asarray(True)
    else:
        w, ok = _checks.weights(weights, losses.shape, axis)
        w = w.astype(compute)
    if where is not None:
        w = jnp.where(_checks.mask(where, losses.shape), w, 0)
    losses = jnp.moveaxis(losses.astype(compute), axis, -1)
    w = jnp.moveaxis(w, axis, -1)
    return losses, w, ok, axis, dtype


def reduce(kernel: Kernel, losses, hyper, *, weights, where, axis):
    """Runs ``kernel`` as a reduction; ``hyper`` is a tuple of (value, ok) pairs."""
    losses, w, ok, _, dtype = prepare(losses, weights, where, axis)
    values = tuple(v.astype(losses.dtype) for v, _ in hyper)
    for _, h_ok in hyper:
        ok = ok & h_ok
    out = _compiled(kernel, len(hyper), False)(losses, w, ok, *values)
    return out.astype(dtype)


def weights_of(kernel: Kernel, losses, hyper, *, weights, where, axis):
    """Runs ``kernel`` and returns its worst-case weights, shaped like ``losses``."""
    losses, w, ok, ax, dtype = prepare(losses, weights, where, axis)
    values = tuple(v.astype(losses.dtype) for v, _ in hyper)
    for _, h_ok in hyper:
        ok = ok & h_ok
    out = _compiled(kernel, len(hyper), True)(losses, w, ok, *values)
    return jnp.moveaxis(out, -1, ax).astype(dtype)

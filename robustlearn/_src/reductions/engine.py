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
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from robustlearn._src import checks as _checks

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
def _compiled(kernel: Kernel, n_hyper: int, want_weights: bool, axes: tuple[int, ...], ndim: int):
    """The jitted reduction (or its weights) over ``axes``, batched over the other axes."""
    signature = "(n),(n)" + ",()" * n_hyper + ("->(n)" if want_weights else "->()")
    if want_weights:
        fn = lambda *args: _solve(kernel, *args)[1]  # noqa: E731
    else:
        fn = _value_fn(kernel)
    vectorized = jnp.vectorize(fn, signature=signature)
    last = tuple(range(ndim - len(axes), ndim))

    def to_vectors(a):
        # The reduced axes go last, in order, and are flattened into one example axis.
        moved = jnp.moveaxis(a, axes, last)
        return moved.reshape(moved.shape[: ndim - len(axes)] + (-1,)), moved.shape

    def run(losses, weights, ok, *hyper):
        compute = jnp.promote_types(losses.dtype, jnp.float32)
        w = jnp.ones(losses.shape, compute) if weights is None else weights.astype(compute)
        # Hyperparameters and nominal weights are constants for differentiation: the
        # gradient flows to the losses only (Danskin).
        w, _ = to_vectors(jax.lax.stop_gradient(w))
        hyper = tuple(jax.lax.stop_gradient(jnp.asarray(h, compute)) for h in hyper)
        flat, moved_shape = to_vectors(losses.astype(compute))
        out = vectorized(flat, w, *hyper)
        if want_weights:
            out = jnp.moveaxis(jax.lax.stop_gradient(out).reshape(moved_shape), last, axes)
        return jnp.where(ok, out, jnp.nan).astype(losses.dtype)

    return jax.jit(run)


def run(kernel: Kernel, losses, hyper, *, weights, where, axis, want_weights: bool = False):
    """Validates the arguments and runs ``kernel`` as a reduction over ``axis``.

    ``hyper`` is a tuple of ``(value, ok)`` pairs from :func:`_checks.scalar`; ``axis``
    an int, a tuple of ints or None (all axes). Returns the value (``losses.shape``
    without the reduced axes) or, with ``want_weights``, the worst-case weights shaped
    like ``losses``; both in the dtype of ``losses``.
    """
    losses = _checks.as_float_losses(losses)
    axes = _checks.normalize_axes(axis, losses.ndim)
    if math.prod(losses.shape[a] for a in axes) == 0:
        raise ValueError(
            f"`losses` has no examples to reduce: shape {losses.shape}, reduced axes {axes}. "
            "(All-masked or all-zero-weight inputs of positive size give 0.)"
        )
    ok = jnp.asarray(True)
    if weights is not None:
        weights, ok = _checks.weights(weights, losses.shape)
    if where is not None:
        # Masked examples leave the nominal distribution: fold the mask into the weights
        # (one compiled variant for "weighted or masked" instead of one per combination).
        where = _checks.mask(where, losses.shape)
        weights = jnp.where(where, 1 if weights is None else weights, 0)
    for _, h_ok in hyper:
        ok = ok & h_ok
    values = tuple(v for v, _ in hyper)
    return _compiled(kernel, len(hyper), want_weights, axes, losses.ndim)(losses, weights, ok, *values)

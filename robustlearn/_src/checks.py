"""Input validation shared by the public functions.

Checks run on concrete (non-traced) values at call time, so a bad argument fails
before compilation with a message naming the argument and the allowed range. Values
that are traced under ``jax.jit`` cannot be inspected; for those the helpers return a
traced validity flag that the caller turns into a NaN result instead of a silent number.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x) -> bool:
    """Whether ``x`` is an abstract value under a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def host_flag(value: bool) -> jax.Array:
    """A concrete boolean as a 0-d device array, without compiling a conversion."""
    return jax.device_put(np.asarray(bool(value)))


def as_float_losses(losses, name: str = "losses") -> jax.Array:
    """Converts ``losses`` to an array and requires a real floating dtype."""
    if not isinstance(losses, jax.Array):
        # Strings and objects: JAX's own conversion error would not name the argument.
        losses = np.asarray(losses)
        if losses.dtype.kind in "OSU":
            raise TypeError(f"`{name}` must have a real floating dtype; got dtype {losses.dtype}.")
    losses = jnp.asarray(losses)
    if not jnp.issubdtype(losses.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a real floating dtype (bfloat16, float16, float32 or "
            f"float64); got dtype {losses.dtype}."
        )
    if losses.ndim == 0:
        raise ValueError(f"`{name}` must have at least one dimension; got a scalar.")
    return losses


def normalize_axis(axis, ndim: int) -> int:
    """Returns ``axis`` as a non-negative int, or raises a ValueError."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"`axis` must be an int, a tuple of ints or None; got {axis!r}.")
    if not -ndim <= axis < ndim:
        raise ValueError(f"`axis` must be in [{-ndim}, {ndim - 1}] for losses of rank {ndim}; got {axis}.")
    return int(axis) % ndim


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (an int, a tuple of ints, or None for all) as sorted non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, tuple | list):
        axes = tuple(normalize_axis(a, ndim) for a in axis)
        if not axes:
            raise ValueError("`axis` must name at least one axis; got an empty tuple.")
        if len(set(axes)) != len(axes):
            raise ValueError(f"`axis` names an axis twice: {axis!r}.")
        return tuple(sorted(axes))
    return (normalize_axis(axis, ndim),)


def scalar(
    name: str,
    value,
    *,
    low: float,
    high: float = float("inf"),
    low_open: bool = False,
    high_open: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Validates a scalar hyperparameter against an interval.

    Returns the value as a 0-d array and a boolean flag that is True when the value is
    inside the interval. Concrete values outside it raise ``ValueError``; traced values
    only set the flag to False.
    """
    if isinstance(value, bool) or isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"`{name}` must be a real number; got {value!r}.")
    lo_br = "(" if low_open else "["
    hi_br = ")" if high_open else "]"
    allowed = f"{lo_br}{low:g}, {high:g}{hi_br}"
    if not is_traced(value):
        arr = np.asarray(value)
        if arr.shape != ():
            raise ValueError(f"`{name}` must be a scalar; got shape {arr.shape}.")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"`{name}` must be a real number; got dtype {arr.dtype}.")
        v = float(arr)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:  # NaN fails every comparison and lands here too.
            raise ValueError(f"`{name}` must be in {allowed}; got {v!r}.")
        if np.issubdtype(arr.dtype, np.floating):
            # Validated in float64; cast to the default float dtype *with limits*, so a
            # valid value never becomes an invalid 0, inf or open end (see cast_in_interval).
            dtype = jnp.result_type(float)
            v = jax.device_put(np.asarray(cast_in_interval(v, dtype, low, high, low_open, high_open), dtype))
            return v, host_flag(True)
    elif jnp.shape(value) != ():
        raise ValueError(f"`{name}` must be a scalar; got shape {jnp.shape(value)}.")
    v = jnp.asarray(value)
    ok = (v > low if low_open else v >= low) & (v < high if high_open else v <= high)
    return v, ok


def cast_in_interval(value: float, dtype, low: float, high: float, low_open: bool, high_open: bool):
    """``value`` (a float inside the interval) as a ``dtype`` number still inside it.

    Rounding to a narrow dtype can leave the interval: ``1e-40`` flushes to 0 in float32,
    ``1e39`` overflows to inf, ``1 + 1e-9`` rounds to 1. The result is the rounded value,
    moved to the nearest ``dtype`` number inside the interval when rounding left it;
    nonzero magnitudes below the smallest normal number become that number (subnormals
    are flushed to zero on CPU), finite magnitudes above the largest finite number become it.
    """
    dtype = np.dtype(dtype)
    fi = np.finfo(dtype)
    v = float(value)
    if v != 0 and abs(v) < float(fi.tiny):
        v = float(np.copysign(float(fi.tiny), v))
    if np.isfinite(v) and abs(v) > float(fi.max):  # (an allowed infinity stays infinite)
        v = float(np.copysign(float(fi.max), v))
    out = dtype.type(v)
    if np.isfinite(low):
        lo = dtype.type(low)
        if out < lo or (low_open and out == lo):
            out = np.nextafter(lo, dtype.type(np.inf)) if low_open else lo
            if low_open and low == 0:
                out = dtype.type(fi.tiny)
    if np.isfinite(high):
        hi = dtype.type(high)
        if out > hi or (high_open and out == hi):
            out = np.nextafter(hi, dtype.type(-np.inf)) if high_open else hi
    return out


def broadcastable(name: str, arg, shape: tuple[int, ...]):
    """Requires ``arg.shape`` to broadcast to ``shape`` without changing it."""
    arg_shape = jnp.shape(arg)
    try:
        out = np.broadcast_shapes(arg_shape, shape)
    except ValueError:
        out = None
    if out != tuple(shape):
        raise ValueError(f"`{name}` of shape {arg_shape} does not broadcast to the losses' shape {tuple(shape)}.")


def mask(where, shape) -> jax.Array:
    """Validates a boolean ``where`` mask and broadcasts it to ``shape``."""
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"`where` must be a boolean mask; got dtype {where.dtype}.")
    broadcastable("where", where, shape)
    return jnp.broadcast_to(where, shape)


def weights(w, shape) -> tuple[jax.Array, jax.Array]:
    """Validates nominal ``weights`` and broadcasts them to ``shape``.

    Concrete weights must be finite and non-negative (an all-zero slice leaves no example,
    like an all-False mask). Returns the weights and a traced flag that is False when
    (traced) weights are invalid.
    """
    if not is_traced(w):
        arr = np.asarray(w)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"`weights` must be real numbers; got dtype {arr.dtype}.")
        broadcastable("weights", arr, shape)
        arr = np.broadcast_to(arr.astype(np.float64), shape)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError("`weights` must be finite and in [0, inf); got negative or non-finite entries.")
    else:
        broadcastable("weights", w, shape)
    w = jnp.broadcast_to(jnp.asarray(w), shape)
    ok = jnp.all(jnp.isfinite(w) & (w >= 0))
    return w, ok


def max_normalized_weights(w, shape, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """:func:`weights`, then divided by their maximum over ``axes``.

    Concrete weights are validated and divided in float64 *before* the cast to the
    compute dtype, so weights that float64 holds but float32 does not (all 1e38, all
    1e-50, or 1e39 next to 1) become the same nominal distribution they define; traced
    weights are returned as they are (the kernels divide them by their maximum).
    """
    if is_traced(w):
        return weights(w, shape)
    arr = np.asarray(w)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"`weights` must be real numbers; got dtype {arr.dtype}.")
    broadcastable("weights", arr, shape)
    arr = np.broadcast_to(arr.astype(np.float64), shape)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("`weights` must be finite and in [0, inf); got negative or non-finite entries.")
    top = np.max(arr, axis=axes, keepdims=True)
    arr = arr / np.where(top > 0, top, 1.0)
    dtype = jnp.result_type(float)
    return jnp.asarray(arr.astype(dtype)), jnp.asarray(True)

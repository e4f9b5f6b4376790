"""Helpers shared by the transport objectives: renamed keywords and hyperparameters as state arrays."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def renamed(**old_to_new: str) -> Callable:
    """Decorator: keyword ``old`` still works for one release, with a ``DeprecationWarning``.

    ``@renamed(eps="radius")`` maps ``f(..., eps=v)`` to ``f(..., radius=v)``; passing both
    raises ``TypeError``.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both `{new}` and its deprecated name `{old}`.")
                    warnings.warn(
                        f"{fn.__name__}(): the keyword `{old}` is deprecated and will be removed in robustlearn 0.3; "
                        f"use `{new}`.",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap


def hyper_array(value: float) -> jnp.ndarray:
    """A validated Python hyperparameter as a 0-d array of the default float dtype.

    Casting saturates instead of flushing: a non-zero value below the dtype's smallest
    normal number becomes that number (not 0), a finite value above its maximum becomes
    the maximum (not inf); 0 and inf stay what they are.
    """
    dtype = jnp.result_type(float)  # float64 with jax_enable_x64, else float32
    v = float(value)
    if v != 0 and math.isfinite(v):
        info = np.finfo(dtype)
        v = math.copysign(min(max(abs(v), float(info.tiny)), float(info.max)), v)
    return jax.device_put(np.asarray(v, dtype))  # no conversion program to compile


def nominal_distribution(weights, w: jnp.ndarray, dtype) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``p = w / sum(w)`` without overflow or underflow, and whether any weight is positive.

    ``weights`` is the caller's argument, ``w`` the validated array of the same values.
    Concrete weights are normalized in float64 by their maximum before the cast to
    ``dtype`` (so ``[1e-50] * n`` or ``[1e38] * n`` in float32 are the uniform
    distribution); traced ones are scaled by the exact power of two that brings their
    maximum into ``[0.5, 1)`` (``ldexp``: a division by a huge maximum would go through
    its reciprocal, which flushes to zero on CPU). All-zero weights give ``p = 0``.
    """
    if not isinstance(weights, jax.core.Tracer) and not isinstance(w, jax.core.Tracer):
        arr = np.broadcast_to(np.asarray(weights, np.float64), w.shape)
        top = float(arr.max(initial=0.0))
        if not top > 0:
            return jnp.zeros(w.shape, dtype), jnp.asarray(False)
        scaled = arr / top
        return jnp.asarray(scaled / scaled.sum(), dtype), jnp.asarray(True)
    w = w.astype(dtype)
    top = jnp.max(w)
    live = top > 0
    _, exponent = jnp.frexp(jnp.where(live, top, 1))
    scaled = jnp.ldexp(w, -exponent)
    return jnp.where(live, scaled / jnp.where(live, jnp.sum(scaled), 1), 0), live

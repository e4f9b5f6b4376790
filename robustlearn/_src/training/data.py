"""Training data: validation up front, and the fixed-shape minibatch plan of an epoch.

A dataset is a dict of arrays with a leading example axis: ``"x"``, ``"y"`` and any
column an objective reads (``"weight"``, ``"group"``, ...). Everything here runs on
concrete numpy data once per ``fit``, before anything is compiled, so a bad input fails
with a message naming the split (``train``/``val``) and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

RESERVED = ("mask",)


def as_dataset(data, name: str) -> dict[str, np.ndarray]:
    """Checks a split and returns it as a dict of numpy arrays (Python lists are converted).

    Raises:
        TypeError: ``data`` is not a mapping, or a column is not numeric (strings,
            objects, ragged lists).
        ValueError: ``"x"`` or ``"y"`` missing, a column without a leading example axis,
            columns of different lengths, no examples, a reserved key, NaN/inf
            entries, negative or non-finite ``"weight"``, negative ``"group"`` ids.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"`{name}` must be a dict of arrays with a leading example axis; got {type(data).__name__}.")
    for key in ("x", "y"):
        if key not in data:
            raise ValueError(f"`{name}` must contain the key {key!r}; got keys {sorted(data)}.")
    for key in RESERVED:
        if key in data:
            raise ValueError(f"`{name}` must not contain {key!r}: the trainer sets it.")
    out = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"the keys of `{name}` must be strings; got {key!r}.")
        out[key] = _column(value, name, key, finite=key != "weight")
    sizes = {k: v.shape[0] for k, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the arrays in `{name}` disagree on the number of examples: {sizes}.")
    if next(iter(sizes.values())) == 0:
        raise ValueError(f"`{name}` is empty (0 examples).")
    n = sizes["x"]
    if "group" in out:
        g = out["group"]
        if not np.issubdtype(g.dtype, np.integer):
            raise TypeError(f"`{name}['group']` must hold integer group ids; got dtype {g.dtype}.")
        if g.min() < 0:
            raise ValueError(f"`{name}['group']` must be non-negative group ids; got a minimum of {g.min()}.")
    if "weight" in out:
        w = out["weight"]
        allowed = f"`{name}['weight']` must be {n} finite non-negative numbers, in [0, inf), shape ({n},)"
        if w.shape != (n,) or not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise ValueError(f"{allowed}; got shape {w.shape} and dtype {w.dtype}.")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{allowed}; got {w[i].item()!r} at example {i} ({int(bad.sum())} bad entries).")
    return out


def _column(value, name: str, key: str, finite: bool = True) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise TypeError(f"`{name}[{key!r}]` must be a rectangular numeric array: {e}") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_) or _is_ml_dtype(arr.dtype)
    ):
        raise TypeError(f"`{name}[{key!r}]` must hold numbers; got dtype {arr.dtype} ({type(value).__name__}).")
    if arr.ndim == 0:
        raise ValueError(f"`{name}[{key!r}]` needs a leading example axis; got a scalar.")
    if finite and (np.issubdtype(arr.dtype, np.inexact) or _is_ml_dtype(arr.dtype)):
        bad = ~np.isfinite(arr.astype(np.complex128) if np.iscomplexobj(arr) else arr.astype(np.float64))
        if bad.any():
            rows = np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))
            raise ValueError(
                f"`{name}[{key!r}]` contains NaN or inf ({int(bad.sum())} entries in {rows.size} examples, the first "
                f"at example {rows[0]}); remove or impute them before training."
            )
    return arr


def _is_ml_dtype(dtype) -> bool:
    return dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


INTEGER_LABEL_LOSSES = ("softmax_cross_entropy_with_integer_labels",)


def is_classifier(y: np.ndarray, out_shape: tuple[int, ...]) -> bool:
    """A classifier: integer labels and 2-D outputs ``(n, classes)`` (dtype and shapes only)."""
    return bool(np.issubdtype(y.dtype, np.integer)) and len(out_shape) == 2


def check_labels(y: np.ndarray, out_shape: tuple[int, ...], loss, name: str) -> bool:
    """Checks the labels against the loss and the model's output; returns "is a classifier".

    A classifier has integer labels and 2-D outputs ``(n, classes)``; its labels must be
    class ids in ``[0, classes)``. Float labels with an integer-label loss are an error.
    """
    loss_name = getattr(loss, "__name__", "")
    integer = np.issubdtype(y.dtype, np.integer)
    if loss_name in INTEGER_LABEL_LOSSES and not integer:
        raise TypeError(
            f"`{name}['y']` holds labels of dtype {y.dtype}, but the loss `{loss_name}` needs integer class ids; "
            f"convert them (e.g. `y.astype(np.int32)`) or use a loss for real-valued targets."
        )
    classifier = is_classifier(y, out_shape)
    if classifier:
        num_classes = out_shape[-1]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels in `{name}['y']` must be in [0, {num_classes - 1}] for a model with {num_classes} "
                f"outputs; got range [{lo}, {hi}]."
            )
    return classifier


def check_groups(data: dict, num_groups: int, name: str) -> None:
    """Group ids of ``data`` must be in ``[0, num_groups)``."""
    g = data["group"]
    if g.max() >= num_groups:
        raise ValueError(
            f"`{name}['group']` ids must be in [0, {num_groups - 1}] for num_groups={num_groups}; got a maximum of "
            f"{g.max()}."
        )


class BatchPlan(NamedTuple):
    """The static shape of an epoch: ``steps`` minibatches of ``batch_size``, ``pad`` repeated examples."""

    n: int
    batch_size: int
    steps: int
    pad: int


def batch_plan(n: int, batch_size: int | None) -> BatchPlan:
    """Minibatches of a fixed size; the last one is completed with ``pad`` repeated (masked) examples."""
    size = n if batch_size is None else batch_size
    if size > n:
        raise ValueError(f"`batch_size` ({size}) must be at most the number of training examples ({n}).")
    steps = math.ceil(n / size)
    return BatchPlan(n, size, steps, steps * size - n)


def positive_int(name: str, value, *, allow_none: bool = False) -> int | None:
    """``value`` as an int >= 1 (bools, floats such as 1.5 and strings are refused)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be a positive int{none}, in [1, inf); got {value!r}.")
    return int(value)

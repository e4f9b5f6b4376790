"""Per-epoch metrics: the History record and the validation metrics.

Training metrics are the epoch means of what the objective reports at every step (its
``metrics`` dict, computed before that step's update); validation metrics are computed
once per epoch on the whole validation split with the current parameters, in evaluation
mode and without advancing the objective's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from robustlearn._src.objectives.group_dro import group_means
from robustlearn._src.reductions import api as _reductions


class History:
    """Per-epoch metrics: a list of dicts, with table and plot views.

    Attributes:
        rows: one dict per epoch: ``"epoch"`` and the metrics (floats; small arrays
            such as group weights as lists).
        stopped_epoch: the epoch after which early stopping ended the run, else None.
        restored_epoch: the epoch whose parameters the trainer kept at the end (the best
            one by the monitored metric when early stopping restores it), else None.
        notes: human-readable events, e.g. why and when training stopped.

    Examples:
        >>> h = History([{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.25}])
        >>> h.columns()["val_loss"]
        [0.5, 0.25]
        >>> print(h.to_markdown())
        | epoch | val_loss |
        | --- | --- |
        | 1 | 0.5 |
        | 2 | 0.25 |
    """

    def __init__(self, rows: Sequence[dict] = ()):
        self.rows: list[dict] = [dict(r) for r in rows]
        self.stopped_epoch: int | None = None
        self.restored_epoch: int | None = None
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"History({len(self.rows)} epochs)"

    def columns(self) -> dict[str, list]:
        """Metric name -> list of per-epoch values (None where missing)."""
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        return {k: [r.get(k) for r in self.rows] for k in keys}

    def to_markdown(self, keys: Sequence[str] | None = None, digits: int = 4) -> str:
        """The history as a markdown table."""
        cols = self.columns()
        keys = list(keys or cols)

        def fmt(v):
            if v is None:
                return ""
            if isinstance(v, float):
                return f"{v:.{digits}g}"
            if isinstance(v, list):
                return "[" + ", ".join(fmt(u) for u in v) + "]"
            return str(v)

        lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in self.rows]
        return "\n".join(lines)

    def plot(self, keys: Sequence[str] = ("train_objective", "val_loss"), ax: Any = None) -> Any:
        """Draws the metrics ``keys`` against the epoch, one line each, with a legend.

        Needs matplotlib (``pip install "robustlearn[plot]"``).

        Args:
            keys: metric names; names absent from the history are skipped.
            ax: a matplotlib ``Axes`` to draw into (default: the current one).

        Returns:
            The matplotlib ``Axes`` drawn into (call ``ax.figure.savefig(path)`` to save).
        """
        from robustlearn._src.optional import require

        plt = require("matplotlib.pyplot", "matplotlib", "plot")

        ax = ax or plt.gca()
        cols = self.columns()
        for k in keys:
            if k in cols:
                ax.plot(cols["epoch"], cols[k], label=k)
        ax.set_xlabel("epoch")
        ax.legend()
        return ax

    def to_json(self) -> dict:
        """A JSON-serializable copy (used by checkpoints)."""
        return {
            "rows": self.rows,
            "stopped_epoch": self.stopped_epoch,
            "restored_epoch": self.restored_epoch,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict) -> History:
        """Inverse of :meth:`to_json`."""
        history = cls(data["rows"])
        history.stopped_epoch = data.get("stopped_epoch")
        history.restored_epoch = data.get("restored_epoch")
        history.notes = list(data.get("notes", []))
        return history


def to_python(value) -> float | list:
    """A metric as a float, or a (nested) list of floats for arrays."""
    arr = np.asarray(jax.device_get(value))
    if arr.ndim == 0:
        return float(arr)
    return arr.astype(np.float64).tolist()


def evaluation_metrics(
    outputs: jax.Array,
    losses: jax.Array,
    data: dict,
    *,
    classifier: bool,
    num_groups: int,
) -> dict[str, jax.Array]:
    """Validation metrics that need no objective; weight-aware when ``data`` has ``"weight"``.

    ``loss`` (weighted mean), ``accuracy`` (classifiers), and with ``num_groups``:
    ``worst_group_loss`` (largest group mean loss over the groups present, by
    :func:`~robustlearn.importance.group_means`) and ``worst_group_accuracy``. Rows
    whose ``"mask"`` is False (padding of process-local data) are left out.
    """
    weight, mask = data.get("weight"), data.get("mask")
    out = {"loss": _reductions.erm(losses, weights=weight, where=mask)}
    correct = None
    if classifier:
        correct = (jnp.argmax(outputs, axis=-1) == data["y"]).astype(losses.dtype)
        out["accuracy"] = _reductions.erm(correct, weights=weight, where=mask)
    if num_groups:
        means, mass = group_means(losses, data["group"], num_groups, weights=weight, where=mask)
        present = mass > 0
        out["worst_group_loss"] = jnp.max(jnp.where(present, means, -jnp.inf))
        if classifier:
            acc, _ = group_means(correct, data["group"], num_groups, weights=weight, where=mask)
            out["worst_group_accuracy"] = jnp.min(jnp.where(present, acc, jnp.inf))
    return out

"""Callbacks: code that runs after every epoch of ``Trainer.fit``.

A callback is an object with any of these methods (subclass :class:`Callback` to get
no-op defaults):

* ``on_fit_start(trainer)``: before the first epoch (after a resumed checkpoint is
  loaded);
* ``on_epoch_end(trainer, row) -> bool | None``: after each epoch, with the metrics row
  (a dict that is appended to the history: add custom metrics to it). Return True, or
  set ``trainer.stop_training = True``, to stop after this epoch;
* ``on_fit_end(trainer, error)``: once at the end; ``error`` is the exception that ends
  ``fit`` (e.g. ``FloatingPointError``), else None;
* ``state_dict() -> dict`` / ``load_state_dict(state)``: what a checkpoint keeps of the
  callback: JSON values, and a pytree of arrays under the key ``"arrays"`` (or None).
  In ``load_state_dict``, ``state["arrays"]`` is a function ``restore(template)`` that
  rebuilds the arrays in the structure of ``template`` (checking paths, shapes and
  dtypes), or None. It is called after ``on_fit_start``.

Callbacks run in the order of their ``order`` attribute (then as given): custom metrics
(0), :class:`EarlyStopping` (50), :class:`ProgressBar` (80), :class:`Checkpointer`
(100), so that the progress line and the checkpoint see the final row and the stopping
decision. Metric values are identical on every process of a multi-process run, so are
the decisions; only process 0 prints and writes files.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any, TextIO

import jax

from robustlearn._src.training import checkpoint as _ckpt

if TYPE_CHECKING:
    from robustlearn._src.training.trainer import Trainer

_MODES = ("auto", "min", "max")


class Callback:
    """Base class of callbacks: every hook is a no-op.

    Attributes:
        order: callbacks run by increasing ``order`` (default 0).
        provides: metric names the callback adds to the row in ``on_epoch_end`` (so that
            ``EarlyStopping`` and ``ProgressBar`` may refer to them).

    Examples:
        >>> class GapMetric(Callback):
        ...     provides = ("gap",)
        ...     def on_epoch_end(self, trainer, row):
        ...         row["gap"] = row["val_loss"] - row["train_mean_loss"]
    """

    order: int = 0
    provides: tuple[str, ...] = ()

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called before the first epoch."""

    def on_epoch_end(self, trainer: Trainer, row: dict) -> bool | None:
        """Called after each epoch with its metrics row; return True to stop."""
        return None

    def on_fit_end(self, trainer: Trainer, error: BaseException | None) -> None:
        """Called once when ``fit`` ends (``error``: the exception that ends it, or None)."""

    def state_dict(self) -> dict | None:
        """What a checkpoint keeps of this callback (None: nothing)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict` from a checkpoint."""


def _is_main_process() -> bool:
    return jax.process_index() == 0


# ---------------------------------------------------------------------- early stopping


class EarlyStopping(Callback):
    """Model selection and early stopping on a monitored metric.

    Tracks the best epoch by ``monitor``; stops when it has not improved for
    ``patience`` epochs; at the end, with ``restore_best``, the trainer keeps the
    parameters (and model state, e.g. batch statistics) of the best epoch. It records
    what it did in ``trainer.history`` (``stopped_epoch``, ``restored_epoch``, a note)
    and in its attributes.

    Args:
        monitor: metric name (default: ``"val_loss"`` with validation data, else
            ``"train_objective"``).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (maximize names ending in
            ``"accuracy"``, minimize the others).
        patience: epochs without improvement before stopping, a positive int; None
            never stops (model selection only).
        restore_best: keep the best epoch's parameters at the end.
        min_delta: an improvement must exceed this (>= 0).

    Attributes:
        best: the best value so far; ``best_epoch``: its epoch.
        stopped_epoch: the epoch after which it stopped training, or None.
        restored_epoch: the epoch whose parameters were restored, or None.
    """

    order = 50

    def __init__(
        self,
        monitor: str | None = None,
        mode: str = "auto",
        patience: int | None = None,
        restore_best: bool = True,
        min_delta: float = 0.0,
    ):
        from robustlearn._src.training.data import positive_int

        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"`monitor` must be a metric name (str) or None; got {monitor!r}.")
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}.")
        if not isinstance(restore_best, bool):
            raise TypeError(f"`restore_best` must be a bool; got {restore_best!r}.")
        if isinstance(min_delta, bool) or not isinstance(min_delta, int | float) or not min_delta >= 0:
            raise ValueError(f"`min_delta` must be a number in [0, inf); got {min_delta!r}.")
        self._monitor = monitor
        self.monitor = monitor
        self.mode = mode
        self.patience = positive_int("patience", patience, allow_none=True)
        self.restore_best = restore_best
        self.min_delta = float(min_delta)
        self._reset()

    def _reset(self):
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.restored_epoch: int | None = None
        self._snapshot = None

    @property
    def maximize(self) -> bool:
        if self.mode == "auto":
            return (self.monitor or "").endswith("accuracy")
        return self.mode == "max"

    def on_fit_start(self, trainer):
        self._reset()
        self._trainer = trainer
        self.monitor = self._monitor or trainer._default_monitor
        names = trainer._available_metrics
        if self.monitor not in names:
            raise ValueError(f"unknown `monitor` metric {self.monitor!r}; available: {names}.")

    def on_epoch_end(self, trainer, row):
        value = row.get(self.monitor)
        epoch = row["epoch"]
        if value is None or not isinstance(value, float):
            raise ValueError(f"EarlyStopping: the monitored metric {self.monitor!r} is not a number in epoch {epoch}.")
        if math.isnan(value):
            better = False
            trainer.history.notes.append(f"epoch {epoch}: the monitored {self.monitor} is NaN (not an improvement)")
        elif self.best is None:
            better = True
        elif self.maximize:
            better = value > self.best + self.min_delta
        else:
            better = value < self.best - self.min_delta
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._snapshot = (trainer.state.params, trainer.state.model_state)
        else:
            self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.history.stopped_epoch = epoch
            best = "none (all NaN)" if self.best_epoch is None else f"{self.best:.6g} at epoch {self.best_epoch}"
            trainer.history.notes.append(
                f"early stopping after epoch {epoch}: {self.monitor} did not improve for {self.wait} epochs "
                f"(best {best})"
            )
            return True
        return None

    def on_fit_end(self, trainer, error):
        if error is not None or not self.restore_best or self._snapshot is None:
            return
        trainer.params, trainer.model_state = self._snapshot
        self.restored_epoch = self.best_epoch
        trainer.history.restored_epoch = self.best_epoch
        last = trainer.history.rows[-1]["epoch"] if trainer.history.rows else None
        if self.best_epoch != last:
            trainer.history.notes.append(f"restored the parameters of epoch {self.best_epoch} (best {self.monitor})")

    def state_dict(self):
        return {
            "monitor": self.monitor,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "arrays": self._snapshot,
        }

    def load_state_dict(self, state):
        if state["monitor"] != self.monitor:
            raise _ckpt.CheckpointError(
                f"the checkpoint's early stopping monitors {state['monitor']!r}, this run {self.monitor!r}."
            )
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.stopped_epoch = state["stopped_epoch"]
        restore = state.get("arrays")
        template = (self._trainer.state.params, self._trainer.state.model_state)
        self._snapshot = None if restore is None else restore(template)


# ---------------------------------------------------------------------- progress


class ProgressBar(Callback):
    """Prints one short line per epoch to stderr (process 0 only).

    On a terminal the line is rewritten in place (``\\r``) and cut to ``width`` columns;
    otherwise (a log file, a pipe, a notebook capturing stderr) every epoch is a plain
    line of at most ``width`` characters. Notes (early stopping, restored epoch) are
    printed on their own lines.

    Args:
        keys: metrics to show (default: ``train_objective``, ``val_loss`` and the
            early-stopping monitor, those present).
        width: maximal line length (default 80).
        stream: where to write (default ``sys.stderr`` at the time of the fit).
    """

    order = 80

    def __init__(self, keys: tuple[str, ...] | None = None, width: int = 80, stream: TextIO | None = None):
        from robustlearn._src.training.data import positive_int

        if keys is not None and (isinstance(keys, str) or not all(isinstance(k, str) for k in keys)):
            raise TypeError(f"`keys` must be a sequence of metric names; got {keys!r}.")
        self.keys = None if keys is None else tuple(keys)
        self.width = positive_int("width", width)
        self.stream = stream
        self._open = False

    def on_fit_start(self, trainer):
        self._out = self.stream or sys.stderr
        self._tty = bool(getattr(self._out, "isatty", lambda: False)())
        self._epochs = trainer._epochs
        self._notes = len(trainer.history.notes)
        self._start = time.perf_counter()
        keys = self.keys
        if keys is None:
            monitors = [cb.monitor for cb in trainer._active_callbacks if isinstance(cb, EarlyStopping)]
            keys = tuple(dict.fromkeys(["train_objective", "val_loss", *monitors]))
        self._keys = [k for k in keys if k in trainer._available_metrics]

    def _line(self, row) -> str:
        epoch = row["epoch"]
        digits = len(str(self._epochs))
        now = time.perf_counter()
        seconds, self._start = now - self._start, now
        parts = [f"epoch {epoch:>{digits}}/{self._epochs}"]
        for k in self._keys:
            v = row.get(k)
            if isinstance(v, float):
                parts.append(f"{k}={v:.4g}")
        parts.append(f"{seconds:.2g}s")
        line = "  ".join(parts)
        if len(line) > self.width:
            line = line[: self.width - 1] + "~"
        return line

    def _print(self, text: str, newline: bool) -> None:
        if self._tty:
            self._out.write("\r" + text.ljust(self.width if self._open else 0) + ("\n" if newline else ""))
        else:
            self._out.write(text + "\n")
        self._out.flush()
        self._open = self._tty and not newline

    def _flush_notes(self, trainer):
        for note in trainer.history.notes[self._notes :]:
            if self._open:
                self._out.write("\n")
                self._open = False
            for line in textwrap.wrap(note, self.width, subsequent_indent="  "):
                self._out.write(line + "\n")
        self._notes = len(trainer.history.notes)
        self._out.flush()

    def on_epoch_end(self, trainer, row):
        if not _is_main_process():
            return None
        self._print(self._line(row), newline=False)
        self._flush_notes(trainer)
        return None

    def on_fit_end(self, trainer, error):
        if not _is_main_process():
            return
        if self._open:
            self._out.write("\n")
            self._open = False
        self._flush_notes(trainer)


# ---------------------------------------------------------------------- checkpoints


class Checkpointer(Callback):
    """Saves a checkpoint after every ``every`` epochs; ``fit(resume=True)`` continues from it.

    The checkpoint holds the train state (parameters, optimizer, objective and model
    state, step), the history, the callbacks' states (early stopping's best epoch and
    its parameters) and the run's configuration (objective, optimizer, model structure,
    batch size, seed, training-set size). Resuming checks the configuration and every
    array's path, shape and dtype, and refuses a mismatch with an error naming it.

    Files in ``directory``: ``checkpoint.rlck`` (the latest) and
    ``checkpoint.prev.rlck`` (the one before, kept until the latest is complete). Only
    process 0 writes; every process reads (the directory must be shared: the processes
    check that they resume from the same checkpoint).

    Args:
        directory: where to write (created if needed; must be writable: checked when
            ``fit`` starts, before training).
        every: save after epochs ``every, 2 every, ...`` and after the last epoch.
        fallback: when the latest checkpoint is unreadable (truncated, empty,
            garbage), resume from the previous one (it is moved aside to
            ``checkpoint.corrupt.rlck``) instead of raising.
    """

    order = 100

    def __init__(self, directory: str | os.PathLike, *, every: int = 1, fallback: bool = False):
        from robustlearn._src.training.data import positive_int

        if not isinstance(directory, str | os.PathLike):
            raise TypeError(f"`directory` must be a path; got {directory!r}.")
        if not isinstance(fallback, bool):
            raise TypeError(f"`fallback` must be a bool; got {fallback!r}.")
        self.directory = os.fspath(directory)
        self.every = positive_int("every", every)
        self.fallback = fallback
        self.last_saved_epoch: int | None = None

    @property
    def path(self) -> str:
        """The latest checkpoint's path."""
        return os.path.join(self.directory, _ckpt.CURRENT)

    def on_fit_start(self, trainer):
        if _is_main_process():
            _ckpt.probe_writable(self.directory)
            _ckpt.remove_stale_temporaries(self.directory)

    def on_epoch_end(self, trainer, row):
        epoch = row["epoch"]
        if epoch % self.every == 0 or epoch == trainer._epochs or trainer.stop_training:
            self.save(trainer)
        return None

    def save(self, trainer) -> None:
        """Writes the trainer's current state as the latest checkpoint (process 0 only)."""
        if _is_main_process():  # the state is replicated: process 0 holds all of it
            _ckpt.write(self.directory, trainer._checkpoint_bytes())
        self.last_saved_epoch = trainer.history.rows[-1]["epoch"] if trainer.history.rows else 0

    def load(self) -> tuple[dict, dict, str] | None:
        """``(meta, trees, path)`` of the checkpoint to resume from, or None if there is none.

        Raises:
            CheckpointError: the latest checkpoint is unreadable (and ``fallback`` is off
                or there is no readable previous one).
        """
        current = self.path
        previous = os.path.join(self.directory, _ckpt.PREVIOUS)
        if not os.path.lexists(current):
            if os.path.lexists(previous):  # a crash between the two renames of a save
                return (*_ckpt.decode(_ckpt.read_bytes(previous), previous), previous)
            return None
        try:
            return (*_ckpt.decode(_ckpt.read_bytes(current), current), current)
        except _ckpt.CheckpointError as error:
            if not self.fallback or not os.path.lexists(previous):
                raise
            try:
                out = (*_ckpt.decode(_ckpt.read_bytes(previous), previous), previous)
            except _ckpt.CheckpointError as second:
                raise _ckpt.CheckpointError(f"{error} The previous checkpoint is unreadable too: {second}") from None
            if _is_main_process():
                os.replace(current, os.path.join(self.directory, _ckpt.CORRUPT))
            return out


def sort_callbacks(callbacks: list[Any]) -> list[Any]:
    """Stable sort by ``order`` (default 0)."""
    return sorted(callbacks, key=lambda cb: getattr(cb, "order", 0))


def call(cb, hook: str, *args):
    """Calls ``cb.hook(*args)`` if the callback has that hook."""
    fn = getattr(cb, hook, None)
    return None if fn is None else fn(*args)


__all__ = ["Callback", "Checkpointer", "EarlyStopping", "ProgressBar"]

"""Training: the shared Trainer, its History and callbacks, and the full-batch solver for linear models.

``Trainer`` and ``TrainState`` load flax on first use; ``fit_linear`` does not need it.
"""

import importlib as _importlib
from typing import TYPE_CHECKING

from robustlearn._src.training.callbacks import Callback, Checkpointer, EarlyStopping, ProgressBar
from robustlearn._src.training.checkpoint import CheckpointError
from robustlearn._src.training.linear import LinearSolution, fit_linear, linear_losses
from robustlearn._src.training.metrics import History

if TYPE_CHECKING:  # for type checkers and the docs; at run time they load lazily (below)
    from robustlearn._src.training.trainer import Trainer, TrainState

_LAZY = {"Trainer": "robustlearn._src.training.trainer", "TrainState": "robustlearn._src.training.trainer"}

__all__ = [
    "Callback",
    "CheckpointError",
    "Checkpointer",
    "EarlyStopping",
    "History",
    "LinearSolution",
    "ProgressBar",
    "TrainState",
    "Trainer",
    "fit_linear",
    "linear_losses",
]


def __getattr__(name: str):
    # PEP 562: the Trainer (and flax with it) loads on first access.
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'robustlearn.train' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

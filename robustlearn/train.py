"""Training: the shared Trainer, its History and callbacks, and the full-batch solver for linear models."""

from robustlearn._src.training.callbacks import Callback, Checkpointer, EarlyStopping, ProgressBar
from robustlearn._src.training.checkpoint import CheckpointError
from robustlearn._src.training.linear import LinearSolution, fit_linear, linear_losses
from robustlearn._src.training.metrics import History
from robustlearn._src.training.trainer import Trainer, TrainState

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

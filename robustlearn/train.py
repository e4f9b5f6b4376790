"""Training: the shared Trainer, its History, and the full-batch solver for linear models."""

from robustlearn._src.training.linear import LinearSolution, fit_linear, linear_losses
from robustlearn._src.training.trainer import History, Trainer, TrainState

__all__ = ["History", "LinearSolution", "TrainState", "Trainer", "fit_linear", "linear_losses"]

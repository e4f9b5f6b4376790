"""robustlearn: distributionally robust learning in JAX, as a drop-in for ERM.

Replace ``losses.mean()`` by a robust reduction, e.g. ``robustlearn.cvar(losses, 0.1)``;
each reduction has a ``*_weights`` twin that returns the worst-case distribution.
"""

from robustlearn import benchmark, importance, objectives, train, wasserstein
from robustlearn._reductions import (
    chi_square,
    chi_square_penalty,
    chi_square_penalty_weights,
    chi_square_weights,
    cressie_read,
    cressie_read_weights,
    cvar,
    cvar_weights,
    erm,
    erm_weights,
    kl,
    kl_penalty,
    kl_penalty_weights,
    kl_weights,
)

__version__ = "0.1.0"

__all__ = [
    "benchmark",
    "importance",
    "objectives",
    "train",
    "wasserstein",
    "chi_square",
    "chi_square_penalty",
    "chi_square_penalty_weights",
    "chi_square_weights",
    "cressie_read",
    "cressie_read_weights",
    "cvar",
    "cvar_weights",
    "erm",
    "erm_weights",
    "kl",
    "kl_penalty",
    "kl_penalty_weights",
    "kl_weights",
]

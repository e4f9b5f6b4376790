"""Training objectives: the interface the trainer speaks, and factories for each reduction."""

from robustlearn._objectives import (
    Batch,
    LossFn,
    Objective,
    chi_square,
    chi_square_penalty,
    cressie_read,
    cvar,
    erm,
    from_reduction,
    kl,
    kl_penalty,
)

__all__ = [
    "Batch",
    "LossFn",
    "Objective",
    "chi_square",
    "chi_square_penalty",
    "cressie_read",
    "cvar",
    "erm",
    "from_reduction",
    "kl",
    "kl_penalty",
]

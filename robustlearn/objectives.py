"""Training objectives: the interface the trainer speaks, factories for each reduction, group DRO."""

from robustlearn._group_dro import GroupDROState, group_dro, worst_group
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
    importance_weighted,
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
    "group_dro",
    "GroupDROState",
    "importance_weighted",
    "kl",
    "kl_penalty",
    "worst_group",
]

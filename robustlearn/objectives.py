"""Training objectives: the interface the trainer speaks, a factory for each reduction, group DRO."""

from robustlearn._src.objectives.base import (
    Batch,
    LossFn,
    Objective,
    ReductionState,
    chi_square,
    chi_square_penalty,
    cressie_read,
    cvar,
    erm,
    from_reduction,
    importance_weighted,
    kl,
    kl_penalty,
    tv,
)
from robustlearn._src.objectives.contamination import contamination_corrected
from robustlearn._src.objectives.group_dro import GroupDROState, group_dro, worst_group

__all__ = [
    "Batch",
    "LossFn",
    "Objective",
    "ReductionState",
    "chi_square",
    "chi_square_penalty",
    "contamination_corrected",
    "cressie_read",
    "cvar",
    "erm",
    "from_reduction",
    "group_dro",
    "GroupDROState",
    "importance_weighted",
    "kl",
    "kl_penalty",
    "tv",
    "worst_group",
]

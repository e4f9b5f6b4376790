"""The gap suite's methods: what each one trains, on which rows, with which weights, and its grid.

Every method has the same number of configurations per learner and run mode (``K``: 2 quick, 6 full), and
every grid spans the same regularization range: ERM (and every method without a hyperparameter of its own)
tunes the L2 strength over ``K`` values from 1e-5 to 1 on a log scale (``K = 2``: 1e-4 and 1e-1); a method
with a hyperparameter of its own tunes it on ``K / 2`` values times an L2 sub-grid of 2 values (1e-4 and 1e-2;
quick: 1 value, 1e-3). For the MLP the "L2" is AdamW's decoupled weight decay. Online group DRO for the MLP
follows Sagawa et al. (2020): strong weight decay (0.1 and 1) times the group step size.

``radius_from_data`` is the exception: it has no grid (one configuration, the L2 strength of
``calibrate.fit_robust``), because its radius comes from the data, not from tuning; both selection rules
therefore report the same model.

A method that cannot run in a scenario (no real training rows, not binary, no generations) or with a learner
(the exact Wasserstein objective is for the binary linear model) is left out and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from robustlearn import contamination as rc
from robustlearn import importance

FULL_L2 = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
QUICK_L2 = (1e-4, 1e-1)
SUB_L2 = {False: (1e-4, 1e-2), True: (1e-3,)}  # the L2 sub-grid of methods with a hyperparameter of their own
STRONG_WD = {False: (0.1, 1.0), True: (0.1,)}  # group DRO on the MLP: Sagawa et al.'s strong regularization


class Spec(NamedTuple):
    """A method: name, objective kind, its own hyperparameter and values (full, quick), weights, applicability.

    ``weights(train, hyper, ctx) -> (n,)`` gives the nominal weights (None: uniform); ``groups`` names the
    training column holding the group ids for group objectives (``"group"`` or ``"source"``).
    """

    name: str
    kind: str
    param: str | None
    values: tuple[tuple, tuple]  # (full, quick)
    definition: str
    weights: Callable | None = None
    groups: str = "group"
    needs: tuple[str, ...] = ()  # "real_train", "binary", "generations", "alpha"
    learners: tuple[str, ...] = ("linear", "mlp")
    train_split: str = "train"
    fixed: tuple[tuple[str, float], ...] | None = None  # a single configuration instead of a grid


def _iw(train, hyper, ctx):
    return importance.transform_weights(train["ratio"], power=hyper["power"])


def _source_mix(train, hyper, ctx):
    return importance.source_weights((train["source"] > 0).astype(np.int32), [hyper["real"], 1 - hyper["real"]])


def _generation_ids(train) -> np.ndarray:
    return train["source"] - 1  # round / generation t has source t + 1 (scenario contract)


def _blue(alpha: float, train) -> np.ndarray:
    gen = _generation_ids(train)
    counts = np.bincount(gen)
    beta = importance.clip_mixture(rc.generation_weights(alpha, counts))
    beta = np.where(counts > 0, beta, 0.0)
    return importance.source_weights(gen, beta)


def _blue_known(train, hyper, ctx):
    return _blue(ctx.alpha_known, train)


def _blue_estimated(train, hyper, ctx):
    return _blue(ctx.alpha_estimate["alpha"], train)


def _geometric(train, hyper, ctx):
    gen = _generation_ids(train)
    return importance.source_weights(gen, hyper["gamma"] ** np.arange(gen.max() + 1))


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("erm", "erm", None, ((), ()), "ERM: the mean loss over the training rows (synthetic + real_train)."),
        Spec(
            "cvar",
            "cvar",
            "alpha",
            ((0.05, 0.2, 0.5), (0.1, 0.3)),
            "CVaR at level alpha: the mean of the worst alpha fraction of the losses.",
        ),
        Spec(
            "chi_square",
            "chi_square",
            "radius",
            ((0.1, 0.5, 2.0), (0.5, 2.0)),
            "chi-square DRO: the worst case over a chi-square ball of the given radius around the training rows.",
        ),
        Spec(
            "kl",
            "kl",
            "radius",
            ((0.05, 0.2, 1.0), (0.1, 0.5)),
            "KL DRO: the worst case over a KL ball of the given radius.",
        ),
        Spec(
            "wasserstein",
            "wasserstein",
            "eps",
            ((0.01, 0.1, 0.3), (0.01, 0.1)),
            "exact Wasserstein-1 worst case of the logistic loss (l2 transport on the features, labels fixed) at "
            "radius eps; binary linear model only.",
            needs=("binary",),
            learners=("linear",),
        ),
        Spec(
            "group_dro",
            "group",
            "step_size",
            ((0.01, 0.1, 1.0), (0.1, 1.0)),
            "group DRO over the scenario's groups: linear, the exact worst group mean (full batch, no own "
            "hyperparameter); MLP, online group DRO (Sagawa et al. 2020) with step size and strong weight decay.",
            needs=("groups",),
        ),
        Spec(
            "iw_erm",
            "erm",
            "power",
            ((0.25, 0.5, 1.0), (0.5, 1.0)),
            "importance-weighted ERM: weights (p_real / p_train)^power from a calibrated logistic classifier of "
            "real_train against the training rows.",
            weights=_iw,
            needs=("real_train",),
        ),
        Spec(
            "source_mix",
            "erm",
            "real",
            ((0.1, 0.3, 0.6), (0.25, 0.5)),
            "per-source weights: the real rows get total mass `real`, the synthetic rows the rest.",
            weights=_source_mix,
            needs=("real_train",),
        ),
        Spec(
            "source_dro",
            "group",
            "step_size",
            ((0.01, 0.1, 1.0), (0.1, 1.0)),
            "group DRO over the two sources (real, synthetic), as group_dro.",
            groups="source",
            needs=("real_train",),
        ),
        Spec(
            "generation_weighted",
            "erm",
            None,
            ((), ()),
            "per-generation weights: the best linear unbiased weights (contamination.generation_weights) for the "
            "scenario's true alpha, projected onto the simplex.",
            weights=_blue_known,
            needs=("generations", "alpha"),
        ),
        Spec(
            "generation_weighted_est",
            "erm",
            None,
            ((), ()),
            "as generation_weighted with alpha estimated from the rounds (contamination.estimate_alpha on the "
            "per-class round means, deployed model = ERM on the rounds before).",
            weights=_blue_estimated,
            needs=("generations",),
        ),
        Spec(
            "generation_geometric",
            "erm",
            "gamma",
            ((0.25, 0.5, 2.0), (0.5, 2.0)),
            "baseline: generation g gets mass proportional to gamma^g.",
            weights=_geometric,
            needs=("generations",),
        ),
        Spec(
            "radius_from_data",
            "chi_square",
            None,
            ((), ()),
            "chi-square DRO at a radius from the data, not tuned (robustlearn.calibrate.fit_robust, linear only): "
            "the radius is the 95% upper confidence bound of the chi-square divergence between the small real "
            "training set (real_train) and the synthetic rows, joint in (x, y), plus the statistical radius of "
            "the training rows; trained on 75% of the synthetic rows, certified on the other 25% (the bound on the "
            "real log loss). One configuration (l2 = 1e-3), so both selection rules report the same model.",
            needs=("real_train",),
            learners=("linear",),
            fixed=(("l2", 1e-3),),
        ),
        Spec(
            "erm_synthetic",
            "erm",
            None,
            ((), ()),
            "the floor: ERM on the synthetic rows only.",
            train_split="synthetic",
        ),
        Spec(
            "erm_real",
            "erm",
            None,
            ((), ()),
            "the ceiling: ERM on all real training rows (real_full_train), tuned on real validation data.",
            train_split="real_full_train",
        ),
    )
}
REFERENCES = ("erm_synthetic", "erm_real")


def grid(spec: Spec, learner: str, quick: bool) -> list[dict]:
    """The method's configurations (the same count ``K`` for every method of a learner and mode, but one for a
    method with a ``fixed`` configuration)."""
    if spec.fixed is not None:
        return [dict(spec.fixed)]
    reg = "l2" if learner == "linear" else "wd"
    if spec.kind == "group" and learner == "mlp":
        values = spec.values[1] if quick else spec.values[0]
        return [{spec.param: v, reg: wd} for v in values for wd in STRONG_WD[quick]]
    if spec.param is None or (spec.kind == "group" and learner == "linear"):
        return [{reg: v} for v in (QUICK_L2 if quick else FULL_L2)]
    values = spec.values[1] if quick else spec.values[0]
    return [{spec.param: v, reg: l2} for v in values for l2 in SUB_L2[quick]]


def applicable(spec: Spec, learner: str, ctx: Any) -> tuple[bool, str]:
    """Whether the method runs here, and why not."""
    if learner not in spec.learners:
        return False, f"{learner} learner: not offered ({', '.join(spec.learners)} only)"
    for need in spec.needs:
        if need == "real_train" and ctx.num_real == 0:
            return False, "no real training rows"
        if need == "binary" and ctx.num_classes != 2:
            return False, "not a binary task"
        if need == "groups" and ctx.num_groups < 2:
            return False, "no groups"
        if need == "generations" and not ctx.generations:
            return False, "no generations"
        if need == "alpha" and ctx.alpha_known is None:
            return False, "alpha not defined (only model_collapse's mix mode has one)"
    return True, ""


def method_names(ctx: Any, learner: str) -> list[str]:
    return [name for name, spec in SPECS.items() if applicable(spec, learner, ctx)[0]]


def definitions() -> Mapping[str, str]:
    return {name: spec.definition for name, spec in SPECS.items()}


def grid_table(quick: bool) -> list[dict]:
    """One row per (method, learner): the configurations, for the report."""
    rows = []
    for name, spec in SPECS.items():
        for learner in spec.learners:
            g = grid(spec, learner, quick)
            rows.append({"method": name, "learner": learner, "configurations": len(g), "grid": _grid_text(g)})
    return rows


def _grid_text(g: Sequence[Mapping[str, float]]) -> str:
    keys = list(g[0])
    parts = []
    for k in keys:
        vals = list(dict.fromkeys(c[k] for c in g))
        parts.append(f"{k} ∈ {{{', '.join(f'{v:g}' for v in vals)}}}")
    return " × ".join(parts)

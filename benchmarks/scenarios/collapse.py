"""Model collapse: recursive generations of a class-conditional Gaussian generator on scikit-learn's digits.

Generation 0 is a class-conditional Gaussian fitted on the real training data (``real_full_train`` of
``load_digits``); generation ``g >= 1`` is fitted on

- ``"replace"``: the samples of generation ``g - 1`` only (Shumailov et al. 2024's setting, collapse expected);
- ``"accumulate"``: the real data plus the samples of all generations ``0 .. g - 1`` (Gerstgrasser et al. 2024);
- ``"mix"``: a fraction ``alpha`` of real rows and ``1 - alpha`` of generation ``g - 1``'s samples (α-mixed, as in
  Amin et al. 2026, "Learning from Synthetic Data: Limitations of ERM", arXiv 2601.15468).

The ``synthetic`` split pools the samples of all generations, ``source = 1 + generation``; a downstream learner
trained on the first ``g`` generations is obtained with :func:`take_generations`.
"""

from __future__ import annotations

import numpy as np

from ._common import (
    Scenario,
    class_conditional_gaussian,
    class_counts,
    make_split,
    sample_class_conditional_gaussian,
    standardizer,
)
from .images import _digits, _digits_real_ids

MODES = ("replace", "accumulate", "mix")


def make_model_collapse(
    seed: int = 0,
    quick: bool = True,
    *,
    generations: int | None = None,
    mode: str = "replace",
    alpha: float = 0.2,
    n_per_generation: int | None = None,
    n_real_train: int = 0,
    ridge: float = 1e-2,
) -> Scenario:
    """Recursive class-conditional Gaussian generations (digits, d = 64, 10 classes).

    Args:
        seed: random seed (splits, samples).
        quick: small sizes (5 generations of 500 rows) instead of full (10 generations of 1,000 rows).
        generations: number of generations ``G`` (default 5 quick / 10 full).
        mode: ``"replace"``, ``"accumulate"`` or ``"mix"``.
        alpha: fraction of real rows in each generator's training data for ``mode="mix"``.
        n_per_generation: samples drawn from each generation (class frequencies of the real data).
        n_real_train: real labelled rows available to the downstream learner (0 allowed).
        ridge: added to every covariance diagonal (raw 0-16 pixel units) so each fit is positive definite.

    Returns:
        A Scenario whose ``synthetic`` split holds all ``G * n_per_generation`` samples, ``source = 1 + g``;
        groups are the digit classes. ``info["generations"] = G``, ``info["mode"]``, ``info["fit_sizes"]`` (rows
        each generator was fitted on), ``info["total_variance"]`` (trace of the fitted covariances per generation,
        averaged over classes: collapse shows as a decreasing sequence), ``info["mean_drift"]`` (distance of each
        generation's class means from the real ones, averaged over classes). Features are standardized with
        statistics of generation 0 + ``real_train``, which every prefix of generations contains.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    g_total = (5 if quick else 10) if generations is None else generations
    if g_total < 1:
        raise ValueError(f"generations must be >= 1, got {g_total}")
    n_gen = (500 if quick else 1000) if n_per_generation is None else n_per_generation
    x_real, y_real = _digits()
    ids = _digits_real_ids(seed, n_real_train)
    rng = np.random.default_rng([seed, 30])
    xr, yr = x_real[ids["real_full_train"]], y_real[ids["real_full_train"]]
    real_means, _, priors = class_conditional_gaussian(xr, yr, 10, ridge)
    counts = class_counts(n_gen, priors)

    fit_x, fit_y = xr, yr
    samples, fit_sizes, variances, drift = [], [], [], []
    for _ in range(g_total):
        means, covs, _ = class_conditional_gaussian(fit_x, fit_y, 10, ridge)
        fit_sizes.append(len(fit_y))
        variances.append(float(np.mean(np.trace(covs, axis1=1, axis2=2))))
        drift.append(float(np.mean(np.linalg.norm(means - real_means, axis=1))))
        xs, ys = sample_class_conditional_gaussian(rng, means, covs, counts)
        perm = rng.permutation(len(ys))
        samples.append((xs[perm], ys[perm]))
        if mode == "replace":
            fit_x, fit_y = samples[-1]
        elif mode == "accumulate":
            fit_x = np.concatenate([xr] + [s[0] for s in samples])
            fit_y = np.concatenate([yr] + [s[1] for s in samples])
        else:  # mix: alpha of real rows (resampled), 1 - alpha of the last generation, n_gen rows in all
            n_r = round(alpha * n_gen)
            pick_r = rng.choice(len(yr), size=n_r, replace=n_r > len(yr))
            pick_s = rng.choice(n_gen, size=n_gen - n_r, replace=False)
            fit_x = np.concatenate([xr[pick_r], samples[-1][0][pick_s]])
            fit_y = np.concatenate([yr[pick_r], samples[-1][1][pick_s]])

    x_syn = np.concatenate([s[0] for s in samples])
    y_syn = np.concatenate([s[1] for s in samples])
    gen = np.repeat(np.arange(g_total), n_gen)
    mean, scale = standardizer(samples[0][0], x_real[ids["real_train"]])
    splits = {"synthetic": make_split((x_syn - mean) / scale, y_syn, y_syn, 1 + gen)}
    for k in ("real_train", "real_val", "real_test", "real_full_train"):
        splits[k] = make_split((x_real[ids[k]] - mean) / scale, y_real[ids[k]], y_real[ids[k]], 0)
    info = {
        "row_ids": {"synthetic": -np.ones(len(y_syn), dtype=np.int64)}
        | {k: v.astype(np.int64) for k, v in ids.items()},
        "feature_names": tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)),
        "standardization": {"mean": mean, "scale": scale, "fit_on": ("synthetic generation 0", "real_train")},
        "generations": g_total,
        "mode": mode,
        "alpha": alpha if mode == "mix" else None,
        "n_per_generation": n_gen,
        "fit_sizes": fit_sizes,
        "total_variance": variances,
        "mean_drift": drift,
        "n_real_train": n_real_train,
    }
    prediction = (
        f"Under '{mode}' recursion, the real-test loss of ERM on the pooled generations grows with the number of "
        "generations, and generation-weighted or robust objectives grow less."
    )
    return Scenario("model_collapse", prediction, "classification", 10, 10, splits, info)


def take_generations(scenario: Scenario, g: int, *, only_last: bool = False) -> Scenario:
    """The scenario restricted to the first ``g`` generations' samples (``source`` in ``1 .. g``).

    With ``only_last=True``, keep generation ``g - 1`` alone (what a learner sees under pure replacement). Real
    splits are unchanged; ``info["generations"]`` becomes ``g``.
    """
    g_total = scenario.info["generations"]
    if not 1 <= g <= g_total:
        raise ValueError(f"g must be in [1, {g_total}], got {g}")
    syn = scenario.splits["synthetic"]
    keep = (syn["source"] == g) if only_last else (syn["source"] <= g)
    splits = dict(scenario.splits) | {"synthetic": {k: v[keep] for k, v in syn.items()}}
    row_ids = dict(scenario.info["row_ids"]) | {"synthetic": scenario.info["row_ids"]["synthetic"][keep]}
    info = dict(scenario.info) | {"generations": g, "row_ids": row_ids, "only_last": only_last}
    return scenario._replace(splits=splits, info=info)

"""Model collapse: recursive generations of a class-conditional Gaussian generator on scikit-learn's digits.

The generator is a class-conditional Gaussian (per-class mean and covariance, by maximum likelihood). Three
recursions, each producing ``G`` generations (or rounds) of ``n`` rows:

- ``"replace"``: generator 0 is fitted on the real training data (``real_full_train`` of ``load_digits``);
  generator ``g >= 1`` on the samples of generation ``g - 1`` only (Shumailov et al. 2024's setting, collapse
  expected).
- ``"accumulate"``: generator ``g`` is fitted on the real data plus the samples of all generations ``0 .. g - 1``
  (Gerstgrasser et al. 2024: accumulating data is expected to avoid collapse).
- ``"mix"``: the contamination setting of Amin, Bie, Kong, Syed & Vassilvitskii, "Learning from Synthetic Data:
  Limitations of ERM" (arXiv 2601.15468, 2026), with a generative model in place of their mean estimator or
  classifier (our adaptation; the paper analyses mean estimation and PAC learning). ``alpha`` is the *synthetic*
  fraction. Round 1 is ``n`` fresh real rows; round ``t >= 2`` is ``round(alpha * n)`` rows sampled from the model
  deployed after round ``t - 1`` plus ``n - round(alpha * n)`` fresh real rows; the model deployed after round
  ``t`` is fitted (ERM) on all rounds ``1 .. t`` pooled. The learner sees all rounds and cannot tell which rows
  are generated (``info["generated"]`` records it, for analysis only).

The ``synthetic`` split pools all generations (rounds), ``source = 1 + generation`` (round ``t`` has source
``t``); ``synthetic_val`` holds a held-out fifth as many rows of each generation, drawn the same way but never
used to fit a generator; a learner trained on the first ``g`` generations is obtained with
:func:`take_generations`.
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
    alpha: float = 0.8,
    n_per_generation: int | None = None,
    n_real_train: int = 0,
    ridge: float = 1e-2,
) -> Scenario:
    """Recursive class-conditional Gaussian generations (digits, d = 64, 10 classes); see the module docstring.

    Args:
        seed: random seed (splits, samples).
        quick: small sizes (5 generations of 500 rows) instead of full (10 generations of 1,000 rows).
        generations: number of generations (rounds) ``G`` (default 5 quick / 10 full).
        mode: ``"replace"``, ``"accumulate"`` or ``"mix"``.
        alpha: ``mode="mix"`` only: the fraction of each round ``t >= 2`` sampled from the deployed model (the
            synthetic fraction of Amin et al.), in ``[0, 1]``.
        n_per_generation: rows per generation (round), ``n``; ``synthetic_val`` gets ``n // 5`` per generation.
        n_real_train: real labelled rows available to the downstream learner besides the generations (0 allowed).
        ridge: added to every covariance diagonal (raw 0-16 pixel units) so each fit is positive definite.

    Returns:
        A Scenario whose ``synthetic`` split holds all ``G * n`` rows, ``source = 1 + g``; groups are the digit
        classes. ``info``: ``"generations"``, ``"mode"``, ``"alpha"`` (mix: the synthetic fraction; else None),
        ``"generated"`` (bool per synthetic row: sampled from a model, not a real row), ``"generated_val"`` (same
        for ``synthetic_val``), ``"generated_fraction"`` (per generation, observed), ``"fit_sizes"`` (rows each
        model was fitted on), ``"total_variance"`` (trace of the fitted covariances per model, averaged over
        classes: collapse shows as a decreasing sequence), ``"mean_drift"`` (distance of each model's class means
        from the real ones, averaged over classes). For ``"replace"``/``"accumulate"`` model ``g`` produced
        generation ``g``; for ``"mix"`` model ``t`` is the one deployed after round ``t + 1``. Features are
        standardized with statistics of generation 0 + ``real_train``, which every prefix of generations contains.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    g_total = (5 if quick else 10) if generations is None else generations
    if g_total < 1:
        raise ValueError(f"generations must be >= 1, got {g_total}")
    n_gen = (500 if quick else 1000) if n_per_generation is None else n_per_generation
    if n_gen < 5:
        raise ValueError(f"n_per_generation must be >= 5, got {n_gen}")
    n_val = n_gen // 5
    x_real, y_real = _digits()
    ids = _digits_real_ids(seed, n_real_train)
    rng = np.random.default_rng([seed, 30])
    full = ids["real_full_train"]
    xr, yr = x_real[full], y_real[full]
    real_means, _, priors = class_conditional_gaussian(xr, yr, 10, ridge)
    counts, counts_val = class_counts(n_gen, priors), class_counts(n_val, priors)

    samples, held, fit_sizes, variances, drift = [], [], [], [], []

    def fit(x, y):
        means, covs, _ = class_conditional_gaussian(x, y, 10, ridge)
        fit_sizes.append(len(y))
        variances.append(float(np.mean(np.trace(covs, axis1=1, axis2=2))))
        drift.append(float(np.mean(np.linalg.norm(means - real_means, axis=1))))
        return means, covs

    def draw(model, k):
        x, y = sample_class_conditional_gaussian(rng, *model, k)
        perm = rng.permutation(len(y))
        return x[perm], y[perm], -np.ones(len(y), np.int64)

    if mode in ("replace", "accumulate"):
        fit_x, fit_y = xr, yr
        for _ in range(g_total):
            model = fit(fit_x, fit_y)
            samples.append(draw(model, counts))
            held.append(draw(model, counts_val))
            if mode == "replace":
                fit_x, fit_y = samples[-1][:2]
            else:
                fit_x = np.concatenate([xr] + [s[0] for s in samples])
                fit_y = np.concatenate([yr] + [s[1] for s in samples])
    else:
        # Fresh real rows: drawn with replacement (the pool of 697 is smaller than the rounds need) from 80% of
        # real_full_train; synthetic_val's real rows from the other 20%, so the two splits share no row.
        perm = rng.permutation(len(full))
        cut = int(round(0.8 * len(full)))
        pools = {"train": perm[:cut], "val": perm[cut:]}

        def fresh(k, pool):
            pick = rng.choice(pools[pool], size=k, replace=True)
            return xr[pick], yr[pick], full[pick].astype(np.int64)

        def round_rows(model, k, pool):
            n_syn = 0 if model is None else int(round(alpha * k))
            parts = [fresh(k - n_syn, pool)]
            if n_syn:
                parts.append(draw(model, class_counts(n_syn, priors)))
            x, y, r = (np.concatenate([p[i] for p in parts]) for i in range(3))
            order = rng.permutation(len(y))
            return x[order], y[order], r[order]

        model = None
        for _ in range(g_total):
            samples.append(round_rows(model, n_gen, "train"))
            held.append(round_rows(model, n_val, "val"))
            pooled = [np.concatenate([s[i] for s in samples]) for i in range(2)]
            model = fit(*pooled)  # deployed after this round: ERM on all rounds so far

    x_syn, y_syn, r_syn = (np.concatenate([s[i] for s in samples]) for i in range(3))
    x_val, y_val, r_val = (np.concatenate([s[i] for s in held]) for i in range(3))
    gen = np.repeat(np.arange(g_total), n_gen)
    gen_val = np.repeat(np.arange(g_total), n_val)
    mean, scale = standardizer(samples[0][0], x_real[ids["real_train"]])
    splits = {
        "synthetic": make_split((x_syn - mean) / scale, y_syn, y_syn, 1 + gen),
        "synthetic_val": make_split((x_val - mean) / scale, y_val, y_val, 1 + gen_val),
    }
    for k in ("real_train", "real_val", "real_test", "real_full_train"):
        splits[k] = make_split((x_real[ids[k]] - mean) / scale, y_real[ids[k]], y_real[ids[k]], 0)
    generated = r_syn < 0
    info = {
        "row_ids": {"synthetic": r_syn, "synthetic_val": r_val} | {k: v.astype(np.int64) for k, v in ids.items()},
        "feature_names": tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)),
        "standardization": {"mean": mean, "scale": scale, "fit_on": ("synthetic generation 0", "real_train")},
        "generations": g_total,
        "mode": mode,
        "alpha": alpha if mode == "mix" else None,
        "generated": generated,
        "generated_val": r_val < 0,
        "generated_fraction": [float(generated[gen == g].mean()) for g in range(g_total)],
        "n_per_generation": n_gen,
        "fit_sizes": fit_sizes,
        "total_variance": variances,
        "mean_drift": drift,
        "n_real_train": n_real_train,
        "primary_metric": ("loss", False),
        "negative_control": "collapse (accumulated data)" if mode == "accumulate" else False,
        "training_rows": f"synthetic (the pooled {g_total} generations of {n_gen} rows"
        + (", each round a mix of generated and fresh real rows)" if mode == "mix" else ", all generated)")
        + (f" + real_train ({n_real_train} real digits)" if n_real_train else ""),
    }
    prediction = {
        "replace": (
            "Under 'replace' recursion, the real-test loss of ERM on the pooled generations grows with the number "
            "of generations, and generation-weighted or robust objectives grow less."
        ),
        "accumulate": (
            "Negative control for collapse: when every generator is fitted on the real data plus all earlier "
            "generations, the real-test loss of ERM on the pooled generations does not grow with the number of "
            "generations (Gerstgrasser et al. 2024)."
        ),
        "mix": (
            f"With a synthetic fraction alpha = {alpha:g} per round (Amin et al. 2026's setting), ERM on all rounds "
            "pooled keeps a real-test loss above that of ERM on the real data, and weighting the rounds by the best "
            "linear unbiased weights for the true alpha (favouring early rounds) lowers it."
        ),
    }[mode]
    return Scenario("model_collapse", prediction, "classification", 10, 10, splits, info)


def take_generations(scenario: Scenario, g: int, *, only_last: bool = False) -> Scenario:
    """The scenario restricted to the first ``g`` generations (``source`` in ``1 .. g``), synthetic_val included.

    With ``only_last=True``, keep generation ``g - 1`` alone (what a learner sees under pure replacement). Real
    splits are unchanged; ``info["generations"]`` becomes ``g``.
    """
    g_total = scenario.info["generations"]
    if not 1 <= g <= g_total:
        raise ValueError(f"g must be in [1, {g_total}], got {g}")
    splits, row_ids = dict(scenario.splits), dict(scenario.info["row_ids"])
    info = dict(scenario.info) | {"generations": g, "only_last": only_last}
    for split, flag in (("synthetic", "generated"), ("synthetic_val", "generated_val")):
        data = scenario.splits[split]
        keep = (data["source"] == g) if only_last else (data["source"] <= g)
        splits[split] = {k: v[keep] for k, v in data.items()}
        row_ids[split] = scenario.info["row_ids"][split][keep]
        info[flag] = np.asarray(scenario.info[flag])[keep]
    info["row_ids"] = row_ids
    return scenario._replace(splits=splits, info=info)

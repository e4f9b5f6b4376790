"""Tabular scenarios on UCI Adult: a learned copula generator (with and without a dropped mode), label noise,
support cut.

The real data are split once per seed: ``real_test`` is drawn from the official ``adult.test`` file, ``real_val``
and ``real_full_train`` from ``adult.data`` (disjoint), and ``real_train`` is a class-stratified subset of
``real_full_train``. Generators only ever see ``real_full_train``. Features are standardized with the mean and
scale of ``synthetic`` + ``real_train`` (the data a practitioner may use), never the test split.
"""

from __future__ import annotations

import numpy as np

from . import generators
from ._adult import load_adult
from ._common import (
    Scenario,
    class_counts,
    disjoint_indices,
    standardize_splits,
    stratified_subset,
    unused_rows,
)

# Row counts per split; None = everything available.
QUICK_SIZES = {"synthetic": 2000, "synthetic_val": 500, "real_full_train": 3000, "real_val": 500, "real_test": 2000}
FULL_SIZES = {"synthetic": 20000, "synthetic_val": 2000, "real_full_train": None, "real_val": 2000, "real_test": None}


def _adult_real_splits(seed: int, quick: bool, n_real_train: int):
    """Row indices (into ``load_adult()``) of the real splits, disjoint except real_train ⊂ real_full_train."""
    adult = load_adult()
    sizes = QUICK_SIZES if quick else FULL_SIZES
    rng = np.random.default_rng([seed, 0])
    train_pool = np.flatnonzero(~adult.is_test)
    test_pool = np.flatnonzero(adult.is_test)
    parts = disjoint_indices(rng, len(train_pool), {"real_val": sizes["real_val"], "real_full_train": -1})
    val = train_pool[parts["real_val"]]
    full = train_pool[parts["real_full_train"]]
    if sizes["real_full_train"] is not None:
        full = stratified_subset(rng, full, adult.y, sizes["real_full_train"])
    test = test_pool if sizes["real_test"] is None else stratified_subset(rng, test_pool, adult.y, sizes["real_test"])
    if n_real_train < 0 or n_real_train > len(full):
        raise ValueError(f"n_real_train must be in [0, {len(full)}], got {n_real_train}")
    real_train = stratified_subset(rng, full, adult.y, n_real_train)
    ids = {"real_train": real_train, "real_val": val, "real_test": np.sort(test), "real_full_train": full}
    return adult, ids, sizes


def _finish(name, prediction, num_groups, adult, ids, synthetic, synthetic_val, groups_of, info, metric):
    """Assemble and standardize. ``synthetic(_val) = (x_raw, y, group, row_ids)``; ``groups_of(rows) -> group``."""
    raw = {
        "synthetic": (synthetic[0], synthetic[1], synthetic[2], 1),
        "synthetic_val": (synthetic_val[0], synthetic_val[1], synthetic_val[2], 1),
    }
    for k, rows in ids.items():
        raw[k] = (adult.x[rows], adult.y[rows], groups_of(rows), 0)
    raw = {k: raw[k] for k in ("synthetic", "synthetic_val", "real_train", "real_val", "real_test", "real_full_train")}
    splits, stats = standardize_splits(raw)
    row_ids = {
        "synthetic": np.asarray(synthetic[3], dtype=np.int64),
        "synthetic_val": np.asarray(synthetic_val[3], dtype=np.int64),
    } | {k: v.astype(np.int64) for k, v in ids.items()}
    n_real = len(ids["real_train"])
    base = {
        "row_ids": row_ids,
        "feature_names": adult.feature_names,
        "standardization": stats,
        "primary_metric": metric,
        "n_real_train": n_real,
        "negative_control": False,
        "training_rows": f"synthetic ({len(synthetic[1])} generated rows)"
        + (f" + real_train ({n_real} class-stratified rows of real_full_train)" if n_real else " only (no real rows)"),
    }
    return Scenario(name, prediction, "classification", 2, num_groups, splits, base | info)


# --------------------------------------------------------------------------------------------- mode dropping


def make_mode_dropping(
    seed: int = 0,
    quick: bool = True,
    *,
    n_real_train: int = 0,
    mode: tuple[str, float, int] = ("married", 1.0, 0),
    n_synthetic: int | None = None,
    quality: bool = True,
) -> Scenario:
    """A learned generator that dropped one large mode of a class (Adult; default: married people earning <=50K).

    The class-conditional Gaussian copula of :func:`make_copula_adult` is fitted on all of ``real_full_train``;
    its samples that fall in the mode ``(feature, value, label)`` (rows whose binary ``feature`` equals ``value``
    and whose label is ``label``) are discarded and drawn again, so ``synthetic`` and ``synthetic_val`` have the
    real class frequencies and no row of the mode. The default mode, married people earning <=50K, is about a
    quarter of the real data; without it the synthetic data say that married people earn >50K. Groups: 1 = in
    the mode, 0 = not (2 large groups, so worst-group accuracy is measured on hundreds of test rows).

    Real rows a learner trains on: none by default (``n_real_train=0``: synthetic data only); with
    ``n_real_train = k``, ``real_train`` holds ``k`` class-stratified rows of ``real_full_train``, drawn without
    regard to the mode, so the mode appears there in its real proportion (about a quarter of the rows).

    ``info``: ``"mode"``, ``"mode_fraction"`` (per split), ``"group_names"``, ``"generator"`` (as for
    :func:`make_copula_adult`; its quality measures the dropped mode too).
    """
    feature, value, label = mode
    adult, ids, sizes = _adult_real_splits(seed, quick, n_real_train)
    if feature not in adult.feature_names:
        raise ValueError(f"mode feature must be one of {adult.feature_names}, got {feature!r}")
    if label not in (0, 1):
        raise ValueError(f"mode label must be 0 or 1, got {label!r}")
    j = adult.feature_names.index(feature)
    n_syn = sizes["synthetic"] if n_synthetic is None else n_synthetic
    n_val = sizes["synthetic_val"]
    full = ids["real_full_train"]
    columns = generators.adult_columns(adult.feature_names)

    def in_mode(x, y):
        return ((np.asarray(y) == label) & np.isclose(np.asarray(x)[:, j], value)).astype(np.int32)

    if not in_mode(adult.x[full], adult.y[full]).any() or in_mode(adult.x[full], adult.y[full]).all():
        raise ValueError(f"mode {mode} is empty or everything in real_full_train")
    config = {"mode": [feature, float(value), int(label)], "n_synthetic": n_syn, "n_synthetic_val": n_val}

    def build():
        def run():
            cop = generators.GaussianCopula(columns, 2).fit(adult.x[full], adult.y[full], seed)
            rng = np.random.default_rng([seed, 5])
            out = {}
            for split, n in (("synthetic", n_syn), ("synthetic_val", n_val)):
                want = class_counts(n, cop.priors_)
                xs, ys = [], []
                for c in range(2):  # rejection: draw class c until `want[c]` rows lie outside the mode
                    got = np.zeros((0, adult.x.shape[1]))
                    while len(got) < want[c]:
                        x, y = cop.sample(rng, [want[c] if k == c else 0 for k in range(2)])
                        got = np.concatenate([got, x[in_mode(x, y) == 0]])
                    xs.append(got[: want[c]])
                    ys.append(np.full(want[c], c))
                x, y = np.concatenate(xs), np.concatenate(ys)
                perm = rng.permutation(n)
                out[f"{split}_x"], out[f"{split}_y"] = x[perm], y[perm]
            return out

        arrays, seconds = generators.timed(run)
        return arrays, {"train_seconds": seconds}

    name = f"mode_dropping-seed{seed}"
    meta = {"generator": "gaussian_copula-dropped", "version": generators.VERSION["gaussian_copula"], "seed": seed}
    arrays, ginfo = generators.cached(name, meta | config, (adult.x[full], adult.y[full]), build)
    syn = [(arrays[f"{k}_x"], arrays[f"{k}_y"]) for k in ("synthetic", "synthetic_val")]
    prediction = (
        f"A generator that dropped the mode {feature}={value:g} with label {label} (a quarter of the real data) "
        "makes ERM fail on that mode: worst-group real-test accuracy of ERM on synthetic data is far below ERM on "
        "real data. With synthetic data only, no objective beats ERM beyond noise, because no training row shows "
        "the mode (negative control). With a small real set, group DRO and source-aware objectives raise "
        "worst-group accuracy over ERM."
    )
    scenario = _finish(
        "mode_dropping",
        prediction,
        2,
        adult,
        ids,
        (*syn[0], in_mode(*syn[0]), -np.ones(n_syn)),
        (*syn[1], in_mode(*syn[1]), -np.ones(n_val)),
        lambda rows: in_mode(adult.x[rows], adult.y[rows]),
        {"mode": (feature, value, label), "group_names": ["other", f"{feature}={value:g}, y={label}"]},
        ("worst_group_accuracy", True),
    )
    scenario.info["negative_control"] = "synthetic data only" if n_real_train == 0 else False
    scenario.info["mode_fraction"] = {
        k: float(s["group"].mean()) if len(s["group"]) else 0.0 for k, s in scenario.splits.items()
    }
    scenario.info["generator"] = generators.record(
        "gaussian_copula (mode dropped)", config, ginfo, len(full), scenario, quality, seed, name, meta | config
    )
    return scenario


# --------------------------------------------------------------------------------------------- copula Adult


def make_copula_adult(
    seed: int = 0,
    quick: bool = True,
    *,
    n_real_train: int = 0,
    n_synthetic: int | None = None,
    shrinkage: float = 1e-3,
    quality: bool = True,
) -> Scenario:
    """Synthetic Adult from a learned class-conditional Gaussian copula (:class:`generators.GaussianCopula`).

    The copula is fitted on ``real_full_train`` (11 variables: 5 numeric, 4 binary, workclass with 4 levels,
    occupation with 14), and ``synthetic`` / ``synthetic_val`` are independent samples with the real class
    frequencies. Groups: ``2 * y + male`` (label by sex, 4 groups). Real rows a learner trains on: none by
    default; ``n_real_train`` class-stratified rows of ``real_full_train`` otherwise.

    ``info["generator"]``: ``name``, ``config``, ``trained_on``, ``train_rows``, ``train_seconds`` (fit and
    sampling), ``cached`` and, with ``quality=True``, ``quality`` (:func:`generators.quality`).
    """
    adult, ids, sizes = _adult_real_splits(seed, quick, n_real_train)
    n_syn = sizes["synthetic"] if n_synthetic is None else n_synthetic
    n_val = sizes["synthetic_val"]
    full = ids["real_full_train"]
    columns = generators.adult_columns(adult.feature_names)
    config = {"shrinkage": shrinkage, "n_synthetic": n_syn, "n_synthetic_val": n_val}

    def build():
        def run():
            cop = generators.GaussianCopula(columns, 2, shrinkage=shrinkage).fit(adult.x[full], adult.y[full], seed)
            rng = np.random.default_rng([seed, 4])
            out = {}
            for split, n in (("synthetic", n_syn), ("synthetic_val", n_val)):
                x, y = cop.sample(rng, class_counts(n, cop.priors_))
                perm = rng.permutation(n)
                out[f"{split}_x"], out[f"{split}_y"] = x[perm], y[perm]
            return out

        arrays, seconds = generators.timed(run)
        return arrays, {"train_seconds": seconds}

    meta = {"generator": "gaussian_copula", "version": generators.VERSION["gaussian_copula"], "seed": seed} | config
    arrays, ginfo = generators.cached(f"copula_adult-seed{seed}", meta, (adult.x[full], adult.y[full]), build)
    male = adult.feature_names.index("male")

    def groups(x, y):
        return 2 * np.asarray(y) + (np.asarray(x)[:, male] > 0.5)

    syn = [(arrays[f"{k}_x"], arrays[f"{k}_y"]) for k in ("synthetic", "synthetic_val")]
    prediction = (
        "Negative control for a good learned generator: ERM on the copula's samples is within one point of real-test "
        "accuracy of ERM on real data, and no objective (CVaR, chi-square, KL, Wasserstein, group DRO) beats ERM "
        "beyond noise."
    )
    scenario = _finish(
        "copula_adult",
        prediction,
        4,
        adult,
        ids,
        (*syn[0], groups(*syn[0]), -np.ones(n_syn)),
        (*syn[1], groups(*syn[1]), -np.ones(n_val)),
        lambda rows: groups(adult.x[rows], adult.y[rows]),
        {"group_names": ["y=0/female", "y=0/male", "y=1/female", "y=1/male"]},
        ("accuracy", True),
    )
    scenario.info["negative_control"] = "good generator: no gap expected"
    scenario.info["generator"] = generators.record(
        "gaussian_copula", config, ginfo, len(full), scenario, quality, seed, f"copula_adult-seed{seed}", meta
    )
    return scenario


# ----------------------------------------------------------------------------------------------- label noise


def make_label_noise(
    seed: int = 0,
    quick: bool = True,
    *,
    n_real_train: int = 100,
    flip_rate: float = 0.2,
    n_synthetic: int | None = None,
) -> Scenario:
    """A flawless generator (bootstrap resample of real_full_train) with flipped labels (Adult).

    Exactly ``round(flip_rate * n)`` rows of ``synthetic`` (and of ``synthetic_val``), chosen at random, have
    their binary label flipped. ``synthetic_val`` resamples rows of ``real_full_train`` that ``synthetic`` does
    not contain. Groups are the observed labels (``num_groups = 2``). Negative control for a linear learner
    (symmetric noise leaves the linear decision rule nearly unchanged); a real effect for a neural one, which
    can memorize the flipped labels. ``info``: ``"flipped"`` and ``"flipped_val"`` (bool masks over the
    synthetic rows), ``"clean_y"`` and ``"clean_y_val"`` (the labels before flipping), ``"flip_rate"``;
    ``row_ids["synthetic"]`` are the resampled real rows.
    """
    if not 0.0 <= flip_rate <= 1.0:
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
    adult, ids, sizes = _adult_real_splits(seed, quick, n_real_train)
    n_syn = sizes["synthetic"] if n_synthetic is None else n_synthetic
    n_val = sizes["synthetic_val"]
    rng = np.random.default_rng([seed, 2])
    rows = rng.choice(ids["real_full_train"], size=n_syn, replace=True)
    rows_val = rng.permutation(unused_rows(rng, ids["real_full_train"], rows, n_val, "label_noise synthetic_val"))

    def flip(n):
        mask = np.zeros(n, dtype=bool)
        mask[rng.choice(n, size=round(flip_rate * n), replace=False)] = True
        return mask

    flipped, flipped_val = flip(n_syn), flip(n_val)
    clean, clean_val = adult.y[rows], adult.y[rows_val]
    y_syn, y_val = np.where(flipped, 1 - clean, clean), np.where(flipped_val, 1 - clean_val, clean_val)
    info = {
        "flipped": flipped,
        "flipped_val": flipped_val,
        "clean_y": clean.astype(np.int32),
        "clean_y_val": clean_val.astype(np.int32),
        "flip_rate": flip_rate,
    }
    prediction = (
        f"Labels of a flawless generator are {flip_rate:.0%} flipped at random. Linear learner (negative control): "
        "ERM on synthetic data is as accurate as ERM on real data (no gap), and CVaR and chi-square DRO, which "
        "put excess weight on the flipped rows, are no better than ERM (worse for CVaR). Neural learner (a real "
        "effect): an MLP memorizes flipped labels, so ERM on synthetic data falls below ERM on real data, and "
        "CVaR and chi-square fall further."
    )
    scenario = _finish(
        "label_noise",
        prediction,
        2,
        adult,
        ids,
        (adult.x[rows], y_syn, y_syn, rows),
        (adult.x[rows_val], y_val, y_val, rows_val),
        lambda r: adult.y[r],
        info,
        ("accuracy", True),
    )
    scenario.info["negative_control"] = "linear learner only"
    return scenario


# ----------------------------------------------------------------------------------------------- support cut


def make_support_cut(
    seed: int = 0,
    quick: bool = True,
    *,
    n_real_train: int = 100,
    age_range: tuple[float, float] = (50.0, 100.0),
    n_synthetic: int | None = None,
) -> Scenario:
    """Negative control: the generator never produces people with age in ``[lo, hi)`` (Adult; default 50 and over).

    The generator is a bootstrap resample of the ``real_full_train`` rows outside the cut region, so it is
    flawless except for the missing region; ``synthetic_val`` resamples outside rows that ``synthetic`` does
    not contain. Groups: 0 = outside the region, 1 = inside. ``real_train`` (size ``n_real_train``, 0 allowed)
    is drawn from all of ``real_full_train`` and so covers the region.
    The default region (age >= 50, about 21% of real_test) was chosen because a linear model fitted without it
    loses accuracy there (0.74 against 0.79 for one fitted on all real data, quick sizes, 2 seeds); younger
    regions (e.g. 17-30, almost all <=50K) show no gap at all and would make the control vacuous.
    ``info``: ``"age_range"``, ``"raw_age"`` (per split, unstandardized age), ``"region_fraction"`` (per split).
    """
    lo, hi = age_range
    adult, ids, sizes = _adult_real_splits(seed, quick, n_real_train)
    n_syn = sizes["synthetic"] if n_synthetic is None else n_synthetic
    n_val = sizes["synthetic_val"]
    rng = np.random.default_rng([seed, 3])

    def inside(rows):
        return ((adult.age[rows] >= lo) & (adult.age[rows] < hi)).astype(np.int32)

    outside_rows = ids["real_full_train"][inside(ids["real_full_train"]) == 0]
    rows = rng.choice(outside_rows, size=n_syn, replace=True)
    rows_val = rng.permutation(unused_rows(rng, outside_rows, rows, n_val, "support_cut synthetic_val"))
    scenario = _finish(
        "support_cut",
        (
            f"When the generator never produces ages in [{lo:g}, {hi:g}), ERM on synthetic data is worse there "
            "(worst-group real-test accuracy) than ERM on real data. No objective trained on synthetic data alone "
            "closes that gap beyond noise (negative control); with a small real set, source-aware objectives "
            "close part of it."
        ),
        2,
        adult,
        ids,
        (adult.x[rows], adult.y[rows], inside(rows), rows),
        (adult.x[rows_val], adult.y[rows_val], inside(rows_val), rows_val),
        inside,
        {"age_range": (lo, hi)},
        ("worst_group_accuracy", True),
    )
    scenario.info["negative_control"] = "synthetic data only" if n_real_train == 0 else False
    ids_all = scenario.info["row_ids"]
    scenario.info["raw_age"] = {k: adult.age[v] for k, v in ids_all.items()}
    scenario.info["region_fraction"] = {
        k: float(s["group"].mean()) if len(s["group"]) else 0.0 for k, s in scenario.splits.items()
    }
    return scenario

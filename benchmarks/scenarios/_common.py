"""Shared pieces of the scenario generators: the Scenario record, split building, standardization."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SPLIT_NAMES = ("synthetic", "synthetic_val", "real_train", "real_val", "real_test", "real_full_train")


class Scenario(NamedTuple):
    """One benchmark scenario: a falsifiable prediction and its data.

    Attributes:
        name: scenario name, e.g. ``"mode_dropping"``.
        prediction: the falsifiable prediction, one sentence.
        task: ``"classification"``.
        num_classes: number of classes; labels are in ``[0, num_classes)``.
        num_groups: number of groups for worst-group metrics (0 if none).
        splits: ``{"synthetic", "synthetic_val", "real_train", "real_val", "real_test", "real_full_train"}``
            each mapping to ``{"x": float32 (n, d), "y": int32 (n,), "group": int32 (n,), "source": int32 (n,)}``;
            source 0 is real, 1 synthetic (or ``1 + k`` for generation or round ``k``). See the package docstring.
        info: scenario-specific facts. Always holds ``"row_ids"`` (per split, int64 indices into the pool of
            real rows the scenario drew from, -1 for generated rows), ``"feature_names"``, ``"standardization"``,
            ``"primary_metric"`` (``(metric, maximize)``), ``"n_real_train"``, ``"negative_control"`` (False, or
            for which learner or variant it is one) and ``"training_rows"`` (one sentence: which rows a learner
            trains on). Scenarios with a learned generator add ``"generator"`` (see the package docstring).
    """

    name: str
    prediction: str
    task: str
    num_classes: int
    num_groups: int
    splits: dict[str, dict[str, np.ndarray]]
    info: dict


def make_split(x, y, group, source) -> dict[str, np.ndarray]:
    """Build one split dict with the contract's dtypes, checking shapes."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {x.shape}")
    y = np.asarray(y, dtype=np.int32).reshape(n)
    group = np.broadcast_to(np.asarray(group, dtype=np.int32), (n,)).copy()
    source = np.broadcast_to(np.asarray(source, dtype=np.int32), (n,)).copy()
    return {"x": x, "y": y, "group": group, "source": source}


def empty_like_split(d: int) -> dict[str, np.ndarray]:
    """A split with zero rows and ``d`` features."""
    return make_split(np.zeros((0, d)), np.zeros(0), np.zeros(0), np.zeros(0))


def standardizer(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of the stacked rows; constant features get scale 1 (so they stay finite everywhere)."""
    stacked = np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays if len(a)], axis=0)
    mean = stacked.mean(axis=0)
    std = stacked.std(axis=0)
    std = np.where(std < 1e-8, 1.0, std)
    return mean, std


def standardize_splits(
    raw: dict[str, tuple[np.ndarray, ...]], fit_on: tuple[str, ...] = ("synthetic", "real_train")
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """Standardize every split with statistics of the ``fit_on`` splits only (never the test split).

    Args:
        raw: split name -> ``(x, y, group, source)`` with raw features.
        fit_on: the splits a practitioner may use for preprocessing statistics.

    Returns:
        ``(splits, stats)`` where ``stats = {"mean": ..., "scale": ..., "fit_on": fit_on}``.
    """
    mean, scale = standardizer(*(raw[k][0] for k in fit_on))
    splits = {k: make_split((v[0] - mean) / scale, *v[1:]) for k, v in raw.items()}
    return splits, {"mean": mean, "scale": scale, "fit_on": fit_on}


def disjoint_indices(rng: np.random.Generator, n: int, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Draw disjoint random index sets of the given sizes from ``range(n)`` (sorted within each set).

    A size of -1 takes everything left over (at most one such entry, processed last).
    """
    perm = rng.permutation(n)
    out, start = {}, 0
    rest = [k for k, s in sizes.items() if s == -1]
    if len(rest) > 1:
        raise ValueError("at most one size may be -1")
    for k, s in sizes.items():
        if s == -1:
            continue
        if start + s > n:
            raise ValueError(f"not enough rows: asked for {sum(v for v in sizes.values() if v > 0)} of {n}")
        out[k] = np.sort(perm[start : start + s])
        start += s
    for k in rest:
        out[k] = np.sort(perm[start:])
    return {k: out[k] for k in sizes}


def stratified_subset(rng: np.random.Generator, idx: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``idx`` drawn without replacement, stratified by ``y[idx]`` (>= 1 per class if n allows)."""
    idx = np.asarray(idx)
    if n >= len(idx):
        return np.sort(idx)
    if n == 0:
        return idx[:0]
    classes, counts = np.unique(y[idx], return_counts=True)
    want = np.floor(counts / counts.sum() * n).astype(int)
    if n >= len(classes):
        want = np.maximum(want, 1)
    # adjust to hit n exactly, largest classes first
    order = np.argsort(-counts)
    i = 0
    while want.sum() < n:
        c = order[i % len(order)]
        if want[c] < counts[c]:
            want[c] += 1
        i += 1
    while want.sum() > n:
        c = order[i % len(order)]
        if want[c] > (1 if n >= len(classes) else 0):
            want[c] -= 1
        i += 1
    chosen = [rng.choice(idx[y[idx] == c], size=k, replace=False) for c, k in zip(classes, want, strict=True)]
    return np.sort(np.concatenate(chosen))


def class_conditional_gaussian(x: np.ndarray, y: np.ndarray, num_classes: int, ridge: float):
    """Per-class mean and covariance (plus ``ridge * I``), and class frequencies."""
    d = x.shape[1]
    means = np.zeros((num_classes, d))
    covs = np.zeros((num_classes, d, d))
    priors = np.zeros(num_classes)
    for c in range(num_classes):
        xc = x[y == c]
        priors[c] = len(xc)
        means[c] = xc.mean(axis=0)
        centred = xc - means[c]
        covs[c] = centred.T @ centred / max(len(xc) - 1, 1) + ridge * np.eye(d)
    return means, covs, priors / priors.sum()


def sample_class_conditional_gaussian(rng, means, covs, counts) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[c]`` rows from ``N(means[c], covs[c])`` for each class ``c``."""
    xs, ys = [], []
    for c, k in enumerate(counts):
        xs.append(rng.multivariate_normal(means[c], covs[c], size=int(k), method="cholesky"))
        ys.append(np.full(int(k), c))
    return np.concatenate(xs), np.concatenate(ys)


def class_counts(n: int, priors: np.ndarray) -> np.ndarray:
    """Split ``n`` into per-class counts proportional to ``priors`` (largest-remainder rounding)."""
    raw = np.asarray(priors, dtype=np.float64) * n
    counts = np.floor(raw).astype(int)
    short = n - counts.sum()
    counts[np.argsort(-(raw - counts))[:short]] += 1
    return counts


def unused_rows(rng: np.random.Generator, pool: np.ndarray, used: np.ndarray, n: int, what: str) -> np.ndarray:
    """``n`` rows of ``pool`` drawn without replacement among those not in ``used`` (a held-out resample)."""
    free = np.setdiff1d(pool, used)
    if n > len(free):
        raise ValueError(f"{what}: {n} held-out rows asked for, only {len(free)} rows of the pool are unused")
    return np.sort(rng.choice(free, size=n, replace=False))

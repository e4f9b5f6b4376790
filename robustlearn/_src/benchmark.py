r"""A comparison protocol for objectives on your own data: tune on validation, test once.

For every seed and every method (ERM included), each hyperparameter configuration of the
method's grid is trained on the training split and scored on the validation split; the
best configuration is evaluated **once** on the test split. Every method gets the same
grid budget treatment, and the test arrays are checked never to reach training or
validation (an ``AssertionError`` otherwise). Reference runs (e.g. ERM on synthetic data
only, the floor, and ERM on all real data, the ceiling) go through the same tuning.

:func:`summarize` turns the results into a tidy table: mean and 95% interval over seeds,
the paired difference to a baseline method, and the fraction of the gap closed,

.. math::

    \text{gap closed} = \frac{L_{\rm floor} - L_{\rm method}}{L_{\rm floor} - L_{\rm ceiling}},

with :math:`L` an error (lower is better): 0 means no better than the floor, 1 means as
good as the ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Method", "Result", "compare", "summarize", "to_markdown"]

# Two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30 (beyond: normal 1.96).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


class Method(NamedTuple):
    """A method to compare: a name and its hyperparameter grid.

    Attributes:
        name: unique name, e.g. ``"cvar"``.
        grid: hyperparameter configurations (dicts) to tune over; ``({},)`` for none.
        train_split: which training split the method uses (``"train"`` by default;
            reference runs use e.g. ``"synthetic"`` or ``"real_full_train"``).
    """

    name: str
    grid: Sequence[Mapping[str, Any]] = ({},)
    train_split: str = "train"


class Result(NamedTuple):
    """One (method, seed) outcome.

    Attributes:
        method: the method's name.
        seed: the seed.
        hyper: the configuration chosen on validation.
        val: validation metrics of the chosen configuration.
        test: test metrics of the chosen configuration (computed once).
        extra: whatever ``fit`` attached to the chosen model under ``"extra"`` (diagnostics).
    """

    method: str
    seed: int
    hyper: dict
    val: dict
    test: dict
    extra: dict


def _arrays(split):
    return [v for v in split.values() if isinstance(v, np.ndarray)] if isinstance(split, Mapping) else []


def _assert_unseen(test_arrays, split, where: str):
    for a in _arrays(split):
        for t in test_arrays:
            assert not np.may_share_memory(a, t), f"the test split reached {where}: tuning must never see it."


def compare(
    methods: Sequence[Method],
    fit: Callable[[Method, dict, dict, int], Any],
    evaluate: Callable[[Any, dict], Mapping[str, float]],
    splits: Mapping[str, dict],
    *,
    select: str,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    maximize: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Tunes every method on validation and evaluates its choice once on test.

    Args:
        methods: the methods, each with its grid and training split.
        fit: ``fit(method, hyper, train, seed) -> model``; trains one configuration. A
            model may be a dict with an ``"extra"`` entry (diagnostics kept in the result).
        evaluate: ``evaluate(model, split) -> {metric: value}``.
        splits: ``{"val": ..., "test": ..., <training splits named by the methods>}``;
            each split a dict of numpy arrays.
        select: the validation metric that picks the configuration.
        seeds: seeds; each seed trains every configuration of every method.
        maximize: whether a larger ``select`` is better.
        progress: called with a short message after every (method, seed).

    Returns:
        A list of :class:`Result`, one per (method, seed).

    Raises:
        ValueError: unknown or missing splits, duplicate method names, empty grids.
        AssertionError: if a test array is passed to ``fit`` or to the validation
            evaluation.
    """
    for key in ("val", "test"):
        if key not in splits:
            raise ValueError(f"`splits` must contain {key!r}; got {sorted(splits)}.")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique; got {names}.")
    for m in methods:
        if m.train_split not in splits or m.train_split in ("val", "test"):
            raise ValueError(f"method {m.name!r} trains on {m.train_split!r}, which is not a training split.")
        if not len(m.grid):
            raise ValueError(f"method {m.name!r} has an empty grid.")
    test_arrays = _arrays(splits["test"])
    for m in methods:
        _assert_unseen(test_arrays, splits[m.train_split], "training")
    _assert_unseen(test_arrays, splits["val"], "validation")
    results = []
    for seed in seeds:
        for m in methods:
            train = splits[m.train_split]
            best = None
            for hyper in m.grid:
                model = fit(m, dict(hyper), train, seed)
                val = dict(evaluate(model, splits["val"]))
                score = val[select]
                score = -math.inf if not math.isfinite(score) else (score if maximize else -score)
                if best is None or score > best[0]:
                    best = (score, dict(hyper), val, model)
            _, hyper, val, model = best
            test = dict(evaluate(model, splits["test"]))  # the only test evaluation for (method, seed)
            extra = dict(model.get("extra", {})) if isinstance(model, Mapping) else {}
            results.append(Result(m.name, seed, hyper, val, test, extra))
            if progress is not None:
                progress(f"{m.name} seed {seed}: {select}={test.get(select, float('nan')):.4f}")
    return results


def _interval(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), float("nan")
    t = _T975[v.size - 2] if v.size - 1 <= len(_T975) else 1.96
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(v.size))


def summarize(
    results: Sequence[Result],
    metric: str,
    *,
    baseline: str = "erm",
    floor: str | None = None,
    ceiling: str | None = None,
    error: Callable[[float], float] = lambda m: 1.0 - m,
) -> list[dict]:
    """Per-method summary of one test metric over seeds.

    Args:
        results: output of :func:`compare`.
        metric: the test metric to summarize.
        baseline: method for the paired difference (same seeds).
        floor: method whose error is the floor of the gap (e.g. ERM on synthetic data).
        ceiling: method whose error is the ceiling (e.g. ERM on all real data).
        error: maps the metric to an error (lower is better); default ``1 - metric``.

    Returns:
        One dict per method: ``method``, ``n_seeds``, ``mean``, ``ci95`` (half-width),
        ``diff`` and ``diff_ci95`` (paired, method − baseline), ``gap_closed`` (from the
        seed means; NaN without floor/ceiling, or when the paired 95% interval of their
        difference contains 0: then there is no measurable gap to close).
    """
    by = {}
    for r in results:
        by.setdefault(r.method, {})[r.seed] = r.test[metric]
    mean_err = {m: float(np.mean([error(v) for v in s.values()])) for m, s in by.items()}
    gap_defined = False
    if floor in by and ceiling in by:
        common = sorted(set(by[floor]) & set(by[ceiling]))
        d, half = _interval([error(by[floor][k]) - error(by[ceiling][k]) for k in common])
        # No gap to close unless floor and ceiling differ beyond their paired 95% interval.
        gap_defined = d != 0 and (math.isnan(half) or abs(d) > half)
    rows = []
    for m, s in by.items():
        mean, ci = _interval(list(s.values()))
        row = {"method": m, "n_seeds": len(s), "mean": mean, "ci95": ci}
        if baseline in by:
            common = sorted(set(s) & set(by[baseline]))
            row["diff"], row["diff_ci95"] = _interval([s[k] - by[baseline][k] for k in common])
        gap = float("nan")
        if gap_defined:
            gap = (mean_err[floor] - mean_err[m]) / (mean_err[floor] - mean_err[ceiling])
        row["gap_closed"] = gap
        rows.append(row)
    return rows


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """Formats summary rows as a markdown table."""
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, float("nan"))) for c in columns) + " |" for r in rows]
    return "\n".join(lines)

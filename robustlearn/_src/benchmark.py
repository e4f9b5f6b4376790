r"""A comparison protocol for objectives on your own data: tune on validation, test once.

For every seed and every method (ERM included), each hyperparameter configuration of the
method's grid is trained on the training split and scored on the validation split; the
best configuration is evaluated **once** on the test split. Every method gets the same
grid budget treatment, and the rows of the test split are checked, by content, never to
reach training or validation (:class:`LeakageError` otherwise). ``splits`` may be a
function of the seed, so that each seed draws its data anew. Reference runs (e.g. ERM
on synthetic data only, the floor, and ERM on all real data, the ceiling) go through the
same tuning.

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

__all__ = ["LeakageError", "Method", "Result", "compare", "summarize", "to_markdown"]

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


class LeakageError(ValueError):
    """A row of the test split also appears in a training or validation split.

    Raised by :func:`compare` before any training. Attributes: ``split`` (the split that
    holds test rows), ``count`` (how many of its rows equal a test row) and ``rows`` (the
    indices of up to ten of them in that split).
    """

    def __init__(self, message: str, split: str, count: int, rows: Sequence[int]):
        super().__init__(message)
        self.split, self.count, self.rows = split, count, tuple(rows)


def _row_bytes(split: Mapping, keys: Sequence[str], name: str) -> list[bytes]:
    """One byte string per row: the values of ``keys`` in that row as float64 (so dtypes do not matter)."""
    cols, n = [], None
    for k in keys:
        if k not in split:
            raise ValueError(
                f"`leakage_keys` names {k!r}, which split {name!r} lacks (keys: {sorted(split)}); name the "
                "columns that identify an example, or pass leakage_keys=None to turn the check off."
            )
        a = np.asarray(split[k])  # numpy, JAX (copied to host) or anything array-like
        if a.ndim == 0:
            raise ValueError(f"split {name!r}: {k!r} must have a leading example axis; got a scalar.")
        if n is not None and a.shape[0] != n:
            raise ValueError(f"split {name!r}: {k!r} has {a.shape[0]} rows but {keys[0]!r} has {n}.")
        n = a.shape[0]
        if a.dtype.kind not in "biuf":
            raise TypeError(f"split {name!r}: {k!r} must be numeric (bool, int or float) to be hashed; got {a.dtype}.")
        a = a.reshape(n, -1).astype(np.float64) + 0.0  # + 0.0 turns -0.0 into 0.0
        a[np.isnan(a)] = np.nan  # one bit pattern for every NaN
        cols.append(np.ascontiguousarray(a).view(np.uint8).reshape(n, -1))
    rows = np.concatenate(cols, axis=1)
    return [r.tobytes() for r in rows]


def _check_leakage(data: Mapping, train_splits: Sequence[str], keys: tuple[str, ...] | None) -> None:
    """Raise :class:`LeakageError` if a row of ``data["test"]`` equals a row of val or of a training split."""
    if keys is None:
        return
    test = set(_row_bytes(data["test"], keys, "test"))
    for name in ("val", *dict.fromkeys(train_splits)):
        hits = [i for i, r in enumerate(_row_bytes(data[name], keys, name)) if r in test]
        if hits:
            where = "validation" if name == "val" else "training"
            raise LeakageError(
                f"{len(hits)} row(s) of split {name!r} ({where}) equal a test row on {list(keys)} (rows "
                f"{hits[:10]}{' ...' if len(hits) > 10 else ''}): the test split must never reach tuning. If your "
                "data have genuine duplicate rows, pass an id column as leakage_keys, or leakage_keys=None.",
                name,
                len(hits),
                hits[:10],
            )


def _check_splits(data, methods) -> None:
    if not isinstance(data, Mapping):
        raise TypeError(f"`splits` must be a mapping of split name -> dict of arrays; got {type(data).__name__}.")
    for key in ("val", "test"):
        if key not in data:
            raise ValueError(f"`splits` must contain {key!r}; got {sorted(data)}.")
    for m in methods:
        if m.train_split not in data or m.train_split in ("val", "test"):
            raise ValueError(f"method {m.name!r} trains on {m.train_split!r}, which is not a training split.")
    for name, split in data.items():
        if not isinstance(split, Mapping):
            raise TypeError(f"split {name!r} must be a dict of arrays; got {type(split).__name__}.")


def _score(val: Mapping, select: str, maximize: bool) -> float:
    if select not in val:
        raise ValueError(
            f"`select` names the metric {select!r}, which `evaluate` does not return; available: {sorted(val)}."
        )
    try:
        score = float(val[select])
    except (TypeError, ValueError):
        raise TypeError(f"metric {select!r} must be a number; `evaluate` returned {val[select]!r}.") from None
    return -math.inf if not math.isfinite(score) else (score if maximize else -score)


def compare(
    methods: Sequence[Method],
    fit: Callable[[Method, dict, dict, int], Any],
    evaluate: Callable[[Any, dict], Mapping[str, float]],
    splits: Mapping[str, dict] | Callable[[int], Mapping[str, dict]],
    *,
    select: str,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    maximize: bool = True,
    progress: Callable[[str], None] | None = None,
    leakage_keys: str | Sequence[str] | None = "x",
) -> list[Result]:
    """Tunes every method on validation and evaluates its choice once on test.

    Before any training, the test split is checked by content against the validation
    split and every training split a method uses: the rows of the ``leakage_keys`` arrays
    are hashed (as float64, so dtype, memory layout and copying do not matter; numpy and
    JAX arrays alike), and a test row found elsewhere raises :class:`LeakageError`. It is
    a raised error, not an ``assert``, so ``python -O`` keeps it.

    Args:
        methods: the methods, each with its grid and training split.
        fit: ``fit(method, hyper, train, seed) -> model``; trains one configuration. A
            model may be a dict with an ``"extra"`` entry (diagnostics kept in the result).
        evaluate: ``evaluate(model, split) -> {metric: value}``.
        splits: ``{"val": ..., "test": ..., <training splits named by the methods>}``,
            each split a dict of arrays with a leading example axis; or a function
            ``splits(seed)`` returning such a mapping, called once per seed so that each
            seed draws its data anew (each draw is checked for leakage).
        select: the validation metric that picks the configuration.
        seeds: seeds; each seed trains every configuration of every method.
        maximize: whether a larger ``select`` is better.
        progress: called with a short message after every (method, seed).
        leakage_keys: the array(s) whose rows identify an example (default ``"x"``, the
            features); with several keys a row is their concatenation. Data with genuine
            duplicate rows (e.g. census records of different people with equal features)
            need an id column here, or ``None``, which turns the check off.

    Returns:
        A list of :class:`Result`, one per (seed, method), in that order.

    Raises:
        LeakageError: a test row is in the validation split or in a training split.
        ValueError: missing splits, a method's unknown training split, duplicate method
            names, empty grids, a ``select`` metric that ``evaluate`` does not return (the
            message lists those it does), ``leakage_keys`` missing from a split.
        TypeError: ``splits`` (or what ``splits(seed)`` returns) is not a mapping of dicts.

    Examples:
        ERM, ERM with the minority group's weight tuned, and CVaR, each with two
        configurations, tuned on validation worst-group accuracy and tested once. Every
        seed draws new data; the minority group (``group == 1``, another decision
        boundary) is 10% of training but half of validation and test:

        >>> import numpy as np
        >>> import robustlearn as rl
        >>> from robustlearn import benchmark
        >>> def draw(rng, n, minority):
        ...     g = (rng.random(n) < minority).astype(np.int32)
        ...     x = rng.normal(size=(n, 2)).astype(np.float32)
        ...     y = (np.where(g == 1, x[:, 0] + 2 * x[:, 1], x[:, 0] - 0.5 * x[:, 1]) > 0).astype(np.int32)
        ...     return {"x": x, "y": y, "group": g}
        >>> def splits(seed):
        ...     rng = np.random.default_rng(seed)
        ...     return {"train": draw(rng, 400, 0.1), "val": draw(rng, 200, 0.5), "test": draw(rng, 400, 0.5)}
        >>> def fit(method, hyper, train, seed):
        ...     weights = np.where(train["group"] == 1, hyper.get("up", 1.0), 1.0)
        ...     obj = rl.objectives.cvar(hyper["alpha"]) if method.name == "cvar" else rl.objectives.erm()
        ...     return rl.train.fit_linear(train["x"], train["y"], obj, l2=hyper.get("l2", 1e-3), weights=weights)
        >>> def evaluate(solution, split):
        ...     scores = np.asarray(split["x"] @ solution.params["w"] + solution.params["b"])
        ...     right = (scores > 0) == split["y"]
        ...     return {"accuracy": right.mean(), "worst_group": min(right[split["group"] == g].mean() for g in (0, 1))}
        >>> methods = [
        ...     benchmark.Method("erm", [{"l2": 1e-3}, {"l2": 1e-1}]),
        ...     benchmark.Method("upweight", [{"up": 3.0}, {"up": 9.0}]),
        ...     benchmark.Method("cvar", [{"alpha": 0.1}, {"alpha": 0.3}]),
        ... ]
        >>> results = benchmark.compare(methods, fit, evaluate, splits, select="worst_group", seeds=[0, 1, 2])
        >>> rows = benchmark.summarize(results, "worst_group", baseline="erm")
        >>> print(benchmark.to_markdown(rows, ["method", "n_seeds", "mean", "diff", "diff_ci95"], digits=2))
        | method | n_seeds | mean | diff | diff_ci95 |
        | --- | --- | --- | --- | --- |
        | erm | 3 | 0.54 | 0.00 | 0.00 |
        | upweight | 3 | 0.72 | 0.19 | 0.04 |
        | cvar | 3 | 0.56 | 0.02 | 0.02 |

        Knowing the group (``upweight``) raised worst-group accuracy by 0.19 ± 0.04;
        CVaR, which does not know it, by 0.02 ± 0.02. A test row copied into training,
        however it was copied, stops the comparison before any training:

        >>> leaky = splits(0)
        >>> leaky["train"] = {k: np.concatenate([v, leaky["test"][k][[7]]]) for k, v in leaky["train"].items()}
        >>> benchmark.compare(methods, fit, evaluate, leaky, select="worst_group")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        robustlearn.benchmark.LeakageError: 1 row(s) of split 'train' (training) equal a test row on ['x'] (rows [400])
    """
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique; got {names}.")
    for m in methods:
        if not len(m.grid):
            raise ValueError(f"method {m.name!r} has an empty grid.")
    keys = (leakage_keys,) if isinstance(leakage_keys, str) else (None if leakage_keys is None else tuple(leakage_keys))
    if keys is not None and not keys:
        raise ValueError("`leakage_keys` must name at least one array, or be None to turn the check off.")
    redraw = callable(splits) and not isinstance(splits, Mapping)
    train_splits = [m.train_split for m in methods]
    if not redraw:
        _check_splits(splits, methods)
        _check_leakage(splits, train_splits, keys)  # once: every seed sees the same data
    results = []
    for seed in seeds:
        data = splits
        if redraw:
            data = splits(seed)
            _check_splits(data, methods)
            _check_leakage(data, train_splits, keys)
        for m in methods:
            train = data[m.train_split]
            best = None
            for hyper in m.grid:
                model = fit(m, dict(hyper), train, seed)
                val = dict(evaluate(model, data["val"]))
                score = _score(val, select, maximize)
                if best is None or score > best[0]:
                    best = (score, dict(hyper), val, model)
            _, hyper, val, model = best
            test = dict(evaluate(model, data["test"]))  # the only test evaluation for (method, seed)
            extra = dict(model.get("extra", {})) if isinstance(model, Mapping) else {}
            results.append(Result(m.name, seed, hyper, val, test, extra))
            if progress is not None:
                progress(f"{m.name} seed {seed}: {select}={float(test.get(select, float('nan'))):.4f}")
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

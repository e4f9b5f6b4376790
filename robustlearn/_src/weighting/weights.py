r"""Importance weights: transforms, diagnostics, per-source and per-generation weights.

Weights ``w`` enter every reduction and Objective as the nominal distribution
``p ∝ w`` (the batch's ``"weight"``), so the functions here only build and inspect them.
They run on concrete arrays (numpy in, numpy out), once, before training.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike


class ImportanceWeightWarning(UserWarning):
    """Emitted when importance weights are too concentrated to be trusted."""


def _as_weights(w, name: str = "weights") -> np.ndarray:
    arr = np.asarray(w)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"`{name}` must be real numbers; got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a vector of shape (n,); got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite; got {int(np.sum(~np.isfinite(arr)))} NaN/inf entries.")
    if np.any(arr < 0):
        raise ValueError(f"`{name}` must be in [0, inf); got minimum {arr.min()!r}.")
    if not arr.max() > 0:  # not the sum: it overflows for weights near the float64 maximum
        raise ValueError(f"`{name}` must have a positive total; got all zeros.")
    return arr


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, in [1, inf); got {value!r}.")
    return int(value)


def _real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {value!r}.")
    return float(value)


def _unit_max(w: np.ndarray) -> np.ndarray:
    """``w / max(w)``: exact scaling that keeps sums and squares of any finite weights finite."""
    return w / w.max()


def transform_weights(
    weights: ArrayLike,
    *,
    power: float = 1.0,
    clip: float | None = None,
    clip_quantile: float | None = None,
    normalize: bool = True,
) -> np.ndarray:
    r"""Flattens and clips importance weights.

    .. math::

        \tilde w_i = \min\big(w_i^{\lambda},\ c\big), \qquad
        c = \min\big(\texttt{clip},\ Q_{\texttt{clip\_quantile}}(w^{\lambda})\big),

    then rescaled to mean 1 (``normalize``; computed as :math:`s / \bar s` with
    :math:`s = \tilde w / \max_i \tilde w`, so weights near the float64 limits neither
    overflow nor underflow). :math:`\lambda = 0` gives uniform weights
    (plain ERM), :math:`\lambda = 1` the raw ratio; values in between trade the bias of
    ignoring the shift against the variance of large weights (Shimodaira, 2000).

    Args:
        weights: non-negative finite weights, shape ``(n,)``.
        power: flattening exponent :math:`\lambda \in [0, 1]`.
        clip: upper bound on the (flattened, unnormalized) weights, ``> 0``.
        clip_quantile: clip at this quantile of the flattened weights, in ``(0, 1]``.
        normalize: rescale the result to mean 1.

    Returns:
        The transformed weights, shape ``(n,)``, float64.

    Examples:
        >>> transform_weights([1.0, 4.0, 16.0], power=0.5, normalize=False)
        array([1., 2., 4.])
        >>> transform_weights([1.0, 1.0, 10.0], clip=2.0)
        array([0.75, 0.75, 1.5 ])

    References:
        Shimodaira, "Improving predictive inference under covariate shift by weighting the
        log-likelihood function", J. Stat. Plan. Inference, 2000.
    """
    w = _as_weights(weights)
    if not 0.0 <= _real("power", power) <= 1.0:
        raise ValueError(f"`power` must be in [0, 1]; got {power!r}.")
    if not isinstance(normalize, bool | np.bool_):
        raise TypeError(f"`normalize` must be a bool; got {normalize!r}.")
    w = w ** float(power)
    cap = np.inf
    if clip is not None:
        if not _real("clip", clip) > 0:
            raise ValueError(f"`clip` must be in (0, inf]; got {clip!r}.")
        cap = float(clip)
    if clip_quantile is not None:
        if not 0.0 < _real("clip_quantile", clip_quantile) <= 1.0:
            raise ValueError(f"`clip_quantile` must be in (0, 1]; got {clip_quantile!r}.")
        cap = min(cap, float(np.quantile(w, float(clip_quantile))))
    w = np.minimum(w, cap)
    if not w.max() > 0:
        raise ValueError("every weight was clipped to zero; raise `clip` or `clip_quantile`.")
    if not normalize:
        return w
    s = _unit_max(w)
    return s / s.mean()


def effective_sample_size(weights: ArrayLike) -> float:
    r"""Kish's effective sample size of weighted data.

    .. math::

        \mathrm{ESS}(w) = \frac{(\sum_i w_i)^2}{\sum_i w_i^2} \in [1, n],

    ``n`` for equal weights, ``k`` for ``k`` equal non-zero weights. The ratio is
    scale-free and is computed on :math:`w / \max_i w_i`, so it is exact for any finite
    weights (``[1e200, 1e200]`` and ``[1e-200, 1e-200]`` both give 2). For density-ratio
    weights :math:`\mathrm{ESS}/n \to 1 / \mathbb{E}_{\rm syn}[w^2] = 1/(1 + \chi^2(p_{\rm real}\|p_{\rm syn}))`.

    Args:
        weights: non-negative finite weights, shape ``(n,)``.

    Returns:
        The effective sample size (a float).

    Examples:
        >>> effective_sample_size([1.0, 1.0, 0.0, 1.0])
        3.0

    References:
        Kish, "Survey Sampling", 1965.
    """
    s = _unit_max(_as_weights(weights))
    return float(s.sum() ** 2 / np.sum(s * s))


class WeightDiagnostics(NamedTuple):
    """Summary of importance weights (see :func:`weight_diagnostics`).

    Attributes:
        n: number of weights.
        ess: Kish effective sample size.
        ess_fraction: ``ess / n``.
        max_weight: the largest weight relative to the mean (``max w / mean w``).
        quantiles: ``{q: quantile of w / mean w}`` for q in 0.01, 0.1, 0.5, 0.9, 0.99.
        zero_fraction: fraction of exactly-zero weights (examples the estimate ignores).
    """

    n: int
    ess: float
    ess_fraction: float
    max_weight: float
    quantiles: dict
    zero_fraction: float


def weight_diagnostics(weights: ArrayLike, *, warn_below: float = 0.1) -> WeightDiagnostics:
    """Diagnoses importance weights, warning when the effective sample size is small.

    A small ``ess_fraction`` means a few examples carry most of the weight: the
    reweighted risk then has high variance, and usually the two distributions barely
    overlap (see docs/importance.md).

    Args:
        weights: non-negative finite weights, shape ``(n,)``.
        warn_below: emit :class:`ImportanceWeightWarning` when ``ess / n`` is below
            this, in ``[0, 1]``.

    Returns:
        A :class:`WeightDiagnostics`.

    Examples:
        >>> d = weight_diagnostics([1.0, 1.0, 1.0, 1.0])
        >>> d.ess, d.ess_fraction, d.max_weight
        (4.0, 1.0, 1.0)
    """
    w = _as_weights(weights)
    if not 0.0 <= _real("warn_below", warn_below) <= 1.0:
        raise ValueError(f"`warn_below` must be in [0, 1]; got {warn_below!r}.")
    s = _unit_max(w)
    rel = s / s.mean()
    ess = effective_sample_size(w)
    out = WeightDiagnostics(
        n=int(w.size),
        ess=ess,
        ess_fraction=ess / w.size,
        max_weight=float(rel.max()),
        quantiles={q: float(np.quantile(rel, q)) for q in (0.01, 0.1, 0.5, 0.9, 0.99)},
        zero_fraction=float(np.mean(w == 0)),
    )
    if out.ess_fraction < float(warn_below):
        warnings.warn(
            f"importance weights have effective sample size {ess:.1f} of {w.size} ({out.ess_fraction:.1%}); "
            "the reweighted risk is dominated by a few examples. Consider `transform_weights(power=...)` or "
            "clipping, and check that the two distributions overlap.",
            ImportanceWeightWarning,
            stacklevel=2,
        )
    return out


def _as_ids(ids, name: str, num: int | None) -> tuple[np.ndarray, int]:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty vector of ids, shape (n,); got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"`{name}` must hold integer ids; got dtype {arr.dtype}.")
    hi = int(arr.max()) + 1 if num is None else int(num)
    if arr.min() < 0 or arr.max() >= hi:
        raise ValueError(f"`{name}` ids must be in [0, {hi - 1}]; got range [{arr.min()}, {arr.max()}].")
    return arr, hi


def source_weights(source: ArrayLike, mixture: Sequence[float]) -> np.ndarray:
    r"""Per-example weights that give source ``k`` total mass ``mixture[k]``.

    .. math::

        w_i = \frac{a_{s_i}}{n_{s_i}} \cdot n, \qquad \sum_{i: s_i = k} w_i / n = a_k
        \quad (a \text{ normalized to sum to 1}),

    so ``erm(losses, weights=w)`` is :math:`\sum_k a_k \hat R_k`, the ``a``-mixture of
    the per-source empirical risks. Uniform ERM over the pooled data is
    :math:`a_k = n_k / n`.

    Args:
        source: integer source id of each example, shape ``(n,)``, in ``[0, K)``.
        mixture: non-negative mass of each source, length ``K``; a source with positive
            mass must have examples.

    Returns:
        Weights of shape ``(n,)`` with mean 1.

    Examples:
        >>> source_weights([0, 1, 1, 1], [0.5, 0.5])
        array([2.        , 0.66666667, 0.66666667, 0.66666667])
    """
    a = _as_weights(mixture, "mixture")
    s, _ = _as_ids(source, "source", a.size)
    counts = np.bincount(s, minlength=a.size)
    empty = (counts == 0) & (a > 0)
    if np.any(empty):
        raise ValueError(f"`mixture` gives positive mass to sources without examples: {np.flatnonzero(empty)}.")
    a = _unit_max(a)
    a = a / a.sum()
    per = np.where(counts > 0, a / np.maximum(counts, 1), 0.0)
    return per[s] * s.size


_MAX_GRID_ROWS = 10_000_000


def simplex_grid(num_sources: int, resolution: int) -> np.ndarray:
    r"""All mixtures of ``num_sources`` sources with masses in multiples of ``1/resolution``.

    .. math::

        \Big\{ \tfrac{c}{r} : c \in \{0, \dots, r\}^K,\ \textstyle\sum_k c_k = r \Big\},
        \qquad |\cdot| = \binom{r + K - 1}{K - 1},

    generated directly as compositions of :math:`r` into :math:`K` parts (stars and bars:
    each choice of :math:`K - 1` bar positions among :math:`r + K - 1` slots), in
    lexicographic order, in :math:`O(K \binom{r+K-1}{K-1})` time, without enumerating the
    :math:`(r+1)^K` tuples of :math:`\{0,\dots,r\}^K`.

    Args:
        num_sources: :math:`K`, a positive int.
        resolution: :math:`r`, a positive int.

    Returns:
        Array of shape ``(C(resolution + K - 1, K - 1), K)``, float64; rows sum to 1.

    Raises:
        ValueError: for non-integer or non-positive arguments, or a grid of more than
            10,000,000 rows.

    Examples:
        >>> simplex_grid(2, 2)
        array([[0. , 1. ],
               [0.5, 0.5],
               [1. , 0. ]])
    """
    k = _positive_int("num_sources", num_sources)
    r = _positive_int("resolution", resolution)
    rows = math.comb(r + k - 1, k - 1)
    if rows > _MAX_GRID_ROWS:
        raise ValueError(
            f"simplex_grid({k}, {r}) would have {rows} rows (more than {_MAX_GRID_ROWS}); lower `resolution` or "
            "pass explicit `candidates`."
        )
    slots = r + k - 1
    bars = np.fromiter(
        itertools.chain.from_iterable(itertools.combinations(range(slots), k - 1)), dtype=np.int64, count=rows * (k - 1)
    ).reshape(rows, k - 1)
    # Part j is the number of stars between bar j - 1 and bar j (bars -1 and `slots` at the ends).
    edges = np.concatenate([np.full((rows, 1), -1), bars, np.full((rows, 1), slots)], axis=1)
    return (np.diff(edges, axis=1) - 1).astype(np.float64) / r


class MixtureSelection(NamedTuple):
    """Result of :func:`select_mixture`.

    Attributes:
        mixture: the chosen per-source masses, shape ``(K,)``.
        result: what ``fit`` returned for the chosen mixture.
        scores: validation score of every candidate, shape ``(C,)`` (lower is better).
        candidates: the candidate mixtures, shape ``(C, K)``.
    """

    mixture: np.ndarray
    result: Any
    scores: np.ndarray
    candidates: np.ndarray


def select_mixture(
    source: ArrayLike,
    fit: Callable[[np.ndarray], Any],
    score: Callable[[Any], float],
    *,
    candidates: np.ndarray | None = None,
    resolution: int = 4,
) -> MixtureSelection:
    r"""Chooses per-source weights on a real validation split.

    .. math::

        \hat a = \arg\min_{a \in \mathcal{C}} \ \mathrm{score}\big(\mathrm{fit}(w(a))\big),
        \qquad w(a) = \texttt{source\_weights}(s, a),

    with :math:`\mathcal{C}` the candidate mixtures (a simplex grid by default, which
    contains the one-source and the uniform-per-source mixtures). ``score`` must use
    held-out *real* data only; the test split stays untouched.

    Args:
        source: source id of each training example, shape ``(n,)``.
        fit: trains on the training data with per-example weights ``(n,)``; returns
            anything ``score`` accepts (parameters, an estimate).
        score: validation loss of a fitted result (lower is better).
        candidates: explicit candidate mixtures, shape ``(C, K)``.
        resolution: grid resolution when ``candidates`` is None.

    Returns:
        A :class:`MixtureSelection`.
    """
    if not callable(fit) or not callable(score):
        raise TypeError("`fit` and `score` must be callables.")
    s, k = _as_ids(source, "source", None)
    if candidates is None:
        candidates = simplex_grid(k, resolution)
    candidates = np.asarray(candidates)
    if not (np.issubdtype(candidates.dtype, np.floating) or np.issubdtype(candidates.dtype, np.integer)):
        raise TypeError(f"`candidates` must be real numbers; got dtype {candidates.dtype}.")
    candidates = candidates.astype(np.float64)
    if candidates.ndim != 2 or candidates.shape[1] < k or candidates.shape[0] == 0:
        raise ValueError(f"`candidates` must have shape (C, {k}) with C >= 1; got {candidates.shape}.")
    if not np.all(np.isfinite(candidates)) or np.any(candidates < 0):
        raise ValueError("`candidates` must be finite and in [0, inf); got negative or non-finite entries.")
    counts = np.bincount(s, minlength=candidates.shape[1])
    usable = [c for c in candidates if not np.any((counts == 0) & (c > 0)) and c.sum() > 0]
    if not usable:
        raise ValueError("no candidate mixture puts mass only on sources that have examples.")
    candidates = np.asarray(usable)
    results, scores = [], []
    for a in candidates:
        r = fit(source_weights(s, a))
        results.append(r)
        scores.append(float(score(r)))
    scores = np.asarray(scores)
    if not np.any(np.isfinite(scores)):
        raise ValueError("`score` returned no finite value for any candidate.")
    best = int(np.nanargmin(np.where(np.isfinite(scores), scores, np.inf)))
    return MixtureSelection(candidates[best], results[best], scores, candidates)


def clip_mixture(beta: ArrayLike) -> np.ndarray:
    r"""Projects per-source weights onto the simplex (Euclidean), for :func:`source_weights`.

    .. math::

        \operatorname*{arg\,min}_{a \ge 0,\ \sum_k a_k = 1} \|a - \beta\|_2
        = (\beta - \tau)_+ ,

    with the threshold :math:`\tau` found by sorting (Held, Wolfe & Crowder, 1974). The
    projection is invariant to adding a constant to every entry; it is computed on
    :math:`\beta - \max_k \beta_k`, so huge entries do not overflow.

    Args:
        beta: finite real weights, shape ``(K,)``, ``K >= 1``.

    Returns:
        Non-negative weights summing to 1, shape ``(K,)``, float64.

    Examples:
        >>> clip_mixture([0.6, -0.1, 0.5])
        array([0.55, 0.  , 0.45])
    """
    v = np.asarray(beta)
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise TypeError(f"`beta` must be real numbers; got dtype {v.dtype}.")
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"`beta` must be a non-empty vector of shape (K,); got shape {v.shape}.")
    v = v.astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"`beta` must be finite; got {int(np.sum(~np.isfinite(v)))} NaN/inf entries.")
    with np.errstate(over="ignore"):
        v = v - v.max()  # entries more than 1.8e308 below the maximum become -inf: their share is 0
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    with np.errstate(invalid="ignore"):
        rho = np.nonzero(u - css / k > 0)[0][-1]  # index 0 always qualifies: u[0] = 0 > -1
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)

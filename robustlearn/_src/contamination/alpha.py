r"""Estimating the synthetic fraction :math:`\alpha` from data, with a confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from robustlearn._src.contamination.means import alpha_from_means


class AlphaEstimate(NamedTuple):
    """Result of :func:`estimate_alpha`.

    Attributes:
        alpha: the point estimate, in ``[0, 1]``.
        low: lower end of the confidence interval.
        high: upper end of the confidence interval.
        confidence: the interval's nominal coverage.
        method: ``"means"``, ``"clean"`` or ``"region"``.
        n: the number of observations that carry information about alpha (rounds x coordinates
            for ``"means"``; contaminated examples used for the others).
    """

    alpha: float
    low: float
    high: float
    confidence: float
    method: str
    n: int


def _as_rounds(v, name: str) -> list[np.ndarray]:
    if v is None:
        raise ValueError(f"`{name}` is required.")
    if isinstance(v, np.ndarray) or not isinstance(v, Sequence) or (len(v) and np.ndim(v[0]) == 0):
        v = [v]
    out = []
    for k, a in enumerate(v):
        arr = np.asarray(a)
        if arr.ndim != 1:
            raise ValueError(f"`{name}[{k}]` must be a vector of labels, shape (n,); got shape {arr.shape}.")
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"`{name}[{k}]` must hold integer class labels; got dtype {arr.dtype}.")
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"`{name}[{k}]` must hold integer class labels (no NaN, no fractions).")
        out.append(arr.astype(np.int64))
    return out


def _score_interval(k: float, m: float, b: float, var_m: float, z: float) -> tuple[float, float]:
    r"""Score (Fieller-Wilson) interval for :math:`\rho` in :math:`E[K] = \rho M`, clipped to [0, 1].

    :math:`K = \sum_s K_s`, :math:`K_s \sim \mathrm{Bin}(N_s, \rho\,\varepsilon_s)`, :math:`M = \sum_s N_s
    \hat\varepsilon_s` with variance ``var_m`` and :math:`B = \sum_s N_s \hat\varepsilon_s^2`: the set
    :math:`\{\rho: (K - \rho M)^2 \le z^2(\rho M - \rho^2 B + \rho^2\,\mathrm{var}_m)\}`, the null variance
    of :math:`K - \rho M` under :math:`\rho`. With :math:`\varepsilon \equiv 1` and ``var_m = 0`` it is Wilson's
    interval.
    """
    qa = m * m + z * z * (b - var_m)
    qb = -(2 * k * m + z * z * m)
    qc = k * k
    if qa <= 0:  # the interval is unbounded: only [0, 1] is known
        return 0.0, 1.0
    disc = max(qb * qb - 4 * qa * qc, 0.0)
    lo = (-qb - math.sqrt(disc)) / (2 * qa)
    hi = (-qb + math.sqrt(disc)) / (2 * qa)
    return min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)


def _alpha_from_labels(labels, previous, clean_labels, clean_previous, reference, confidence):
    ys = _as_rounds(labels, "labels")
    ps = _as_rounds(previous, "previous")
    if len(ys) != len(ps) or any(a.shape != b.shape for a, b in zip(ys, ps, strict=True)):
        raise ValueError(
            "`labels` and `previous` must have the same rounds and the same length in each round; got "
            f"{[a.size for a in ys]} and {[b.size for b in ps]}."
        )
    for k, p in enumerate(ps):
        if np.any(p < -1):
            raise ValueError(f"`previous[{k}]` must be class labels >= 0, or -1 for a clean example; got {p.min()}.")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if reference is not None:
        if clean_labels is not None or clean_previous is not None:
            raise ValueError("give either a clean set (`clean_labels`, `clean_previous`) or `reference`, not both.")
        rs = _as_rounds(reference, "reference")
        if len(rs) != len(ys) or any(a.shape != b.shape for a, b in zip(rs, ys, strict=True)):
            raise ValueError("`reference` must have the same rounds and lengths as `labels`.")
        region = [(p >= 0) & (r != p) for p, r in zip(ps, rs, strict=True)]
        n_region = int(sum(int(g.sum()) for g in region))
        if n_region == 0:
            raise ValueError(
                "`reference` agrees with `previous` on every contaminated example: the region where the previous "
                "model is believed wrong is empty, so nothing is known about alpha."
            )
        k = float(sum(int(np.sum(y[g] != p[g])) for y, p, g in zip(ys, ps, region, strict=True)))
        lo, hi = _score_interval(k, n_region, n_region, 0.0, z)
        return AlphaEstimate(1 - k / n_region, 1 - hi, 1 - lo, confidence, "region", n_region)
    if clean_labels is None or clean_previous is None:
        raise ValueError(
            "alpha is not identified by the agreement between labels and the previous model alone (agreement = "
            "alpha + (1 - alpha) (1 - error of the previous model), two unknowns; it only bounds alpha from "
            "above). Give a clean set (`clean_labels` and `clean_previous`: each round's previous model on clean "
            "inputs) or `reference` predictions whose disagreement with the previous model marks where it is wrong."
        )
    yc = _as_rounds(clean_labels, "clean_labels")
    if len(yc) != 1:
        raise ValueError("`clean_labels` must be one vector, shape (n_clean,).")
    yc = yc[0]
    if yc.size == 0:
        raise ValueError("`clean_labels` is empty.")
    if isinstance(clean_previous, np.ndarray) and clean_previous.ndim == 2:
        clean_previous = list(clean_previous)
    if not isinstance(clean_previous, Sequence) or len(clean_previous) != len(ys):
        raise ValueError(
            f"`clean_previous` must give, for each of the {len(ys)} rounds, the previous model's predictions on the "
            "clean inputs (None for a round without contaminated examples)."
        )
    counts, ks, errs = [], [], []
    for s, (y, p, c) in enumerate(zip(ys, ps, clean_previous, strict=True)):
        used = p >= 0
        if not np.any(used):
            continue
        if c is None:
            raise ValueError(f"`clean_previous[{s}]` is None but round {s} has contaminated examples.")
        c = _as_rounds(c, f"clean_previous[{s}]")[0]
        if c.shape != yc.shape:
            raise ValueError(f"`clean_previous[{s}]` must have shape {yc.shape} (one prediction per clean input).")
        counts.append(int(used.sum()))
        ks.append(int(np.sum(y[used] != p[used])))
        errs.append((c != yc).astype(np.float64))
    if not counts:
        raise ValueError("no contaminated examples (every `previous` is -1): nothing is known about alpha.")
    counts_arr = np.asarray(counts, dtype=np.float64)
    err = np.stack(errs)  # (rounds, n_clean)
    zi = counts_arr @ err  # each clean input's weighted error count
    m = float(zi.mean())
    if m == 0:
        raise ValueError(
            "every previous model is correct on the whole clean set: their error, hence alpha, cannot be estimated "
            "(use a larger clean set)."
        )
    eps = err.mean(1)
    b = float(counts_arr @ eps**2)
    var_m = float(zi.var(ddof=1) / zi.size) if zi.size > 1 else m * m
    k = float(sum(ks))
    lo, hi = _score_interval(k, m, b, var_m, z)
    return AlphaEstimate(min(max(1 - k / m, 0.0), 1.0), 1 - hi, 1 - lo, confidence, "clean", int(counts_arr.sum()))


def estimate_alpha(
    *,
    means: ArrayLike | None = None,
    deployed: ArrayLike | None = None,
    counts: ArrayLike | None = None,
    labels: ArrayLike | Sequence[ArrayLike] | None = None,
    previous: ArrayLike | Sequence[ArrayLike] | None = None,
    clean_labels: ArrayLike | None = None,
    clean_previous: Sequence[ArrayLike | None] | None = None,
    reference: ArrayLike | Sequence[ArrayLike] | None = None,
    confidence: float = 0.95,
) -> AlphaEstimate:
    r"""Estimates the synthetic fraction :math:`\alpha` with a confidence interval.

    **Mean estimation** (``means``, ``deployed``, optional ``counts``). With
    :math:`Z_1 = X_1`, :math:`Z_t = X_t - \alpha Y_{t-1}` the rounds are, for the right
    :math:`\alpha`, independent :math:`N(m_t \mu, \sigma^2/n_t)` with :math:`m = (1, 1-\alpha, \dots)`,
    whatever was deployed (the map from :math:`X` to :math:`Z` is triangular with unit
    diagonal). When the deployed estimate commutes with shifting and scaling the data
    coordinate by coordinate (ERM, the weighted estimators), the likelihood of the data up to
    each coordinate's location and scale is exactly

    .. math::

        \ell(\alpha) = \sum_{j=1}^{d} \Big[-\tfrac12 \log \textstyle\sum_t n_t m_t^2
        - \tfrac{T-1}{2} \log \mathrm{RSS}_j(\alpha)\Big],\qquad
        \mathrm{RSS}_j = \min_{\mu_j} \textstyle\sum_t n_t (Z_{tj} - m_t \mu_j)^2

    (Wijsman's representation; no per-coordinate nuisance bias, unlike a regression of
    :math:`X_t` on :math:`Y_{t-1}` with per-coordinate intercepts). The estimate maximizes it on
    :math:`[0, 1]`; the interval is the likelihood-ratio set :math:`2(\ell(\hat\alpha) - \ell(\alpha))
    \le \chi^2_{1}`. The information grows with :math:`d` and slowly with :math:`T`.

    **Labels** (``labels``, ``previous``: one array per round; ``previous`` is the deployed
    model's prediction that a synthetic example copies, -1 for an example known to be clean).
    The agreement :math:`P(y = f_{s-1}(x)) = \alpha + (1-\alpha)(1 - \varepsilon_s)`, with
    :math:`\varepsilon_s = P(f_{s-1} \neq f^\star)`, has two unknowns, so agreement alone only bounds
    :math:`\alpha` from above; one more piece of information is needed:

    * ``clean_labels`` (``(n_c,)``, labels by :math:`f^\star`) and ``clean_previous`` (per round, the
      previous model's predictions on those inputs; the clean set must not have trained it):
      the disagreements :math:`K = \sum_s K_s` have mean :math:`(1-\alpha)\sum_s N_s\varepsilon_s`, so
      :math:`1 - \hat\alpha = K / \sum_s N_s\hat\varepsilon_s`. The interval inverts the score test of
      :math:`K - \rho M` (Fieller), with the clean set's sampling variance included.
    * ``reference`` (per round, predictions of a model believed right where it disagrees with
      the previous one, e.g. from other data): in :math:`A = \{r \neq f_{s-1}\}` the disagreement
      rate is :math:`(1-\alpha)P(D \mid A)` with :math:`D = \{f^\star \neq f_{s-1}\}`; if
      :math:`A \subseteq D` it is :math:`1-\alpha` and the interval is Wilson's. Otherwise
      :math:`\hat\alpha` is biased *upward* by :math:`(1-\alpha)(1 - P(D\mid A))`, and ``high`` remains a
      valid upper bound.

    Args:
        means: per-round averages :math:`X_t`, shape ``(T, d)`` or ``(T,)``, ``T >= 2``.
        deployed: the estimates deployed after rounds ``1..T-1``, shape ``(T-1, d)``.
        counts: optional round sizes (:math:`\mathrm{Var}(U_t) \propto 1/n_t`), length ``T``.
        labels: observed labels, one integer array per round (or one array).
        previous: the previous model's predictions on the same inputs, -1 for clean examples.
        clean_labels: labels of a clean set, shape ``(n_c,)``.
        clean_previous: per round, the previous model's predictions on the clean inputs
            (None for rounds without contaminated examples).
        reference: per round, a reference model's predictions on the round's inputs.
        confidence: nominal coverage of the interval, in ``(0, 1)``.

    Returns:
        An :class:`AlphaEstimate`.

    Examples:
        >>> from robustlearn import contamination as rc
        >>> sim = rc.simulate_means(0.6, 30, dim=20, seed=1)
        >>> est = rc.estimate_alpha(means=sim.means[0], deployed=sim.estimates[0, :-1])
        >>> est.low <= 0.6 <= est.high, est.method
        (True, 'means')
    """
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1); got {confidence!r}.")
    mean_mode = means is not None or deployed is not None or counts is not None
    label_mode = any(v is not None for v in (labels, previous, clean_labels, clean_previous, reference))
    if mean_mode == label_mode:
        raise ValueError(
            "give either `means` and `deployed` (mean estimation) or `labels` and `previous` (classification), "
            "not both and not neither."
        )
    if mean_mode:
        if means is None or deployed is None:
            raise ValueError("mean estimation needs both `means` and `deployed`.")
        a, lo, hi, n = alpha_from_means(means, deployed, counts, float(confidence))
        return AlphaEstimate(a, lo, hi, float(confidence), "means", n)
    return _alpha_from_labels(labels, previous, clean_labels, clean_previous, reference, float(confidence))

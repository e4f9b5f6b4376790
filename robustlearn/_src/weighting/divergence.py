r"""f-divergences between the real and the synthetic distribution, estimated from samples.

The divergence is the one that sizes robustlearn's ambiguity balls (``shared/design.md``):
with :math:`w = dP/dQ` the density ratio of the real distribution :math:`P` to the
synthetic (nominal) one :math:`Q`,

.. math::

    D_f(P \,\|\, Q) = \mathbb{E}_Q\big[f(w)\big], \qquad
    f_2(t) = \tfrac12 (t-1)^2, \quad f_{\rm KL}(t) = t\log t - t + 1, \quad
    f_k(t) = \frac{t^k - kt + k - 1}{k(k-1)},

so that :math:`P` lies in the ball ``chi_square(losses, radius)`` (``kl``,
``cressie_read``) around :math:`Q` exactly when :math:`D_f(P\|Q) \le` ``radius``.

Estimator. For any ratio estimate :math:`\hat w`, Fenchel duality gives the variational
lower bound

.. math::

    L_f(\hat w) = \mathbb{E}_P\big[f'(\hat w)\big] - \mathbb{E}_Q\big[\hat w f'(\hat w) - f(\hat w)\big]
    = D_f(P\|Q) - \mathbb{E}_Q\big[B_f(w, \hat w)\big],

with :math:`B_f(t, s) = f(t) - f(s) - f'(s)(t - s) \ge 0` the Bregman divergence of
:math:`f`: the error is *second order* in :math:`\hat w - w` (this is the one-step,
influence-function-corrected estimator), and never positive. Concretely

.. math::

    L_{k}(\hat w) = \frac{\mathbb{E}_P[\hat w^{k-1}] - 1}{k-1} - \frac{\mathbb{E}_Q[\hat w^{k}] - 1}{k}
    \ (\chi^2:\ k = 2), \qquad
    L_{\rm KL}(\hat w) = \mathbb{E}_P[\log \hat w] - \mathbb{E}_Q[\hat w] + 1.

The expectations are sample means over rows *not used to fit* :math:`\hat w`
(cross-fitting over ``folds`` folds), so that, given the fitted ratios, the estimate is a
sum of two independent sample means and the central limit theorem gives its standard
error and the one-sided upper confidence bound.

Bias correction. The remaining bias :math:`-\mathbb{E}_Q B_f(w, \hat w) \approx
-\tfrac12\mathbb{E}_Q[f''(\hat w)\,(\hat w - w)^2]` is of order (parameters of the ratio
model)/n and can be several standard errors in 10 dimensions. Its variance part is
estimated from the ``K`` fold fits themselves: two of them share :math:`(K-2)/(K-1)` of
their rows, so the variance of one fit at :math:`x` is about :math:`K - 1` times their
spread (the delete-a-group jackknife), and the estimate adds
:math:`\tfrac12\,\overline{f''(\bar w)\,(K-1)\,s^2_{\hat w}}` over the synthetic rows
(:math:`f'' = t^{k-2}`, or :math:`1/t` for KL). The squared *bias* of the ratio model
(misspecification, regularization) is not corrected.
"""

from __future__ import annotations

import copy
import math
import statistics
import warnings
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from robustlearn._src.weighting.weights import ImportanceWeightWarning

KINDS = ("chi_square", "kl", "cressie_read")
_SUPPORT_POINTS = 2000  # rows of each sample used by the nearest-neighbour support check
_NEIGHBOURS = 10
_KL_FLOOR = 1e-12  # log(w) of a ratio estimate that is exactly 0 (kernel models clip at 0)


class SupportWarning(ImportanceWeightWarning):
    """Emitted when real rows lie outside the region the synthetic sample covers.

    There the density ratio is unbounded or unidentified from the data, and a divergence
    (hence a radius or a certificate) estimated from these samples is extrapolation.
    """


class DivergenceEstimate(NamedTuple):
    """Result of :func:`divergence`.

    Attributes:
        kind: ``"chi_square"``, ``"kl"`` or ``"cressie_read"``.
        k: the Cressie--Read exponent (2.0 for ``"chi_square"``, None for ``"kl"``).
        estimate: the cross-fitted, bias-corrected estimate of :math:`D_f(P\\|Q)` (may be
            slightly negative when the distributions are close).
        upper: one-sided upper confidence bound at level ``confidence`` (``estimate`` plus
            the normal quantile times ``std_error``).
        std_error: its standard error.
        bias_correction: the jackknife correction included in ``estimate`` (0 when disabled).
        confidence: the level of ``upper``.
        ess_fraction: Kish effective sample size of the held-out ratio estimates on the
            synthetic rows, over ``n_synthetic``; about :math:`1/(1 + 2\\chi^2)`.
        max_ratio: the largest estimated ratio on a real row, relative to the mean estimated
            ratio on the synthetic rows.
        uncovered_fraction: fraction of real rows whose 10 nearest neighbours are all real,
            in a pooled sample with as many synthetic as real rows (standardized, at most
            2,000 of each). A row where the local ratio is :math:`w` is flagged with
            probability about :math:`(w/(1+w))^{10}`: 0.001 where the distributions agree,
            0.39 where :math:`w = 10`, 1 where the synthetic sample has no mass, so a
            region of the real distribution that the generator never visits shows up here
            with its share of the real rows. NaN with fewer than 2 rows.
        n_real: real rows.
        n_synthetic: synthetic rows.
        folds: cross-fitting folds used.
        estimator: the ratio estimator refitted on all rows (for inspection, e.g.
            ``estimator.weights(x)``).
    """

    kind: str
    k: float | None
    estimate: float
    upper: float
    std_error: float
    bias_correction: float
    confidence: float
    ess_fraction: float
    max_ratio: float
    uncovered_fraction: float
    n_real: int
    n_synthetic: int
    folds: int
    estimator: Any


class DiscreteRatio:
    r"""Density ratio of discrete data from smoothed frequencies.

    .. math::

        \hat w(x) = \frac{(n_r(x) + a) / (n_r + a K)}{(n_s(x) + a) / (n_s + a K)},

    with :math:`n_r(x)`, :math:`n_s(x)` the counts of the row value :math:`x` in the real
    and synthetic samples, :math:`K` the number of distinct rows in their union and
    :math:`a` an additive smoothing (:math:`a = 1/2`: Krichevsky--Trofimov). Rows are
    compared exactly, so features must be discrete (category codes). Values seen in
    neither sample get the ratio of the smoothing terms.

    Args:
        smoothing: :math:`a > 0`.

    Examples:
        >>> import numpy as np
        >>> real = np.array([[0], [0], [1], [1]]); synthetic = np.array([[0], [1], [1], [1]])
        >>> DiscreteRatio(smoothing=0.5).fit(real, synthetic).weights(np.array([[0], [1]]))
        array([1.66666667, 0.71428571])
    """

    def __init__(self, smoothing: float = 0.5):
        if isinstance(smoothing, bool) or not (math.isfinite(float(smoothing)) and float(smoothing) > 0):
            raise ValueError(f"`smoothing` must be in (0, inf); got {smoothing!r}.")
        self.smoothing = float(smoothing)

    def fit(self, real: ArrayLike, synthetic: ArrayLike) -> DiscreteRatio:
        """Counts the row values of ``real (n_r, d)`` and ``synthetic (n_s, d)``; returns ``self``."""
        real, synthetic = _pair(real, synthetic, minimum=1)
        self.dim_ = real.shape[1]
        values, inverse = np.unique(np.concatenate([real, synthetic]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        counts_r = np.bincount(inverse[: len(real)], minlength=len(values))
        counts_s = np.bincount(inverse[len(real) :], minlength=len(values))
        a, num = self.smoothing, len(values)
        self._pr_default = a / (len(real) + a * num)
        self._ps_default = a / (len(synthetic) + a * num)
        p_r = (counts_r + a) / (len(real) + a * num)
        p_s = (counts_s + a) / (len(synthetic) + a * num)
        self._index = {row.tobytes(): i for i, row in enumerate(values)}
        self._ratio = p_r / p_s
        return self

    def weights(self, x: ArrayLike) -> np.ndarray:
        """Estimated ratio at the rows of ``x`` (shape ``(n, d)``); returns shape ``(n,)``, > 0."""
        if not hasattr(self, "_ratio"):
            raise RuntimeError("DiscreteRatio is not fitted: call fit(real, synthetic) first.")
        x = _as_rows(x, "x", minimum=1)
        if x.shape[1] != self.dim_:
            raise ValueError(f"`x` has {x.shape[1]} features but the estimator was fitted on {self.dim_}.")
        default = self._pr_default / self._ps_default
        return np.array([self._ratio[i] if (i := self._index.get(row.tobytes())) is not None else default for row in x])


def _as_rows(x, name: str, minimum: int) -> np.ndarray:
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"`{name}` must be real numbers; got dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, d); got shape {arr.shape}.")
    if arr.shape[0] < minimum:
        raise ValueError(f"`{name}` needs at least {minimum} rows; got {arr.shape[0]}.")
    bad = ~np.all(np.isfinite(arr), axis=1)
    if np.any(bad):
        raise ValueError(f"`{name}` has {int(bad.sum())} rows with NaN or inf (first: row {int(np.argmax(bad))}).")
    return arr.astype(np.float64)


def _pair(real, synthetic, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    real, synthetic = _as_rows(real, "real", minimum), _as_rows(synthetic, "synthetic", minimum)
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(
            f"`real` and `synthetic` must have the same number of features; got {real.shape[1]} and "
            f"{synthetic.shape[1]}."
        )
    return real, synthetic


def check_confidence(confidence, name: str = "confidence") -> float:
    """``confidence`` as a float in (0, 1), or a ValueError naming the argument."""
    if isinstance(confidence, bool) or not isinstance(confidence, int | float | np.floating | np.integer):
        raise TypeError(f"`{name}` must be a real number in (0, 1); got {confidence!r}.")
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"`{name}` must be in (0, 1); got {confidence!r}.")
    return c


def check_kind(kind, k) -> float | None:
    """Validates ``kind`` and the Cressie--Read exponent; returns the exponent (None for KL)."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}; got {kind!r}.")
    if kind == "cressie_read":
        if k is None or isinstance(k, bool) or not (math.isfinite(float(k)) and float(k) > 1):
            raise ValueError(f"`k` must be in (1, inf) for kind='cressie_read'; got {k!r}.")
        return float(k)
    if k is not None:
        raise ValueError(f"`k` is only used with kind='cressie_read'; got k={k!r} with kind={kind!r}.")
    return 2.0 if kind == "chi_square" else None


def _terms(w_real: np.ndarray, w_syn: np.ndarray, k: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-row terms ``a`` (real rows) and ``b`` (synthetic rows): ``L = mean(a) - mean(b)``."""
    if k is None:
        return np.log(np.maximum(w_real, _KL_FLOOR)), np.maximum(w_syn, _KL_FLOOR) - 1.0
    return (w_real ** (k - 1) - 1.0) / (k - 1), (w_syn**k - 1.0) / k


def _uncovered_fraction(real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator) -> float:
    """Fraction of real rows whose nearest neighbours in a size-balanced pooled sample are all real.

    Both samples are subsampled to the same size ``m`` (at most ``_SUPPORT_POINTS``) and
    standardized together; a real row is flagged when its ``_NEIGHBOURS`` nearest other rows
    are all real. Where the local ratio is ``w`` a row is flagged with probability about
    ``(w / (1 + w)) ** _NEIGHBOURS``: 0.001 at ``w = 1``, 0.39 at ``w = 10``, 1 where the
    synthetic sample has no mass. NaN when either sample has fewer than 2 rows.
    """
    m = min(len(real), len(synthetic), _SUPPORT_POINTS)
    if m < 2:
        return math.nan
    real = real[rng.choice(len(real), m, replace=False)]
    synthetic = synthetic[rng.choice(len(synthetic), m, replace=False)]
    pooled = np.concatenate([real, synthetic])
    scale = pooled.std(0)
    pooled = (pooled - pooled.mean(0)) / np.where(scale > 0, scale, 1.0)
    is_real = np.arange(2 * m) < m
    k = min(_NEIGHBOURS, 2 * m - 1)
    sq = np.sum(pooled**2, 1)
    flagged = 0
    for i in range(0, m, 256):
        rows = np.arange(i, min(i + 256, m))
        d2 = np.maximum(sq[rows, None] + sq[None, :] - 2 * pooled[rows] @ pooled.T, 0.0)
        d2 += 1e-9 * (np.mean(d2) + 1e-300) * rng.random(d2.shape)  # break exact ties (discrete data) at random
        d2[np.arange(len(rows)), rows] = np.inf
        nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
        flagged += int(np.sum(np.all(is_real[nearest], axis=1)))
    return flagged / m


def divergence(
    real: ArrayLike,
    synthetic: ArrayLike,
    kind: str = "chi_square",
    *,
    k: float | None = None,
    estimator: Any = None,
    confidence: float = 0.95,
    folds: int = 5,
    seed: int = 0,
    support_tol: float = 0.05,
    bias_correction: bool = True,
) -> DivergenceEstimate:
    r"""Estimates :math:`D_f(P_{\rm real}\,\|\,Q_{\rm syn})` with a one-sided upper confidence bound.

    .. math::

        \hat D = \frac{1}{n_r}\sum_{j} a(\hat w_{-j}(x^r_j)) - \frac{1}{n_s}\sum_{i} b(\hat w_{-i}(x^s_i))
        + \hat c,
        \qquad
        \hat D_{\rm up} = \hat D + z_{\rm confidence}\sqrt{\frac{s_a^2}{n_r} + \frac{s_b^2}{n_s}},

    with :math:`\hat w_{-j}` the ratio fitted without row :math:`j`'s fold (cross-fitting),
    :math:`(a, b) = ((t^{k-1} - 1)/(k-1), (t^k - 1)/k)` for Cressie--Read (:math:`\chi^2`:
    :math:`k = 2`) and :math:`(\log t, t - 1)` for KL (the variational form of the module
    docstring), :math:`\hat c \ge 0` the jackknife bias correction of the module docstring,
    :math:`s_a, s_b` the sample standard deviations of the two sets of terms and :math:`z`
    the standard normal quantile. Conventions are those of the reductions:
    ``chi_square`` uses :math:`f_2(t) = (t-1)^2/2`, so :math:`\chi^2 = \tfrac12(\mathbb{E}_Q w^2 - 1)`.

    Why an asymptotic bound and not the bootstrap: given the fitted ratios the estimate is
    a difference of two independent sample means, so its normal interval is justified by
    the central limit theorem and costs one fit per fold, where a bootstrap would refit
    the ratio hundreds of times. Without :math:`\hat c` it covers :math:`L_f(\hat w) = D_f -
    \mathbb{E}_Q B_f(w, \hat w) \le D_f` at the nominal level; with it, :math:`D_f` itself
    when the ratio model is well specified (e.g. the quadratic classifier between
    Gaussians, or discrete data). A misspecified or over-regularized ratio model, or too
    few rows for it, makes it *under*-cover. The simulated coverage is in docs/radius.md.

    Args:
        real: real sample, shape ``(n_r, d)`` (``(n_r,)`` is one feature), ``n_r >= 2``.
        synthetic: synthetic sample, shape ``(n_s, d)``, ``n_s >= 2``.
        kind: ``"chi_square"``, ``"kl"`` or ``"cressie_read"``.
        k: Cressie--Read exponent, ``> 1`` (only with ``kind="cressie_read"``).
        estimator: an unfitted density-ratio estimator with ``fit(real, synthetic)`` and
            ``weights(x)`` (``importance.ULSIF()``, ``KLIEP()``, ``DiscreteRatio()``, ...);
            default ``ProbabilisticClassifier()``. It is fitted on all rows (the returned
            ``estimator``) and once per fold: a copy refitted anew, except that the
            classifier keeps its first fit's family, L2 strength and temperature and refits
            on all the fold's rows. Estimators whose fit is not a smooth function of the
            rows (an internal random split, a hyperparameter search) make the jackknife
            over-correct, which errs on the safe side.
        confidence: level of the upper bound, in ``(0, 1)``.
        folds: cross-fitting folds, ``>= 2`` (at most ``min(n_r, n_s)`` are used).
        seed: seeds the folds and the support check's subsample.
        support_tol: warn (:class:`SupportWarning`) when ``uncovered_fraction`` exceeds
            this, in ``[0, 1]``.
        bias_correction: add the jackknife correction :math:`\hat c`.

    Returns:
        A :class:`DivergenceEstimate`.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(1000, 2)) + [0.5, 0.0]; synthetic = rng.normal(size=(1000, 2))
        >>> d = divergence(real, synthetic, "kl")   # exact: 0.5**2 / 2 = 0.125
        >>> bool(0.07 < d.estimate < 0.18 and d.upper > d.estimate)
        True

    References:
        Nguyen, Wainwright & Jordan, "Estimating divergence functionals and the likelihood
        ratio by convex risk minimization", IEEE Trans. Inf. Theory 2010 (variational
        form); Chernozhukov et al., "Double/debiased machine learning for treatment and
        structural parameters", Econometrics Journal 2018 (cross-fitting); Shao & Tu,
        "The Jackknife and Bootstrap", 1995 (delete-a-group jackknife); Sugiyama, Suzuki &
        Kanamori, "Density Ratio Estimation in Machine Learning", 2012.
    """
    kexp = check_kind(kind, k)
    confidence = check_confidence(confidence)
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise ValueError(f"`folds` must be an int >= 2; got {folds!r}.")
    if isinstance(support_tol, bool) or not 0.0 <= float(support_tol) <= 1.0:
        raise ValueError(f"`support_tol` must be in [0, 1]; got {support_tol!r}.")
    real, synthetic = _pair(real, synthetic, minimum=2)
    fit = cross_fit(real, synthetic, estimator, folds, seed)
    out = bound(fit, kind, kexp, confidence, bias_correction)
    if out.uncovered_fraction > float(support_tol):
        warnings.warn(
            f"{out.uncovered_fraction:.1%} of the real rows lie outside the region the synthetic sample covers "
            "(their 10 nearest neighbours are all real). The density ratio is unbounded or unidentified there: "
            "the divergence, and any radius or certificate built on it, is extrapolation. No reweighting of "
            "synthetic data covers that region; see docs/radius.md.",
            SupportWarning,
            stacklevel=2,
        )
    return out


class CrossFit(NamedTuple):
    """Held-out ratio estimates at every row (internal: one fit serves every divergence kind)."""

    w_real: np.ndarray
    w_syn: np.ndarray
    mean_syn: np.ndarray  # mean over the fold fits of the ratio at each synthetic row
    var_syn: np.ndarray  # jackknife variance of a fold fit's ratio at each synthetic row
    full: Any
    folds: int
    max_ratio: float
    uncovered_fraction: float


def cross_fit(
    real: np.ndarray, synthetic: np.ndarray, estimator, folds: int, seed: int, support: bool = True
) -> CrossFit:
    """Fits the ratio on all rows and per fold; the held-out fold gets the fold's estimate.

    The default classifier's folds refit its chosen family on all the fold's rows
    (``ProbabilisticClassifier._refit``); other estimators are copied and fitted anew.
    ``support=False`` skips the nearest-neighbour check (``uncovered_fraction`` is NaN); the
    coverage simulations use it, nothing else.
    """
    from robustlearn._src.weighting.density_ratio import ProbabilisticClassifier

    if estimator is None:
        estimator = ProbabilisticClassifier(seed=seed)
    if not (callable(getattr(estimator, "fit", None)) and callable(getattr(estimator, "weights", None))):
        raise TypeError(f"`estimator` must have fit(real, synthetic) and weights(x) methods; got {estimator!r}.")
    n_r, n_s = len(real), len(synthetic)
    rng = np.random.default_rng(seed)
    full = copy.deepcopy(estimator).fit(real, synthetic)
    if isinstance(full, ProbabilisticClassifier):
        fit_fold = full._refit
    else:

        def fit_fold(r, s):
            return copy.deepcopy(estimator).fit(r, s)

    num = int(min(folds, n_r, n_s))
    fold_r = np.array_split(rng.permutation(n_r), num)
    fold_s = np.array_split(rng.permutation(n_s), num)
    w_r, w_s = np.empty(n_r), np.empty(n_s)
    per_fold = np.empty((num, n_s))
    for j in range(num):
        train_r = np.setdiff1d(np.arange(n_r), fold_r[j])
        train_s = np.setdiff1d(np.arange(n_s), fold_s[j])
        fitted = fit_fold(real[train_r], synthetic[train_s])
        w_r[fold_r[j]] = fitted.weights(real[fold_r[j]])
        per_fold[j] = fitted.weights(synthetic)
        w_s[fold_s[j]] = per_fold[j, fold_s[j]]
    if not (np.all(np.isfinite(w_r)) and np.all(np.isfinite(per_fold))):
        raise FloatingPointError("the ratio estimator returned non-finite weights.")
    if np.any(w_r < 0) or np.any(per_fold < 0):
        raise ValueError("the ratio estimator returned negative weights.")
    # Delete-a-group jackknife: fold fits share (K-2)/(K-1) of their rows, so the variance of
    # one fit is (K - 1) times the spread between them.
    var_s = (num - 1) * np.var(per_fold, axis=0, ddof=1)
    mean_s = float(np.mean(full.weights(synthetic)))
    max_ratio = float(np.max(full.weights(real)) / mean_s) if mean_s > 0 else math.inf
    uncovered = _uncovered_fraction(real, synthetic, rng) if support else math.nan
    return CrossFit(w_r, w_s, per_fold.mean(0), var_s, full, num, max_ratio, uncovered)


def bound(fit: CrossFit, kind: str, k: float | None, confidence: float, correct: bool = True) -> DivergenceEstimate:
    """The estimate and its upper confidence bound from held-out ratio estimates."""
    n_r, n_s = len(fit.w_real), len(fit.w_syn)
    a, b = _terms(fit.w_real, fit.w_syn, k)
    # Second-order bias E_Q B_f(w, w_hat) ~ E_Q f''(w_hat) Var(w_hat) / 2, with f'' = t^(k-2)
    # (Cressie-Read) or 1/t (KL) at the fold fits' mean; where the variance is 0 the term is 0.
    m = np.maximum(fit.mean_syn, _KL_FLOOR)
    curvature = m ** (k - 2) if k is not None else 1.0 / m
    correction = float(0.5 * np.mean(np.where(fit.var_syn > 0, curvature * fit.var_syn, 0.0))) if correct else 0.0
    estimate = float(np.mean(a) - np.mean(b)) + correction
    std_error = float(math.sqrt(np.var(a, ddof=1) / n_r + np.var(b, ddof=1) / n_s))
    z = statistics.NormalDist().inv_cdf(confidence)
    w_s = fit.w_syn
    ess_fraction = float(np.sum(w_s) ** 2 / np.sum(w_s**2) / n_s) if np.any(w_s > 0) else 0.0
    return DivergenceEstimate(
        kind=kind,
        k=k,
        estimate=estimate,
        upper=estimate + z * std_error,
        std_error=std_error,
        bias_correction=correction,
        confidence=confidence,
        ess_fraction=ess_fraction,
        max_ratio=fit.max_ratio,
        uncovered_fraction=fit.uncovered_fraction,
        n_real=n_r,
        n_synthetic=n_s,
        folds=fit.folds,
        estimator=fit.full,
    )

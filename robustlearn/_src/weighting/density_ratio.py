r"""Density-ratio estimation between real and synthetic samples.

Every estimator estimates

.. math::

    w(x) = \frac{p_{\rm real}(x)}{p_{\rm syn}(x)}

from a sample of each, with one interface: ``est.fit(real, synthetic)`` then
``est.weights(x)`` (shape ``(n,)``). Hyperparameters (kernel bandwidth, regularization)
are chosen by each method's own held-out criterion over a grid (k-fold
cross-validation); the chosen values and the criterion of every candidate are kept on the
fitted estimator (``cv_scores_``).

The kernel methods use a Gaussian kernel
:math:`k(x, c) = \exp(-\|x - c\|^2 / (2\sigma^2))` and the default bandwidth grid scaled by
the median pairwise distance. Kernels are computed in float64 from squared distances
:math:`\|x\|^2 + \|c\|^2 - 2\langle x, c\rangle` of the data shifted by the pooled mean and
scaled by a power of two (both exact for the kernel, which depends on distances only), so a
common offset or a huge or tiny scale of the features loses no precision. The distances
are computed once per fit and shared by every bandwidth and fold.

Cost, with :math:`n_r, n_s` the sample sizes, :math:`d` the dimension, :math:`b` the
number of kernel centers, :math:`G` the grid size and :math:`F` the folds:

* :class:`ULSIF`, :class:`RuLSIF`: time :math:`O((n_r + n_s)\,b\,(d + G b))`, memory
  :math:`O((n_r + n_s)\,b)`.
* :class:`KLIEP`: time :math:`O((n_r + n_s)\,b\,d + G F S (n_r b^2 + b^3))` with
  :math:`S \approx 30`–:math:`60` Newton steps per fit, memory :math:`O((n_r + n_s)\,b)`.
* :class:`KMM` on :math:`m` synthetic points (all :math:`n_s` when exact, at most
  ``subset_size`` = 5,000 by default): time :math:`O(m(m + n_r)d + G F T m^2)` with :math:`T` the
  FISTA iterations, memory :math:`O(m^2)`; ``weights(x)`` costs :math:`O(|x|\,m\,d)`.

Before allocating a kernel matrix larger than ``memory_limit`` bytes (1 GiB by default, a
class attribute) an estimator emits :class:`KernelMemoryWarning`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

_SIGMA_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)
_BLOCK_BYTES = 64 * 2**20  # row blocks of kernel evaluations stay below this


class DensityRatioWarning(UserWarning):
    """Emitted when a density-ratio estimator does less than asked: fewer cross-validation folds
    than ``folds`` (a sample is smaller), or a solver stopping at its iteration limit before its
    tolerance."""


class KernelMemoryWarning(DensityRatioWarning):
    """Emitted before a density-ratio estimator allocates a kernel matrix larger than its
    ``memory_limit`` (bytes; 1 GiB by default)."""


def _as_sample(x, name: str, d: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"`{name}` must be real numbers; got dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must have shape (n, d); got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (0 samples).")
    if arr.shape[1] == 0:
        raise ValueError(f"`{name}` has no features (shape {arr.shape}).")
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"`{name}` has {arr.shape[1]} features but the estimator was fitted on {d}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or inf.")
    return arr.astype(np.float64)


def _pair(real, synthetic) -> tuple[np.ndarray, np.ndarray]:
    real = _as_sample(real, "real")
    synthetic = _as_sample(synthetic, "synthetic")
    if real.shape[1] != synthetic.shape[1]:
        raise ValueError(
            f"`real` and `synthetic` must have the same number of features; got {real.shape[1]} and "
            f"{synthetic.shape[1]}."
        )
    return real, synthetic


def _positive_grid(values, name: str) -> tuple[float, ...]:
    arr = np.atleast_1d(np.asarray(values))
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) or arr.ndim != 1:
        raise ValueError(f"`{name}` must be positive finite numbers, in (0, inf); got {values!r}.")
    vals = tuple(float(v) for v in arr.astype(np.float64))
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"`{name}` must be positive finite numbers, in (0, inf); got {values!r}.")
    return vals


def _int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"`{name}` must be an int in [{low}, inf); got {value!r}.")
    return int(value)


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < float(value) < math.inf):
        raise ValueError(f"`{name}` must be a finite number in (0, inf); got {value!r}.")
    return float(value)


def _folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), min(k, n))


def _scale(x: np.ndarray) -> float:
    """The power of two at or above ``max |x|`` (1 for an all-zero ``x``): dividing by it is exact."""
    top = float(np.max(np.abs(x), initial=0.0))
    return 1.0 if top == 0 else math.ldexp(1.0, math.frexp(top)[1])


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))`` in float64 (``a``, ``b`` centered and scaled).

    One ``(len(a), len(b))`` allocation: the Gram matrix is turned into distances in place.
    """
    g = a @ b.T
    g *= -2.0
    g += np.sum(a * a, 1)[:, None]
    g += np.sum(b * b, 1)[None, :]
    return np.maximum(g, 0.0, out=g)


def _gauss_d2(d2: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-d2 / (2 sigma^2))`` with one allocation."""
    k = d2 * (-0.5 / (sigma * sigma))
    return np.exp(k, out=k)


def _row_blocks(n: int, cols: int):
    step = max(1, _BLOCK_BYTES // (8 * max(cols, 1)))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def median_distance(x: ArrayLike, max_points: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (a subsample of) the rows of ``x``.

    The rows are shifted by their mean and scaled by a power of two first, so the result is
    exact for features of any magnitude. Costs :math:`O(m^2 d)` time with
    ``m = min(n, max_points)`` and ``O(10^7)`` floats of memory.

    Args:
        x: finite sample, shape ``(n, d)`` (or ``(n,)``).
        max_points: subsample at most this many rows, an int ``>= 2``.
        seed: seeds the subsample.

    Returns:
        The median distance; 1.0 when every distance is 0 (a single or repeated point).

    Examples:
        >>> median_distance([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
        5.0
    """
    x = _as_sample(x, "x")
    max_points = _int("max_points", max_points, 2)
    if x.shape[0] > max_points:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False)]
    x = x - x.mean(0)
    scale = _scale(x)
    x = x / scale
    m, dim = x.shape
    # Row blocks keep the (block, m, d) difference array near 10^7 entries for any d.
    block = max(1, 10_000_000 // max(m * dim, 1))
    d2 = np.concatenate([np.sum((x[i : i + block, None, :] - x[None, :, :]) ** 2, axis=-1) for i in range(0, m, block)])
    d = np.sqrt(d2[np.triu_indices(m, 1)])
    med = float(np.median(d)) * scale if d.size else 0.0
    return med if med > 0 else 1.0


class _KernelEstimator:
    """Shared fitting logic: validation, the shifted and scaled sample, the grid, k-fold CV.

    Subclasses implement ``_fit(real, synthetic, grid, rng) -> (best, scores, state)`` on the
    shifted and scaled data (bandwidths in those units) and ``_predict(state, x)``.
    """

    memory_limit: int = 2**30
    """Bytes: a kernel matrix larger than this triggers :class:`KernelMemoryWarning` before it is allocated."""

    def __init__(
        self,
        *,
        sigmas: Sequence[float] | None = None,
        lambdas: Sequence[float] = _LAMBDAS,
        num_centers: int = 100,
        folds: int = 5,
        seed: int = 0,
    ):
        if sigmas is not None:
            sigmas = _positive_grid(sigmas, "sigmas")
        self.sigmas = sigmas
        self.lambdas = _positive_grid(lambdas, "lambdas")
        self.num_centers = _int("num_centers", num_centers, 1)
        if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
            raise ValueError(f"`folds` must be an int >= 2; got {folds!r}.")
        self.folds = int(folds)
        self.seed = _int("seed", seed, 0)

    def _grid(self, median: float) -> list[tuple[float, float]]:
        sigmas = self.sigmas if self.sigmas is not None else tuple(median * s for s in _SIGMA_SCALES)
        return [(s, lam) for s in sigmas for lam in self.lambdas]

    def _memory_check(self, shape: tuple[int, int], what: str, copies: int = 1) -> None:
        size = 8 * copies * shape[0] * shape[1]
        if size > self.memory_limit:
            warnings.warn(
                f"{type(self).__name__} is about to allocate {what} of shape {shape} in float64 "
                f"({size / 2**30:.1f} GiB in all, memory_limit {self.memory_limit / 2**30:.1f} GiB)."
                + self._memory_hint(),
                KernelMemoryWarning,
                stacklevel=4,
            )

    def _memory_hint(self) -> str:
        return " Lower `num_centers`."

    def _num_folds(self, n_real: int, n_syn: int, grid_size: int) -> int:
        """Folds actually used: 0 without cross-validation (one candidate), else min(folds, n_real, n_syn) >= 2."""
        if grid_size == 1:
            return 0
        k = min(self.folds, n_real, n_syn)
        if k < 2:
            raise ValueError(
                f"choosing among {grid_size} candidate hyperparameters by cross-validation holds out rows of each "
                f"sample in turn and needs at least 2 rows in each: `real` has {n_real} and "
                f"`synthetic` has {n_syn}. Pass more rows, or a single value of `sigmas` (and of `lambdas` where "
                "used) to fit without cross-validation."
            )
        if k < self.folds:
            warnings.warn(
                f"{type(self).__name__}: {k} cross-validation folds instead of {self.folds}: `real` has {n_real} "
                f"rows and `synthetic` {n_syn}.",
                DensityRatioWarning,
                stacklevel=4,
            )
        return k

    def fit(self, real: ArrayLike, synthetic: ArrayLike):
        """Fits the ratio ``p_real / p_syn`` from samples ``real (n_r, d)`` and ``synthetic (n_s, d)``.

        With more than one candidate in the grid, each candidate is scored by k-fold
        cross-validation with ``k = min(folds, rows available to hold out in each sample)``
        (fold ``i`` of the real sample and fold ``i`` of the synthetic sample are held out
        together; fewer than ``folds`` folds emit :class:`DensityRatioWarning`, fewer than 2
        raise ``ValueError``); with a single candidate no cross-validation is run.

        Returns:
            ``self``, with ``sigma_``, ``lam_`` (chosen hyperparameters), ``cv_scores_``
            (``{(sigma, lam): held-out criterion}``, lower is better; empty without
            cross-validation), ``folds_`` (folds used, 0 without cross-validation) and
            ``median_`` (the median pairwise distance of the pooled sample, which scales
            the default grid).
        """
        real, synthetic = _pair(real, synthetic)
        rng = np.random.default_rng(self.seed)
        self.dim_ = real.shape[1]
        # x -> (x / s0 - m0) / s1 with powers of two s0, s1: the mean cannot overflow, nor the
        # centered values, and all kernels are those of the original data (offset_ = s0 m0,
        # scale_ = s0 s1).
        pooled = np.concatenate([real, synthetic])
        s0 = _scale(pooled)
        m0 = (pooled / s0).mean(0)
        s1 = _scale(pooled / s0 - m0)
        self._units = (s0, m0, s1)
        self.offset_, self.scale_ = s0 * m0, s0 * s1
        real, synthetic = self._to_units(real), self._to_units(synthetic)
        self.median_ = median_distance(np.concatenate([real, synthetic]), seed=self.seed) * self.scale_
        grid = [(s / self.scale_, lam) for s, lam in self._grid(self.median_)]
        (sigma, self.lam_), scores, self.state_ = self._fit(real, synthetic, grid, rng)
        self.sigma_ = sigma * self.scale_
        self.cv_scores_ = {(s * self.scale_, lam): v for (s, lam), v in scores.items()}
        return self

    @staticmethod
    def _select(scores: dict) -> tuple[float, float]:
        finite = {k: v for k, v in scores.items() if np.isfinite(v)}
        if not finite:
            raise FloatingPointError("the held-out criterion is not finite for any candidate hyperparameters.")
        return min(finite, key=finite.get)

    def weights(self, x: ArrayLike) -> np.ndarray:
        """Estimated ratio at the rows of ``x`` (shape ``(n, d)``); returns shape ``(n,)``, >= 0."""
        if not hasattr(self, "state_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(real, synthetic) first.")
        x = self._to_units(_as_sample(x, "x", self.dim_))
        points, coef, sigma = self.state_
        points = self._to_units(points)
        sigma = sigma / self.scale_
        out = np.empty(x.shape[0])
        for rows in _row_blocks(x.shape[0], points.shape[0]):
            out[rows] = self._predict(_gauss_d2(_sq_dist(x[rows], points), sigma), coef)
        return out

    @staticmethod
    def _predict(k: np.ndarray, coef: np.ndarray) -> np.ndarray:
        return np.maximum(k @ coef, 0.0)

    def _to_units(self, x: np.ndarray) -> np.ndarray:
        s0, m0, s1 = self._units
        return (x / s0 - m0) / s1

    def _state(self, points: np.ndarray, coef: np.ndarray, sigma: float):
        """The fitted state in the caller's units: (points, coefficients, sigma)."""
        s0, m0, s1 = self._units
        return (points * s1 + m0) * s0, coef, sigma * self.scale_


class _CenterModel(_KernelEstimator):
    r"""Ratio models :math:`w(x) = \sum_l \theta_l k(x, c_l)` with centers drawn from the real sample.

    In cross-validation each fold draws its centers from its own training rows (a held-out
    point that is also a center would score its own kernel); the distances from the
    fold's rows to its centers are computed once and shared by every bandwidth and
    regularization.
    """

    def _centers(self, real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        b = min(self.num_centers, len(real))
        return real[np.sort(rng.choice(len(real), b, replace=False))]

    def _fit(self, real, synthetic, grid, rng):
        n_r, n_s = len(real), len(synthetic)
        self._memory_check((n_r + n_s, min(self.num_centers, n_r)), "the distances to the kernel centers", copies=2)
        k = self._num_folds(n_r, n_s, len(grid))
        self.folds_ = k
        sigmas = sorted({s for s, _ in grid})
        scores = {}
        fr, fs = (_folds(n_r, k, rng), _folds(n_s, k, rng)) if k else ([], [])
        for i in range(k):
            tr_r, tr_s = np.concatenate(fr[:i] + fr[i + 1 :]), np.concatenate(fs[:i] + fs[i + 1 :])
            centers = self._centers(real[tr_r], rng)
            d2 = [_sq_dist(x, centers) for x in (real[tr_r], synthetic[tr_s], real[fr[i]], synthetic[fs[i]])]
            for sigma in sigmas:
                phi_r, phi_s, held_r, held_s = (_gauss_d2(d, sigma) for d in d2)
                lams = [lam for s, lam in grid if s == sigma]
                for lam, coef in zip(lams, self._solve(phi_r, phi_s, lams), strict=True):
                    scores[(sigma, lam)] = (
                        scores.get((sigma, lam), 0.0) + self._criterion(held_r @ coef, held_s @ coef) / k
                    )
        best = self._select(scores) if k else grid[0]
        centers = self._centers(real, rng)
        phi_r, phi_s = _gauss_d2(_sq_dist(real, centers), best[0]), _gauss_d2(_sq_dist(synthetic, centers), best[0])
        (coef,) = self._solve(phi_r, phi_s, [best[1]], final=True)
        return best, scores, self._state(centers, coef, best[0])


class ULSIF(_CenterModel):
    r"""Unconstrained least-squares importance fitting (Kanamori et al., 2009).

    .. math::

        \hat\theta = \arg\min_\theta \ \tfrac12 \theta^\top \hat H \theta - \hat h^\top\theta
        + \tfrac{\lambda}{2}\|\theta\|^2 = (\hat H + \lambda I)^{-1}\hat h,
        \quad \hat H = \tfrac{1}{n_s}\Phi_s^\top\Phi_s,\ \hat h = \tfrac{1}{n_r}\Phi_r^\top \mathbf{1},

    with :math:`\Phi` the kernel features at ``num_centers`` centers drawn from the real
    sample, and :math:`w(x) = \max(\phi(x)^\top\hat\theta, 0)`. :math:`(\sigma, \lambda)`
    minimize the held-out squared error :math:`J = \tfrac12\mathbb{E}_s[w^2] -
    \mathbb{E}_r[w]` (k-fold). Cost: :math:`O((n_r + n_s)\,b\,(d + G b))` time and
    :math:`O((n_r + n_s)\,b)` memory for :math:`b` centers and :math:`G` candidates.

    Args:
        sigmas: bandwidth grid (default: median distance × 0.25 … 4).
        lambdas: ridge grid, all ``> 0``.
        num_centers: kernel centers drawn from the real sample (in cross-validation, from
            each fold's training rows).
        folds: cross-validation folds, ``>= 2``.
        seed: seeds centers and folds.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> real, syn = rng.normal(0.5, 1, (200, 1)), rng.normal(0, 1, (400, 1))
        >>> w = ULSIF(folds=3).fit(real, syn).weights(np.array([[-1.0], [2.0]]))
        >>> bool(w[0] < w[1])
        True

    References:
        Kanamori, Hido & Sugiyama, "A least-squares approach to direct importance
        estimation", JMLR 2009.
    """

    _alpha = 0.0

    def _solve(self, phi_r, phi_s, lams, final=False):
        a = self._alpha
        h_mat = a * (phi_r.T @ phi_r) / len(phi_r) + (1 - a) * (phi_s.T @ phi_s) / len(phi_s)
        h = phi_r.mean(0)
        eye = np.eye(len(h))
        return [np.linalg.solve(h_mat + lam * eye, h) for lam in lams]

    def _criterion(self, fr, fs):
        wr, ws = np.maximum(fr, 0.0), np.maximum(fs, 0.0)
        a = self._alpha
        return float(0.5 * a * np.mean(wr**2) + 0.5 * (1 - a) * np.mean(ws**2) - np.mean(wr))


class RuLSIF(ULSIF):
    r"""Relative uLSIF (Yamada et al., 2011): the bounded *relative* ratio.

    .. math::

        w_\alpha(x) = \frac{p_{\rm real}(x)}{\alpha\, p_{\rm real}(x) + (1-\alpha)\, p_{\rm syn}(x)}
        \le \frac{1}{\alpha},

    fitted like :class:`ULSIF` with :math:`\hat H = \frac{\alpha}{n_r}\Phi_r^\top\Phi_r +
    \frac{1-\alpha}{n_s}\Phi_s^\top\Phi_s` and held-out criterion
    :math:`J = \tfrac{\alpha}{2}\mathbb{E}_r[w^2] + \tfrac{1-\alpha}{2}\mathbb{E}_s[w^2] - \mathbb{E}_r[w]`.
    :math:`w_\alpha` is a monotone transform of the plain ratio (same ranking, bounded,
    lower variance); ``alpha=0`` is uLSIF. Cost as :class:`ULSIF`.

    Args:
        alpha: relative parameter in ``[0, 1)``.
        **kwargs: as :class:`ULSIF`.

    References:
        Yamada, Suzuki, Kanamori, Hachiya & Sugiyama, "Relative density-ratio estimation
        for robust distribution comparison", NeurIPS 2011.
    """

    def __init__(self, alpha: float = 0.1, **kwargs: Any):
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= float(alpha) < 1.0:
            raise ValueError(f"`alpha` must be in [0, 1); got {alpha!r}.")
        super().__init__(**kwargs)
        self._alpha = float(alpha)


class KLIEP(_CenterModel):
    r"""Kullback–Leibler importance estimation procedure (Sugiyama et al., 2008).

    .. math::

        \max_{\beta \ge 0}\ \frac{1}{n_r}\sum_{j} \log \phi(x^r_j)^\top\beta
        \quad\text{s.t.}\quad \frac{1}{n_s}\sum_i \phi(x^s_i)^\top\beta = 1,

    i.e. the maximum-likelihood ratio model of the real sample normalized over the
    synthetic one; :math:`w(x) = \phi(x)^\top\beta`. Substituting :math:`\beta_l =
    \pi_l / b_l` (:math:`b = \frac1{n_s}\Phi_s^\top\mathbf 1`) makes it a mixture-weight
    likelihood over the simplex, :math:`\max_{\pi\in\Delta} \frac1{n_r}\sum_j \log
    (A\pi)_j` with :math:`A = \Phi_r \operatorname{diag}(1/b)`, solved by a log-barrier
    interior-point (damped Newton) method in float64 until the KKT gap
    :math:`\max_l (A^\top(1/A\pi))_l / n_r - 1` is below ``tol``; the gap also bounds the
    log-likelihood's distance to its maximum (Cover, 1984). Real rows with
    :math:`\phi = 0` (no center within reach) contribute a constant and centers with
    :math:`b_l = 0` get :math:`\beta_l = 0`. :math:`\sigma` maximizes the held-out
    log-likelihood :math:`\mathbb{E}_r \log w` (k-fold); there is no regularization.
    Cost: :math:`O((n_r + n_s)\,b\,d)` for the kernels plus :math:`O(S(n_r b^2 + b^3))`
    per fit (:math:`S \approx 30`–:math:`60` Newton steps), memory
    :math:`O((n_r + n_s)\,b)` for :math:`b` centers.

    Args:
        sigmas: bandwidth grid (default: median distance × 0.25 … 4).
        num_centers: kernel centers drawn from the real sample (in cross-validation, from
            each fold's training rows).
        folds: cross-validation folds, ``>= 2``.
        seed: seeds centers and folds.
        max_iter: Newton steps at most, an int ``>= 1`` (:class:`DensityRatioWarning` if
            the final fit stops there before ``tol``).
        tol: KKT-gap tolerance, in ``(0, inf)``.

    References:
        Sugiyama, Suzuki, Nakajima, Kashima, von Bünau & Kawanabe, "Direct importance
        estimation for covariate shift adaptation", AISM 2008. Cover, "An algorithm for
        maximizing expected log investment return", IEEE Trans. Inf. Theory 1984.
    """

    def __init__(
        self,
        *,
        sigmas: Sequence[float] | None = None,
        num_centers: int = 100,
        folds: int = 5,
        seed: int = 0,
        max_iter: int = 500,
        tol: float = 1e-6,
    ):
        super().__init__(sigmas=sigmas, lambdas=(1.0,), num_centers=num_centers, folds=folds, seed=seed)
        self.max_iter = _int("max_iter", max_iter, 1)
        self.tol = _positive_float("tol", tol)

    def _solve(self, phi_r, phi_s, lams, final=False):
        b = phi_s.mean(0)
        usable = b > 0
        theta = np.zeros(len(b))
        gap, steps = 0.0, 0
        if np.any(usable):
            pi, gap, steps = _kliep_newton(phi_r[:, usable] / b[usable], self.tol, self.max_iter)
            theta[usable] = pi / b[usable]
        if final:
            self.kkt_gap_, self.n_iter_ = gap, steps
            if not gap <= self.tol:
                warnings.warn(
                    f"KLIEP stopped after max_iter={self.max_iter} Newton steps with KKT gap {gap:.2e} > "
                    f"tol={self.tol}.",
                    DensityRatioWarning,
                    stacklevel=4,
                )
        return [theta] * len(lams)

    def _criterion(self, fr, fs):
        return float(-np.mean(np.log(np.maximum(fr, 1e-300))))


def _kliep_newton(a: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, float, int]:
    r"""Maximizes :math:`\frac1n\sum_j \log(a_j^\top\pi)` over the simplex (``a >= 0``, float64).

    Equivalent to :math:`\min_{\pi \ge 0} g(\pi) = -\frac1n\sum_j\log(a_j^\top\pi) +
    \mathbf 1^\top\pi` (at its minimum :math:`\mathbf 1^\top\pi = 1`). Barrier method on
    :math:`t\,g(\pi) - \sum_l \log\pi_l`: damped Newton steps (in the variables scaled by
    :math:`\pi`, fraction-to-boundary 0.99, Armijo backtracking), ``t`` multiplied by 8 when
    the Newton decrement is small, until the KKT gap of :math:`\pi / \mathbf 1^\top\pi` is at
    most ``tol``. Returns ``(pi, gap, steps)``.
    """
    rows = np.any(a > 0, axis=1)
    a = a[rows]
    n, m = a.shape
    if n == 0:  # no real row within reach of any center: every pi has the same (-inf) likelihood
        return np.full(m, 1.0 / m), 0.0, 0

    def kkt_gap(x):
        xn = x / x.sum()
        return float(np.max(a.T @ (1.0 / (a @ xn))) / n - 1.0)

    def barrier(x, t):
        ax = a @ x
        if np.any(x <= 0) or np.any(ax <= 0):
            return math.inf
        return t * (-np.mean(np.log(ax)) + x.sum()) - np.sum(np.log(x))

    x = np.full(m, 1.0 / m)
    t = float(m)
    gap = kkt_gap(x)
    steps = 0
    while gap > tol and steps < max_iter:
        steps += 1
        r = 1.0 / (a @ x)
        grad = t * (1.0 - a.T @ r / n) - 1.0 / x
        ax_scaled = a * x[None, :]  # Newton system in u = pi / x: (X H X + I) du = -X grad
        hess = t * (ax_scaled.T * (r * r / n)[None, :]) @ ax_scaled + np.eye(m)
        try:
            du = -np.linalg.solve(hess, x * grad)
        except np.linalg.LinAlgError:
            break
        step = x * du
        decrement = float(-(x * grad) @ du)
        neg = step < 0
        alpha = min(1.0, 0.99 * float(np.min(-x[neg] / step[neg]))) if np.any(neg) else 1.0
        f0 = barrier(x, t)
        slope = float(grad @ step)
        while alpha > 1e-12 and barrier(x + alpha * step, t) > f0 + 0.25 * alpha * slope:
            alpha *= 0.5
        if alpha <= 1e-12:  # no progress at this t: the current point is centered to precision
            t *= 8.0
        else:
            x = x + alpha * step
        if decrement < 1e-3:
            t *= 8.0
        gap = kkt_gap(x)
    return x / x.sum(), gap, steps


class KMM(_KernelEstimator):
    r"""Kernel mean matching (Huang et al., 2007).

    .. math::

        \min_{\beta}\ \tfrac12\beta^\top K\beta - \kappa^\top\beta
        \quad\text{s.t.}\quad 0 \le \beta_i \le B,\ \ \Big|\sum_i\beta_i - m\Big| \le m\epsilon,

    :math:`K_{ii'} = k(x^s_i, x^s_{i'})` over :math:`m` synthetic points, :math:`\kappa_i =
    \frac{m}{n_r}\sum_j k(x^s_i, x^r_j)` over all real points: the weights that match the
    kernel mean of the reweighted synthetic points to the real one. Solved by accelerated
    projected gradient (FISTA with adaptive restart, step :math:`1/\|K\|`, exact projection
    onto the box-and-slab set by bisection on the shift) until no weight moves by more than
    ``tol`` in a step, or ``iterations``.

    KMM gives weights ``beta_`` at the :math:`m` synthetic points only; ``weights(x)``
    extends them to any ``x`` by kernel smoothing, :math:`w(x) = \sum_i k(x, x^s_i)\beta_i /
    \sum_i k(x, x^s_i)`. :math:`\sigma` minimizes the held-out squared MMD between the
    reweighted held-out synthetic and the held-out real sample, measured with a fixed kernel
    (median bandwidth) so candidates are comparable.

    **Cost and the subset approximation.** The exact problem uses all :math:`m = n_s`
    synthetic points: :math:`O(n_s^2)` memory and :math:`O(n_s(n_s + n_r)d + G F T n_s^2)`
    time for :math:`G` bandwidths, :math:`F` folds and :math:`T` iterations (hours and
    several GB at :math:`n_s = 20{,}000`). Above ``subset_size`` synthetic rows
    (``approximation="auto"``, the default) KMM is solved on a uniformly drawn subset of
    ``subset_size`` synthetic rows (the real kernel mean still uses every real row, in
    blocks), and every other point gets its weight from the kernel smoother above: memory
    :math:`O(m^2)` with :math:`m` = ``subset_size``, time :math:`O(m(m + n_r)d + G F T m^2)`,
    and ``weights(x)`` :math:`O(|x|\,m\,d)`. ``approximation="exact"`` always uses every
    synthetic row (emitting :class:`KernelMemoryWarning` first when the kernel matrices
    exceed ``memory_limit``); ``"subset"`` always uses the subset. ``approximation_`` and
    ``support_`` (the synthetic rows that carry ``beta_``) record what was done.

    Args:
        bound: :math:`B > 0`, the largest weight.
        epsilon: slack :math:`\epsilon \ge 0` on the total weight (default
            :math:`(\sqrt{m}-1)/\sqrt{m}` as in Huang et al.).
        sigmas: bandwidth grid (default: median distance × 0.25 … 4).
        folds: cross-validation folds, ``>= 2``.
        seed: seeds the folds and the subset.
        iterations: FISTA iterations at most, an int ``>= 1``.
        tol: stop when a FISTA step moves no weight by more than this, in ``(0, inf)``.
        approximation: ``"auto"``, ``"exact"`` or ``"subset"`` (see above).
        subset_size: synthetic rows of the subset approximation, an int ``>= 2``.

    References:
        Huang, Smola, Gretton, Borgwardt & Schölkopf, "Correcting sample selection bias by
        unlabeled data", NeurIPS 2007. O'Donoghue & Candès, "Adaptive restart for
        accelerated gradient schemes", FoCM 2015.
    """

    def __init__(
        self,
        *,
        bound: float = 1000.0,
        epsilon: float | None = None,
        sigmas: Sequence[float] | None = None,
        folds: int = 5,
        seed: int = 0,
        iterations: int = 2000,
        tol: float = 1e-4,
        approximation: str = "auto",
        subset_size: int = 5000,
    ):
        super().__init__(sigmas=sigmas, lambdas=(1.0,), folds=folds, seed=seed)
        self.bound = _positive_float("bound", bound)
        if epsilon is not None:
            if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not 0 <= epsilon < math.inf:
                raise ValueError(f"`epsilon` must be a finite number in [0, inf); got {epsilon!r}.")
            epsilon = float(epsilon)
        self.epsilon = epsilon
        self.iterations = _int("iterations", iterations, 1)
        self.tol = _positive_float("tol", tol)
        if approximation not in ("auto", "exact", "subset"):
            raise ValueError(f"`approximation` must be 'auto', 'exact' or 'subset'; got {approximation!r}.")
        self.approximation = approximation
        self.subset_size = _int("subset_size", subset_size, 2)

    def _memory_hint(self) -> str:
        return " Use approximation='subset' (or 'auto') with a smaller `subset_size`."

    def _fit(self, real, synthetic, grid, rng):
        n_s, n_r = len(synthetic), len(real)
        subset = self.approximation == "subset" or (self.approximation == "auto" and n_s > self.subset_size)
        if subset and n_s > self.subset_size:
            support = np.sort(rng.choice(n_s, self.subset_size, replace=False))
        else:
            support = np.arange(n_s)
        self.approximation_ = "subset" if len(support) < n_s else "exact"
        self.support_ = support
        points = synthetic[support]
        m = len(points)
        self._memory_check((m, m), "the synthetic kernel matrices", copies=6)
        k = self._num_folds(n_r, m, len(grid))
        self.folds_ = k
        fr = _folds(n_r, k, rng) if k else [np.arange(0)]
        fs = _folds(m, k, rng) if k else []
        sigmas = sorted({s for s, _ in grid})
        med = self.median_ / self.scale_
        d_ss = _sq_dist(points, points)
        # Real kernel sums per real fold, for every bandwidth and the median one, accumulated over
        # row blocks of the real sample (never an (m, n_r) matrix).
        fold_of = np.zeros(n_r, dtype=np.int64)
        for f, rows in enumerate(fr):
            fold_of[rows] = f
        nf = max(k, 1)
        sums = {s: np.zeros((nf, m)) for s in [*sigmas, med]}
        rr = np.zeros(nf)  # sum of the median kernel over held-out real pairs, per fold
        for rows in _row_blocks(n_r, m):
            d_sr = _sq_dist(points, real[rows])
            for s, acc in sums.items():
                kb = _gauss_d2(d_sr, s)
                for f in range(nf):
                    acc[f] += kb[:, fold_of[rows] == f].sum(1)
        if k:
            for f, rows in enumerate(fr):
                held = real[rows]
                for blk in _row_blocks(len(held), len(held)):
                    rr[f] += _gauss_d2(_sq_dist(held[blk], held), med).sum()
        scores = {}
        for sigma in sigmas if k else []:
            total = sums[sigma].sum(0)
            k_ss = _gauss_d2(d_ss, sigma)
            for i in range(k):
                tr = np.setdiff1d(np.arange(m), fs[i])
                te = fs[i]
                n_rtr = n_r - len(fr[i])
                kappa = len(tr) / n_rtr * (total - sums[sigma][i])[tr]
                beta = self._solve(k_ss[np.ix_(tr, tr)], kappa)
                w = self._predict(k_ss[np.ix_(te, tr)], beta)
                w = w / max(w.mean(), 1e-300)
                kss = _gauss_d2(d_ss[np.ix_(te, te)], med)
                n_te, n_rte = len(te), len(fr[i])
                mmd = w @ kss @ w / n_te**2 + rr[i] / n_rte**2 - 2 * w @ sums[med][i][te] / (n_te * n_rte)
                scores[(sigma, 1.0)] = scores.get((sigma, 1.0), 0.0) + float(mmd) / k
        best = self._select(scores) if k else grid[0]
        kappa = m / n_r * sums[best[0]].sum(0)
        beta = self._solve(_gauss_d2(d_ss, best[0]), kappa, final=True)
        self.beta_ = beta
        return best, scores, self._state(points, beta, best[0])

    def _solve(self, k_mat, kappa, final=False):
        m = len(kappa)
        eps = (math.sqrt(m) - 1) / math.sqrt(m) if self.epsilon is None else self.epsilon
        beta, moved, steps = _kmm(
            jnp.asarray(k_mat), jnp.asarray(kappa), self.bound, m * max(1 - eps, 0), m * (1 + eps), self.iterations,
            self.tol,
        )  # fmt: skip
        if final:
            self.n_iter_, self.last_step_ = int(steps), float(moved)
            if not float(moved) <= self.tol:
                warnings.warn(
                    f"KMM stopped after iterations={self.iterations} FISTA steps; the last step moved a weight by "
                    f"{float(moved):.2e} > tol={self.tol}.",
                    DensityRatioWarning,
                    stacklevel=4,
                )
        return np.asarray(beta, dtype=np.float64)

    @staticmethod
    def _predict(k, coef):
        return (k @ coef) / np.maximum(k.sum(1), 1e-300)


@jax.jit
def _kmm(k, kappa, bound, lo, hi, iterations, tol):
    """FISTA with adaptive restart on 1/2 b'Kb - kappa'b over {0 <= b <= bound, lo <= sum b <= hi}."""
    bound = jnp.asarray(bound, k.dtype)

    def project(v):
        def total(tau):
            return jnp.sum(jnp.clip(v - tau, 0, bound))

        def bisect(target):
            lo_t, hi_t = jnp.min(v) - bound, jnp.max(v)  # total(lo_t) = n·B >= target, total(hi_t) = 0

            def body(_, br):
                a, b = br
                mid = 0.5 * (a + b)
                big = total(mid) > target
                return jnp.where(big, mid, a), jnp.where(big, b, mid)

            a, b = jax.lax.fori_loop(0, 100, body, (lo_t, hi_t))
            return 0.5 * (a + b)

        s0 = total(0.0)
        tau = jnp.where(s0 > hi, bisect(hi), jnp.where(s0 < lo, bisect(lo), 0.0))
        return jnp.clip(v - tau, 0, bound)

    # Largest eigenvalue of K by power iteration (K is PSD): the gradient's Lipschitz constant.
    def power(_, v):
        v = k @ v
        return v / jnp.linalg.norm(v)

    v = jax.lax.fori_loop(0, 50, power, jnp.ones_like(kappa) / jnp.sqrt(kappa.shape[0]))
    step = 1.0 / (1.01 * (v @ k @ v))

    def cond(carry):
        i, _, _, _, moved = carry
        return (i < iterations) & (moved > tol)

    def body(carry):
        i, beta, z, t, _ = carry
        grad = k @ z - kappa
        new = project(z - step * grad)
        moved = jnp.max(jnp.abs(new - z))  # the projected-gradient step at z: 0 exactly at the optimum
        t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
        restart = grad @ (new - beta) > 0  # momentum pointing uphill: restart (O'Donoghue & Candès)
        z = jnp.where(restart, new, new + (t - 1) / t_new * (new - beta))
        return i + 1, new, z, jnp.where(restart, 1.0, t_new), moved

    beta0 = project(jnp.ones_like(kappa))
    init = (0, beta0, beta0, jnp.ones((), kappa.dtype), jnp.asarray(jnp.inf, kappa.dtype))
    steps, beta, _, _, moved = jax.lax.while_loop(cond, body, init)
    return beta, moved, steps


class ProbabilisticClassifier:
    r"""Density ratio from a calibrated real-vs-synthetic classifier.

    .. math::

        w(x) = \frac{n_s}{n_r}\exp\big(f(x)/T\big),
        \qquad f(x) = \log\frac{P(\text{real}\mid x)}{P(\text{synthetic}\mid x)},

    with :math:`f` the logit of a classifier trained on the pooled sample and :math:`T` a
    temperature fitted on a held-out split (calibration). Three model families:

    - ``"logistic"``: :math:`f(x) = a^\top x + b`, exact when the log-ratio is linear
      (two Gaussians with equal covariance);
    - ``"quadratic"``: logistic regression on :math:`(x_i)_i` and :math:`(x_i x_j)_{i \le j}`
      (only the squares :math:`x_i^2` when ``d > 20``), exact for any two Gaussians: a
      variance shift makes the log-ratio quadratic;
    - ``"mlp"``: a ReLU network (full-batch AdamW, the epoch with the best log loss kept;
      early stopping on the held-out rows when the MLP is the only candidate, else on a
      fifth of the training rows, so that the held-out rows compare families fairly).

    Model selection (the default ``model="auto"`` tries all three): every family is trained
    with every L2 strength of ``l2`` (weight decay for the MLP) on the training rows, and
    the pair with the lowest log loss on the held-out rows is kept (ties go to the simpler
    family). The temperature is then fitted on the same held-out rows. Features are
    standardized on the training rows first. Choosing a richer family than needed costs
    little (the quadratic model contains the linear one), while a too simple one cannot
    represent the ratio; so the rule does not penalize complexity beyond the held-out loss
    (a one-standard-error rule kept the linear model on 2 of 20 variance-shift samples of
    300/600 rows, with Spearman 0.66).

    Args:
        model: ``"auto"`` (= ``("logistic", "quadratic", "mlp")``), one of those names, or
            a tuple of them to choose from.
        l2: regularization grid, each ``>= 0``.
        hidden: hidden layer sizes of the MLP.
        epochs: MLP training epochs at most (full batch, AdamW).
        patience: stop the MLP after this many epochs without improvement on its early-stopping rows.
        learning_rate: MLP learning rate.
        holdout: fraction of each sample held out for selection and calibration.
        seed: seeds the split and the MLP's initialization.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(0.0, 1.0, (300, 2))          # a variance shift:
        >>> synthetic = rng.normal(0.0, 1.5, (600, 2))     # the log-ratio is quadratic
        >>> est = ProbabilisticClassifier(seed=0).fit(real, synthetic)
        >>> est.model_
        'quadratic'
        >>> w = est.weights(np.array([[0.0, 0.0], [3.0, 3.0]]))
        >>> bool(w[0] > 1.0 > w[1])
        True

    References:
        Bickel, Brückner & Scheffer, "Discriminative learning under covariate shift",
        JMLR 2009; Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural
        networks", ICML 2017 (temperature scaling).
    """

    MODELS = ("logistic", "quadratic", "mlp")
    _FULL_QUADRATIC_MAX_DIM = 20

    def __init__(
        self,
        model: str | Sequence[str] = "auto",
        *,
        l2: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
        hidden: Sequence[int] = (64, 64),
        epochs: int = 500,
        patience: int = 50,
        learning_rate: float = 1e-2,
        holdout: float = 0.25,
        seed: int = 0,
    ):
        names = self.MODELS if model == "auto" else (model,) if isinstance(model, str) else tuple(model)
        if not names or any(m not in self.MODELS for m in names) or len(set(names)) != len(names):
            raise ValueError(f"`model` must be 'auto', one of {self.MODELS} or a tuple of them; got {model!r}.")
        l2 = tuple(float(v) for v in np.atleast_1d(l2))
        if not l2 or not all(math.isfinite(v) and v >= 0 for v in l2):
            raise ValueError(f"`l2` must be non-negative finite numbers, in [0, inf); got {l2!r}.")
        if not 0.0 < float(holdout) < 1.0:
            raise ValueError(f"`holdout` must be in (0, 1); got {holdout!r}.")
        hidden = tuple(int(h) for h in hidden)
        if not all(h >= 1 for h in hidden):
            raise ValueError(f"`hidden` must be positive ints; got {hidden!r}.")
        if int(epochs) < 1 or int(patience) < 1:
            raise ValueError(f"`epochs` and `patience` must be >= 1; got {epochs!r} and {patience!r}.")
        if not (math.isfinite(float(learning_rate)) and float(learning_rate) > 0):
            raise ValueError(f"`learning_rate` must be in (0, inf); got {learning_rate!r}.")
        self.model, self.l2, self.hidden = model, l2, hidden
        self.epochs, self.patience, self.learning_rate = int(epochs), int(patience), float(learning_rate)
        self.holdout, self.seed = holdout, seed
        self._candidates = tuple(m for m in self.MODELS if m in names)  # simplest first

    def _features(self, z, model):
        if model != "quadratic":
            return z
        d = z.shape[1]
        if d > self._FULL_QUADRATIC_MAX_DIM:
            return np.concatenate([z, z * z], axis=1)
        i, j = np.triu_indices(d)
        return np.concatenate([z, z[:, i] * z[:, j]], axis=1)

    def _train(self, x, y, l2, model, val=None):
        """Trains one candidate; returns ``logit(z)`` (z standardized features, numpy in/out).

        The MLP stops early on ``val`` (rows, labels) if given, else on a fifth of ``x``.
        """
        if model != "mlp":
            from robustlearn._src.objectives import base as _objectives
            from robustlearn._src.training.linear import fit_linear

            feats = self._features(x, model)
            sol = fit_linear(feats.astype(np.float32), y, _objectives.erm(), loss="logistic", l2=l2)
            w, b = np.asarray(sol.params["w"], np.float64), float(sol.params["b"])
            return lambda z: self._features(z, model) @ w + b

        sizes = (x.shape[1], *self.hidden, 1)
        keys = jax.random.split(jax.random.key(self.seed), len(sizes) - 1)
        init = jax.nn.initializers.lecun_normal()
        params0 = [
            (init(k, (a, b), jnp.float32), jnp.zeros((b,), jnp.float32))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]
        if val is None:
            stop = np.zeros(len(x), bool)
            stop[np.random.default_rng(self.seed).permutation(len(x))[: max(1, len(x) // 5)]] = True
            x, y, val = x[~stop], y[~stop], (x[stop], y[stop])
        f32 = np.float32
        params = self._fit_mlp(
            params0, x.astype(f32), y.astype(f32), val[0].astype(f32), val[1].astype(f32),
            f32(self.learning_rate), f32(l2), self.epochs, self.patience,
        )  # fmt: skip
        params = jax.device_get(params)
        return lambda z: np.asarray(self._mlp(params, z.astype(np.float32)), np.float64)

    @staticmethod
    def _mlp(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b[None, :])
        w, b = params[-1]
        return x @ w[:, 0] + b[0]

    @staticmethod
    @jax.jit
    def _fit_mlp(params, x, y, xv, yv, learning_rate, weight_decay, epochs, patience):
        """Full-batch AdamW; keeps the parameters of the epoch with the best held-out log loss."""
        mlp = ProbabilisticClassifier._mlp
        opt = optax.adamw(learning_rate, weight_decay=weight_decay)

        def loss(p, a, t):
            return jnp.mean(optax.sigmoid_binary_cross_entropy(mlp(p, a), t))

        def cond(carry):
            epoch, since, *_ = carry
            return (epoch < epochs) & (since < patience)

        def body(carry):
            epoch, since, p, state, best, best_val = carry
            grads = jax.grad(loss)(p, x, y)
            updates, state = opt.update(grads, state, p)
            p = optax.apply_updates(p, updates)
            val = loss(p, xv, yv)
            better = val < best_val
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, best)
            return epoch + 1, jnp.where(better, 0, since + 1), p, state, best, jnp.minimum(val, best_val)

        zero = jnp.zeros((), jnp.int32)
        start = (zero, zero, params, opt.init(params), params, loss(params, xv, yv))
        return jax.lax.while_loop(cond, body, start)[4]

    def fit(self, real: ArrayLike, synthetic: ArrayLike) -> ProbabilisticClassifier:
        """Fits the candidate classifiers, selects one and fits its temperature; see the class docstring.

        Returns:
            ``self``, with ``model_`` (the chosen family), ``l2_``, ``temperature_`` and
            ``cv_scores_`` (``{(model, l2): held-out log loss}``).
        """
        real, synthetic = _pair(real, synthetic)
        if len(real) < 2 or len(synthetic) < 2:
            raise ValueError("`real` and `synthetic` need at least 2 samples each (one is held out).")
        rng = np.random.default_rng(self.seed)
        self.dim_ = real.shape[1]
        x = np.concatenate([real, synthetic])
        y = np.concatenate([np.ones(len(real)), np.zeros(len(synthetic))])
        held = np.zeros(len(x), bool)
        for idx in (np.arange(len(real)), len(real) + np.arange(len(synthetic))):
            k = max(1, int(round(self.holdout * len(idx))))
            held[rng.choice(idx, k, replace=False)] = True
        self.mean_, self.scale_ = x[~held].mean(0), x[~held].std(0) + 1e-12
        z = (x - self.mean_) / self.scale_
        fits, scores = {}, {}
        for model in self._candidates:
            for l2 in self.l2:
                # Alone, the MLP stops early on the held-out rows; competing with the linear
                # families it stops on a fifth of the training rows, so that the held-out rows
                # score every family on equal terms.
                val = (z[held], y[held]) if len(self._candidates) == 1 else None
                f = self._train(z[~held], y[~held], l2, model, val)
                fits[model, l2], scores[model, l2] = f, _log_loss(f(z[held]), y[held])
        self.cv_scores_ = scores
        finite = {key: v for key, v in scores.items() if np.isfinite(v)}
        if not finite:
            raise FloatingPointError("the held-out log loss is not finite for any candidate model.")
        # The lowest held-out log loss over every (family, l2); ties go to the simpler family.
        self.model_, self.l2_ = min(finite, key=lambda key: (finite[key], self.MODELS.index(key[0])))
        self._logit = fits[self.model_, self.l2_]
        self.temperature_ = _temperature(self._logit(z[held]), y[held])
        tr = ~held
        self._prior = float(np.sum(tr & (y == 0)) / np.sum(tr & (y == 1)))
        return self

    def _refit(self, real: ArrayLike, synthetic: ArrayLike) -> ProbabilisticClassifier:
        """A copy refitted on all of ``real`` and ``synthetic``, keeping this fit's choices.

        The family, L2 strength, standardization and temperature are this fit's; nothing is
        held out, so (for the linear families) the refit is a deterministic function of the
        rows. ``importance.divergence`` cross-fits with it.
        """
        if not hasattr(self, "_logit"):
            raise RuntimeError("ProbabilisticClassifier is not fitted: call fit(real, synthetic) first.")
        real, synthetic = _pair(real, synthetic)
        x = np.concatenate([real, synthetic])
        y = np.concatenate([np.ones(len(real)), np.zeros(len(synthetic))])
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._logit = self._train((x - self.mean_) / self.scale_, y, self.l2_, self.model_)
        new._prior = len(synthetic) / len(real)
        return new

    def weights(self, x: ArrayLike) -> np.ndarray:
        """Estimated ratio at the rows of ``x`` (shape ``(n, d)``); returns shape ``(n,)``, > 0."""
        if not hasattr(self, "_logit"):
            raise RuntimeError("ProbabilisticClassifier is not fitted: call fit(real, synthetic) first.")
        x = _as_sample(x, "x", self.dim_)
        logit = self._logit((x - self.mean_) / self.scale_) / self.temperature_
        return self._prior * np.exp(np.clip(logit, -700, 700))


def _xy(x, y) -> dict:
    return {"x": x.astype(np.float32), "y": y.astype(np.float32)}


def _log_loss(logit, y) -> float:
    return float(np.mean(np.logaddexp(0, -logit) * y + np.logaddexp(0, logit) * (1 - y)))


def _temperature(logit, y) -> float:
    """The temperature T > 0 minimizing the log loss of logit / T (golden-section on log T)."""
    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _log_loss(logit / math.exp(a), y), _log_loss(logit / math.exp(b), y)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _log_loss(logit / math.exp(a), y)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _log_loss(logit / math.exp(b), y)
    return math.exp(0.5 * (lo + hi))

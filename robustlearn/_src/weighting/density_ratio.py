r"""Density-ratio estimation between real and synthetic samples.

Every estimator estimates

.. math::

    w(x) = \frac{p_{\rm real}(x)}{p_{\rm syn}(x)}

from a sample of each, with one interface: ``est.fit(real, synthetic)`` then
``est.weights(x)`` (shape ``(n,)``). Hyperparameters (kernel bandwidth, regularization)
are chosen by each method's own held-out criterion over a grid; the chosen values and
the criterion of every candidate are kept on the fitted estimator (``cv_scores_``).

The kernel methods use a Gaussian kernel
:math:`k(x, c) = \exp(-\|x - c\|^2 / (2\sigma^2))` with centers drawn from the real
sample and the default bandwidth grid scaled by the median pairwise distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

_SIGMA_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)


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
    vals = tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64)))
    if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"`{name}` must be positive finite numbers, in (0, inf); got {values!r}.")
    return vals


def _folds(n: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    return np.array_split(rng.permutation(n), min(k, n))


def median_distance(x: np.ndarray, max_points: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (a subsample of) the rows of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] > max_points:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False)]
    m, dim = x.shape
    # Row blocks keep the (block, m, d) difference array near 10^7 entries for any d.
    block = max(1, 10_000_000 // max(m * dim, 1))
    d2 = np.concatenate([np.sum((x[i : i + block, None, :] - x[None, :, :]) ** 2, axis=-1) for i in range(0, m, block)])
    d = np.sqrt(d2[np.triu_indices(m, 1)])
    med = float(np.median(d)) if d.size else 0.0
    return med if med > 0 else 1.0


@jax.jit
def _gauss(x, c, sigma):
    d2 = jnp.sum(x * x, 1)[:, None] + jnp.sum(c * c, 1)[None, :] - 2 * x @ c.T
    return jnp.exp(-jnp.maximum(d2, 0) / (2 * sigma * sigma))


class _KernelEstimator:
    """Shared fitting logic: bandwidth/regularization grid, k-fold CV, refit on all data."""

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
        if isinstance(num_centers, bool) or not isinstance(num_centers, int) or num_centers < 1:
            raise ValueError(f"`num_centers` must be a positive int; got {num_centers!r}.")
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(f"`folds` must be an int >= 2; got {folds!r}.")
        self.num_centers, self.folds, self.seed = num_centers, folds, seed

    def _grid(self):
        sigmas = self.sigmas if self.sigmas is not None else tuple(self.median_ * s for s in _SIGMA_SCALES)
        return [(s, lam) for s in sigmas for lam in self.lambdas]

    def fit(self, real: ArrayLike, synthetic: ArrayLike):
        """Fits the ratio ``p_real / p_syn`` from samples ``real (n_r, d)`` and ``synthetic (n_s, d)``.

        Returns:
            ``self``, with ``sigma_``, ``lam_`` (chosen hyperparameters), ``cv_scores_``
            (``{(sigma, lam): held-out criterion}``, lower is better) and ``median_`` (the
            median pairwise distance of the pooled sample, which scales the default grid).
        """
        real, synthetic = _pair(real, synthetic)
        rng = np.random.default_rng(self.seed)
        self.dim_ = real.shape[1]
        self.median_ = median_distance(np.concatenate([real, synthetic]), seed=self.seed)
        grid = self._grid()
        fr, fs = _folds(len(real), self.folds, rng), _folds(len(synthetic), self.folds, rng)
        scores = {}
        for sigma, lam in grid:
            total = 0.0
            for i in range(len(fr)):
                tr_r, te_r = np.concatenate(fr[:i] + fr[i + 1 :]), fr[i]
                tr_s, te_s = np.concatenate(fs[:i] + fs[i + 1 :]), fs[i % len(fs)]
                state = self._solve(real[tr_r], synthetic[tr_s], sigma, lam, rng)
                total += self._criterion(state, real[te_r], synthetic[te_s])
            scores[(sigma, lam)] = total / len(fr)
        finite = {k: v for k, v in scores.items() if np.isfinite(v)}
        if not finite:
            raise FloatingPointError("the held-out criterion is not finite for any candidate hyperparameters.")
        self.sigma_, self.lam_ = min(finite, key=finite.get)
        self.cv_scores_ = scores
        self.state_ = self._solve(real, synthetic, self.sigma_, self.lam_, rng)
        return self

    def _centers(self, real, rng):
        k = min(self.num_centers, len(real))
        return real[np.sort(rng.choice(len(real), k, replace=False))]

    def weights(self, x: ArrayLike) -> np.ndarray:
        """Estimated ratio at the rows of ``x`` (shape ``(n, d)``); returns shape ``(n,)``, >= 0."""
        if not hasattr(self, "state_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(real, synthetic) first.")
        x = _as_sample(x, "x", self.dim_)
        return np.asarray(self._predict(self.state_, x), dtype=np.float64)

    def _predict(self, state, x):
        centers, theta, sigma = state
        return np.maximum(np.asarray(_gauss(x, centers, sigma)) @ theta, 0.0)


class ULSIF(_KernelEstimator):
    r"""Unconstrained least-squares importance fitting (Kanamori et al., 2009).

    .. math::

        \hat\theta = \arg\min_\theta \ \tfrac12 \theta^\top \hat H \theta - \hat h^\top\theta
        + \tfrac{\lambda}{2}\|\theta\|^2 = (\hat H + \lambda I)^{-1}\hat h,
        \quad \hat H = \tfrac{1}{n_s}\Phi_s^\top\Phi_s,\ \hat h = \tfrac{1}{n_r}\Phi_r^\top \mathbf{1},

    :math:`w(x) = \max(0, \phi(x)^\top\hat\theta)`, with :math:`\phi` Gaussian kernels at
    ``num_centers`` real points. :math:`(\sigma, \lambda)` minimize the held-out squared
    loss :math:`J = \tfrac12 \mathbb{E}_{s}[w^2] - \mathbb{E}_{r}[w]` (k-fold).

    Args:
        sigmas: bandwidth grid (default: median distance × 0.25 … 4).
        lambdas: ridge grid, all ``> 0``.
        num_centers: kernel centers drawn from the real sample.
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

    def _solve(self, real, synthetic, sigma, lam, rng):
        centers = self._centers(real, rng)
        theta = _lsif(jnp.asarray(real), jnp.asarray(synthetic), jnp.asarray(centers), sigma, lam, self._alpha)
        return centers, np.asarray(theta, dtype=np.float64), sigma

    def _criterion(self, state, real, synthetic):
        wr, ws = self._predict(state, real), self._predict(state, synthetic)
        a = self._alpha
        return float(0.5 * a * np.mean(wr**2) + 0.5 * (1 - a) * np.mean(ws**2) - np.mean(wr))


@jax.jit
def _lsif(real, synthetic, centers, sigma, lam, alpha):
    pr, ps = _gauss(real, centers, sigma), _gauss(synthetic, centers, sigma)
    h_mat = alpha * pr.T @ pr / pr.shape[0] + (1 - alpha) * ps.T @ ps / ps.shape[0]
    h = jnp.mean(pr, 0)
    return jnp.linalg.solve(h_mat + lam * jnp.eye(h.shape[0], dtype=h.dtype), h)


class RuLSIF(ULSIF):
    r"""Relative uLSIF (Yamada et al., 2011): the bounded *relative* ratio.

    .. math::

        w_\alpha(x) = \frac{p_{\rm real}(x)}{\alpha\, p_{\rm real}(x) + (1-\alpha)\, p_{\rm syn}(x)}
        \le \frac{1}{\alpha},

    fitted like :class:`ULSIF` with :math:`\hat H = \frac{\alpha}{n_r}\Phi_r^\top\Phi_r +
    \frac{1-\alpha}{n_s}\Phi_s^\top\Phi_s` and held-out criterion
    :math:`J = \tfrac{\alpha}{2}\mathbb{E}_r[w^2] + \tfrac{1-\alpha}{2}\mathbb{E}_s[w^2] - \mathbb{E}_r[w]`.
    :math:`w_\alpha` is a monotone transform of the plain ratio (same ranking, bounded,
    lower variance); ``alpha=0`` is uLSIF.

    Args:
        alpha: relative parameter in ``[0, 1)``.
        **kwargs: as :class:`ULSIF`.

    References:
        Yamada, Suzuki, Kanamori, Hachiya & Sugiyama, "Relative density-ratio estimation
        for robust distribution comparison", NeurIPS 2011.
    """

    def __init__(self, alpha: float = 0.1, **kwargs: Any):
        if isinstance(alpha, bool) or not 0.0 <= float(alpha) < 1.0:
            raise ValueError(f"`alpha` must be in [0, 1); got {alpha!r}.")
        super().__init__(**kwargs)
        self._alpha = float(alpha)


class KLIEP(_KernelEstimator):
    r"""Kullback–Leibler importance estimation procedure (Sugiyama et al., 2008).

    .. math::

        \max_{\beta \ge 0}\ \frac{1}{n_r}\sum_{j} \log \phi(x^r_j)^\top\beta
        \quad\text{s.t.}\quad \frac{1}{n_s}\sum_i \phi(x^s_i)^\top\beta = 1,

    i.e. the maximum-likelihood ratio model of the real sample normalized over the
    synthetic one; :math:`w(x) = \phi(x)^\top\beta`. Substituting :math:`\beta_l =
    \pi_l / b_l` (:math:`b = \frac1{n_s}\Phi_s^\top\mathbf 1`) makes it a mixture-weight
    likelihood over the simplex, solved by its EM fixed point
    :math:`\pi \leftarrow \pi \odot \frac{1}{n_r}A^\top (1 / A\pi)` (monotone, concave
    problem) until the KKT gap :math:`\max_l (A^\top(1/A\pi))_l / n_r - 1` is below
    ``tol``. :math:`\sigma` maximizes the held-out log-likelihood :math:`\mathbb{E}_r
    \log w` (k-fold); there is no regularization (``lambdas`` is ignored).

    Args:
        sigmas: bandwidth grid (default: median distance × 0.25 … 4).
        num_centers: kernel centers drawn from the real sample.
        folds: cross-validation folds, ``>= 2``.
        seed: seeds centers and folds.
        max_iter: EM iterations at most.
        tol: KKT-gap tolerance.

    References:
        Sugiyama, Suzuki, Nakajima, Kashima, von Bünau & Kawanabe, "Direct importance
        estimation for covariate shift adaptation", AISM 2008.
    """

    def __init__(
        self,
        *,
        sigmas: Sequence[float] | None = None,
        num_centers: int = 100,
        folds: int = 5,
        seed: int = 0,
        max_iter: int = 5000,
        tol: float = 1e-5,
    ):
        super().__init__(sigmas=sigmas, lambdas=(1.0,), num_centers=num_centers, folds=folds, seed=seed)
        self.max_iter, self.tol = int(max_iter), float(tol)

    def _solve(self, real, synthetic, sigma, lam, rng):
        centers = self._centers(real, rng)
        theta, gap = _kliep(
            jnp.asarray(real), jnp.asarray(synthetic), jnp.asarray(centers), sigma, self.max_iter, self.tol
        )
        self.kkt_gap_ = float(gap)
        return centers, np.asarray(theta, dtype=np.float64), sigma

    def _criterion(self, state, real, synthetic):
        w = self._predict(state, real)
        return float(-np.mean(np.log(np.maximum(w, 1e-300))))


@jax.jit
def _kliep(real, synthetic, centers, sigma, max_iter, tol):
    b = jnp.mean(_gauss(synthetic, centers, sigma), 0)
    a = _gauss(real, centers, sigma) / b[None, :]

    def grad(pi):
        return a.T @ (1.0 / jnp.maximum(a @ pi, 1e-30)) / a.shape[0]

    def cond(carry):
        i, pi = carry
        return (i < max_iter) & (jnp.max(grad(pi)) - 1 > tol)

    def body(carry):
        i, pi = carry
        pi = pi * grad(pi)
        return i + 1, pi / jnp.sum(pi)

    pi0 = jnp.full(centers.shape[0], 1.0 / centers.shape[0], real.dtype)
    _, pi = jax.lax.while_loop(cond, body, (0, pi0))
    return pi / b, jnp.max(grad(pi)) - 1


class KMM(_KernelEstimator):
    r"""Kernel mean matching (Huang et al., 2007).

    .. math::

        \min_{\beta}\ \tfrac12\beta^\top K\beta - \kappa^\top\beta
        \quad\text{s.t.}\quad 0 \le \beta_i \le B,\ \ \Big|\sum_i\beta_i - n_s\Big| \le n_s\epsilon,

    :math:`K_{ii'} = k(x^s_i, x^s_{i'})`, :math:`\kappa_i = \frac{n_s}{n_r}\sum_j k(x^s_i,
    x^r_j)`: the weights that match the kernel mean of the reweighted synthetic sample to
    the real one. Solved by accelerated projected gradient (FISTA, step :math:`1/\|K\|`,
    exact projection onto the box-and-slab set by bisection on the shift).

    KMM gives weights ``beta_`` at the synthetic points only; ``weights(x)`` extends them
    to any ``x`` by kernel smoothing, :math:`w(x) = \sum_i k(x, x^s_i)\beta_i / \sum_i
    k(x, x^s_i)`. :math:`\sigma` minimizes the held-out squared MMD between the reweighted
    held-out synthetic and the held-out real sample, measured with a fixed kernel (median
    bandwidth) so candidates are comparable (``lambdas`` is ignored).

    Args:
        bound: :math:`B > 0`, the largest weight.
        epsilon: slack :math:`\epsilon \ge 0` on the total weight (default
            :math:`(\sqrt{n_s}-1)/\sqrt{n_s}` as in Huang et al.).
        sigmas: bandwidth grid (default: median distance × 0.25 … 4).
        folds: cross-validation folds, ``>= 2``.
        seed: seeds the folds.
        iterations: FISTA iterations.

    References:
        Huang, Smola, Gretton, Borgwardt & Schölkopf, "Correcting sample selection bias by
        unlabeled data", NeurIPS 2007.
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
    ):
        super().__init__(sigmas=sigmas, lambdas=(1.0,), folds=folds, seed=seed)
        if not float(bound) > 0:
            raise ValueError(f"`bound` must be in (0, inf); got {bound!r}.")
        if epsilon is not None and not float(epsilon) >= 0:
            raise ValueError(f"`epsilon` must be in [0, inf); got {epsilon!r}.")
        self.bound, self.epsilon, self.iterations = float(bound), epsilon, int(iterations)

    def fit(self, real: ArrayLike, synthetic: ArrayLike):
        super().fit(real, synthetic)
        self.beta_ = self.state_[1]
        return self

    def _solve(self, real, synthetic, sigma, lam, rng):
        n_s = synthetic.shape[0]
        eps = (math.sqrt(n_s) - 1) / math.sqrt(n_s) if self.epsilon is None else float(self.epsilon)
        beta = _kmm(
            jnp.asarray(real), jnp.asarray(synthetic), sigma, self.bound, n_s * max(1 - eps, 0), n_s * (1 + eps),
            self.iterations,
        )  # fmt: skip
        return synthetic, np.asarray(beta, dtype=np.float64), sigma

    def _predict(self, state, x):
        points, beta, sigma = state
        k = np.asarray(_gauss(x, points, sigma), dtype=np.float64)
        return (k @ beta) / np.maximum(k.sum(1), 1e-300)

    def _criterion(self, state, real, synthetic):
        w = self._predict(state, synthetic)
        w = w / max(w.mean(), 1e-300)
        s = self.median_
        kss, krr, ksr = (
            np.asarray(_gauss(a, b, s)) for a, b in ((synthetic, synthetic), (real, real), (synthetic, real))
        )
        n_s, n_r = len(synthetic), len(real)
        return float(w @ kss @ w / n_s**2 + krr.sum() / n_r**2 - 2 * w @ ksr.sum(1) / (n_s * n_r))


@jax.jit
def _kmm(real, synthetic, sigma, bound, lo, hi, iterations):
    k = _gauss(synthetic, synthetic, sigma)
    kappa = synthetic.shape[0] / real.shape[0] * jnp.sum(_gauss(synthetic, real, sigma), 1)

    def project(v):
        def total(tau):
            return jnp.sum(jnp.clip(v - tau, 0, bound))

        def bisect(target):
            lo_t, hi_t = jnp.min(v) - bound, jnp.max(v)  # total(lo_t) = n·B >= target, total(hi_t) = 0

            def body(_, br):
                a, b = br
                m = 0.5 * (a + b)
                big = total(m) > target
                return jnp.where(big, m, a), jnp.where(big, b, m)

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

    def fista(_, carry):
        beta, z, t = carry
        new = project(z - step * (k @ z - kappa))
        t_new = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
        z = new + (t - 1) / t_new * (new - beta)
        return new, z, t_new

    beta0 = project(jnp.ones_like(kappa))
    beta, _, _ = jax.lax.fori_loop(0, iterations, fista, (beta0, beta0, jnp.ones((), kappa.dtype)))
    return beta


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

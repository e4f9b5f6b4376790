r"""Mean estimation under recursive contamination (the mean-estimation half of Amin et al., 2026).

The model (rounds :math:`t = 1, 2, \dots`; :math:`\alpha` the synthetic fraction):

.. math::

    X_1 = \mu + U_1, \qquad X_t = \alpha Y_{t-1} + (1-\alpha)\mu + U_t \quad (t \ge 2),

with :math:`X_t` the average of round :math:`t`, :math:`U_t` independent with mean 0 and
covariance :math:`\Sigma / n_t` (:math:`n_t = 1` unless counts are given) and :math:`Y_t` the
estimate deployed after round :math:`t`. Everything here runs on concrete numpy arrays.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike


def check_alpha(alpha, *, allow_one: bool, name: str = "alpha") -> float:
    """``alpha`` as a float in ``[0, 1]`` (or ``[0, 1)``), else a TypeError/ValueError naming it."""
    if isinstance(alpha, bool) or isinstance(alpha, (str, bytes)) or alpha is None:
        raise TypeError(f"`{name}` must be a real number; got {alpha!r}.")
    arr = np.asarray(alpha)
    if arr.shape != ():
        raise ValueError(f"`{name}` must be a scalar; got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"`{name}` must be a real number; got dtype {arr.dtype}.")
    a = float(arr)
    ok = 0.0 <= a <= 1.0 if allow_one else 0.0 <= a < 1.0
    if not ok:  # NaN lands here too
        interval = "[0, 1]" if allow_one else "[0, 1)"
        why = "" if allow_one else " (1 is excluded: the correction divides by 1 - alpha)"
        raise ValueError(f"`{name}` must be in {interval}{why}; got {a!r}.")
    return a


def check_counts(counts, name: str = "counts") -> np.ndarray:
    """Round sizes as a float64 vector of finite positive numbers."""
    if isinstance(counts, (str, bytes)):
        raise TypeError(f"`{name}` must be a sequence of round sizes; got {counts!r}.")
    arr = np.asarray(counts)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"`{name}` must hold real numbers (round sizes); got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty vector of round sizes; got shape {arr.shape}.")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if np.any(bad):
        raise ValueError(
            f"`{name}` must be finite and positive (round sizes in (0, inf)); got {arr[bad][:3].tolist()} "
            f"at positions {np.flatnonzero(bad)[:3].tolist()}."
        )
    return arr


def _check_rounds(t, name: str = "t") -> np.ndarray:
    arr = np.asarray(t)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"`{name}` must be a positive integer (round index) or an array of them; got {t!r}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty.")
    if np.any(arr < 1):
        raise ValueError(f"`{name}` must be >= 1 (rounds count from 1); got minimum {int(arr.min())}.")
    return arr.astype(np.int64)


_STIRLING_FROM = 64


def _log_gamma_ratio(k: np.ndarray, alpha: float) -> np.ndarray:
    r"""``log Γ(k + alpha) - log Γ(k)`` for integers ``k >= 1``, to about 1e-16 relative.

    ``math.lgamma`` below 64; above, the Stirling series of the *difference* (its terms beyond
    :math:`z^{-7}` are below 1e-19 there), which avoids subtracting two numbers of size
    :math:`k \log k` (that loses ~1e-10 at k = 1e5).
    """
    k = np.asarray(k, dtype=np.float64)
    out = np.empty_like(k)
    small = k < _STIRLING_FROM
    out[small] = [math.lgamma(v + alpha) - math.lgamma(v) for v in k[small]]
    z = k[~small]

    def tail(z):
        z2 = z * z
        return 1 / (12 * z) - 1 / (360 * z * z2) + 1 / (1260 * z * z2 * z2) - 1 / (1680 * z * z2**3)

    out[~small] = (z - 0.5) * np.log1p(alpha / z) + alpha * np.log(z + alpha) - alpha + tail(z + alpha) - tail(z)
    return out


def uniform_variance(alpha: float, t: ArrayLike) -> float | np.ndarray:
    r"""Theorem 1 of Amin et al. (2026): the variance of uniform ERM after ``t`` rounds, in units of :math:`\Sigma`.

    .. math::

        \frac{\mathrm{Var}(Y_t)}{\Sigma} = \frac{1}{t^2} + \Big(\frac{\Gamma(t+\alpha)}{\Gamma(t+1)}\Big)^2
        \sum_{k=1}^{t-1} \Big(\frac{\Gamma(k+1)}{k\,\Gamma(k+\alpha)}\Big)^2
        = \frac{1}{t^2}\Big(1 + \sum_{k=1}^{t-1} \prod_{j=k}^{t-1} \big(1 + \tfrac{\alpha}{j}\big)^2\Big),

    for :math:`Y_t = \frac1t \sum_{s \le t} X_s` in the model of this module with equal rounds.
    Derivation: :math:`g_t = t(Y_t - \mu)` obeys :math:`g_t = (1 + \frac{\alpha}{t-1}) g_{t-1} + U_t`,
    so :math:`g_t = \sum_k U_k \prod_{j=k}^{t-1}(1 + \alpha/j)`. Rates: :math:`\frac{1}{(1-2\alpha)t}`
    for :math:`\alpha < \frac12`, :math:`\sim \frac{\ln t}{t}` at :math:`\frac12`,
    :math:`\propto t^{-2(1-\alpha)}` above, and :math:`\to \pi^2/6` at :math:`\alpha = 1`.

    Computed from log-gamma ratios (exact below k = 64, the Stirling series of the difference
    above), summed with ``math.fsum`` for a scalar ``t`` and a cumulative sum for an array;
    stable for ``t`` up to 1e6 and beyond (O(t) time and memory).

    Args:
        alpha: synthetic fraction in ``[0, 1]``.
        t: number of rounds, an int ``>= 1`` or an integer array.

    Returns:
        A float for a scalar ``t``, else a float64 array of ``t``'s shape.

    Examples:
        >>> round(uniform_variance(0.0, 10), 12)  # no contamination: Sigma / t
        0.1
        >>> round(uniform_variance(1.0, 2), 12)   # Y_2 = X_1 + U_2 / 2: 1 + 1/4
        1.25

    References:
        Amin, Bie, Kong, Syed & Vassilvitskii, "Learning from Synthetic Data: Limitations of ERM",
        arXiv:2601.15468 (ALT 2026), Theorem 1.
    """
    a = check_alpha(alpha, allow_one=True)
    ts = _check_rounds(t)
    t_max = int(ts.max())
    r = _log_gamma_ratio(np.arange(1, t_max + 1), a)  # r[k-1] = log Γ(k+α) - log Γ(k)
    if ts.ndim == 0:
        tt = int(ts)
        log_p = r[tt - 1] - r[: tt - 1]  # log prod_{j=k}^{t-1} (1 + α/j), k = 1..t-1
        return float((1.0 + math.fsum(np.exp(2 * log_p))) / tt**2)
    # sum_{k<t} exp(2 (r_t - r_k)) = exp(2 r_t) * cumsum(exp(-2 r_k)); exp(2 r_t) <= t^{2α} is finite.
    csum = np.concatenate([[0.0], np.cumsum(np.exp(-2 * r))])
    tf = ts.astype(np.float64)
    return (1.0 + np.exp(2 * r[ts - 1]) * csum[ts - 1]) / tf**2


def blue_variance(alpha: float, t: ArrayLike) -> float | np.ndarray:
    r"""Variance of the best linear unbiased estimator after ``t`` equal rounds, in units of :math:`\Sigma`.

    .. math::

        \frac{\mathrm{Var}(\hat\mu_t)}{\Sigma} = \frac{1}{1 + (t-1)(1-\alpha)^2}.

    Derivation: the innovations :math:`Z_1 = X_1`, :math:`Z_s = (X_s - \alpha Y_{s-1})/(1-\alpha)`
    are an invertible triangular transform of the rounds, independent, unbiased for :math:`\mu`,
    with variances :math:`\Sigma` and :math:`\Sigma/(1-\alpha)^2`; inverse-variance weighting gives
    the formula, whatever linear estimate :math:`Y_{s-1}` was deployed. It is :math:`O(1/t)` for every
    :math:`\alpha < 1` and equals :math:`\Sigma` at :math:`\alpha = 1`. :func:`generation_weights` gives the
    weights on the rounds' means that attain it when ERM was deployed.

    Args:
        alpha: synthetic fraction in ``[0, 1]``.
        t: number of rounds, an int ``>= 1`` or an integer array.

    Returns:
        A float for a scalar ``t``, else a float64 array.

    Examples:
        >>> blue_variance(0.5, 5)
        0.5
    """
    a = check_alpha(alpha, allow_one=True)
    ts = _check_rounds(t)
    out = 1.0 / (1.0 + (ts - 1) * (1.0 - a) ** 2)
    return float(out) if ts.ndim == 0 else out


def _mixing_matrix(alpha: float, n: np.ndarray) -> np.ndarray:
    """Rows: X_t - mu as a combination of the noises U_s (uniform ERM deployed, weights n)."""
    t_max = n.size
    a = np.zeros((t_max, t_max))
    a[0, 0] = 1.0
    y_sum = n[0] * a[0]
    for t in range(1, t_max):
        a[t] = alpha * y_sum / n[:t].sum()
        a[t, t] += 1.0
        y_sum = y_sum + n[t] * a[t]
    return a


def contamination_covariance(alpha: float, counts: Sequence[float]) -> np.ndarray:
    r"""Covariance of the per-round sample means in the recursive contamination model.

    Round 1 (index 0) is real data; round :math:`t \ge 2` mixes a fraction :math:`\alpha` of
    samples from the previous model, whose mean is the uniform (ERM) average of all data so
    far, with :math:`1-\alpha` fresh real samples:

    .. math::

        X_t = \alpha Y_{t-1} + (1-\alpha)\mu + U_t,\quad
        Y_t = \frac{\sum_{s \le t} n_s X_s}{\sum_{s\le t} n_s},\quad
        \mathrm{Var}(U_t) = \sigma^2 / n_t

    (Amin et al., 2026). Returns :math:`\mathrm{Cov}(X_1, \dots, X_T) / \sigma^2`. With equal
    counts, :math:`\mathbf 1^\top C \mathbf 1 / T^2` is :func:`uniform_variance` (times ``n``).

    Args:
        alpha: synthetic fraction in ``[0, 1]`` (1: every round after the first is synthetic).
        counts: number of examples of each round, length ``T``; finite and positive.

    Returns:
        Matrix of shape ``(T, T)``.

    Examples:
        >>> contamination_covariance(0.5, [1, 1])
        array([[1.  , 0.5 ],
               [0.5 , 1.25]])
    """
    a = check_alpha(alpha, allow_one=True)
    n = check_counts(counts)
    mix = _mixing_matrix(a, n) / np.sqrt(n)[None, :]
    return mix @ mix.T


def generation_weights(alpha: float, counts: Sequence[float]) -> np.ndarray:
    r"""Best linear unbiased per-round weights for recursive contamination (ERM deployed).

    .. math::

        \beta^\star = \frac{C^{-1}\mathbf{1}}{\mathbf{1}^\top C^{-1}\mathbf{1}},
        \qquad \hat\mu = \sum_t \beta^\star_t X_t,

    with :math:`C` from :func:`contamination_covariance`: among estimators that weight the
    rounds and are unbiased for every :math:`\mu`, this has the smallest variance,
    :math:`1/\mathbf 1^\top C^{-1} \mathbf 1` (with equal counts :func:`blue_variance`). Uniform ERM,
    :math:`\beta_t = n_t / \sum_s n_s`, is one member of the family and is not optimal for
    :math:`\alpha > 0`. Turn the result into per-example weights with
    :func:`robustlearn.importance.source_weights` (``mixture=beta``); the entries may be
    negative, which such weights do not accept, so use
    :func:`robustlearn.importance.clip_mixture` there.

    Args:
        alpha: synthetic fraction in ``[0, 1]`` (known, or from :func:`estimate_alpha`).
        counts: number of examples of each round, length ``T``; finite and positive.

    Returns:
        Per-round weights ``(T,)`` summing to 1.

    Examples:
        >>> generation_weights(0.0, [10, 30]).round(3)
        array([0.25, 0.75])

    References:
        Amin, Bie, Kong, Syed & Vassilvitskii, "Learning from Synthetic Data: Limitations
        of ERM", arXiv:2601.15468, 2026.
    """
    a = check_alpha(alpha, allow_one=True)
    n = check_counts(counts)
    # C = M D M^T with M unit lower-triangular and D = diag(1/n): C^{-1} 1 = M^{-T} D^{-1} M^{-1} 1,
    # two triangular solves instead of inverting C (C is positive definite for every alpha in [0, 1]).
    mix = _mixing_matrix(a, n)
    u = np.linalg.solve(mix, np.ones(n.size))
    z = np.linalg.solve(mix.T, n * u)
    return z / z.sum()


class MeansSimulation(NamedTuple):
    """Result of :func:`simulate_means`.

    Attributes:
        means: the rounds' averages :math:`X_t`, shape ``(reps, T, d)``.
        estimates: the deployed estimates :math:`Y_t` after each round, shape ``(reps, T, d)``.
        mu: the true mean (zeros), shape ``(d,)``.
    """

    means: np.ndarray
    estimates: np.ndarray
    mu: np.ndarray


_ESTIMATORS = ("erm", "blue")


def simulate_means(
    alpha: float,
    rounds: int,
    *,
    dim: int = 1,
    reps: int = 1,
    counts: Sequence[float] | None = None,
    estimator: str = "erm",
    seed: int = 0,
) -> MeansSimulation:
    r"""Simulates the mean model with Gaussian noise, :math:`\mu = 0`, :math:`\Sigma = I`.

    Each round's average is :math:`X_t = \alpha Y_{t-1} + (1-\alpha)\mu + U_t`,
    :math:`U_t \sim N(0, I / n_t)` (:math:`n_t = 1` without ``counts``), and the deployed
    estimate is

    * ``"erm"``: :math:`Y_t = \sum_{s\le t} n_s X_s / \sum_{s \le t} n_s` (uniform over examples;
      Theorem 1's estimator), or
    * ``"blue"``: the best linear unbiased estimate for known :math:`\alpha`,
      :math:`Y_t = \big(n_1 X_1 + (1-\alpha)\sum_{s=2}^t n_s (X_s - \alpha Y_{s-1})\big) /
      \big(n_1 + (1-\alpha)^2 \sum_{s=2}^t n_s\big)` (see :func:`blue_variance`).

    Args:
        alpha: synthetic fraction in ``[0, 1]``.
        rounds: number of rounds ``T >= 1``.
        dim: dimension ``d`` of the mean.
        reps: independent repetitions.
        counts: optional round sizes, length ``T``.
        estimator: ``"erm"`` or ``"blue"``.
        seed: seeds numpy's generator (an int or a sequence of ints); the result is a function of the arguments.

    Returns:
        A :class:`MeansSimulation`.

    Examples:
        >>> sim = simulate_means(0.5, 3, dim=2, reps=4)
        >>> sim.means.shape, sim.estimates.shape
        ((4, 3, 2), (4, 3, 2))
    """
    a = check_alpha(alpha, allow_one=True)
    for name, v in (("rounds", rounds), ("dim", dim), ("reps", reps)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"`{name}` must be a positive int; got {v!r}.")
    if estimator not in _ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {_ESTIMATORS}; got {estimator!r}.")
    n = np.ones(rounds) if counts is None else check_counts(counts)
    if n.size != rounds:
        raise ValueError(f"`counts` must have one entry per round ({rounds}); got {n.size}.")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((reps, rounds, dim)) / np.sqrt(n)[None, :, None]
    x = np.zeros((reps, rounds, dim))
    y = np.zeros((reps, rounds, dim))
    num = np.zeros((reps, dim))  # running numerator of the estimate
    den = 0.0
    for t in range(rounds):
        x[:, t] = noise[:, t] if t == 0 else a * y[:, t - 1] + noise[:, t]  # mu = 0
        if estimator == "erm":
            num, den = num + n[t] * x[:, t], den + n[t]
        elif t == 0:
            num, den = n[0] * x[:, 0], n[0]
        else:
            num, den = num + (1 - a) * n[t] * (x[:, t] - a * y[:, t - 1]), den + (1 - a) ** 2 * n[t]
        y[:, t] = num / den
    return MeansSimulation(x, y, np.zeros(dim))


# ----------------------------------------------------------------------------- estimating alpha


def _profile(alphas: np.ndarray, stats: tuple) -> np.ndarray:
    """Invariant log-likelihood of alpha (up to a constant) at each of ``alphas``; see estimate_alpha.

    With ``P_t = Y_{t-1}`` every sum below is a polynomial in alpha, so ``stats`` holds the
    per-coordinate sums once and each evaluation costs O(d).
    """
    n1, n_rest, x1, s_x, s_p, s_xx, s_xp, s_pp, t_rounds = stats
    a = np.asarray(alphas, dtype=np.float64)[:, None]
    s_zz = n1 * x1**2 + s_xx - 2 * a * s_xp + a * a * s_pp
    s_mz = n1 * x1 + (1 - a) * (s_x - a * s_p)
    s_mm = n1 + (1 - a) ** 2 * n_rest  # (A, 1)
    rss = np.maximum(s_zz - s_mz**2 / s_mm, np.finfo(np.float64).tiny * np.maximum(s_zz, 1.0))
    d = x1.shape[0]
    return -0.5 * d * np.log(s_mm[:, 0]) - 0.5 * (t_rounds - 1) * np.log(rss).sum(1)


def alpha_from_means(means, deployed, counts, confidence: float):
    """(alpha_hat, low, high, informative rounds): invariant likelihood, likelihood-ratio interval."""
    x = np.asarray(means, dtype=np.float64)
    prev = np.asarray(deployed, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if prev.ndim == 1:
        prev = prev[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"`means` must have shape (T, d) or (T,) with T >= 2 rounds; got {np.shape(means)}.")
    if prev.shape != (x.shape[0] - 1, x.shape[1]):
        raise ValueError(
            f"`deployed` must hold the T - 1 = {x.shape[0] - 1} estimates deployed after rounds 1..T-1, shape "
            f"{(x.shape[0] - 1, x.shape[1])}; got {np.shape(deployed)}."
        )
    for name, arr in (("means", x), ("deployed", prev)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` must be finite; got {int(np.sum(~np.isfinite(arr)))} NaN/inf entries.")
    n = np.ones(x.shape[0]) if counts is None else check_counts(counts)
    if n.size != x.shape[0]:
        raise ValueError(f"`counts` must have one entry per round ({x.shape[0]}); got {n.size}.")
    w = n[1:, None]
    stats = (
        n[0],
        float(n[1:].sum()),
        x[0],
        (w * x[1:]).sum(0),
        (w * prev).sum(0),
        (w * x[1:] ** 2).sum(0),
        (w * x[1:] * prev).sum(0),
        (w * prev**2).sum(0),
        x.shape[0],
    )
    grid = np.linspace(0.0, 1.0, 401)
    ll = _profile(grid, stats)
    i = int(np.argmax(ll))

    def f(v):
        return float(_profile(np.array([v]), stats)[0])

    # Golden-section refinement inside the bracketing grid cells.
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    g = (math.sqrt(5) - 1) / 2
    c, d = hi - g * (hi - lo), lo + g * (hi - lo)
    fc, fd = f(c), f(d)
    for _ in range(40):
        if fc > fd:
            hi, d, fd = d, c, fc
            c = hi - g * (hi - lo)
            fc = f(c)
        else:
            lo, c, fc = c, d, fd
            d = lo + g * (hi - lo)
            fd = f(d)
    cands = [(ll[i], grid[i]), (fc, c), (fd, d)]
    best_ll, best = max(cands)
    from statistics import NormalDist

    cut = best_ll - 0.5 * NormalDist().inv_cdf(0.5 + confidence / 2) ** 2  # chi2_1 quantile / 2

    def edge(inside: float, outside: float) -> float:
        for _ in range(40):
            mid = 0.5 * (inside + outside)
            if f(mid) >= cut:
                inside = mid
            else:
                outside = mid
        return 0.5 * (inside + outside)

    # The interval is the hull of the likelihood-ratio set on the grid (the set can have two
    # parts when alpha is weakly identified), its ends refined by bisection.
    inside = np.flatnonzero(ll >= cut)
    j_lo, j_hi = int(inside.min()), int(inside.max())
    low = float(grid[0]) if j_lo == 0 else edge(float(grid[j_lo]), float(grid[j_lo - 1]))
    high = float(grid[-1]) if j_hi == grid.size - 1 else edge(float(grid[j_hi]), float(grid[j_hi + 1]))
    return float(best), min(low, float(best)), max(high, float(best)), x.shape[0] * x.shape[1]

r"""Exact f-divergence robust reductions of a loss vector and their worst-case weights.

Every function here maps a vector of per-example losses :math:`\ell \in \mathbb{R}^n`
(along ``axis``) to the worst-case expected loss over a set of distributions :math:`q`
on the same n points, centred on the nominal distribution :math:`p` (uniform, or
``weights / sum(weights)``; entries with ``where=False`` get :math:`p_i = 0`). The
``*_weights`` twin returns the maximizing :math:`q^\star`; the value equals
:math:`\sum_i q^\star_i \ell_i` (minus the penalty for penalized forms) and, by
Danskin's theorem, its gradient with respect to the losses is :math:`q^\star`.

Shared behaviour (documented once here, pinned by the tests):

* ``losses`` must be a real floating array; the result keeps its dtype and is computed
  internally in at least float32.
* ``weights`` (non-negative, positive total) and ``where`` (boolean) broadcast to the
  shape of ``losses``. Gradients flow to ``losses`` only; ``weights`` and the
  hyperparameters are treated as constants.
* If no example is left (all masked), the value is 0 and the weights are 0, as in optax.
* A NaN or infinite loss inside the support of :math:`p` makes the value and the
  weights NaN. Losses outside the support (masked or zero weight) are ignored.
* Hyperparameters out of range raise ``ValueError`` when they are Python or NumPy
  numbers; traced out-of-range values (under ``jit``) give NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robustlearn import _checks, _engine
from robustlearn._rootfind import increasing_root

__all__ = [
    "erm",
    "erm_weights",
    "cvar",
    "cvar_weights",
    "chi_square",
    "chi_square_weights",
    "kl",
    "kl_weights",
    "cressie_read",
    "cressie_read_weights",
    "chi_square_penalty",
    "chi_square_penalty_weights",
    "kl_penalty",
    "kl_penalty_weights",
]


# --------------------------------------------------------------------------- kernels
# Each kernel sees standardized losses ``ls`` (max 0, range 1 on the support, -1 off
# it), the nominal ``p`` (0 off the support, sums to 1) and the loss range ``scale``,
# and return ``(q, penalty)`` with the penalty in standardized units.


def _erm_kernel(ls, p, scale):
    del scale
    return p, 0.0


def _ordered_keys(x):
    """Integers in the same order as the floats ``x`` (IEEE-754 bit trick; -0.0 and 0.0 tie)."""
    itype = jnp.int32 if x.dtype.itemsize == 4 else jnp.int64
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.zeros_like(x), x), itype)
    return bits ^ ((bits >> (8 * x.dtype.itemsize - 1)) & jnp.iinfo(itype).max)


def _cvar_kernel(ls, p, scale, alpha):
    """Fractional top-k without sorting: the value-at-risk by binary search on the float bits.

    With caps ``p / alpha``, the value-at-risk is the smallest support loss ``v`` whose
    strictly larger losses carry less than the whole budget, ``sum_{l > v} p / alpha < 1``.
    That sum only changes at loss values, so a bisection over the integers that order the
    floats finds ``v`` exactly in 32 (float32) or 64 (float64) passes of O(n), cheaper than
    a sort. Examples above ``v`` get ``p / alpha``; those tied at ``v`` share the remaining
    budget in proportion to ``p``, so tied examples are treated alike.
    """
    del scale
    in_support = p > 0
    key = _ordered_keys(ls)
    info = jnp.iinfo(key.dtype)

    def heavy(k):  # does the mass strictly above key k fill the budget?
        return jnp.sum(jnp.where(in_support & (key > k), p, 0)) >= alpha

    lo = jnp.min(jnp.where(in_support, key, info.max)) - 1  # all the mass is above lo
    hi = jnp.max(jnp.where(in_support, key, info.min))  # no mass is above hi

    def bisect(_, bounds):
        lo, hi = bounds
        mid = (lo >> 1) + (hi >> 1) + (lo & hi & 1)  # floor((lo + hi) / 2) without overflow
        big = heavy(mid)
        return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

    _, hi = jax.lax.fori_loop(0, 8 * key.dtype.itemsize, bisect, (lo, hi))
    var = jnp.max(jnp.where(in_support & (key <= hi), ls, -jnp.inf))
    above = in_support & (ls > var)
    at = in_support & (ls == var)
    rest = 1 - jnp.sum(jnp.where(above, p, 0)) / alpha
    at_mass = jnp.sum(jnp.where(at, p, 0))
    theta = jnp.clip(rest / jnp.where(at_mass > 0, at_mass, 1), 0, 1 / alpha)
    q = jnp.where(above, p / alpha, jnp.where(at, theta * p, 0))
    return q, 0.0


def _bounds(dtype):
    """Log-scale bracket wide enough to reach float precision at both ends."""
    log_eps = jnp.log(jnp.finfo(dtype).eps)
    return 2 * log_eps, -2 * log_eps


def _cressie_read_kernel(ls, p, scale, radius, k):
    r"""Dual in the shift :math:`\eta = -e^s` (the maximum loss is 0).

    With :math:`c = (1 + k(k-1)\rho)^{1/k}`, :math:`a = 1/(k-1)` and
    :math:`\tilde x = (\ell - \eta)_+ / (-\eta)`, the optimal shift solves
    :math:`\log c + \log E_p[\tilde x^{a}] - \tfrac1k \log E_p[\tilde x^{a+1}] = 0`,
    which is increasing in :math:`s`; then :math:`q \propto p\,\tilde x^{a}`.
    """
    del scale
    a = 1 / (k - 1)
    log_c = jnp.log1p(k * (k - 1) * radius) / k
    in_support = p > 0

    def shifted(s):
        x = 1 + ls * jnp.exp(-s)
        active = in_support & (x > 0)
        return active, jnp.where(active, x, 1)

    def stationarity(s):
        active, x = shifted(s)
        n_moment = jnp.sum(jnp.where(active, p * x**a, 0))
        m_moment = jnp.sum(jnp.where(active, p * x ** (a + 1), 0))
        return log_c + jnp.log(n_moment) - jnp.log(m_moment) / k

    s_lo, s_max = _bounds(ls.dtype)
    # c * (1 - e^{-s})^a >= 1 guarantees a non-negative stationarity value at s_hi.
    s_hi = -jnp.log(-jnp.expm1(-(k - 1) * log_c))
    s_hi = jnp.clip(jnp.where(jnp.isnan(s_hi), s_max, s_hi), s_lo, s_max)
    s = increasing_root(stationarity, s_lo, s_hi)
    active, x = shifted(s)
    weight = jnp.where(active, p * x**a, 0)
    q = weight / jnp.sum(weight)
    return jnp.where(radius > 0, q, p), 0.0


def _chi_square_kernel(ls, p, scale, radius):
    return _cressie_read_kernel(ls, p, scale, radius, jnp.asarray(2, ls.dtype))


def _tilted(ls, p, beta):
    """Exponential tilt q ∝ p exp(beta ls) and its log-normalizer."""
    logits = jnp.where(p > 0, beta * ls + jnp.log(jnp.where(p > 0, p, 1)), -jnp.inf)
    log_z = jax.nn.logsumexp(logits)
    return jnp.exp(logits - log_z), log_z


def _kl_kernel(ls, p, scale, radius):
    r"""Dual in :math:`u = \log\lambda`: solve :math:`KL(q_\lambda \| p) = \rho`.

    :math:`\rho - KL(q_\lambda\|p)` is the derivative of the dual objective and increases
    with :math:`\lambda`. Since the standardized range is 1, Hoeffding's lemma gives
    :math:`KL(q_\lambda\|p) \le 1/(8\lambda^2)`, so :math:`\lambda = 1/\sqrt{8\rho}`
    is a valid upper end of the bracket.
    """
    del scale

    def excess(u):
        beta = jnp.exp(-u)
        q, log_z = _tilted(ls, p, beta)
        return radius - (beta * jnp.sum(q * ls) - log_z)

    u_lo, u_max = _bounds(ls.dtype)
    u_hi = jnp.clip(-0.5 * jnp.log(8 * radius), u_lo, u_max)
    u = increasing_root(excess, u_lo, u_hi)
    q, _ = _tilted(ls, p, jnp.exp(-u))
    return jnp.where(radius > 0, q, p), 0.0


def _chi_square_penalty_kernel(ls, p, scale, lam):
    r"""Solve :math:`\sum_i p_i (1 + (\ell_i - \eta)/\lambda)_+ = 1` for :math:`\eta`.

    The left side is piecewise linear and decreasing in :math:`\eta`, so the safeguarded
    Newton iteration lands on the exact root. The bracket is :math:`[E_p \ell, \lambda]`
    (the sum is at least 1 at :math:`E_p\ell` and 0 at :math:`\lambda \ge \max \ell`).
    """
    lam = lam / scale
    in_support = p > 0

    def excess(eta):
        return 1 - jnp.sum(jnp.where(in_support, p * jnp.maximum(1 + (ls - eta) / lam, 0), 0))

    eta = increasing_root(excess, jnp.sum(p * ls), lam)
    ratio = jnp.where(in_support, jnp.maximum(1 + (ls - eta) / lam, 0), 0)
    q = p * ratio
    # lam * p (t - 1)^2 / 2 written without squaring the (possibly huge) ratio t.
    penalty = 0.5 * jnp.sum(jnp.where(ratio > 0, (ls - eta) * (q - p), lam * p))
    return q, penalty


def _kl_penalty_kernel(ls, p, scale, lam):
    lam = lam / scale
    q, log_z = _tilted(ls, p, 1 / lam)
    # lam * KL(q || p) = sum(q * ls) - lam * log Z.
    return q, jnp.sum(q * ls) - lam * log_z


# ----------------------------------------------------------------- hyperparameters


def _alpha(alpha):
    return _checks.scalar("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=False)


def _radius(radius):
    return _checks.scalar("radius", radius, low=0.0)


def _lam(lam):
    return _checks.scalar("lam", lam, low=0.0, low_open=True)


def _k(k):
    return _checks.scalar("k", k, low=1.0, low_open=True)


# ------------------------------------------------------------------------ public API


def erm(
    losses: ArrayLike, *, weights: ArrayLike | None = None, where: ArrayLike | None = None, axis: int = -1
) -> jax.Array:
    r"""Empirical risk: the expected loss under the nominal distribution.

    .. math::

        \mathrm{erm}(\ell) = \sum_i p_i \ell_i

    Args:
        losses: per-example losses, real floating array of shape ``(..., n, ...)``.
        weights: optional non-negative nominal weights broadcastable to ``losses``;
            ``p = weights / sum(weights)``.
        where: optional boolean mask broadcastable to ``losses``; False drops an example.
        axis: the axis of examples to reduce.

    Returns:
        Array of ``losses.shape`` without ``axis``, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> float(rl.erm(jnp.array([1.0, 2.0, 6.0])))
        3.0

    References:
        Vapnik, *Principles of risk minimization for learning theory*, NeurIPS 1991.
    """
    return _engine.run(_erm_kernel, losses, (), weights=weights, where=where, axis=axis)


def erm_weights(
    losses: ArrayLike, *, weights: ArrayLike | None = None, where: ArrayLike | None = None, axis: int = -1
) -> jax.Array:
    r"""The nominal distribution :math:`p` itself (the weights of :func:`erm`).

    Args:
        losses: per-example losses, real floating array.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.erm_weights(jnp.array([1.0, 2.0, 6.0]), weights=jnp.array([1.0, 1.0, 2.0])).tolist()
        [0.25, 0.25, 0.5]
    """
    return _engine.run(_erm_kernel, losses, (), weights=weights, where=where, axis=axis, want_weights=True)


def cvar(
    losses: ArrayLike,
    alpha: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Conditional value-at-risk: the mean of the worst ``alpha`` fraction of the mass.

    .. math::

        \mathrm{CVaR}_\alpha(\ell) = \sup_q \Big\{ \sum_i q_i \ell_i :
            0 \le q_i \le p_i/\alpha,\ \sum_i q_i = 1 \Big\}
          = \min_\eta\ \eta + \tfrac{1}{\alpha} \sum_i p_i (\ell_i - \eta)_+

    Solved exactly by one sort: the largest losses get :math:`p_i/\alpha` until the
    budget is spent, the boundary example a fraction (``alpha * n`` need not be an
    integer). Losses tied at the boundary share its mass in proportion to :math:`p`.
    ``alpha = 1`` is ERM; ``alpha -> 0`` tends to the maximum loss.

    Args:
        losses: per-example losses, real floating array.
        alpha: fraction of the nominal mass in the tail, in ``(0, 1]``.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples to reduce.

    Returns:
        Array of ``losses.shape`` without ``axis``, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> float(rl.cvar(jnp.array([1.0, 2.0, 3.0, 4.0]), alpha=0.5))
        3.5
        >>> float(rl.cvar(jnp.array([1.0, 2.0, 3.0, 4.0]), alpha=0.375))  # 1.5 examples
        3.6666667461395264

    References:
        Rockafellar & Uryasev, *Optimization of conditional value-at-risk*, J. Risk 2000.
    """
    return _engine.run(_cvar_kernel, losses, (_alpha(alpha),), weights=weights, where=where, axis=axis)


def cvar_weights(
    losses: ArrayLike,
    alpha: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`cvar`.

    .. math::

        q^\star_i = \begin{cases} p_i/\alpha & \ell_i > \mathrm{VaR}_\alpha \\
            \theta p_i & \ell_i = \mathrm{VaR}_\alpha \\ 0 & \ell_i < \mathrm{VaR}_\alpha
        \end{cases}

    with :math:`\theta \in [0, 1/\alpha]` chosen so that :math:`\sum_i q^\star_i = 1`.

    Args:
        losses: per-example losses, real floating array.
        alpha: fraction of the nominal mass in the tail, in ``(0, 1]``.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.cvar_weights(jnp.array([1.0, 2.0, 3.0, 4.0]), alpha=0.5).tolist()
        [0.0, 0.0, 0.5, 0.5]
    """
    return _engine.run(
        _cvar_kernel, losses, (_alpha(alpha),), weights=weights, where=where, axis=axis, want_weights=True
    )


def cressie_read(
    losses: ArrayLike,
    radius: ArrayLike,
    k: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst case over a Cressie--Read divergence ball.

    .. math::

        \sup_q \Big\{ \sum_i q_i \ell_i : \sum_i p_i f_k(q_i/p_i) \le \rho \Big\},
        \qquad f_k(t) = \frac{t^k - k t + k - 1}{k (k-1)}

    Dual (Duchi & Namkoong 2021), with :math:`k_* = k/(k-1)` and
    :math:`c_k(\rho) = (1 + k(k-1)\rho)^{1/k}`:

    .. math::

        \inf_\eta\ \eta + c_k(\rho) \big(\textstyle\sum_i p_i (\ell_i - \eta)_+^{k_*}\big)^{1/k_*},
        \qquad q^\star_i \propto p_i (\ell_i - \eta^\star)_+^{1/(k-1)}.

    The one-dimensional dual is solved to float precision by safeguarded Newton in
    :math:`\log(\max \ell - \eta)`. ``k = 2`` is :func:`chi_square`. If ``radius`` is at
    least the largest reachable divergence, the value is the maximum loss over the
    support and :math:`q^\star` is :math:`p` restricted to the maximizers.

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \ge 0`; 0 gives ERM.
        k: divergence exponent, ``k > 1``.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples to reduce.

    Returns:
        Array of ``losses.shape`` without ``axis``, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> l = jnp.array([0.0, 1.0])
        >>> round(float(rl.cressie_read(l, radius=0.125, k=2.0)), 6)  # = chi_square
        0.75

    References:
        Cressie & Read, *Multinomial goodness-of-fit tests*, JRSS-B 1984.
        Duchi & Namkoong, *Learning models with uniform performance via
        distributionally robust optimization*, Annals of Statistics 2021.
    """
    hyper = (_radius(radius), _k(k))
    return _engine.run(_cressie_read_kernel, losses, hyper, weights=weights, where=where, axis=axis)


def cressie_read_weights(
    losses: ArrayLike,
    radius: ArrayLike,
    k: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`cressie_read`.

    .. math::

        q^\star_i = \frac{p_i (\ell_i - \eta^\star)_+^{1/(k-1)}}
                         {\sum_j p_j (\ell_j - \eta^\star)_+^{1/(k-1)}}

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \ge 0`.
        k: divergence exponent, ``k > 1``.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> q = rl.cressie_read_weights(jnp.array([0.0, 1.0]), radius=0.125, k=2.0)
        >>> [round(x, 6) for x in q.tolist()]
        [0.25, 0.75]
    """
    hyper = (_radius(radius), _k(k))
    return _engine.run(_cressie_read_kernel, losses, hyper, weights=weights, where=where, axis=axis, want_weights=True)


def chi_square(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst case over a :math:`\chi^2`-divergence ball.

    .. math::

        \sup_q \Big\{ \sum_i q_i \ell_i : \sum_i p_i f_2(q_i/p_i) \le \rho \Big\},
        \qquad f_2(t) = \tfrac12 (t-1)^2

    Equivalently :math:`\inf_\eta\ \eta + \sqrt{1 + 2\rho}\,\sqrt{\sum_i p_i
    (\ell_i - \eta)_+^2}`; it is :func:`cressie_read` with ``k = 2``. For small
    :math:`\rho` and no active non-negativity constraint this is the mean plus
    :math:`\sqrt{2\rho}` standard deviations.

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \ge 0`; 0 gives ERM.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples to reduce.

    Returns:
        Array of ``losses.shape`` without ``axis``, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> l = jnp.array([0.0, 1.0])  # mean 0.5, std 0.5: 0.5 + sqrt(2 * 0.125) * 0.5
        >>> round(float(rl.chi_square(l, radius=0.125)), 6)
        0.75

    References:
        Namkoong & Duchi, *Variance-based regularization with convex objectives*,
        NeurIPS 2017.
    """
    return _engine.run(_chi_square_kernel, losses, (_radius(radius),), weights=weights, where=where, axis=axis)


def chi_square_weights(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`chi_square`.

    .. math::

        q^\star_i = \frac{p_i (\ell_i - \eta^\star)_+}{\sum_j p_j (\ell_j - \eta^\star)_+}

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \ge 0`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> [round(x, 6) for x in rl.chi_square_weights(jnp.array([0.0, 1.0]), radius=0.125).tolist()]
        [0.25, 0.75]
    """
    return _engine.run(
        _chi_square_kernel, losses, (_radius(radius),), weights=weights, where=where, axis=axis, want_weights=True
    )


def kl(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst case over a Kullback--Leibler ball.

    .. math::

        \sup_q \Big\{ \sum_i q_i \ell_i : \sum_i q_i \log\frac{q_i}{p_i} \le \rho \Big\}
          = \inf_{\lambda > 0}\ \lambda\rho + \lambda \log \sum_i p_i e^{\ell_i/\lambda}

    The optimal :math:`q^\star \propto p\, e^{\ell/\lambda^\star}` is an exponential
    tilt; :math:`\lambda^\star` solves :math:`KL(q_\lambda\|p) = \rho`, found to float
    precision by safeguarded Newton in :math:`\log\lambda`. If :math:`\rho \ge -\log
    p(\arg\max \ell)` the value is the maximum loss.

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \ge 0`; 0 gives ERM.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples to reduce.

    Returns:
        Array of ``losses.shape`` without ``axis``, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> l = jnp.array([0.0, 1.0])
        >>> float(rl.kl(l, radius=0.0)), float(rl.kl(l, radius=jnp.log(2.0)))
        (0.5, 1.0)

    References:
        Hu & Hong, *Kullback-Leibler divergence constrained distributionally robust
        optimization*, Optimization Online 2013.
    """
    return _engine.run(_kl_kernel, losses, (_radius(radius),), weights=weights, where=where, axis=axis)


def kl_weights(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`kl`.

    .. math::

        q^\star_i = \frac{p_i e^{\ell_i/\lambda^\star}}{\sum_j p_j e^{\ell_j/\lambda^\star}},
        \qquad KL(q^\star\|p) = \rho

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \ge 0`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.kl_weights(jnp.array([0.0, 1.0]), radius=10.0).tolist()
        [0.0, 1.0]
    """
    return _engine.run(
        _kl_kernel, losses, (_radius(radius),), weights=weights, where=where, axis=axis, want_weights=True
    )


def chi_square_penalty(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Penalized :math:`\chi^2` robust risk.

    .. math::

        \sup_q\ \sum_i q_i \ell_i - \lambda \sum_i p_i f_2(q_i/p_i),
        \qquad q^\star_i = p_i \big(1 + (\ell_i - \eta^\star)/\lambda\big)_+

    with :math:`\eta^\star` the unique shift making :math:`q^\star` sum to 1 (found
    exactly: the constraint is piecewise linear in :math:`\eta`). Large ``lam`` tends to
    ERM; small ``lam`` to the maximum loss. When no weight is clipped at 0, the value is
    the mean plus :math:`\mathrm{Var}_p(\ell) / (2\lambda)`.

    Args:
        losses: per-example losses, real floating array.
        lam: penalty strength :math:`\lambda > 0`, in the units of the losses.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples to reduce.

    Returns:
        Array of ``losses.shape`` without ``axis``, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> float(rl.chi_square_penalty(jnp.array([0.0, 1.0]), lam=1.0))  # 0.5 + 0.25 / 2
        0.625

    References:
        Levy, Carmon, Duchi & Sidford, *Large-scale methods for distributionally robust
        optimization*, NeurIPS 2020.
    """
    return _engine.run(_chi_square_penalty_kernel, losses, (_lam(lam),), weights=weights, where=where, axis=axis)


def chi_square_penalty_weights(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`chi_square_penalty`.

    .. math::

        q^\star_i = p_i \big(1 + (\ell_i - \eta^\star)/\lambda\big)_+

    Args:
        losses: per-example losses, real floating array.
        lam: penalty strength :math:`\lambda > 0`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.chi_square_penalty_weights(jnp.array([0.0, 1.0]), lam=1.0).tolist()
        [0.25, 0.75]
    """
    return _engine.run(
        _chi_square_penalty_kernel, losses, (_lam(lam),), weights=weights, where=where, axis=axis, want_weights=True
    )


def kl_penalty(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Penalized KL robust risk, the log-sum-exp ("tilted") risk.

    .. math::

        \sup_q\ \sum_i q_i \ell_i - \lambda\, KL(q\|p)
          = \lambda \log \sum_i p_i e^{\ell_i/\lambda},
        \qquad q^\star \propto p\, e^{\ell/\lambda}

    Args:
        losses: per-example losses, real floating array.
        lam: temperature :math:`\lambda > 0`, in the units of the losses.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples to reduce.

    Returns:
        Array of ``losses.shape`` without ``axis``, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> round(float(rl.kl_penalty(jnp.array([0.0, 0.0]), lam=0.5)), 6)
        0.0

    References:
        Li, Beirami, Sanjabi & Smith, *Tilted empirical risk minimization*, ICLR 2021.
    """
    return _engine.run(_kl_penalty_kernel, losses, (_lam(lam),), weights=weights, where=where, axis=axis)


def kl_penalty_weights(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`kl_penalty`: a softmax of :math:`\ell/\lambda`.

    .. math::

        q^\star_i = \frac{p_i e^{\ell_i/\lambda}}{\sum_j p_j e^{\ell_j/\lambda}}

    Args:
        losses: per-example losses, real floating array.
        lam: temperature :math:`\lambda > 0`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.kl_penalty_weights(jnp.array([1.0, 1.0, 1.0, 1.0]), lam=0.1).tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    return _engine.run(
        _kl_penalty_kernel, losses, (_lam(lam),), weights=weights, where=where, axis=axis, want_weights=True
    )

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
* ``weights`` (finite, non-negative) and ``where`` (boolean) broadcast to the
  shape of ``losses``. Gradients flow to ``losses`` only; ``weights`` and the
  hyperparameters are treated as constants. First derivatives only, in forward and
  reverse mode: a second derivative (``jax.hessian``, a jvp of a grad) raises
  ``NotImplementedError``, as the weights' own derivative is not implemented.
* ``axis`` is an int, a tuple of ints, or None (every axis, a scalar result, as
  ``losses.mean()``). An array with no examples along the reduced axes raises
  ``ValueError``.
* If no example is left (all masked, or all weights 0), the value is 0 and the weights
  are 0, as in optax; eagerly and under ``jit`` alike.
* A NaN or infinite loss inside the support of :math:`p` makes the value and the
  weights NaN. Losses outside the support (masked or zero weight) are ignored.
* Hyperparameters out of range raise ``ValueError`` when they are Python or NumPy
  numbers; traced out-of-range values (under ``jit``) give NaN.
"""

from __future__ import annotations

import jax
from jax.typing import ArrayLike

from robustlearn._src.reductions.registry import REDUCTIONS as _R

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
    "tv",
    "tv_weights",
]


# ------------------------------------------------------------------------ public API


def erm(
    losses: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""Empirical risk: the expected loss under the nominal distribution.

    .. math::

        \mathrm{erm}(\ell) = \sum_i p_i \ell_i

    Args:
        losses: per-example losses, real floating array of shape ``(..., n, ...)``.
        weights: optional non-negative nominal weights broadcastable to ``losses``;
            ``p = weights / sum(weights)``.
        where: optional boolean mask broadcastable to ``losses``; False drops an example.
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> float(rl.erm(jnp.array([1.0, 2.0, 6.0])))
        3.0

    References:
        Vapnik, *Principles of risk minimization for learning theory*, NeurIPS 1991.
    """
    return _R["erm"].value(losses, weights=weights, where=where, axis=axis)


def erm_weights(
    losses: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""The nominal distribution :math:`p` itself (the weights of :func:`erm`).

    Args:
        losses: per-example losses, real floating array.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.erm_weights(jnp.array([1.0, 2.0, 6.0]), weights=jnp.array([1.0, 1.0, 2.0])).tolist()
        [0.25, 0.25, 0.5]
    """
    return _R["erm"].weights(losses, weights=weights, where=where, axis=axis)


def cvar(
    losses: ArrayLike,
    alpha: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""Conditional value-at-risk: the mean of the worst ``alpha`` fraction of the mass.

    .. math::

        \mathrm{CVaR}_\alpha(\ell) = \sup_q \Big\{ \sum_i q_i \ell_i :
            0 \le q_i \le p_i/\alpha,\ \sum_i q_i = 1 \Big\}
          = \min_\eta\ \eta + \tfrac{1}{\alpha} \sum_i p_i (\ell_i - \eta)_+

    Solved exactly without a sort: the value-at-risk is found by bisection over the
    integers that order the floats (32 or 64 passes of O(n)); the largest losses get
    :math:`p_i/\alpha` until the budget is spent, the boundary example a fraction
    (``alpha * n`` need not be an integer). Losses tied at the boundary share its mass in proportion to :math:`p`.
    ``alpha = 1`` is ERM; ``alpha -> 0`` tends to the maximum loss.

    Args:
        losses: per-example losses, real floating array.
        alpha: fraction of the nominal mass in the tail, in ``(0, 1]``.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

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
    return _R["cvar"].value(losses, alpha, weights=weights, where=where, axis=axis)


def cvar_weights(
    losses: ArrayLike,
    alpha: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.cvar_weights(jnp.array([1.0, 2.0, 3.0, 4.0]), alpha=0.5).tolist()
        [0.0, 0.0, 0.5, 0.5]
    """
    return _R["cvar"].weights(losses, alpha, weights=weights, where=where, axis=axis)


def cressie_read(
    losses: ArrayLike,
    radius: ArrayLike,
    k: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

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
    return _R["cressie_read"].value(losses, radius, k, weights=weights, where=where, axis=axis)


def cressie_read_weights(
    losses: ArrayLike,
    radius: ArrayLike,
    k: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> q = rl.cressie_read_weights(jnp.array([0.0, 1.0]), radius=0.125, k=2.0)
        >>> [round(x, 6) for x in q.tolist()]
        [0.25, 0.75]
    """
    return _R["cressie_read"].weights(losses, radius, k, weights=weights, where=where, axis=axis)


def chi_square(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

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
    return _R["chi_square"].value(losses, radius, weights=weights, where=where, axis=axis)


def chi_square_weights(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`chi_square`.

    .. math::

        q^\star_i = \frac{p_i (\ell_i - \eta^\star)_+}{\sum_j p_j (\ell_j - \eta^\star)_+}

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \ge 0`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> [round(x, 6) for x in rl.chi_square_weights(jnp.array([0.0, 1.0]), radius=0.125).tolist()]
        [0.25, 0.75]
    """
    return _R["chi_square"].weights(losses, radius, weights=weights, where=where, axis=axis)


def kl(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

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
    return _R["kl"].value(losses, radius, weights=weights, where=where, axis=axis)


def kl_weights(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.kl_weights(jnp.array([0.0, 1.0]), radius=10.0).tolist()
        [0.0, 1.0]
    """
    return _R["kl"].weights(losses, radius, weights=weights, where=where, axis=axis)


def chi_square_penalty(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> float(rl.chi_square_penalty(jnp.array([0.0, 1.0]), lam=1.0))  # 0.5 + 0.25 / 2
        0.625

    References:
        Levy, Carmon, Duchi & Sidford, *Large-scale methods for distributionally robust
        optimization*, NeurIPS 2020.
    """
    return _R["chi_square_penalty"].value(losses, lam, weights=weights, where=where, axis=axis)


def chi_square_penalty_weights(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`chi_square_penalty`.

    .. math::

        q^\star_i = p_i \big(1 + (\ell_i - \eta^\star)/\lambda\big)_+

    Args:
        losses: per-example losses, real floating array.
        lam: penalty strength :math:`\lambda > 0`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.chi_square_penalty_weights(jnp.array([0.0, 1.0]), lam=1.0).tolist()
        [0.25, 0.75]
    """
    return _R["chi_square_penalty"].weights(losses, lam, weights=weights, where=where, axis=axis)


def kl_penalty(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
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
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> round(float(rl.kl_penalty(jnp.array([0.0, 0.0]), lam=0.5)), 6)
        0.0

    References:
        Li, Beirami, Sanjabi & Smith, *Tilted empirical risk minimization*, ICLR 2021.
    """
    return _R["kl_penalty"].value(losses, lam, weights=weights, where=where, axis=axis)


def kl_penalty_weights(
    losses: ArrayLike,
    lam: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`kl_penalty`: a softmax of :math:`\ell/\lambda`.

    .. math::

        q^\star_i = \frac{p_i e^{\ell_i/\lambda}}{\sum_j p_j e^{\ell_j/\lambda}}

    Args:
        losses: per-example losses, real floating array.
        lam: temperature :math:`\lambda > 0`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.kl_penalty_weights(jnp.array([1.0, 1.0, 1.0, 1.0]), lam=0.1).tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    return _R["kl_penalty"].weights(losses, lam, weights=weights, where=where, axis=axis)


def tv(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""Worst case over a total-variation ball.

    .. math::

        \sup_q \Big\{ \sum_i q_i \ell_i : \tfrac12 \|q - p\|_1 \le \rho \Big\}
          = \rho \max_{i: p_i > 0} \ell_i + (1 - \rho)\, \mathrm{CVaR}_{1-\rho}(\ell)

    The adversary takes the mass :math:`\rho` from the smallest losses and puts it on the
    largest; exact, by the same sort-free threshold search as :func:`cvar`. ``radius = 0``
    is ERM and ``radius = 1`` the maximum loss. Not differentiable where the threshold
    or the maximum is tied (the gradient is then a valid subgradient, ``q``).

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \in [0, 1]`, the fraction of mass moved.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis (or axes; None for all) of examples to reduce.

    Returns:
        Array of ``losses.shape`` without the reduced axes, in the dtype of ``losses``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> float(rl.tv(jnp.array([1.0, 2.0, 3.0, 4.0]), radius=0.25))  # the mass of 1.0 moves to 4.0
        3.25

    References:
        Jiang & Guan, *Risk-averse two-stage stochastic program with distributional
        ambiguity*, Operations Research 2018. Duchi & Namkoong, *Learning models with
        uniform performance via distributionally robust optimization*, Annals of
        Statistics 2021.
    """
    return _R["tv"].value(losses, radius, weights=weights, where=where, axis=axis)


def tv_weights(
    losses: ArrayLike,
    radius: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] | None = -1,
) -> jax.Array:
    r"""Worst-case distribution of :func:`tv`.

    .. math::

        q^\star = p - r + \rho\, \frac{p\,[\ell = \max \ell]}{\sum_j p_j [\ell_j = \max \ell]}

    with :math:`0 \le r \le p` the lowest :math:`\rho` of the mass (ties at the threshold
    share it in proportion to :math:`p`).

    Args:
        losses: per-example losses, real floating array.
        radius: ball radius :math:`\rho \in [0, 1]`.
        weights: optional non-negative nominal weights broadcastable to ``losses``.
        where: optional boolean mask broadcastable to ``losses``.
        axis: the axis (or axes; None for all) of examples.

    Returns:
        Array shaped like ``losses``: non-negative, summing to 1 over the reduced axes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> rl.tv_weights(jnp.array([1.0, 2.0, 3.0, 4.0]), radius=0.25).tolist()
        [0.0, 0.25, 0.25, 0.5]
    """
    return _R["tv"].weights(losses, radius, weights=weights, where=where, axis=axis)

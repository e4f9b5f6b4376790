r"""The Objective interface: what the trainer minimizes, in the optax style.

An :class:`Objective` is a NamedTuple of two pure functions:

* ``init(key) -> state``: the objective's own state (``()`` for stateless ones; online
  group weights or dual variables for stateful ones).
* ``loss(loss_fn, params, batch, state, key) -> (value, (state, metrics))``.

``loss_fn(params, batch) -> losses`` returns the per-example losses of shape ``(n,)``.
Passing the function rather than the loss vector lets an objective evaluate it at other
inputs (``loss_fn(params, {**batch, "x": x_adv})``): perturbation objectives need that.
A batch is a dict of arrays with a leading example axis; the keys an objective reads are

* ``"mask"`` (bool): padding examples are False and leave the nominal distribution;
* ``"weight"`` (float, optional): nominal weights ``p ∝ weight`` (e.g. importance weights).

``value`` is the scalar to differentiate; ``metrics`` is a dict of scalars for logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from robustlearn import _reductions

Batch = dict[str, jax.Array]
LossFn = Callable[[Any, Batch], jax.Array]


class Objective(NamedTuple):
    """A training objective: ``init(key) -> state`` and ``loss(loss_fn, params, batch, state, key)``.

    Attributes:
        init: builds the objective's state from a PRNG key.
        loss: returns ``(value, (new_state, metrics))``; ``value`` is a scalar.
        name: a short human-readable description, e.g. ``"cvar(alpha=0.1)"``.
        spec: ``(reduction, hyperparameters)`` for objectives built by
            :func:`from_reduction` (solvers that exploit the structure read it), else None.
        check: optional ``check(data)`` that validates a whole concrete dataset (e.g.
            group ids in range) and raises ``ValueError``/``TypeError``; the trainer calls
            it once per ``fit``, before compiling.
    """

    init: Callable[[jax.Array], Any]
    loss: Callable[..., tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]
    name: str
    spec: tuple | None = None
    check: Callable[[dict], None] | None = None


def _stateless_init(key):
    del key
    return ()


def from_reduction(reduction: Callable[..., jax.Array], name: str, **hyper: float) -> Objective:
    r"""Wraps a reduction ``reduction(losses, **hyper, weights=, where=)`` as an Objective.

    .. math::

        \text{value}(\theta) = R\big(\ell(\theta; z_1), \dots, \ell(\theta; z_n)\big)

    with :math:`R` the reduction over the batch, the batch's ``"weight"`` as the nominal
    weights and its ``"mask"`` as ``where``. Metrics: ``objective`` (the value) and
    ``mean_loss`` (the plain average over unmasked examples).

    Args:
        reduction: a function of a loss vector, such as :func:`robustlearn.cvar`.
        name: description used in logs and histories.
        **hyper: hyperparameters passed to ``reduction`` (validated now).

    Returns:
        An :class:`Objective` with empty state.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import robustlearn as rl
        >>> obj = rl.objectives.from_reduction(rl.cvar, "cvar", alpha=0.5)
        >>> loss_fn = lambda params, batch: (batch["x"] - params) ** 2
        >>> value, (state, metrics) = obj.loss(loss_fn, 0.0, {"x": jnp.arange(4.0)}, (), None)
        >>> float(value), float(metrics["mean_loss"])
        (6.5, 3.5)
    """
    # Validate hyperparameters now, at construction, with a tiny probe.
    reduction(jnp.zeros((1,), jnp.float32), **hyper)

    def loss(loss_fn, params, batch, state, key):
        del key
        losses = loss_fn(params, batch)
        mask = batch.get("mask")
        value = reduction(losses, **hyper, weights=batch.get("weight"), where=mask)
        metrics = {"objective": value, "mean_loss": _reductions.erm(losses, where=mask)}
        return value, (state, metrics)

    return Objective(_stateless_init, loss, name, (reduction, dict(hyper)))


def erm() -> Objective:
    """Objective minimizing the (weighted) mean loss, :func:`robustlearn.erm`.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction(_reductions.erm, "erm()")


def cvar(alpha: float) -> Objective:
    """Objective minimizing :func:`robustlearn.cvar` of the per-example losses.

    Args:
        alpha: tail fraction in ``(0, 1]``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction(_reductions.cvar, f"cvar(alpha={alpha!r})", alpha=alpha)


def chi_square(radius: float) -> Objective:
    """Objective minimizing :func:`robustlearn.chi_square` of the per-example losses.

    Args:
        radius: ball radius, ``>= 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction(_reductions.chi_square, f"chi_square(radius={radius!r})", radius=radius)


def kl(radius: float) -> Objective:
    """Objective minimizing :func:`robustlearn.kl` of the per-example losses.

    Args:
        radius: ball radius, ``>= 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction(_reductions.kl, f"kl(radius={radius!r})", radius=radius)


def cressie_read(radius: float, k: float) -> Objective:
    """Objective minimizing :func:`robustlearn.cressie_read` of the per-example losses.

    Args:
        radius: ball radius, ``>= 0``.
        k: divergence exponent, ``> 1``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction(_reductions.cressie_read, f"cressie_read(radius={radius!r}, k={k!r})", radius=radius, k=k)


def chi_square_penalty(lam: float) -> Objective:
    """Objective minimizing :func:`robustlearn.chi_square_penalty` of the per-example losses.

    Args:
        lam: penalty strength, ``> 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction(_reductions.chi_square_penalty, f"chi_square_penalty(lam={lam!r})", lam=lam)


def kl_penalty(lam: float) -> Objective:
    """Objective minimizing :func:`robustlearn.kl_penalty` of the per-example losses.

    Args:
        lam: temperature, ``> 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction(_reductions.kl_penalty, f"kl_penalty(lam={lam!r})", lam=lam)


def importance_weighted(*, self_normalize: bool = True) -> Objective:
    r"""Importance-weighted ERM over the batch's ``"weight"`` column.

    .. math::

        \text{self-normalized:}\quad \frac{\sum_i w_i \ell_i}{\sum_i w_i}, \qquad
        \text{plain:}\quad \frac{1}{n}\sum_i w_i \ell_i,

    sums over the unmasked examples of the batch. The plain form is unbiased for the
    target risk when :math:`\mathbb{E}_{\rm syn}[w] = 1` (normalize the weights to mean 1,
    as :func:`robustlearn.importance.transform_weights` does); the self-normalized form
    is consistent without knowing the normalizer and has lower variance, at an
    :math:`O(1/n)` bias per batch. Any robust objective also reads ``"weight"`` as its
    nominal distribution (DRO around the reweighted data).

    Args:
        self_normalize: divide by the batch's total weight (True) or by its size.

    Returns:
        An :class:`Objective` with empty state; it requires ``"weight"`` in the batch.
    """
    if not isinstance(self_normalize, bool):
        raise TypeError(f"`self_normalize` must be a bool; got {self_normalize!r}.")

    def check(data):
        if "weight" not in data:
            raise ValueError(
                f"importance_weighted() needs per-example weights under 'weight'; got keys {sorted(data)}."
            )

    def loss(loss_fn, params, batch, state, key):
        del key
        check(batch)
        losses = loss_fn(params, batch)
        mask = batch.get("mask")
        if self_normalize:
            value = _reductions.erm(losses, weights=batch["weight"], where=mask)
        else:
            live = jnp.ones(losses.shape, bool) if mask is None else mask
            w = jnp.asarray(batch["weight"], losses.dtype)
            value = jnp.sum(jnp.where(live, w * losses, 0)) / jnp.maximum(jnp.sum(live), 1)
        metrics = {"objective": value, "mean_loss": _reductions.erm(losses, where=mask)}
        return value, (state, metrics)

    return Objective(_stateless_init, loss, f"importance_weighted(self_normalize={self_normalize})", None, check)

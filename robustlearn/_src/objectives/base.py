r"""The Objective interface: what the trainer minimizes, in the optax style.

An :class:`Objective` is a NamedTuple of two pure functions:

* ``init(key) -> state``: the objective's own state. Hyperparameters live there as
  arrays (``state.hyperparams``, as in ``optax.inject_hyperparams``), so two objectives
  that differ only in a hyperparameter trace to the same program and a grid over it
  compiles once; online group weights or dual variables sit beside them.
* ``loss(loss_fn, params, batch, state, key) -> (value, (state, metrics))``: one
  training step's value and the next state.

``loss_fn(params, batch) -> losses`` returns the per-example losses of shape ``(n,)``.
Passing the function rather than the loss vector lets an objective evaluate it at other
inputs (``loss_fn(params, {**batch, "x": x_adv})``): perturbation objectives need that.
A batch is a dict of arrays with a leading example axis; the keys an objective reads are

* ``"mask"`` (bool): padding examples are False and leave the nominal distribution;
* ``"weight"`` (float, optional): nominal weights ``p ∝ weight`` (e.g. importance weights).

``value`` is the scalar to differentiate; ``metrics`` is a dict of scalars (or small
arrays, such as group weights) for logging. ``evaluate(loss_fn, params, batch, state,
key) -> (value, metrics)`` computes the same value without advancing the state
(validation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustlearn._src.reductions import api as _reductions
from robustlearn._src.reductions.registry import Reduction
from robustlearn._src.reductions.registry import get as _get_reduction

Batch = dict[str, jax.Array]
LossFn = Callable[[Any, Batch], jax.Array]


class Objective(NamedTuple):
    """A training objective: ``init(key) -> state`` and ``loss(loss_fn, params, batch, state, key)``.

    Attributes:
        init: builds the objective's state (hyperparameters as arrays included) from a
            PRNG key.
        loss: returns ``(value, (new_state, metrics))``; ``value`` is a scalar.
        name: a short human-readable description, e.g. ``"cvar(alpha=0.1)"``.
        hyperparams: the hyperparameters as Python numbers (for names, configuration
            records and checkpoints; the traced copies live in the state).
        reduction: the registry record for objectives built by :func:`from_reduction`,
            else None.
        smooth: whether the value is differentiable in the parameters for a smooth model
            (``fit_linear`` minimizes smooth objectives directly by L-BFGS).
        check: optional ``check(data)`` that validates a whole concrete training set (e.g.
            group ids in range) and raises ``ValueError``/``TypeError``; the trainer calls
            it once per ``fit``, before compiling.
        evaluate: optional ``evaluate(loss_fn, params, batch, state, key) -> (value,
            metrics)`` that does not advance the state; default: ``loss`` with its new
            state discarded.
        requires: batch keys the objective reads besides ``"x"``, ``"y"`` and ``"mask"``
            (required of training data only).
        smoothed: for non-smooth objectives, ``smoothed(loss_fn, params, batch, state, aux,
            tau) -> value``: smooth in the parameters and in auxiliary variables ``aux``,
            and within ``O(tau)`` of the value once minimized over ``aux``; ``fit_linear``
            minimizes it for a decreasing ``tau`` (continuation).
        aux_init: ``aux_init(dtype)``, the starting ``aux`` of ``smoothed``.
    """

    init: Callable[[jax.Array], Any]
    loss: Callable[..., tuple[jax.Array, tuple[Any, dict[str, jax.Array]]]]
    name: str
    hyperparams: Mapping[str, Any] = {}
    reduction: Reduction | None = None
    smooth: bool = True
    check: Callable[[dict], None] | None = None
    evaluate: Callable[..., tuple[jax.Array, dict[str, jax.Array]]] | None = None
    requires: tuple[str, ...] = ()
    smoothed: Callable[..., jax.Array] | None = None
    aux_init: Callable[[Any], Any] | None = None

    def eval_loss(self, loss_fn, params, batch, state, key):
        """``(value, metrics)`` without advancing the state (``evaluate`` or ``loss``)."""
        if self.evaluate is not None:
            return self.evaluate(loss_fn, params, batch, state, key)
        value, (_, metrics) = self.loss(loss_fn, params, batch, state, key)
        return value, metrics


class ReductionState(NamedTuple):
    """State of a reduction objective: its hyperparameters as arrays of the default float dtype."""

    hyperparams: dict[str, jax.Array]


def from_reduction(reduction: str | Reduction, **hyperparams: float) -> Objective:
    r"""The Objective that minimizes a registered reduction of the per-example losses.

    .. math::

        \text{value}(\theta) = R\big(\ell(\theta; z_1), \dots, \ell(\theta; z_n)\big)

    with :math:`R` the reduction over the batch, the batch's ``"weight"`` as the nominal
    weights and its ``"mask"`` as ``where``. The hyperparameters are validated now and
    kept in the state as arrays (:class:`ReductionState`). Metrics: ``objective`` (the
    value) and ``mean_loss`` (the plain average over unmasked examples).

    Args:
        reduction: a name from :data:`robustlearn.REDUCTIONS` (e.g. ``"cvar"``) or its
            record.
        **hyperparams: the reduction's hyperparameters by name.

    Returns:
        An :class:`Objective`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> obj = rl.objectives.from_reduction("cvar", alpha=0.5)
        >>> loss_fn = lambda params, batch: (batch["x"] - params) ** 2
        >>> value, (state, metrics) = obj.loss(loss_fn, 0.0, {"x": jnp.arange(4.0)}, obj.init(None), None)
        >>> float(value), float(metrics["mean_loss"])
        (6.5, 3.5)
    """
    record = _get_reduction(reduction) if isinstance(reduction, str) else reduction
    values = record.bind((), hyperparams)
    record.check(*values)  # concrete values: raises now, naming the argument and its range
    config = {name: float(v) for name, v in zip(record.hyper_names, values, strict=True)}

    def init(key):
        del key
        # The default float dtype: float64 with jax_enable_x64, else float32.
        dtype = jnp.result_type(float)
        return ReductionState({k: jax.device_put(np.asarray(v, dtype)) for k, v in config.items()})

    def loss(loss_fn, params, batch, state, key):
        del key
        losses = loss_fn(params, batch)
        mask = batch.get("mask")
        value = record.value(losses, **state.hyperparams, weights=batch.get("weight"), where=mask)
        metrics = {"objective": value, "mean_loss": _reductions.erm(losses, where=mask)}
        return value, (state, metrics)

    smoothed = None
    if record.smoothed is not None:

        def smoothed(loss_fn, params, batch, state, aux, tau):
            losses = loss_fn(params, batch)
            w = jnp.ones(losses.shape, losses.dtype) if batch.get("weight") is None else batch["weight"]
            if batch.get("mask") is not None:
                w = jnp.where(batch["mask"], w, 0)
            p = w / jnp.sum(w)
            values = (state.hyperparams[name] for name in record.hyper_names)
            return record.smoothed(losses, p, aux, tau, *values)

    name = f"{record.name}(" + ", ".join(f"{k}={v!r}" for k, v in config.items()) + ")"
    aux_init = record.aux_init
    return Objective(init, loss, name, config, record, record.smooth, smoothed=smoothed, aux_init=aux_init)


def erm() -> Objective:
    """Objective minimizing the (weighted) mean loss, :func:`robustlearn.erm`.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("erm")


def cvar(alpha: float) -> Objective:
    """Objective minimizing :func:`robustlearn.cvar` of the per-example losses.

    Args:
        alpha: tail fraction in ``(0, 1]``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("cvar", alpha=alpha)


def chi_square(radius: float) -> Objective:
    """Objective minimizing :func:`robustlearn.chi_square` of the per-example losses.

    Args:
        radius: ball radius, ``>= 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("chi_square", radius=radius)


def kl(radius: float) -> Objective:
    """Objective minimizing :func:`robustlearn.kl` of the per-example losses.

    Args:
        radius: ball radius, ``>= 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("kl", radius=radius)


def cressie_read(radius: float, k: float) -> Objective:
    """Objective minimizing :func:`robustlearn.cressie_read` of the per-example losses.

    Args:
        radius: ball radius, ``>= 0``.
        k: divergence exponent, ``> 1``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("cressie_read", radius=radius, k=k)


def tv(radius: float) -> Objective:
    """Objective minimizing :func:`robustlearn.tv` of the per-example losses.

    Args:
        radius: ball radius (fraction of mass moved), in ``[0, 1]``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("tv", radius=radius)


def chi_square_penalty(lam: float) -> Objective:
    """Objective minimizing :func:`robustlearn.chi_square_penalty` of the per-example losses.

    Args:
        lam: penalty strength, ``> 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("chi_square_penalty", lam=lam)


def kl_penalty(lam: float) -> Objective:
    """Objective minimizing :func:`robustlearn.kl_penalty` of the per-example losses.

    Args:
        lam: temperature, ``> 0``.

    Returns:
        An :class:`Objective` (see :func:`from_reduction`).
    """
    return from_reduction("kl_penalty", lam=lam)


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

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> obj = rl.objectives.importance_weighted()
        >>> batch = {"x": jnp.array([1.0, 3.0]), "weight": jnp.array([3.0, 1.0])}
        >>> float(obj.loss(lambda p, b: b["x"], None, batch, obj.init(None), None)[0])
        1.5
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

    name = f"importance_weighted(self_normalize={self_normalize})"
    return Objective(_stateless_init, loss, name, {"self_normalize": self_normalize}, check=check, requires=("weight",))


def _stateless_init(key):
    del key
    return ()

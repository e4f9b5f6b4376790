r"""Group DRO: guard the worst group (or data source) instead of the average.

Two forms of

.. math::

    \min_\theta \max_{g} \ \hat R_g(\theta), \qquad
    \hat R_g(\theta) = \frac{\sum_{i: g_i = g} p_i \ell_i(\theta)}{\sum_{i: g_i = g} p_i}:

* :func:`worst_group`: the max itself, for full-batch training (a minibatch max is a
  biased, noisy estimate of the population max).
* :func:`group_dro`: the online algorithm of Sagawa et al. (2020) for minibatches: group
  weights :math:`q` on the simplex follow exponentiated-gradient ascent on the
  (adjusted) group losses, and the model descends :math:`\sum_g q_g \hat R_g`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from robustlearn._src import checks as _checks
from robustlearn._src.objectives.base import Objective
from robustlearn._src.reductions import api as _reductions


def group_means(
    losses: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""Per-group weighted mean losses.

    .. math::

        \hat R_g = \frac{\sum_{i} p_i [g_i = g]\, \ell_i}{\sum_i p_i [g_i = g]}, \qquad
        m_g = \sum_i p_i [g_i = g]

    with :math:`p` the (unnormalized) nominal weights, zero where masked.

    Args:
        losses: per-example losses, shape ``(n,)``.
        groups: integer group ids, shape ``(n,)``; ids outside ``[0, num_groups)`` count
            in no group.
        num_groups: number of groups ``G``.
        weights: optional nominal weights, shape ``(n,)``, finite and non-negative
            (concrete weights outside ``[0, inf)`` raise ``ValueError``; traced ones
            make both results NaN).
        where: optional boolean mask, shape ``(n,)``.

    Returns:
        ``(means, mass)``, each of shape ``(G,)``; ``means`` is 0 for groups with no mass.

    Raises:
        ValueError: negative, NaN or infinite concrete ``weights``; ``num_groups`` not a
            positive int.

    Examples:
        >>> import jax.numpy as jnp
        >>> means, mass = group_means(jnp.array([1.0, 3.0, 5.0]), jnp.array([0, 0, 1]), 3)
        >>> means.tolist(), mass.tolist()
        ([2.0, 5.0, 0.0], [2.0, 1.0, 0.0])
    """
    losses = _checks.as_float_losses(losses)
    num_groups = _check_num_groups(num_groups)
    invalid = jnp.asarray(False)
    if weights is None:
        p = jnp.ones_like(losses)
    else:
        if not _checks.is_traced(weights):
            w = np.asarray(weights)
            if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
                raise TypeError(f"`weights` must be real numbers; got dtype {w.dtype}.")
            if w.size and (not np.all(np.isfinite(w)) or np.any(w < 0)):
                raise ValueError("`weights` must be finite and in [0, inf); got negative or non-finite entries.")
        p = jnp.asarray(weights, losses.dtype)
        invalid = jnp.any(~jnp.isfinite(p) | (p < 0))  # traced weights: poison the result
    if where is not None:
        p = jnp.where(where, p, 0)
    onehot = jax.nn.one_hot(groups, num_groups, dtype=losses.dtype)  # out-of-range ids: all zeros
    mass = p @ onehot
    total = (p * jnp.where(p > 0, losses, 0)) @ onehot
    means = jnp.where(mass > 0, total / jnp.where(mass > 0, mass, 1), 0)
    means = jnp.where(invalid, jnp.nan, means)
    mass = jnp.where(invalid, jnp.nan, mass)
    return means, mass


def _check_num_groups(num_groups) -> int:
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
        raise ValueError(f"`num_groups` must be a positive int; got {num_groups!r}.")
    return int(num_groups)


def _group_checker(key: str, num_groups: int):
    def check(data: dict) -> None:
        if key not in data:
            raise ValueError(f"this objective needs group ids in the batch under {key!r}; got keys {sorted(data)}.")
        g = np.asarray(data[key])
        if not np.issubdtype(g.dtype, np.integer):
            raise TypeError(f"`{key}` must hold integer ids; got dtype {g.dtype}.")
        if g.size and (g.min() < 0 or g.max() >= num_groups):
            raise ValueError(f"`{key}` ids must be in [0, {num_groups - 1}]; got range [{g.min()}, {g.max()}].")

    return check


def _groups_of(batch, key: str, num_groups: int, check):
    if key not in batch:
        raise ValueError(f"this objective needs group ids in the batch under {key!r}; got keys {sorted(batch)}.")
    g = batch[key]
    if not _checks.is_traced(g):
        check({key: g})
    g = jnp.asarray(g)
    mask = batch.get("mask")
    live = jnp.ones(g.shape, bool) if mask is None else mask
    bad = jnp.any(live & ((g < 0) | (g >= num_groups)))  # traced ids: poison the value, never drop them
    return g, bad


def _batch_groups(loss_fn, params, batch, key: str, num_groups: int, check):
    """Per-example losses, per-group means and masses of a batch, and the bad-ids flag."""
    losses = loss_fn(params, batch)
    g, bad = _groups_of(batch, key, num_groups, check)
    means, mass = group_means(losses, g, num_groups, weights=batch.get("weight"), where=batch.get("mask"))
    return losses, means, mass, bad


class GroupDROState(NamedTuple):
    """State of :func:`group_dro`.

    Attributes:
        weights: the group weights ``q`` on the simplex, shape ``(G,)``.
        hyperparams: ``step_size`` and ``adjustment`` (scalars) and ``group_counts``
            (shape ``(G,)``; ones without counts) as arrays of the default float dtype:
            traced, so a grid over them compiles once. None (a state built by hand):
            the objective's own values.
    """

    weights: jax.Array
    hyperparams: dict[str, jax.Array] | None = None


def group_dro(
    num_groups: int,
    *,
    step_size: float = 0.01,
    adjustment: float = 0.0,
    group_counts: ArrayLike | None = None,
    key: str = "group",
) -> Objective:
    r"""Online group DRO (Sagawa et al., 2020) as a stateful Objective.

    At every step, with the minibatch group losses :math:`\hat R_g` and the group sizes
    :math:`n_g` of the training set,

    .. math::

        q_g \leftarrow \frac{q_g \exp\big(\eta\,(\hat R_g + C/\sqrt{n_g})\big)}
                            {\sum_h q_h \exp\big(\eta\,(\hat R_h + C/\sqrt{n_h})\big)},
        \qquad
        \text{value} = \sum_g q_g \big(\hat R_g + C/\sqrt{n_g}\big),

    with :math:`q` held constant in the gradient. Groups absent from the minibatch keep
    their exponent at 0 and count for 0 in the value. :math:`C/\sqrt{n_g}` is the
    generalization adjustment: small groups overfit, so their training loss understates
    their test loss.

    ``evaluate`` (validation) returns :math:`\sum_g q_g (\hat R_g + C/\sqrt{n_g})` with
    the current :math:`q`, without an exponentiated-gradient step: validation never
    moves the group weights.

    The group ids travel in the batch under ``key`` (``"group"``, or ``"source"`` for
    group DRO over data sources). Ids outside ``[0, num_groups)`` raise ``ValueError``
    when the data are concrete (the trainer checks the whole training set once via
    ``Objective.check``) and make the value NaN when traced.

    Args:
        num_groups: number of groups ``G``.
        step_size: exponentiated-gradient step :math:`\eta > 0`.
        adjustment: :math:`C \ge 0`; needs ``group_counts`` when positive.
        group_counts: training examples per group, shape ``(G,)``, all positive.
        key: batch key holding the group ids.

    Returns:
        An :class:`~robustlearn.objectives.Objective` with state :class:`GroupDROState`
        (``step_size``, ``adjustment`` and the counts live there as arrays); metrics
        ``objective``, ``mean_loss``, ``worst_group_loss`` (of the minibatch),
        ``max_group_weight`` and ``group_weights`` (``q`` after the step, shape
        ``(G,)``).

    Examples:
        >>> import jax.numpy as jnp
        >>> obj = group_dro(2, step_size=1.0)
        >>> loss_fn = lambda params, batch: batch["x"] * params
        >>> batch = {"x": jnp.array([0.0, 0.0, 2.0]), "group": jnp.array([0, 0, 1])}
        >>> value, (state, metrics) = obj.loss(loss_fn, 1.0, batch, obj.init(None), None)
        >>> [round(float(q), 3) for q in state.weights]  # softmax([0, 2])
        [0.119, 0.881]
        >>> value, _ = obj.evaluate(loss_fn, 1.0, batch, obj.init(None), None)
        >>> float(value)  # uniform q: (0 + 2) / 2
        1.0

    References:
        Sagawa, Koh, Hashimoto & Liang, "Distributionally Robust Neural Networks for Group
        Shifts", ICLR 2020.
    """
    num_groups = _check_num_groups(num_groups)
    _checks.scalar("step_size", step_size, low=0.0, low_open=True)
    _checks.scalar("adjustment", adjustment, low=0.0)
    if not isinstance(key, str):
        raise TypeError(f"`key` must be a batch key (str); got {key!r}.")
    if group_counts is not None:
        counts = np.asarray(group_counts, dtype=np.float64)
        if counts.shape != (num_groups,) or not np.all(np.isfinite(counts) & (counts > 0)):
            raise ValueError(f"`group_counts` must be {num_groups} positive counts; got {group_counts!r}.")
    elif adjustment > 0:
        raise ValueError("`adjustment` > 0 needs `group_counts` (training examples per group).")
    else:
        counts = np.ones(num_groups)
    check = _group_checker(key, num_groups)
    config = {"step_size": float(step_size), "adjustment": float(adjustment)}

    def traced_hyperparams():
        dtype = jnp.result_type(float)  # float64 with jax_enable_x64, else float32
        hyper = {k: jnp.asarray(v, dtype) for k, v in config.items()}
        hyper["group_counts"] = jnp.asarray(counts, dtype)
        return hyper

    def init(rng):
        del rng
        return GroupDROState(jnp.full((num_groups,), 1.0 / num_groups, jnp.result_type(float)), traced_hyperparams())

    def _terms(loss_fn, params, batch, state):
        losses, means, mass, bad = _batch_groups(loss_fn, params, batch, key, num_groups, check)
        hyper = traced_hyperparams() if state.hyperparams is None else state.hyperparams
        adj = hyper["adjustment"] / jnp.sqrt(hyper["group_counts"])
        return losses, means, mass > 0, means + adj.astype(means.dtype), bad

    def _metrics(value, losses, means, present, q, mask):
        return {
            "objective": value,
            "mean_loss": _reductions.erm(losses, where=mask),
            "worst_group_loss": jnp.max(jnp.where(present, means, -jnp.inf)),
            "max_group_weight": jnp.max(q),
            "group_weights": q,
        }

    def loss(loss_fn, params, batch, state, rng):
        del rng
        losses, means, present, adjusted, bad = _terms(loss_fn, params, batch, state)
        step = config["step_size"] if state.hyperparams is None else state.hyperparams["step_size"]
        exponent = jnp.where(present, step * jax.lax.stop_gradient(adjusted), 0.0)
        logits = jnp.log(state.weights) + exponent.astype(state.weights.dtype)
        q = jax.nn.softmax(logits - jnp.max(logits))
        value = jnp.sum(jax.lax.stop_gradient(q).astype(means.dtype) * jnp.where(present, adjusted, 0))
        value = jnp.where(bad, jnp.nan, value)
        metrics = _metrics(value, losses, means, present, q, batch.get("mask"))
        return value, (GroupDROState(q, state.hyperparams), metrics)

    def evaluate(loss_fn, params, batch, state, rng):
        del rng
        losses, means, present, adjusted, bad = _terms(loss_fn, params, batch, state)
        q = state.weights
        value = jnp.sum(q.astype(means.dtype) * jnp.where(present, adjusted, 0))
        value = jnp.where(bad, jnp.nan, value)
        return value, _metrics(value, losses, means, present, q, batch.get("mask"))

    name = f"group_dro(num_groups={num_groups}, step_size={step_size!r}, adjustment={adjustment!r}, key={key!r})"
    hyperparams = {"num_groups": num_groups, "step_size": step_size, "adjustment": adjustment, "key": key}
    return Objective(init, loss, name, hyperparams, check=check, evaluate=evaluate, requires=(key,))


def worst_group(num_groups: int, *, key: str = "group") -> Objective:
    r"""Full-batch group DRO: the largest group mean loss.

    .. math::

        \text{value}(\theta) = \max_{g:\ m_g > 0} \hat R_g(\theta)

    over the groups present in the batch (see :func:`group_means`; 0 when every example
    is masked). The gradient is that
    of an arg-max group (a subgradient); use it with full-batch training
    (``Trainer(batch_size=None)``), where it is the exact minimax objective. For
    minibatches use :func:`group_dro`.

    Not smooth (``smooth=False``): ``fit_linear`` minimizes its ``smoothed`` form

    .. math::

        V_\tau(\theta) = \tau \log \sum_{g:\ m_g > 0} e^{\hat R_g(\theta)/\tau},
        \qquad 0 \le V_\tau - \max_{g:\ m_g > 0} \hat R_g \le \tau \log G,

    (no auxiliary variables) for a decreasing :math:`\tau`.

    Args:
        num_groups: number of groups ``G``.
        key: batch key holding the group ids.

    Returns:
        An :class:`~robustlearn.objectives.Objective` with empty state.

    Examples:
        >>> import jax.numpy as jnp
        >>> obj = worst_group(2)
        >>> loss_fn = lambda params, batch: batch["x"] * params
        >>> batch = {"x": jnp.array([1.0, 3.0, 2.5]), "group": jnp.array([0, 0, 1])}
        >>> float(obj.loss(loss_fn, 1.0, batch, (), None)[0])
        2.5
    """
    num_groups = _check_num_groups(num_groups)
    check = _group_checker(key, num_groups)

    def init(rng):
        del rng
        return ()

    def loss(loss_fn, params, batch, state, rng):
        del rng
        losses, means, mass, bad = _batch_groups(loss_fn, params, batch, key, num_groups, check)
        mask = batch.get("mask")
        # All masked: 0, as for every reduction.
        value = jnp.where(jnp.any(mass > 0), jnp.max(jnp.where(mass > 0, means, -jnp.inf)), 0)
        value = jnp.where(bad, jnp.nan, value)
        metrics = {"objective": value, "mean_loss": _reductions.erm(losses, where=mask), "worst_group_loss": value}
        return value, (state, metrics)

    def no_aux(dtype):  # no auxiliary variables: the empty pytree
        del dtype
        return ()

    def smoothed(loss_fn, params, batch, state, aux, tau):
        # tau * log-sum-exp of the present groups' means: within tau * log(G) above the max.
        del state, aux
        _, means, mass, bad = _batch_groups(loss_fn, params, batch, key, num_groups, check)
        present = mass > 0
        any_present = jnp.any(present)
        scaled = jnp.where(present, means / tau, -jnp.inf)
        scaled = jnp.where(any_present, scaled, 0.0)  # keeps the gradient finite when all are masked
        value = jnp.where(any_present, tau * jax.nn.logsumexp(scaled), 0)
        return jnp.where(bad, jnp.nan, value)

    name = f"worst_group(num_groups={num_groups}, key={key!r})"
    config = {"num_groups": num_groups, "key": key}
    return Objective(
        init, loss, name, config, smooth=False, check=check, requires=(key,), smoothed=smoothed, aux_init=no_aux
    )

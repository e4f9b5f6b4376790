r"""The contamination-corrected risk: unbiased training on labels that partly copy the previous model.

Setting (Amin et al., 2026): in round :math:`s` each label is :math:`f_{s-1}(x)`, the prediction of
the model deployed before the round, with probability :math:`\alpha`, else :math:`f^\star(x)`,
independently of everything else given :math:`x`. Then for any model :math:`h` and any loss
:math:`\ell`,

.. math::

    \mathbb E[\ell(h(x), y) \mid x] = (1-\alpha)\,\ell(h(x), f^\star(x)) + \alpha\,\ell(h(x), f_{s-1}(x)),

because :math:`y` takes exactly these two values with these probabilities. Solving for the clean
term gives an unbiased per-example estimate of the clean loss from observed quantities.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from robustlearn._src import checks as _checks
from robustlearn._src.objectives.base import Objective, ReductionState
from robustlearn._src.reductions import api as _reductions


def _check_alpha(alpha) -> float:
    try:
        _checks.scalar("alpha", alpha, low=0.0, high=1.0, high_open=True)
    except ValueError as err:
        raise ValueError(f"{err} (1 is excluded: the correction divides by 1 - alpha.)") from None
    return float(alpha)


def _check_num_classes(num_classes) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an int >= 2 or None; got {num_classes!r}.")
    return int(num_classes)


def contamination_corrected(
    alpha: float,
    previous_key: str = "previous",
    *,
    nonnegative: bool = False,
    num_classes: int | None = None,
) -> Objective:
    r"""Objective whose value is an unbiased estimate of the clean risk under recursive contamination.

    From :math:`\mathbb E[\ell(h(x),y)\mid x] = (1-\alpha)\ell(h(x),f^\star(x)) + \alpha\,\ell(h(x),p)`,
    with :math:`p = f_{s-1}(x)` the previous model's prediction (the batch's ``previous_key``
    column), each example's corrected loss

    .. math::

        \tilde\ell_i = \frac{\ell(h(x_i), y_i) - \alpha_i\,\ell(h(x_i), p_i)}{1 - \alpha_i},
        \qquad \mathbb E[\tilde\ell_i \mid x_i] = \ell(h(x_i), f^\star(x_i)),

    is unbiased for its clean loss, for any loss and any model; :math:`\alpha_i = \alpha`, or 0
    for an example marked clean by :math:`p_i = -1` (e.g. the first round). The value is the
    weighted mean :math:`\sum_i w_i \tilde\ell_i / \sum_i w_i` over unmasked examples, so it is
    unbiased for the clean risk and its gradient for the clean risk's gradient. For the
    logistic and softmax cross-entropy losses of a linear model it is convex (:math:`\ell(s, y) -
    \alpha\ell(s, p) = (1-\alpha)\,\mathrm{lse}(s) - s_y + \alpha s_p` is convex in the scores), but a
    flexible model can push it below zero: it gains :math:`\alpha/(1-\alpha)` per unit of loss on
    :math:`p_i` where :math:`y_i \neq p_i`.

    ``nonnegative=True`` clips per class, as non-negative PU learning does (Kiryo et al.,
    2017): the clean risk is :math:`\sum_c R_c` with :math:`R_c = \mathbb E[\mathbf 1\{f^\star(x)=c\}
    \ell(h(x), c)] \ge 0`, estimated without bias by

    .. math::

        \hat R_c = \frac{1}{\sum_i w_i}\sum_i w_i\,
        \frac{\mathbf 1\{y_i = c\}\,\ell(h(x_i), c) - \alpha_i \mathbf 1\{p_i = c\}\,\ell(h(x_i), c)}{1 - \alpha_i},
        \qquad \text{value} = \sum_c \max(\hat R_c, 0),

    which needs only the two loss vectors (:math:`\ell(h, y_i)` and :math:`\ell(h, p_i)`). Clipping
    moves each :math:`\hat R_c` toward its true (non-negative) value, so it never increases
    :math:`|\hat R_c - R_c|`; the value is biased upward only where a class's estimate is negative.
    For a convex loss of a linear model it stays convex (a max of convex functions). It is not
    smooth; ``fit_linear`` minimizes its ``smoothed`` form,
    :math:`\sum_c \tau\,\mathrm{softplus}(\hat R_c/\tau)`, within :math:`C\tau\log 2` of the value.

    ``alpha`` is kept in the state as an array (traced: a grid over it compiles once). A traced
    ``alpha`` outside ``[0, 1)``, or ``previous`` labels outside ``[-1, num_classes)`` under
    ``jit``, make the value NaN rather than a wrong number.

    Args:
        alpha: the synthetic fraction, in ``[0, 1)`` (1 is excluded: the correction divides by
            :math:`1-\alpha`; at 1 no label carries information about :math:`f^\star`).
        previous_key: batch key of the previous model's predicted labels (integers; -1 marks a
            clean example).
        nonnegative: clip the per-class risks at 0 (needs ``num_classes``).
        num_classes: number of classes; used to check ``previous`` (without it, labels up to
            ``max(y.max(), 1)`` are accepted by the concrete check).

    Returns:
        An :class:`Objective` with ``requires=(previous_key,)``; metrics ``objective`` and
        ``mean_loss`` (the uncorrected mean loss on the observed labels).

    Examples:
        >>> import jax.numpy as jnp
        >>> import robustlearn as rl
        >>> obj = rl.objectives.contamination_corrected(0.5)
        >>> loss_fn = lambda params, batch: jnp.where(batch["y"] == 1, 1.0, 3.0)  # loss of label 1: 1, of 0: 3
        >>> batch = {"x": jnp.zeros(2), "y": jnp.array([1, 1]), "previous": jnp.array([0, -1])}
        >>> value, _ = obj.loss(loss_fn, None, batch, obj.init(None), None)
        >>> float(value)  # ((1 - 0.5 * 3) / 0.5 + 1) / 2
        0.0

    References:
        Amin, Bie, Kong, Syed & Vassilvitskii, "Learning from Synthetic Data: Limitations of
        ERM", arXiv:2601.15468, 2026 (the setting). Kiryo, Niu, du Plessis & Sugiyama,
        "Positive-Unlabeled Learning with Non-Negative Risk Estimator", NeurIPS 2017.
    """
    a = _check_alpha(alpha)
    if not isinstance(previous_key, str) or not previous_key:
        raise TypeError(f"`previous_key` must be a non-empty string; got {previous_key!r}.")
    if not isinstance(nonnegative, bool):
        raise TypeError(f"`nonnegative` must be a bool; got {nonnegative!r}.")
    num_classes = _check_num_classes(num_classes)
    if nonnegative and num_classes is None:
        raise ValueError("`nonnegative=True` clips per class and needs `num_classes` (an int >= 2).")

    def check(data):
        if previous_key not in data:
            raise ValueError(
                f"contamination_corrected() needs the previous model's predicted labels under {previous_key!r} "
                f"(-1 for clean examples); got keys {sorted(data)}."
            )
        prev = np.asarray(data[previous_key])
        y = np.asarray(data["y"]) if "y" in data else None
        name = f"`{previous_key}`"
        if prev.dtype == bool or not (np.issubdtype(prev.dtype, np.integer) or np.issubdtype(prev.dtype, np.floating)):
            raise TypeError(f"{name} must hold integer class labels; got dtype {prev.dtype}.")
        if y is not None and prev.shape != y.shape[:1]:
            raise ValueError(f"{name} must have shape {y.shape[:1]} (one label per example); got {prev.shape}.")
        if prev.size and (not np.all(np.isfinite(prev)) or not np.all(prev == np.round(prev))):
            raise ValueError(f"{name} must hold integer class labels (-1 for clean examples); got NaN or fractions.")
        hi = num_classes - 1 if num_classes is not None else (max(int(np.max(y)), 1) if y is not None and y.size else 1)
        if prev.size and (prev.min() < -1 or prev.max() > hi):
            raise ValueError(
                f"{name} labels must be in [-1, {hi}] (-1: clean example); got range [{prev.min()}, {prev.max()}]"
                + ("" if num_classes is not None else "; pass `num_classes` if the labels seen miss a class")
                + "."
            )

    def parts(loss_fn, params, batch, state):
        if previous_key not in batch:
            check(batch)  # raises, naming the missing key
        y = batch["y"]
        prev = jnp.asarray(batch[previous_key])
        alpha_ = state.hyperparams["alpha"]
        clean = prev < 0
        prev_y = jnp.where(clean, y, prev.astype(y.dtype))
        loss_y = loss_fn(params, batch)
        loss_p = loss_fn(params, {**batch, "y": prev_y})
        a_i = jnp.where(clean, 0.0, alpha_).astype(loss_y.dtype)
        w = batch.get("weight")
        w = jnp.ones(loss_y.shape, loss_y.dtype) if w is None else jnp.asarray(w).astype(loss_y.dtype)
        if batch.get("mask") is not None:
            w = jnp.where(batch["mask"], w, 0)
        total = jnp.sum(w)
        p = w / jnp.where(total > 0, total, 1)
        ok = (alpha_ >= 0) & (alpha_ < 1) & jnp.all(prev >= -1)
        if num_classes is not None:
            ok &= jnp.all(prev < num_classes)
        return loss_y, loss_p, a_i, p, ok, y, prev_y, clean

    def corrected_value(loss_fn, params, batch, state):
        loss_y, loss_p, a_i, p, ok, *_ = parts(loss_fn, params, batch, state)
        per = (loss_y - a_i * loss_p) / (1 - a_i)
        value = jnp.sum(jnp.where(p > 0, p * per, 0))
        return jnp.where(ok, value, jnp.nan), loss_y

    def class_risks(loss_fn, params, batch, state):
        loss_y, loss_p, a_i, p, ok, y, prev_y, clean = parts(loss_fn, params, batch, state)
        classes = jnp.arange(num_classes)
        y_onehot = (y.astype(jnp.int32)[:, None] == classes[None, :]).astype(loss_y.dtype)
        p_onehot = ((prev_y.astype(jnp.int32)[:, None] == classes[None, :]) & ~clean[:, None]).astype(loss_y.dtype)
        coef = p / (1 - a_i)
        live = p > 0
        pos = jnp.where(live, coef * loss_y, 0) @ y_onehot
        neg = jnp.where(live, coef * a_i * loss_p, 0) @ p_onehot
        return pos - neg, ok, loss_y

    def loss(loss_fn, params, batch, state, key):
        del key
        mask = batch.get("mask")
        if nonnegative:
            risks, ok, loss_y = class_risks(loss_fn, params, batch, state)
            value = jnp.where(ok, jnp.sum(jnp.maximum(risks, 0)), jnp.nan)
        else:
            value, loss_y = corrected_value(loss_fn, params, batch, state)
        metrics = {"objective": value, "mean_loss": _reductions.erm(loss_y, where=mask)}
        return value, (state, metrics)

    smoothed = aux_init = None
    if nonnegative:

        def smoothed(loss_fn, params, batch, state, aux, tau):
            del aux
            risks, ok, _ = class_risks(loss_fn, params, batch, state)
            return jnp.where(ok, jnp.sum(tau * jax.nn.softplus(risks / tau)), jnp.nan)

        def aux_init(dtype):
            return jnp.zeros((0,), dtype)

    def init(key):
        del key
        return ReductionState({"alpha": jnp.asarray(a, jnp.result_type(float))})

    name = f"contamination_corrected(alpha={a!r}" + (", nonnegative=True" if nonnegative else "") + ")"
    return Objective(
        init,
        loss,
        name,
        {"alpha": a},
        smooth=not nonnegative,
        check=check,
        requires=(previous_key,),
        smoothed=smoothed,
        aux_init=aux_init,
    )

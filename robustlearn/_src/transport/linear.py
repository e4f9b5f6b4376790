r"""Exact Wasserstein-1 DRO for linear classifiers with Lipschitz margin losses.

For a margin loss :math:`L(z)`, :math:`z = y\langle\theta, x\rangle` with labels
:math:`y \in \{-1, +1\}`, convex with asymptotic slope 1 (logistic :math:`\log(1+e^{-z})`,
hinge :math:`(1-z)_+`), and the transport cost
:math:`c((x,y),(x',y')) = \|x - x'\| + \kappa\,\mathbb{1}[y \ne y']`, the worst-case
expected loss over the Wasserstein-1 ball of radius :math:`\varepsilon` (``radius``) around
:math:`\hat P = \sum_i p_i \delta_{(x_i, y_i)}` is (Shafieezadeh-Abadeh, Kuhn & Mohajerin
Esfahani 2019, Theorem 14; Gao & Kleywegt 2016)

.. math::

    \sup_{W(Q,\hat P)\le\varepsilon} E_Q[L] = \min_{\lambda \ge \|\theta\|_*}\
        \lambda\varepsilon + \sum_i p_i \max\big(L(z_i),\ L(-z_i) - \lambda\kappa\big).

Moving features costs :math:`\|\Delta\|` and changes the margin by at most
:math:`\|\theta\|_*\|\Delta\|`, hence the constraint; flipping a label costs
:math:`\kappa`. The objective is piecewise linear in :math:`\lambda` with breakpoints
:math:`\lambda_i = (L(-z_i) - L(z_i))/\kappa` and slope :math:`\varepsilon - \kappa
\sum_{\lambda_i > \lambda} p_i`, so the minimizer is a weighted quantile of the
breakpoints (a CVaR of the breakpoints), clipped below at :math:`\|\theta\|_*`: exact
by CVaR's sort-free threshold search. With
:math:`\kappa = \infty` it is :math:`E_{\hat P}[L] + \varepsilon\|\theta\|_*`.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from robustlearn._src import checks as _checks
from robustlearn._src.objectives.base import Objective, ReductionState
from robustlearn._src.reductions import api as _reductions
from robustlearn._src.transport._common import hyper_array, nominal_distribution, renamed

_MARGIN_LOSSES = {
    "logistic": lambda z: jax.nn.softplus(-z),
    "hinge": lambda z: jnp.maximum(1 - z, 0),
}
_NORMS = {"l1": 1.0, "l2": 2.0, "linf": float("inf")}


def _norm_order(norm) -> float:
    """'l1' | 'l2' | 'linf' | a real number p >= 1 (numpy scalars too) -> the order p of the feature norm."""
    allowed = f"`norm` must be one of {sorted(_NORMS)} or a real number p in [1, inf]"
    if isinstance(norm, str):
        if norm not in _NORMS:
            raise ValueError(f"{allowed}; got {norm!r}.")
        return _NORMS[norm]
    if isinstance(norm, bool | np.bool_) or not isinstance(norm, numbers.Real):
        raise TypeError(f"{allowed}; got {norm!r}.")
    if not float(norm) >= 1:  # NaN fails too
        raise ValueError(f"{allowed}; got {norm!r}.")
    return float(norm)


def dual_norm(theta: ArrayLike, norm: str | float) -> jax.Array:
    r"""The dual norm of ``theta`` for the feature norm ``norm``.

    .. math::

        \|\theta\|_* = \|\theta\|_q = m \Big(\sum_j (|\theta_j| / m)^q\Big)^{1/q},
        \qquad \tfrac1p + \tfrac1q = 1,\ m = \max_j |\theta_j|,

    computed in the scaled form on the right, so that it neither overflows nor underflows
    for any finite ``theta`` and any ``p`` (as ``p -> 1``, ``q -> inf`` and the value
    tends to ``m``). The gradient at ``theta = 0`` is 0 (a subgradient). Subnormal entries
    (below ``finfo(dtype).tiny``) count as 0: XLA on CPU flushes them to zero.

    Args:
        theta: weights, shape ``(d,)``.
        norm: the feature norm: ``"l1"``, ``"l2"``, ``"linf"`` or a real number
            ``p >= 1`` (Python or numpy scalar).

    Returns:
        Scalar :math:`\|\theta\|_*`.

    Examples:
        >>> import jax.numpy as jnp
        >>> float(dual_norm(jnp.array([3.0, -4.0]), "l2")), float(dual_norm(jnp.array([3.0, -4.0]), "l1"))
        (5.0, 4.0)
    """
    p = _norm_order(norm)
    a = jnp.abs(jnp.asarray(theta))
    if p == 1.0:
        return jnp.max(a)
    if p == float("inf"):
        return jnp.sum(a)
    q = p / (p - 1.0)
    # The norm is homogeneous, so m is held constant for differentiation: the gradient
    # is still exactly that of ||theta||_q. At theta = 0 (m = 0) the safe branches keep
    # the (unused) root's gradient finite and the value's gradient is 0.
    m = jax.lax.stop_gradient(jnp.max(a))
    live = m > 0
    total = jnp.sum((a / jnp.where(live, m, 1)) ** q)  # in [1, d] when live
    return jnp.where(live, m * jnp.where(live, total, 1) ** (1.0 / q), 0)


def _check(radius, kappa, norm, loss):
    _norm_order(norm)
    if loss not in _MARGIN_LOSSES:
        raise ValueError(f"`loss` must be one of {sorted(_MARGIN_LOSSES)}; got {loss!r}.")
    radius, radius_ok = _checks.scalar("radius", radius, low=0.0)
    kappa, kappa_ok = _checks.scalar("kappa", kappa, low=0.0, high=float("inf"), high_open=False)
    if _checks.is_traced(radius_ok) or _checks.is_traced(kappa_ok):
        return radius, kappa, radius_ok & kappa_ok
    return radius, kappa, _checks.host_flag(True)  # concrete values were checked above


def _check_labels(y) -> None:
    """Raises unless the concrete labels ``y`` are all in {-1, +1} or all in {0, 1} (on the host)."""
    arr = np.asarray(y)
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"`y` must hold labels in {{-1, +1}} or {{0, 1}}; got dtype {arr.dtype}.")
    values = np.unique(arr.astype(np.float64))
    if not (np.all(np.isin(values, (-1.0, 1.0))) or np.all(np.isin(values, (0.0, 1.0)))):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise ValueError(f"`y` must hold labels in {{-1, +1}} or in {{0, 1}}; got the values {{{shown}}}.")


def _signs(y) -> tuple[jax.Array, jax.Array]:
    """Labels in {-1, +1} or {0, 1} as signs +-1, and a validity flag.

    Concrete labels outside both sets (2, 0.5, NaN, or a mix of -1 and 0) raise; traced
    ones set the flag to False (the caller returns NaN).
    """
    if not _checks.is_traced(y):
        _check_labels(y)
    y = jnp.asarray(y)
    ok = jnp.all((y == -1) | (y == 1)) | jnp.all((y == 0) | (y == 1))
    return jnp.where(y > 0, 1, -1), ok


def _linear_inputs(theta, x, y, weights, *, y_is_real: bool):
    """Checks shapes and returns ``(theta, x, y, p, ok, dtype)`` with nominal ``p``."""
    theta, x, y = jnp.asarray(theta), jnp.asarray(x), jnp.asarray(y)
    if theta.ndim != 1 or x.ndim != 2 or x.shape[1] != theta.shape[0] or y.shape != (x.shape[0],):
        raise ValueError(f"expected theta (d,), x (n, d), y (n,); got {theta.shape}, {x.shape}, {y.shape}.")
    arrays = (theta, x, y) if y_is_real else (theta, x)
    dtype = jnp.promote_types(jnp.result_type(*arrays), jnp.float32)
    if weights is None:
        p, ok = jnp.full(y.shape, 1.0 / y.shape[0], dtype), jnp.asarray(True)
    else:
        w, ok = _checks.weights(weights, y.shape)
        if not _checks.is_traced(weights) and not np.max(np.asarray(weights, np.float64), initial=0.0) > 0:
            raise ValueError("`weights` must have a positive total; got all zeros.")
        p, live = nominal_distribution(weights, w, dtype)
        ok = ok & live
    return theta.astype(dtype), x.astype(dtype), y, p, ok, dtype


@renamed(eps="radius")
def linear_classification(
    theta: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    radius: float,
    *,
    kappa: float = float("inf"),
    norm: str = "l2",
    loss: str = "logistic",
    intercept: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Worst-case expected margin loss of a linear classifier over a Wasserstein-1 ball.

    .. math::

        \min_{\lambda \ge \|\theta\|_*}\ \lambda\varepsilon
            + \sum_i p_i \max\big(L(z_i),\ L(-z_i) - \lambda\kappa\big),
        \qquad z_i = y_i(\langle\theta, x_i\rangle + b)

    The intercept :math:`b` is not perturbed (it multiplies a constant feature).

    Args:
        theta: weights, shape ``(d,)``.
        x: features, shape ``(n, d)``.
        y: labels, all in {-1, +1} or all in {0, 1} (0 is mapped to -1), shape ``(n,)``.
            Other values raise ``ValueError``; traced labels outside both sets give NaN.
        radius: radius :math:`\varepsilon \ge 0` of the Wasserstein-1 ball (the keyword
            ``eps`` is a deprecated alias).
        kappa: cost of flipping a label, in ``[0, inf]``; ``inf`` keeps labels fixed.
        norm: feature norm of the transport cost: ``"l1"``, ``"l2"``, ``"linf"`` or a
            number ``p >= 1``.
        loss: ``"logistic"`` or ``"hinge"``.
        intercept: the bias :math:`b`, a scalar.
        weights: optional nominal weights of the examples, shape ``(n,)``.

    Returns:
        Scalar: the exact worst-case expected loss (differentiable in ``theta``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from robustlearn import wasserstein
        >>> theta = jnp.array([3.0, 4.0]); x = jnp.array([[1.0, 0.0], [0.0, 1.0]]); y = jnp.array([1, -1])
        >>> erm = float(jnp.mean(jnp.maximum(1 - y * (x @ theta), 0)))
        >>> robust = float(wasserstein.linear_classification(theta, x, y, 0.1, loss="hinge"))
        >>> round(robust - erm, 6)  # radius * ||theta||_2 with labels fixed
        0.5

    References:
        Shafieezadeh-Abadeh, Kuhn & Mohajerin Esfahani, *Regularization via mass
        transportation*, JMLR 2019. Gao & Kleywegt, *Distributionally robust stochastic
        optimization with Wasserstein distance*, 2016.
    """
    return _classification(theta, x, y, radius, kappa, norm, loss, intercept, weights, _labels_fixed(kappa))


def _labels_fixed(kappa) -> bool:
    """Whether ``kappa`` is known, before tracing, to be ``inf``: the value then has no CVaR solves."""
    if _checks.is_traced(kappa):
        return False
    k = np.asarray(kappa)
    return k.shape == () and k.dtype.kind == "f" and bool(np.isposinf(k))


def _classification(theta, x, y, radius, kappa, norm, loss, intercept, weights, labels_fixed: bool):
    """:func:`linear_classification`; ``labels_fixed``: compile only the ``kappa = inf`` case (NaN for another)."""
    radius, kappa, ok = _check(radius, kappa, norm, loss)
    theta, x, y, p, w_ok, dtype = _linear_inputs(theta, x, y, weights, y_is_real=False)
    sign, y_ok = _signs(y)
    margin = sign.astype(dtype) * (x @ theta + _intercept(intercept, dtype))
    lam0 = dual_norm(theta, norm)
    value = _solve(_MARGIN_LOSSES[loss], margin, p, lam0, radius.astype(dtype), kappa.astype(dtype), labels_fixed)
    return jnp.where(ok & w_ok & y_ok, value, jnp.nan)


def _intercept(intercept, dtype) -> jax.Array:
    b = jnp.asarray(intercept)
    if b.shape != ():
        raise ValueError(f"`intercept` must be a scalar; got shape {b.shape}.")
    return b.astype(dtype)


# Jitted: a lax.cond of functions defined inside is traced again and compiled at every eager
# call (0.5 s each for a finite kappa; a long scipy loop over the value ran out of memory).
@functools.partial(jax.jit, static_argnames=("loss_fn", "labels_fixed"))
def _solve(loss_fn, margin, p, lam0, radius, kappa, labels_fixed: bool = False):
    r"""The dual in closed form, written so that autodiff returns a valid subgradient.

    With :math:`a = \varepsilon/\kappa` and :math:`b_i = (L(-z_i) - L(z_i))/\kappa`,
    :math:`\min_{\lambda\ge\lambda_0} \lambda\varepsilon + \sum_i p_i\max(L(z_i), L(-z_i)
    - \lambda\kappa) = E_p L(z) + \kappa\, G` with :math:`G = \min_{\lambda \ge \lambda_0}
    \lambda a + E_p(b - \lambda)_+`. Unconstrained, :math:`G = a\,\mathrm{CVaR}_a(b)`
    (for :math:`a < 1`, minimizer :math:`\mathrm{VaR}_a(b)`); otherwise
    :math:`\lambda = \lambda_0` (:math:`\varepsilon` = ``radius``). Using :func:`robustlearn.cvar` keeps the tie-sharing
    Danskin gradient, e.g. at :math:`\theta = 0` where every margin is 0.
    ``labels_fixed``: the value for ``kappa = inf`` only (NaN for another ``kappa``).
    """
    keep = loss_fn(margin)
    base = jnp.sum(p * keep)
    if labels_fixed:  # known before tracing: no CVaR solves in the program
        return jnp.where(kappa == jnp.inf, base + lam0 * radius, jnp.nan)
    flip = loss_fn(-margin)

    def flippable(operands):  # 0 < kappa < inf: a CVaR of the flip gains
        base, keep, flip, p, lam0, radius, kappa = operands
        kappa = jnp.where(jnp.isfinite(kappa) & (kappa > 0), kappa, 1.0)  # vmap runs both branches
        a = radius / kappa
        b = (flip - keep) / kappa
        constrained = lam0 * a + jnp.sum(p * jnp.maximum(b - lam0, 0))
        alpha = jnp.clip(a, jnp.finfo(a.dtype).tiny, 1.0)
        q = _reductions.cvar_weights(b, alpha, weights=p)
        var = jax.lax.stop_gradient(jnp.min(jnp.where(q > 0, b, jnp.inf)))
        unconstrained = a * _reductions.cvar(b, alpha, weights=p)
        g = jnp.where((a < 1) & (var >= lam0), unconstrained, constrained)
        return base + kappa * g

    def closed_form(operands):  # kappa = inf: labels fixed; kappa = 0: flips are free
        base, keep, flip, p, lam0, radius, kappa = operands
        flip_free = lam0 * radius + jnp.sum(p * jnp.maximum(keep, flip))
        return jnp.where(kappa == 0, flip_free, base + lam0 * radius)

    # kappa is traced (one program for every kappa), so a cond, not Python, skips the two
    # CVaR solves that kappa = inf (the common case) does not need.
    finite = jnp.isfinite(kappa) & (kappa > 0)
    return jax.lax.cond(finite, flippable, closed_form, (base, keep, flip, p, lam0, radius, kappa))


@renamed(eps="radius")
def linear_regression(
    theta: ArrayLike,
    x: ArrayLike,
    y: ArrayLike,
    radius: float,
    *,
    norm: str | float = "l2",
    loss: str = "absolute",
    delta: float = 1.0,
    intercept: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
) -> jax.Array:
    r"""Worst-case expected loss of a linear regressor over a Wasserstein-1 ball of features.

    .. math::

        \sup_{W(Q,\hat P)\le\varepsilon} E_Q\big[L(y - \langle\theta, x\rangle - b)\big]
            = \sum_i p_i L(r_i) + \varepsilon\, \mathrm{lip}(L)\, \|\theta\|_*

    for the cost :math:`\|x - x'\|` with targets fixed, and a convex loss of the residual
    whose slope tends to its Lipschitz constant: ``"absolute"`` :math:`|r|` (lip 1) and
    ``"huber"`` (:math:`r^2/2` for :math:`|r|\le\delta`, :math:`\delta(|r| - \delta/2)`
    beyond; lip :math:`\delta`). Letting the targets move at a finite cost would make the
    worst case unbounded for these losses, so targets never move.

    Args:
        theta: weights, shape ``(d,)``.
        x: features, shape ``(n, d)``.
        y: targets, shape ``(n,)``.
        radius: radius :math:`\varepsilon \ge 0` (the keyword ``eps`` is a deprecated
            alias).
        norm: feature norm: ``"l1"``, ``"l2"``, ``"linf"`` or a number ``p >= 1``.
        loss: ``"absolute"`` or ``"huber"``.
        delta: Huber threshold, ``> 0``.
        intercept: the bias :math:`b`, a scalar (not perturbed).
        weights: optional nominal weights of the examples, shape ``(n,)``.

    Returns:
        Scalar: the exact worst-case expected loss.

    Examples:
        >>> import jax.numpy as jnp
        >>> from robustlearn import wasserstein
        >>> theta = jnp.array([3.0, 4.0]); x = jnp.zeros((2, 2)); y = jnp.array([1.0, -1.0])
        >>> float(wasserstein.linear_regression(theta, x, y, 0.1))  # 1 + 0.1 * 5
        1.5

    References:
        Shafieezadeh-Abadeh, Kuhn & Mohajerin Esfahani, *Regularization via mass
        transportation*, JMLR 2019 (Theorem 10).
    """
    _norm_order(norm)
    if loss not in ("absolute", "huber"):
        raise ValueError(f"`loss` must be one of ['absolute', 'huber']; got {loss!r}.")
    radius, ok = _checks.scalar("radius", radius, low=0.0)
    delta, delta_ok = _checks.scalar("delta", delta, low=0.0, low_open=True)
    theta, x, y, p, w_ok, dtype = _linear_inputs(theta, x, y, weights, y_is_real=True)
    ok = ok & w_ok
    residual = y.astype(dtype) - x @ theta - _intercept(intercept, dtype)
    delta = delta.astype(dtype)
    if loss == "absolute":
        per_example, lip = jnp.abs(residual), 1.0
    else:
        a = jnp.abs(residual)
        per_example, lip = jnp.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta)), delta
    value = jnp.sum(p * per_example) + radius.astype(dtype) * lip * dual_norm(theta, norm)
    return jnp.where(ok & delta_ok, value, jnp.nan)


@renamed(eps="radius")
def linear_classification_objective(
    radius: float, *, kappa: float = float("inf"), norm: str | float = "l2", loss: str = "logistic"
) -> Objective:
    r""":func:`linear_classification` as an Objective for a binary linear model.

    .. math::

        \text{value}(w, b) = \sup_{W(Q,\hat P)\le\varepsilon} E_Q\big[L(y(\langle w, x\rangle + b))\big]

    over the batch (exact, see :func:`linear_classification`). The parameters must be
    ``{"w": (d,), "b": ()}`` (score ``x @ w + b``), the batch must hold ``"x"`` and ``"y"``
    (labels all in {0, 1} or all in {-1, +1}; ``check`` rejects other training labels
    before compiling); ``"mask"`` and ``"weight"`` set the nominal weights. The objective
    uses the parameters directly, not ``loss_fn``. ``radius`` and ``kappa`` live in the
    state as arrays (:class:`~robustlearn.objectives.ReductionState`), so a grid over radii
    or over finite ``kappa`` values compiles once; ``norm``, ``loss`` and whether ``kappa``
    is ``inf`` are structural (with labels fixed the programs leave out the label-flip
    solves; such an objective gives NaN for a state whose ``kappa`` was changed by hand).

    Not smooth (the dual norm, the max over keeping or flipping a label, the hinge):
    ``fit_linear`` minimizes its ``smoothed`` form with a decreasing :math:`\tau`,

    .. math::

        V_\tau(\theta) = \min_{\lambda \ge N_\tau(\theta)}\ \lambda\varepsilon
            + \sum_i p_i\, \tau \log\big(e^{L_\tau(z_i)/\tau}
            + e^{(L_\tau(-z_i) - \lambda\kappa)/\tau}\big),

    with :math:`L_\tau(z) = \tau\,\mathrm{softplus}((1 - z)/\tau)` for the hinge (the
    logistic loss is already smooth) and :math:`N_\tau` a smoothed dual norm:
    :math:`\|\sqrt{\theta^2 + \tau^2}\|_q` for :math:`1 < q < \infty`,
    :math:`\sum_j \sqrt{\theta_j^2 + \tau^2}` for ``"linf"`` and
    :math:`\tau\log\sum_j (e^{\theta_j/\tau} + e^{-\theta_j/\tau})` for ``"l1"``. The
    inner problem in :math:`\lambda` is strictly convex and is solved exactly (bisection
    on its derivative, clipped at :math:`N_\tau`), so there are no auxiliary variables.
    Each smoothing only raises the value, and

    .. math::

        0 \le V_\tau(\theta) - V(\theta) \le \tau\big(\log 2\,[\kappa < \infty]
            + \log 2\,[\text{hinge}] + \varepsilon\, c_d\big),

    with :math:`c_d = d^{1/q}` (:math:`d` for ``"linf"``, :math:`\log 2d` for ``"l1"``).
    (Raising the multiplier by :math:`N_\tau - N` turns a feasible :math:`\lambda` of
    :math:`V` into one of :math:`V_\tau` at a cost of at most :math:`\varepsilon(N_\tau -
    N)`, since the sum does not increase with :math:`\lambda`.)

    Args:
        radius: Wasserstein radius, ``>= 0`` (the keyword ``eps`` is a deprecated alias).
        kappa: label-flip cost in ``[0, inf]``.
        norm: ``"l1"``, ``"l2"``, ``"linf"`` or a real number ``p >= 1``.
        loss: ``"logistic"`` or ``"hinge"``.

    Returns:
        An :class:`~robustlearn.objectives.Objective`; its state holds ``radius`` and
        ``kappa``; ``smooth=False`` with ``smoothed`` and ``aux_init`` (no auxiliary
        variables) for ``fit_linear``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from robustlearn import wasserstein
        >>> obj = wasserstein.linear_classification_objective(0.1, loss="hinge")
        >>> params = {"w": jnp.array([3.0, 4.0]), "b": jnp.array(0.0)}
        >>> batch = {"x": jnp.array([[1.0, 0.0], [0.0, 1.0]]), "y": jnp.array([1, 0])}
        >>> value, _ = obj.loss(None, params, batch, obj.init(None), None)
        >>> round(float(value), 6)  # mean hinge (0 + 5) / 2 + radius * ||w||_2 = 2.5 + 0.5
        3.0
    """
    _check(radius, kappa, norm, loss)
    order = _norm_order(norm)
    margin_loss = _MARGIN_LOSSES[loss]
    config = {"radius": float(radius), "kappa": float(kappa), "norm": norm, "loss": loss}
    # kappa = inf (labels fixed) is structural: its programs leave out the CVaR solves and
    # the bisection, which made fit_linear's solver 2x longer to compile and to load. A
    # grid over finite kappas (or over radii) still shares one program.
    labels_fixed = _labels_fixed(float(kappa))

    def init(key):
        del key
        return ReductionState({"radius": hyper_array(radius), "kappa": hyper_array(kappa)})

    def check(data):
        if "y" not in data:
            raise ValueError(f"the Wasserstein linear objective needs labels under 'y'; got keys {sorted(data)}.")
        _check_labels(data["y"])

    def nominal(batch):
        weights = batch.get("weight")
        mask = batch.get("mask")
        if mask is not None:
            weights = jnp.where(mask, 1.0 if weights is None else weights, 0.0)
        return weights

    def objective_loss(loss_fn, params, batch, state, key):
        del loss_fn, key
        hyper = state.hyperparams
        value = _classification(
            params["w"], batch["x"], batch["y"], hyper["radius"], hyper["kappa"], norm, loss, params["b"],
            nominal(batch), labels_fixed,
        )  # fmt: skip
        return value, (state, {"objective": value})

    def smooth_norm(theta, tau):
        if order == 1.0:  # dual: max_j |theta_j|
            return tau * jax.nn.logsumexp(jnp.concatenate([theta, -theta]) / tau)
        if order == float("inf"):  # dual: sum_j |theta_j|
            return jnp.sum(jnp.sqrt(theta**2 + tau**2))
        q = order / (order - 1.0)
        return jnp.sum((theta**2 + tau**2) ** (q / 2)) ** (1.0 / q)

    def smoothed(loss_fn, params, batch, state, aux, tau):
        # Reads the hyperparameters from the state only (never closed over), so objectives
        # that differ in them share fit_linear's compiled solver.
        del loss_fn, aux
        radius, cost = state.hyperparams["radius"], state.hyperparams["kappa"]
        w, b = jnp.asarray(params["w"]), jnp.asarray(params["b"])
        x = jnp.asarray(batch["x"])
        dtype = jnp.promote_types(jnp.result_type(x, w), jnp.float32)
        weights = nominal(batch)
        p = jnp.ones(x.shape[:1], dtype) if weights is None else jnp.asarray(weights, dtype)
        p = p / jnp.sum(p)
        sign = jnp.where(jnp.asarray(batch["y"]) > 0, 1.0, -1.0).astype(dtype)
        margin = sign * (x @ w + b)
        tau = jnp.asarray(tau, dtype)
        if loss == "hinge":
            keep, flip = tau * jax.nn.softplus((1 - margin) / tau), tau * jax.nn.softplus((1 + margin) / tau)
        else:
            keep, flip = margin_loss(margin), margin_loss(-margin)
        radius, cost = jnp.asarray(radius, dtype), jnp.asarray(cost, dtype)
        lam0 = smooth_norm(w, tau)
        fixed = jnp.sum(p * keep) + radius * lam0  # kappa = inf: labels never move
        if labels_fixed:
            return jnp.where(cost == jnp.inf, fixed, jnp.nan)

        def soft_max_sum(shift):  # sum_i p_i tau log(e^{keep_i/tau} + e^{(flip_i - shift)/tau})
            return jnp.sum(p * tau * jnp.logaddexp(keep / tau, (flip - shift) / tau))

        finite = jnp.isfinite(cost) & (cost > 0)

        def flippable(_):
            k = jnp.where(finite, cost, 1.0)  # finite gradients where vmap runs both branches
            a = radius / k
            # The unconstrained minimizer over lambda solves sum_i p_i sigmoid(k (b_i - lam) / tau) = a
            # (b_i = (flip_i - keep_i) / k), decreasing in lam: bisection on a bracket that holds it.
            b_i = jax.lax.stop_gradient((flip - keep) / k)
            s = jax.lax.stop_gradient(tau / k)
            a_in = jnp.clip(a, jnp.finfo(dtype).tiny, 1 - jnp.finfo(dtype).eps)
            logit = jnp.log(a_in) - jnp.log1p(-a_in)
            live = p > 0
            lo = jnp.min(jnp.where(live, b_i, jnp.inf)) - s * logit
            hi = jnp.max(jnp.where(live, b_i, -jnp.inf)) - s * logit

            def bisect(_, bracket):
                lo, hi = bracket
                mid = 0.5 * (lo + hi)
                above = jnp.sum(p * jax.nn.sigmoid((b_i - mid) / s)) > a_in
                return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

            lo, hi = jax.lax.fori_loop(0, jnp.finfo(dtype).nmant + 12, bisect, (lo, hi))
            unconstrained = jax.lax.stop_gradient(0.5 * (lo + hi))
            # a >= 1: the value increases with lambda, so lambda = N_tau. a = 0: no budget.
            lam = jnp.where(a < 1, jnp.maximum(unconstrained, lam0), lam0)
            return jnp.where(a > 0, lam * radius + soft_max_sum(lam * k), jnp.sum(p * keep) + radius * lam0)

        def closed_form(_):
            free = radius * lam0 + soft_max_sum(0.0)  # kappa = 0: labels flip for free
            return jnp.where(cost == 0, free, fixed)

        # The cost is traced (one program for every kappa): a cond, not Python, skips the
        # bisection (a pass over the data per step) that kappa = inf does not need.
        return jax.lax.cond(finite, flippable, closed_form, None)

    def no_aux(dtype):  # no auxiliary variables: the empty pytree
        del dtype
        return ()

    name = f"wasserstein_linear(radius={radius!r}, kappa={kappa!r}, norm={norm!r}, loss={loss!r})"
    return Objective(init, objective_loss, name, config, smooth=False, check=check, smoothed=smoothed, aux_init=no_aux)

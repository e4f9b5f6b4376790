r"""Entropic (Sinkhorn) Wasserstein DRO, in the dual of Wang, Gao & Xie (2021).

With the transport cost :math:`c(x, z) = \tfrac12\|z - x\|_2^2`, entropic regularization
:math:`\varepsilon > 0` (``entropic_eps``) relative to Lebesgue measure and the Sinkhorn discrepancy
:math:`W_\varepsilon(P, Q) = \inf_\gamma E_\gamma[c] + \varepsilon H(\gamma \mid P\otimes
\mathrm{Leb})`, the worst case :math:`\sup\{E_Q[\ell] : W_\varepsilon(\hat P, Q) \le \rho\}`
has the dual

.. math::

    \inf_{\lambda > 0}\ \lambda\bar\rho + \lambda\varepsilon\, E_{x\sim\hat P}
        \log E_{z\sim N(x,\ \varepsilon I)} \exp\!\Big(\frac{\ell(z)}{\lambda\varepsilon}\Big),
    \qquad \bar\rho = \rho + \varepsilon \log (2\pi\varepsilon)^{D/2},

:math:`D` the input dimension. We parametrize by :math:`\bar\rho \ge 0` (``radius``, the
budget above the entropic floor): :math:`\bar\rho = 0` gives the Gaussian-smoothed risk
:math:`E_x E_{z\sim N(x,\varepsilon I)}\ell(z)`, which tends to ERM as
:math:`\varepsilon \to 0`. With :math:`m` samples :math:`z_{ij}` per example (antithetic
pairs), the dual equals a KL-constrained problem on the sample cloud,

.. math::

    \sup_{w_i \in \Delta_m} \sum_i p_i \sum_j w_{ij}\ell_{ij}
    \quad\text{s.t.}\quad \sum_i p_i\, \mathrm{KL}(w_i \,\|\, \mathrm{unif}_m) \le \bar\rho/\varepsilon,

solved exactly: :math:`w_{ij} \propto e^{\beta\ell_{ij}}` with :math:`\beta = 1/(\lambda\varepsilon)`
found by safeguarded Newton. The multiplier is minimized per batch rather than carried as a
trained parameter; the gradient is :math:`\sum_{ij} p_i w_{ij} \nabla\ell_{ij}` (Danskin).
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from robustlearn._src import checks as _checks
from robustlearn._src.objectives.base import Objective, ReductionState
from robustlearn._src.reductions.rootfind import increasing_root
from robustlearn._src.transport._common import hyper_array, nominal_distribution, renamed


def sample_cloud_dual(
    losses: ArrayLike, budget: ArrayLike, weights: ArrayLike | None = None
) -> tuple[jax.Array, jax.Array]:
    r"""Solves the KL-constrained reweighting of a sample cloud.

    .. math::

        \sup_{w_i \in \Delta_m}\ \sum_i p_i \sum_j w_{ij}\ell_{ij}
        \quad\text{s.t.}\quad \sum_i p_i\, \mathrm{KL}(w_i \,\|\, \mathrm{unif}_m) \le b,

    with :math:`p` the nominal weights normalized to sum to 1. The solution is the tilt
    :math:`w_{ij} \propto e^{\beta\ell_{ij}}` with :math:`\beta` found by safeguarded
    Newton. :math:`b = 0` gives the plain mean; :math:`b \ge \log m` (``inf`` included)
    leaves the constraint slack and gives :math:`\sum_i p_i \max_j \ell_{ij}` (ties share
    the mass).

    Args:
        losses: ``(m, n)``, real floating: loss of sample ``j`` of example ``i`` at ``[j, i]``.
        budget: :math:`b = \bar\rho/\varepsilon`, in ``[0, inf]``.
        weights: nominal weights of the ``n`` examples, finite and ``>= 0`` (default
            uniform). All-zero weights leave no example: the value is 0 (as for the
            reductions) and ``w`` uniform.

    Returns:
        ``(value, w)``: the optimal value (scalar) and the weights ``(m, n)`` (each column
        sums to 1); ``w`` is a constant for differentiation, the value's gradient with
        respect to ``losses`` is ``p * w``. A concrete negative or NaN ``budget``, or
        negative or non-finite concrete ``weights``, raise ``ValueError``; traced ones give
        a NaN value.

    Examples:
        >>> import jax.numpy as jnp
        >>> losses = jnp.array([[0.0, 1.0], [2.0, -1.0]])
        >>> float(sample_cloud_dual(losses, 0.0)[0]), float(sample_cloud_dual(losses, jnp.inf)[0])
        (0.5, 1.5)
    """
    losses = _checks.as_float_losses(losses)
    if losses.ndim != 2 or losses.size == 0:
        raise ValueError(f"`losses` must have shape (m, n) with m, n >= 1; got shape {losses.shape}.")
    m, n = losses.shape
    budget, ok = _checks.scalar("budget", budget, low=0.0, high=float("inf"), high_open=False)
    budget = budget.astype(losses.dtype)
    live = jnp.asarray(True)
    if weights is None:
        p = jnp.full((n,), 1.0 / n, losses.dtype)
    else:
        w, w_ok = _checks.weights(weights, (n,))
        ok = ok & w_ok
        p, live = nominal_distribution(weights, w, losses.dtype)
    value, w = _cloud_dual(losses, budget, p, live)
    return jnp.where(ok, value, jnp.nan), w


@jax.jit
def _cloud_dual(losses, budget, p, live):
    """The solver behind :func:`sample_cloud_dual` (compiled once per shape, also when called eagerly)."""
    m = losses.shape[0]
    sg = jax.lax.stop_gradient(losses)
    top, bottom = jnp.max(sg, axis=0), jnp.min(sg, axis=0)
    spread = jnp.max(top - bottom)
    scale = jnp.where(spread > 0, spread, 1.0)
    # Per-example shift (each column's maximum becomes exactly 0) and one global scale:
    # the tilt of each column is invariant to its shift, and logits stay <= 0.
    ls = (sg - top[None, :]) / scale

    def tilt(beta):
        logits = beta * ls
        lse = jax.nn.logsumexp(logits, axis=0)
        w = jnp.exp(logits - lse[None, :])
        kl = beta * jnp.sum(w * ls, axis=0) - lse + jnp.log(m)
        return w, kl

    def excess(u):
        return jnp.sum(p * tilt(jnp.exp(u))[1]) - budget

    log_eps = jnp.log(jnp.finfo(ls.dtype).eps)
    u = increasing_root(excess, 2 * log_eps, -2 * log_eps)
    w, _ = tilt(jnp.exp(u))
    # Budget at least log m: every distribution is feasible, the maximum is attained (ties share).
    at_max = (ls == 0).astype(ls.dtype)
    w = jnp.where(budget >= jnp.log(m), at_max / jnp.sum(at_max, axis=0, keepdims=True), w)
    w = jnp.where((budget > 0) & live, w, 1.0 / m)  # no budget, or no example: the uniform tilt
    w = jax.lax.stop_gradient(w)
    return jnp.sum(p[None, :] * w * losses), w


@renamed(eps="entropic_eps")
def sinkhorn(radius: float, entropic_eps: float, *, num_samples: int = 32, input_key: str = "x") -> Objective:
    r"""Entropic Wasserstein DRO as an Objective (squared-Euclidean cost, Gaussian kernel).

    .. math::

        \text{value} = \inf_{\lambda > 0}\ \lambda\bar\rho + \lambda\varepsilon\, E_{x\sim\hat P}
            \log E_{z\sim N(x,\ \varepsilon I)} \exp\!\Big(\frac{\ell(z)}{\lambda\varepsilon}\Big)

    with the inner expectation replaced by ``num_samples`` draws (module docstring).
    Each step draws perturbed copies :math:`z = x \pm \sqrt{\varepsilon}\,\xi` of every
    input (antithetic pairs, from the step's PRNG key), evaluates the per-example loss at
    all of them and solves the dual exactly on that sample cloud
    (:func:`sample_cloud_dual` with budget :math:`\bar\rho/\varepsilon`). Metrics:
    ``objective``, ``mean_loss`` (clean), ``smoothed_loss`` (the :math:`\bar\rho = 0`
    value). ``radius`` and ``entropic_eps`` live in the state as arrays
    (:class:`~robustlearn.objectives.ReductionState`), so a grid over them compiles once;
    ``num_samples`` and ``input_key`` are structural.

    Args:
        radius: :math:`\bar\rho \ge 0`, the budget above the entropic floor.
        entropic_eps: entropic regularization :math:`\varepsilon > 0`; also the variance
            of the Gaussian kernel. Small values approach unregularized Wasserstein DRO
            but need more samples. (The keyword ``eps`` is a deprecated alias.)
        num_samples: samples per example, a positive even int.
        input_key: the batch entry to perturb (real floating).

    Returns:
        An :class:`~robustlearn.objectives.Objective`; its state holds ``radius`` and
        ``entropic_eps``; it needs the ``key`` argument.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from robustlearn import wasserstein
        >>> obj = wasserstein.sinkhorn(0.0, 0.01, num_samples=2)
        >>> loss_fn = lambda w, b: b["x"] @ w  # linear: antithetic pairs average out exactly
        >>> batch = {"x": jnp.array([[1.0, 2.0], [3.0, -1.0]])}
        >>> value, _ = obj.loss(loss_fn, jnp.array([1.0, 1.0]), batch, obj.init(None), jax.random.PRNGKey(0))
        >>> round(float(value), 5)  # radius 0: the smoothed risk = the mean loss 2.5
        2.5

    References:
        Wang, Gao & Xie, *Sinkhorn distributionally robust optimization*, 2021
        (Operations Research 2025). Azizian, Iutzeler & Malick, *Regularization for
        Wasserstein distributionally robust optimization*, ESAIM COCV 2023.
    """
    _checks.scalar("radius", radius, low=0.0)
    _checks.scalar("entropic_eps", entropic_eps, low=0.0, low_open=True)
    integral = isinstance(num_samples, numbers.Integral) and not isinstance(num_samples, bool)
    if not integral or num_samples < 2 or num_samples % 2:
        raise ValueError(f"`num_samples` must be a positive even int; got {num_samples!r}.")
    num_samples = int(num_samples)
    if not isinstance(input_key, str):
        raise TypeError(f"`input_key` must be a str; got {input_key!r}.")

    def init(key):
        del key
        return ReductionState({"radius": hyper_array(radius), "entropic_eps": hyper_array(entropic_eps)})

    def loss(loss_fn, params, batch, state, key):
        if key is None:
            raise ValueError("the sinkhorn objective needs a PRNG `key` to sample perturbations.")
        if input_key not in batch:
            raise ValueError(f"the sinkhorn objective perturbs batch[{input_key!r}]; got keys {sorted(batch)}.")
        x = batch[input_key]
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"batch[{input_key!r}] must be real floating to be perturbed; got dtype {x.dtype}.")
        rad, ent = state.hyperparams["radius"], state.hyperparams["entropic_eps"]
        valid = (rad >= 0) & (ent > 0)  # traced hyperparameters cannot raise: NaN instead
        n = x.shape[0]
        half = jax.random.normal(key, (num_samples // 2, *x.shape), x.dtype) * jnp.sqrt(ent).astype(x.dtype)
        z = x[None] + jnp.concatenate([half, -half])  # (m, n, ...)
        rest = {k: jnp.broadcast_to(v[None], (num_samples, *v.shape)).reshape(num_samples * n, *v.shape[1:])
                for k, v in batch.items() if k != input_key}  # fmt: skip
        flat = {**rest, input_key: z.reshape(num_samples * n, *x.shape[1:])}
        sample_losses = loss_fn(params, flat).reshape(num_samples, n)
        dtype = sample_losses.dtype
        mask = batch.get("mask")
        weights = batch.get("weight")
        p = jnp.ones((n,), dtype) if weights is None else jnp.asarray(weights, dtype)
        if mask is not None:
            p = jnp.where(mask, p, 0)
        # radius / entropic_eps, with 0 / tiny = 0 and an overflow to inf meaning "no constraint".
        budget = jnp.where(rad > 0, rad / jnp.where(valid, ent, 1), 0).astype(dtype)
        value, _ = sample_cloud_dual(sample_losses, jnp.where(valid, budget, 0), p)
        clean = loss_fn(params, batch)
        total = jnp.sum(p)
        safe = jnp.where(total > 0, total, 1)
        value = jnp.where(valid, value, jnp.nan)
        metrics = {
            "objective": value,
            "mean_loss": jnp.sum(p * clean) / safe,
            "smoothed_loss": jnp.sum(p[None, :] * sample_losses) / (num_samples * safe),
        }
        return value, (state, metrics)

    name = f"sinkhorn(radius={radius!r}, entropic_eps={entropic_eps!r}, num_samples={num_samples})"
    config = {
        "radius": float(radius), "entropic_eps": float(entropic_eps), "num_samples": num_samples,
        "input_key": input_key,
    }  # fmt: skip
    return Objective(init, loss, name, config)

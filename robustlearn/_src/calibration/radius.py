r"""Radii from data and certificates of the real risk.

Setting: :math:`Q` is the synthetic distribution (the nominal one, sampled by the training
or certification set of :math:`n` rows), :math:`P` the real one, :math:`\ell` a fixed loss
function. Two gaps separate the empirical risk on synthetic rows from the real risk
:math:`\mathbb{E}_P \ell`:

* **sampling** (:math:`\hat Q_n` vs :math:`Q`). With :math:`f''(1) = 1` (every ball of the
  library: ``chi_square``'s :math:`f_2(t) = (t-1)^2/2`, ``kl``, ``cressie_read``'s
  :math:`f_k`), the robust value at radius :math:`r` expands as
  :math:`\bar\ell_n + \sqrt{2 r\, s_n^2} + o(n^{-1/2})` (Duchi, Glynn & Namkoong 2021,
  Thm. 2, whose :math:`f(t) = (t-1)^2` and ball :math:`\rho/n` are ours with
  :math:`r = \rho / (2n)`). It is therefore a one-sided upper confidence bound on
  :math:`\mathbb{E}_Q \ell` at level :math:`1 - \delta` when
  :math:`\sqrt{2r} = z_{1-\delta}/\sqrt n`:

  .. math::

      r_{\rm stat}(n, \delta) = \frac{z_{1-\delta}^2}{2n} = \frac{\chi^2_{1,\,1-2\delta}}{2n},

  i.e. DGN's two-sided :math:`\rho = \chi^2_{1, 1-\alpha}` with :math:`\alpha = 2\delta`,
  halved by our :math:`f_2 = f/2`. At 95%: :math:`r = 1.3528/n`.
* **shift** (:math:`Q` vs :math:`P`): if :math:`D_f(P\|Q) \le \rho`, then :math:`P` is in the
  ball and :math:`\mathbb{E}_P \ell \le \sup_{D_f(Q'\|Q) \le \rho} \mathbb{E}_{Q'}\ell`.
  :func:`robustlearn.importance.divergence` gives an upper confidence bound on
  :math:`D_f(P\|Q)`.

Composition. To first order both gaps are perturbations :math:`Q' = Q(1 + v)` measured by
:math:`\|v\|_{L^2(Q)} = \sqrt{2 D}`, and each raises the risk by at most
:math:`\|v\|\,\mathrm{sd}_Q(\ell)` (Cauchy--Schwarz); the two slacks add, so the norms add:

.. math::

    \sqrt{r} = \sqrt{r_{\rm stat}} + \sqrt{\rho_{\rm shift}}, \qquad
    r = \big(\sqrt{r_{\rm stat}} + \sqrt{\rho_{\rm shift}}\big)^2 \ \ge\ r_{\rm stat} + \rho_{\rm shift}.

Adding the radii instead would under-cover whenever the loss is aligned with the shift.
The confidence levels compose by a union bound: each part gets half of :math:`\delta`.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from robustlearn._src.reductions.registry import REDUCTIONS
from robustlearn._src.weighting.divergence import DivergenceEstimate, check_confidence, check_kind, divergence


class Radius(NamedTuple):
    """A radius from data, with its parts (see :func:`radius`).

    Attributes:
        total: the radius to use, :math:`(\\sqrt{\\text{statistical}} + \\sqrt{\\text{shift}})^2`.
        statistical: :math:`z^2_{1-\\delta_s}/(2n)`, the sampling part.
        shift: the upper confidence bound on :math:`D_f(P_{\\rm real}\\|Q_{\\rm syn})` (0 without real data).
        confidence: the joint level :math:`1 - \\delta` at which ``total`` holds.
        kind: ``"chi_square"``, ``"kl"`` or ``"cressie_read"``.
        k: Cressie--Read exponent (2.0 for ``"chi_square"``, None for ``"kl"``).
        n: the number of synthetic rows the statistical part is for.
        num_models: models covered by the union bound of the statistical part.
        divergence: the :class:`~robustlearn.importance.DivergenceEstimate` behind ``shift`` (None without real data).
    """

    total: float
    statistical: float
    shift: float
    confidence: float
    kind: str
    k: float | None
    n: int
    num_models: int
    divergence: DivergenceEstimate | None


class Certificate(NamedTuple):
    """An upper bound on the real risk with its parts (see :func:`certificate`).

    Attributes:
        bound: the robust value of the losses at ``radius``: the certified bound on the real risk.
        empirical_risk: the (weighted) mean of the losses.
        premium: ``bound - empirical_risk``, the price of robustness.
        radius: the radius used.
        confidence: the level at which the bound holds (None when ``radius`` was a bare number).
        kind: ``"chi_square"``, ``"kl"`` or ``"cressie_read"``.
        k: Cressie--Read exponent (2.0 for ``"chi_square"``, None for ``"kl"``).
        n: the number of losses.
    """

    bound: float
    empirical_risk: float
    premium: float
    radius: float
    confidence: float | None
    kind: str
    k: float | None
    n: int


def _count(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise TypeError(f"`{name}` must be a positive int; got {n!r}.")
    if n < 1:
        raise ValueError(f"`{name}` must be >= 1; got {n!r}.")
    return int(n)


def statistical_radius(n: int, confidence: float = 0.95, *, num_models: int = 1) -> float:
    r"""The radius whose robust value is an upper confidence bound on the population risk.

    .. math::

        r_{\rm stat} = \frac{z_{1-\delta/m}^2}{2n}, \qquad \delta = 1 - \text{confidence},

    for ``chi_square`` (:math:`f_2(t) = (t-1)^2/2`), ``kl`` and ``cressie_read``, which all
    have :math:`f''(1) = 1`; :math:`m` = ``num_models`` applies a union bound over a finite
    set of models certified on the same rows. For a fixed model and i.i.d. rows with
    finite loss variance, :math:`P(\mathbb{E}\ell \le \text{value}(\hat\ell_{1:n}, r)) \to
    1-\delta/m`; the error of that limit grows with the skewness of the losses and shrinks
    like :math:`1/\sqrt n` (simulated coverage in docs/radius.md). With nominal weights,
    pass their Kish effective sample size as ``n``.

    Args:
        n: number of i.i.d. rows the robust value is computed on, ``>= 1``.
        confidence: one-sided level :math:`1-\delta`, in ``(0, 1)``.
        num_models: size of the finite model set covered by a union bound, ``>= 1``.

    Returns:
        The radius (a float).

    Examples:
        >>> round(statistical_radius(100, 0.95), 6)  # 1.644854**2 / 200
        0.013528

    References:
        Duchi, Glynn & Namkoong, "Statistics of robust optimization: a generalized
        empirical likelihood approach", Mathematics of Operations Research, 2021;
        Lam & Zhou, "The empirical likelihood approach to quantifying uncertainty in
        sample average approximation", Operations Research Letters, 2017.
    """
    n = _count(n)
    delta = 1.0 - check_confidence(confidence)
    m = _count(num_models, "num_models")
    z = statistics.NormalDist().inv_cdf(1.0 - delta / m)
    return z * z / (2.0 * n)


def combine_radii(statistical: float, shift: float) -> float:
    r"""Composes a sampling radius and a shift radius: :math:`(\sqrt{r_{\rm stat}} + \sqrt{\rho_{\rm shift}})^2`.

    The square roots add because both perturbations raise the risk by at most
    :math:`\sqrt{2D}\,\mathrm{sd}(\ell)` to first order (see the module docstring); the result
    is at least ``statistical + shift``.

    Args:
        statistical: radius for the sampling error, ``>= 0``.
        shift: radius for the distribution shift, ``>= 0``.

    Returns:
        The combined radius (a float).

    Examples:
        >>> round(combine_radii(0.01, 0.04), 12)  # (0.1 + 0.2) ** 2
        0.09
    """
    for name, v in (("statistical", statistical), ("shift", shift)):
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            raise TypeError(f"`{name}` must be a real number >= 0; got {v!r}.")
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise ValueError(f"`{name}` must be in [0, inf); got {v!r}.")
    a, b = float(statistical), float(shift)
    return a + b + 2.0 * math.sqrt(a) * math.sqrt(b)  # exact when either part is 0


def radius(
    n: int,
    *,
    real: ArrayLike | None = None,
    synthetic: ArrayLike | None = None,
    kind: str = "chi_square",
    k: float | None = None,
    confidence: float = 0.95,
    num_models: int = 1,
    estimator: Any = None,
    divergence_estimate: DivergenceEstimate | None = None,
    seed: int = 0,
) -> Radius:
    r"""The radius, from data, at which a robust value bounds the real risk with the given confidence.

    .. math::

        r = \Big(\sqrt{\tfrac{z^2_{1-\delta/(2m)}}{2n}} + \sqrt{\hat D_{\rm up}}\Big)^2,

    with :math:`\hat D_{\rm up}` the upper confidence bound, at level :math:`1 - \delta/2`, of
    :math:`D_f(P_{\rm real}\|Q_{\rm syn})` from :func:`robustlearn.importance.divergence`
    (clipped at 0), and :math:`m` = ``num_models``. Each part holds with probability at
    least :math:`1 - \delta/2`, so both hold with probability at least
    :math:`1-\delta` (union bound). Without real data the shift part is 0 and the
    statistical part gets all of :math:`\delta`.

    Assumptions (each is necessary; see docs/radius.md):

    * :math:`P \ll Q` (the generator covers the real support). A real region the synthetic
      data never visit makes :math:`D_f` infinite; ``divergence`` warns
      (:class:`~robustlearn.importance.SupportWarning`) when it sees one, but no radius can
      repair it.
    * The divergence is between the distributions *the loss depends on*: pass rows of
      :math:`(x, y)` (:func:`joint_sample`) unless the labelling is known to be the same
      (covariate shift, :math:`P(y|x) = Q(y|x)`).
    * The losses have finite variance (bounded losses do); the statistical part is
      asymptotic and under-covers for very skewed losses at small ``n``.
    * The model is fixed before the ``n`` certification rows are seen (hold them out), or
      is one of ``num_models`` candidates (union bound).

    Args:
        n: number of synthetic rows the robust value will be computed on, ``>= 1``.
        real: real rows, ``(n_r, d)`` (with ``synthetic``), or None for no shift part.
        synthetic: synthetic rows, ``(n_s, d)``.
        kind: ``"chi_square"``, ``"kl"`` or ``"cressie_read"``.
        k: Cressie--Read exponent (``kind="cressie_read"`` only).
        confidence: joint level :math:`1-\delta`, in ``(0, 1)``.
        num_models: models covered by a union bound in the statistical part, ``>= 1``.
        estimator: density-ratio estimator for ``divergence`` (default
            ``importance.ProbabilisticClassifier()``).
        divergence_estimate: an existing ``divergence(...)`` result at level
            :math:`1 - \delta/2` to reuse instead of ``real``/``synthetic``.
        seed: seeds ``divergence``.

    Returns:
        A :class:`Radius`.

    Examples:
        >>> r = radius(1000, confidence=0.95)    # no real data: sampling only
        >>> round(r.total, 6), r.shift
        (0.001353, 0.0)
    """
    n = _count(n)
    kexp = check_kind(kind, k)
    confidence = check_confidence(confidence)
    num_models = _count(num_models, "num_models")
    delta = 1.0 - confidence
    if divergence_estimate is not None:
        if real is not None or synthetic is not None:
            raise ValueError("pass either `divergence_estimate` or `real` and `synthetic`, not both.")
        if divergence_estimate.kind != kind or divergence_estimate.k != kexp:
            raise ValueError(
                f"`divergence_estimate` is for kind={divergence_estimate.kind!r}, k={divergence_estimate.k!r}; "
                f"the radius is for kind={kind!r}, k={kexp!r}."
            )
        if not math.isclose(divergence_estimate.confidence, 1.0 - delta / 2, rel_tol=1e-9):
            raise ValueError(
                f"`divergence_estimate` must be at confidence 1 - delta/2 = {1 - delta / 2:g} (half of the "
                f"miss probability each); got {divergence_estimate.confidence:g}."
            )
        est = divergence_estimate
    elif real is not None or synthetic is not None:
        if real is None or synthetic is None:
            raise ValueError("`real` and `synthetic` must be given together.")
        est = divergence(real, synthetic, kind, k=k, estimator=estimator, confidence=1.0 - delta / 2, seed=seed)
    else:
        est = None
    if est is None:
        stat, shift = statistical_radius(n, confidence, num_models=num_models), 0.0
    else:
        stat = statistical_radius(n, 1.0 - delta / 2, num_models=num_models)
        shift = max(float(est.upper), 0.0)
    return Radius(
        total=combine_radii(stat, shift),
        statistical=stat,
        shift=shift,
        confidence=confidence,
        kind=kind,
        k=kexp,
        n=n,
        num_models=num_models,
        divergence=est,
    )


def certificate(
    losses: ArrayLike,
    kind: str = "chi_square",
    radius: float | Radius = 0.0,
    *,
    k: float | None = None,
    weights: ArrayLike | None = None,
) -> Certificate:
    r"""An upper bound on the real risk: the robust value of held-out synthetic losses.

    .. math::

        \text{bound} = \sup_{q:\ \sum_i p_i f(q_i/p_i) \le r} \sum_i q_i \ell_i
        = \underbrace{\textstyle\sum_i p_i \ell_i}_{\text{empirical risk}} + \text{premium},

    the reduction ``kind`` of the library (``chi_square``, ``kl``, ``cressie_read``) at radius
    :math:`r`. With :math:`r` from :func:`radius` (``Radius.total``) and the assumptions
    listed there, :math:`\mathbb{E}_{P_{\rm real}}\ell \le` ``bound`` with probability at
    least ``radius.confidence`` (asymptotically in the sampling part). The losses must be
    those of a model that did not see these rows (or one of ``radius.num_models``
    candidates).

    Args:
        losses: per-example losses of the model on synthetic rows, shape ``(n,)``, finite.
        kind: ``"chi_square"``, ``"kl"`` or ``"cressie_read"``; must match ``radius.kind``
            when ``radius`` is a :class:`Radius`.
        radius: a :class:`Radius` (its ``total``, ``kind``, ``k`` and ``confidence`` are used)
            or a number ``>= 0``.
        k: Cressie--Read exponent (with ``kind="cressie_read"`` and a numeric radius).
        weights: optional nominal weights of the rows, shape ``(n,)``.

    Returns:
        A :class:`Certificate`.

    Examples:
        >>> import numpy as np
        >>> losses = np.array([0.2, 0.4, 0.1, 0.9, 0.3, 0.5, 0.2, 0.6])
        >>> c = certificate(losses, "chi_square", 0.125)  # sqrt(2 r) = 0.5: half an sd above the mean
        >>> round(c.empirical_risk, 4), round(c.bound, 4)
        (0.4, 0.5225)
    """
    if isinstance(radius, Radius):
        if radius.kind != kind:
            raise ValueError(f"`kind` is {kind!r} but `radius` was computed for {radius.kind!r}.")
        if k is not None and k != radius.k:
            raise ValueError(f"`k` is {k!r} but `radius` was computed for k={radius.k!r}.")
        kexp, r, confidence = radius.k, radius.total, radius.confidence
    else:
        kexp, confidence = check_kind(kind, k), None
        if isinstance(radius, bool) or not isinstance(radius, int | float | np.floating | np.integer):
            raise TypeError(f"`radius` must be a Radius or a number >= 0; got {radius!r}.")
        r = float(radius)
        if not (math.isfinite(r) and r >= 0):
            raise ValueError(f"`radius` must be in [0, inf); got {radius!r}.")
    ell = np.asarray(losses)
    if not np.issubdtype(ell.dtype, np.floating):
        raise TypeError(f"`losses` must have a real floating dtype; got dtype {ell.dtype}.")
    if ell.ndim != 1 or ell.size == 0:
        raise ValueError(f"`losses` must be a non-empty vector of shape (n,); got shape {ell.shape}.")
    if not np.all(np.isfinite(ell)):
        raise ValueError(f"`losses` must be finite; got {int(np.sum(~np.isfinite(ell)))} NaN/inf entries.")
    ell = ell.astype(np.float64)
    p = np.full(ell.size, 1.0 / ell.size)
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != ell.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"`weights` must be finite, >= 0, of shape {ell.shape} and not all 0.")
        p = w / w.sum()
    record = REDUCTIONS[kind]
    hyper = (r, kexp) if kind == "cressie_read" else (r,)
    bound = float(record.value(ell, *hyper, weights=p))
    empirical = float(p @ ell)
    bound = max(bound, empirical)  # the value is >= the mean; this guards float32 round-off only
    return Certificate(
        bound=bound,
        empirical_risk=empirical,
        premium=bound - empirical,
        radius=r,
        confidence=confidence,
        kind=kind,
        k=kexp,
        n=int(ell.size),
    )

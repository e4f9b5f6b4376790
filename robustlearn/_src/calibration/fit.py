r"""One call from (synthetic set, small real set) to a trained linear model and its certificate."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from robustlearn._src.calibration.radius import Certificate, Radius, certificate, radius
from robustlearn._src.weighting.divergence import check_confidence, check_kind, divergence

_LOSSES = ("logistic", "softmax", "squared")


class RobustFit(NamedTuple):
    """Result of :func:`fit_robust`.

    Attributes:
        params: the linear model, ``{"w": (d,) or (d, C), "b": () or (C,)}`` (numpy), on the raw features.
        train_radius: the :class:`Radius` the model was trained at (statistical part for the training rows).
        radius: the :class:`Radius` of the certificate (statistical part for the held-out rows).
        certificate: the :class:`Certificate` of the real risk, from the held-out synthetic rows.
        train_index: indices of the synthetic rows used for training (the rest certified).
        iterations: L-BFGS iterations of the fit (all smoothing stages).
    """

    params: dict
    train_radius: Radius
    radius: Radius
    certificate: Certificate
    train_index: np.ndarray
    iterations: int = 0


def joint_sample(x: ArrayLike, y: ArrayLike, *, loss: str = "softmax", num_classes: int | None = None) -> np.ndarray:
    r"""Rows of :math:`(x, y)` for divergence estimation: the features and the label's encoding.

    The certificate bounds the risk of a loss :math:`\ell(x, y)`, so the divergence that sizes
    the ball must be between the joint distributions of :math:`(x, y)`: for classification
    (``loss`` ``"softmax"`` or ``"logistic"``) the rows are :math:`[x, \mathrm{onehot}(y)]`, for
    regression (``"squared"``) :math:`[x, y]`. Use the same ``num_classes`` for the real and
    synthetic rows.

    Args:
        x: features, shape ``(n, d)``.
        y: labels, shape ``(n,)``: class ids in ``[0, num_classes)`` or real targets.
        loss: ``"softmax"``, ``"logistic"`` or ``"squared"``.
        num_classes: number of classes (default ``max(y) + 1``; 2 for ``"logistic"``).

    Returns:
        Array of shape ``(n, d + C)`` (classification) or ``(n, d + 1)``, float64.

    Examples:
        >>> joint_sample([[0.5], [1.5]], [0, 2], num_classes=3)
        array([[0.5, 1. , 0. , 0. ],
               [1.5, 0. , 0. , 1. ]])
    """
    if loss not in _LOSSES:
        raise ValueError(f"`loss` must be one of {_LOSSES}; got {loss!r}.")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"`x` must be (n, d) and `y` (n,) with the same n; got {x.shape} and {y.shape}.")
    if loss == "squared":
        return np.concatenate([x, y.astype(np.float64)[:, None]], axis=1)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("`y` must hold integer class ids for a classification loss.")
        y = y.astype(np.int64)
    c = (2 if loss == "logistic" else int(y.max()) + 1 if len(y) else 1) if num_classes is None else int(num_classes)
    if len(y) and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"`y` must hold class ids in [0, {c - 1}].")
    return np.concatenate([x, np.eye(c)[y]], axis=1)


def fit_robust(
    x: ArrayLike,
    y: ArrayLike,
    real_x: ArrayLike,
    real_y: ArrayLike,
    *,
    kind: str = "chi_square",
    k: float | None = None,
    confidence: float = 0.95,
    loss: str = "softmax",
    l2: float = 1e-3,
    certify_fraction: float = 0.25,
    covariate_shift: bool = False,
    estimator: Any = None,
    seed: int = 0,
) -> RobustFit:
    r"""Trains a robust linear model on synthetic data at a radius from a small real set, and certifies it.

    1. The synthetic rows are split at random: ``certify_fraction`` of them are held out.
    2. The shift radius is the upper confidence bound (level :math:`1 - \delta/2`) of
       :math:`D_f(P_{\rm real}\|Q_{\rm syn})` between the joint rows :math:`(x, y)`
       (:func:`joint_sample`; :math:`x` only with ``covariate_shift=True``) of the real set and
       all synthetic rows (:func:`robustlearn.importance.divergence`).
    3. The model minimizes ``kind`` at :func:`radius` for the training rows, by
       :func:`robustlearn.train.fit_linear` (the radius is not tuned; no real validation set
       is needed).
    4. The certificate is the robust value of the held-out rows' losses at the radius for
       their number (:func:`certificate`): the model never saw them, so the statistical part
       holds for it (sample splitting), and the shift part holds for every model at once.

    With the assumptions of :func:`radius`, :math:`\mathbb{E}_{P_{\rm real}}\ell \le`
    ``certificate.bound`` with probability at least ``confidence``.

    Args:
        x: synthetic features, shape ``(n, d)``.
        y: synthetic labels, shape ``(n,)`` (class ids, or reals for ``"squared"``).
        real_x: real features, shape ``(m, d)`` (a small set is enough: 20--100 rows).
        real_y: real labels, shape ``(m,)``.
        kind: ``"chi_square"``, ``"kl"`` or ``"cressie_read"``.
        k: Cressie--Read exponent (``kind="cressie_read"`` only).
        confidence: joint level :math:`1-\delta`, in ``(0, 1)``.
        loss: ``"softmax"``, ``"logistic"`` or ``"squared"`` (as :func:`~robustlearn.train.fit_linear`).
        l2: ridge strength, ``>= 0``.
        certify_fraction: fraction of synthetic rows held out for the certificate, in ``(0, 1)``.
        covariate_shift: assume :math:`P(y|x) = Q(y|x)` and estimate the divergence on :math:`x` only.
        estimator: density-ratio estimator for the divergence (default ``ProbabilisticClassifier()``).
        seed: seeds the split and the divergence estimate.

    Returns:
        A :class:`RobustFit`.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(600, 2)); y = (x[:, 0] + 0.5 * rng.normal(size=600) > 0).astype(int)
        >>> rx = rng.normal(0.3, 1.0, (80, 2)); ry = (rx[:, 0] + 0.5 * rng.normal(size=80) > 0).astype(int)
        >>> fit = fit_robust(x, y, rx, ry, loss="logistic")
        >>> c = fit.certificate
        >>> bool(c.bound > c.empirical_risk), c.confidence
        (True, 0.95)
    """
    from robustlearn._src.objectives.base import from_reduction
    from robustlearn._src.training.linear import fit_linear

    kexp = check_kind(kind, k)
    confidence = check_confidence(confidence)
    if loss not in _LOSSES:
        raise ValueError(f"`loss` must be one of {_LOSSES}; got {loss!r}.")
    if not 0.0 < float(certify_fraction) < 1.0:
        raise ValueError(f"`certify_fraction` must be in (0, 1); got {certify_fraction!r}.")
    x, real_x = np.asarray(x, dtype=np.float64), np.asarray(real_x, dtype=np.float64)
    y, real_y = np.asarray(y), np.asarray(real_y)
    n = len(x)
    n_cert = int(round(float(certify_fraction) * n))
    if n_cert < 1 or n - n_cert < 2:
        raise ValueError(f"`certify_fraction`={certify_fraction} leaves no rows to train or certify with n={n}.")
    if covariate_shift:
        real_rows, syn_rows = real_x, x
    else:
        c = None
        if loss == "softmax":
            c = int(max(np.max(y), np.max(real_y))) + 1
        real_rows = joint_sample(real_x, real_y, loss=loss, num_classes=c)
        syn_rows = joint_sample(x, y, loss=loss, num_classes=c)
    delta = 1.0 - confidence
    est = divergence(real_rows, syn_rows, kind, k=k, estimator=estimator, confidence=1.0 - delta / 2, seed=seed)
    order = np.random.default_rng(seed).permutation(n)
    cert, train = np.sort(order[:n_cert]), np.sort(order[n_cert:])
    common = {"kind": kind, "k": k, "confidence": confidence, "divergence_estimate": est}
    train_radius = radius(len(train), **common)
    cert_radius = radius(len(cert), **common)
    hyper = {"radius": train_radius.total, **({"k": kexp} if kind == "cressie_read" else {})}
    objective = from_reduction(kind, **hyper)
    targets = y if loss != "squared" else y.astype(np.float64)
    num_classes = int(max(np.max(y), np.max(real_y))) + 1 if loss == "softmax" else None
    solution = fit_linear(x[train], targets[train], objective, loss=loss, l2=l2, num_classes=num_classes)
    params = {key: np.asarray(v, dtype=np.float64) for key, v in solution.params.items()}
    losses = _linear_losses(params, x[cert], targets[cert], loss)
    return RobustFit(
        params=params,
        train_radius=train_radius,
        radius=cert_radius,
        certificate=certificate(losses, kind, cert_radius),
        train_index=train,
        iterations=int(solution.iterations),
    )


def _linear_losses(params, x, y, loss: str) -> np.ndarray:
    """Per-example losses of a linear model in float64 numpy (as robustlearn.train.linear_losses)."""
    scores = x @ params["w"] + params["b"]
    if loss == "logistic":
        return np.logaddexp(0.0, -(2 * y - 1) * scores)
    if loss == "softmax":
        top = scores.max(axis=1, keepdims=True)
        logz = top[:, 0] + np.log(np.sum(np.exp(scores - top), axis=1))
        return logz - scores[np.arange(len(y)), y.astype(np.int64)]
    return 0.5 * (scores - y) ** 2

r"""scikit-learn estimators: robust linear and MLP models for tabular data.

Requires scikit-learn (``pip install "robustlearn[sklearn]"``). The objective is chosen by
name: every reduction of :data:`robustlearn.REDUCTIONS`, ``"wasserstein"`` (exact
Wasserstein-1 DRO of a binary linear classifier) and ``"worst_group"`` / ``"group_dro"``
(need ``groups`` in ``fit``). Linear models are solved full batch, in float64, to high
accuracy by :func:`robustlearn.train.fit_linear`; MLPs are trained by
:class:`robustlearn.train.Trainer` with Adam, and predict with a float64 NumPy forward
pass of the trained weights.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike
from scipy import special
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_array, check_is_fitted, column_or_1d, validate_data

from robustlearn._src.objectives import base as _objectives
from robustlearn._src.objectives import group_dro as _group_dro
from robustlearn._src.reductions.registry import REDUCTIONS
from robustlearn._src.training.linear import fit_linear
from robustlearn._src.transport import linear as _wasserstein

_GROUP_OBJECTIVES = ("worst_group", "group_dro")
_OBJECTIVES = (*REDUCTIONS, "wasserstein", *_GROUP_OBJECTIVES)


def _bucket(size: int) -> int:
    """``size`` rounded up to one of few sizes: powers of 2 (at least 8) up to 1024, then steps of an eighth.

    Linear fits pad their data to these sizes with zero-weight rows and all-zero feature
    columns, which changes nothing in the solution, so data sets of similar shapes (the
    folds of a cross-validation) share one compiled solver; the padding costs at most 2x
    the work below 1024 and 12.5% above.
    """
    if size <= 1024:
        return max(8, 1 << (size - 1).bit_length())
    step = 1 << (size.bit_length() - 4)
    return -(-size // step) * step


def _canonical_rows(x, targets, weights, groups):
    """Merges identical rows (features, target, group), summing their weights; drops zero weights.

    Every objective here depends on the data only through the weighted empirical
    distribution, so this is exact; it makes weights equivalent, bit for bit, to repeated
    rows and the fit independent of the order of the rows.
    """
    keys = np.column_stack([x, targets.astype(np.float64), groups.astype(np.float64)])
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    merged = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(unique))
    keep = merged > 0
    d = x.shape[1]
    return (
        unique[keep, :d],
        unique[keep, d].astype(targets.dtype),
        merged[keep],
        unique[keep, d + 1].astype(np.int64),
    )


def _pad(x, targets, weights, columns, *, rows: bool = True, features: bool = False):
    """Pads rows (zero weight, copies of the first row) and feature columns (zeros) to bucketed sizes.

    Exact for every objective here: a row of weight 0 is no part of the nominal distribution,
    and a zero feature gets a zero coefficient (its gradient is the penalty's alone).
    """
    n, d = x.shape
    n_pad = _bucket(n) if rows else n
    # Zero feature columns only for small problems, where compiling costs more than solving.
    d_pad = _bucket(d) if features and n_pad * _bucket(d) <= 1 << 16 else d
    x = np.pad(x, ((0, n_pad - n), (0, d_pad - d)))
    x[n:, :d] = x[0, :d]
    targets = np.pad(targets, (0, n_pad - n), mode="edge")
    weights = np.pad(weights, (0, n_pad - n))
    if columns is not None:
        columns = {k: np.pad(v, (0, n_pad - n), mode="edge") for k, v in columns.items()}
    return x, targets, weights, columns


def _half_squared_error(outputs, y):
    """The MLP regressor's per-example loss, (f(x) - y)^2 / 2."""
    return 0.5 * (outputs[:, 0] - y) ** 2


def _penalized_adam(learning_rate, l2):
    """Adam on the objective plus (l2 / 2) |params|^2 (the penalty's gradient added before Adam)."""
    import optax

    return optax.chain(optax.add_decayed_weights(l2), optax.adam(learning_rate))


def _check_real(name: str, value, *, low: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {value!r}.")
    ok = value > low if low_open else value >= low
    if not (ok and math.isfinite(value)):
        raise ValueError(f"`{name}` must be in {'(' if low_open else '['}{low:g}, inf); got {value!r}.")
    return float(value)


def _check_int(name: str, value, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive int{' or None' if allow_none else ''}; got {value!r}.")
    return int(value)


_AUTO_RADIUS = ("chi_square", "kl", "cressie_read")


def _real_pair(real, d: int):
    """Validates ``real = (X_real, y_real)``: 2-D finite features with ``d`` columns, one label per row."""
    if not isinstance(real, tuple | list) or len(real) != 2:
        raise TypeError(f"`real` must be a pair (X_real, y_real); got {type(real).__name__}.")
    real_x = check_array(real[0], dtype=np.float64)
    real_y = column_or_1d(real[1])
    if real_x.shape[1] != d:
        raise ValueError(f"`real` has {real_x.shape[1]} features; X has {d}.")
    if real_y.shape[0] != real_x.shape[0]:
        raise ValueError(f"`real` has {real_x.shape[0]} rows but {real_y.shape[0]} labels.")
    return real_x, real_y


@functools.cache
def _mlp_class():
    """The flax MLP the Trainer trains (defined once, on first use: flax is imported lazily)."""
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs):
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    return MLP


class _Base(BaseEstimator):
    def __init__(
        self,
        objective: str = "cvar",
        *,
        alpha: float = 0.1,
        radius: float | str = 1.0,
        confidence: float = 0.95,
        k: float = 2.0,
        lam: float = 1.0,
        kappa: float = float("inf"),
        norm: str = "l2",
        group_step_size: float = 0.01,
        model: str = "linear",
        hidden: tuple[int, ...] = (32,),
        l2: float = 1e-4,
        max_iter: int = 2000,
        tol: float | None = None,
        epochs: int = 200,
        batch_size: int | None = None,
        learning_rate: float = 1e-2,
        random_state: int | np.random.RandomState | None = None,
    ):
        self.objective = objective
        self.alpha = alpha
        self.radius = radius
        self.confidence = confidence
        self.k = k
        self.lam = lam
        self.kappa = kappa
        self.norm = norm
        self.group_step_size = group_step_size
        self.model = model
        self.hidden = hidden
        self.l2 = l2
        self.max_iter = max_iter
        self.tol = tol
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    # ----------------------------------------------------------------- configuration

    def _check_params(self):
        if self.objective not in _OBJECTIVES:
            raise ValueError(f"`objective` must be one of {list(_OBJECTIVES)}; got {self.objective!r}.")
        if isinstance(self.radius, str):
            if self.radius != "auto":
                raise ValueError(f"`radius` must be a number or 'auto'; got {self.radius!r}.")
            if self.objective not in _AUTO_RADIUS or self.model != "linear":
                raise ValueError(
                    f"radius='auto' is available for objective in {list(_AUTO_RADIUS)} with model='linear'; got "
                    f"objective={self.objective!r}, model={self.model!r} (for an MLP, size the radius with "
                    "robustlearn.calibrate.radius and certify with calibrate.certificate: docs/radius.md)."
                )
            _check_real("confidence", self.confidence, low=0.0, low_open=True)
            if not self.confidence < 1.0:
                raise ValueError(f"`confidence` must be in (0, 1); got {self.confidence!r}.")
        if self.model not in ("linear", "mlp"):
            raise ValueError(f"`model` must be 'linear' or 'mlp'; got {self.model!r}.")
        _check_real("l2", self.l2, low=0.0)
        _check_int("max_iter", self.max_iter)
        if self.tol is not None:
            _check_real("tol", self.tol, low=0.0)
        if self.model == "mlp":
            _check_int("epochs", self.epochs)
            _check_int("batch_size", self.batch_size, allow_none=True)
            _check_real("learning_rate", self.learning_rate, low=0.0, low_open=True)
            hidden = self.hidden
            if not isinstance(hidden, tuple | list) or not all(
                isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1 for h in hidden
            ):
                raise ValueError(f"`hidden` must be a tuple of positive ints; got {hidden!r}.")
        if not (
            self.random_state is None
            or isinstance(self.random_state, np.random.RandomState)
            or (isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool))
        ):
            raise ValueError(f"`random_state` must be None, an int or a numpy RandomState; got {self.random_state!r}.")

    def _build_objective(self, task: str, num_groups: int):
        name = self.objective
        if name in REDUCTIONS:
            record = REDUCTIONS[name]
            return _objectives.from_reduction(record, **{h: getattr(self, h) for h in record.hyper_names})
        if name == "wasserstein":
            if task == "regression":
                raise ValueError(
                    "objective='wasserstein' is not available for RobustRegressor: the squared loss grows faster "
                    "than linearly, so its worst case over a Wasserstein-1 ball is infinite for any radius > 0 "
                    "(robustlearn.wasserstein.linear_regression covers the absolute and Huber losses)."
                )
            if task == "multiclass":
                raise ValueError(
                    "objective='wasserstein' is the exact Wasserstein-1 DRO of a binary linear classifier; y has more "
                    "than 2 classes (use one-vs-rest, e.g. sklearn.multiclass.OneVsRestClassifier)."
                )
            if self.model != "linear":
                raise ValueError(
                    "objective='wasserstein' needs model='linear' (the exact linear reformulation); for an MLP use "
                    "robustlearn.wasserstein.wrm with robustlearn.train.Trainer."
                )
            return _wasserstein.linear_classification_objective(self.radius, kappa=self.kappa, norm=self.norm)
        # Group objectives: the exact worst-group minimax for full-batch fits; online
        # group DRO (Sagawa et al.) for the MLP when asked for.
        if name == "group_dro" and self.model == "mlp":
            return _group_dro.group_dro(num_groups, step_size=self.group_step_size)
        return _group_dro.worst_group(num_groups)

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    # ---------------------------------------------------------------------- fitting

    def _fit(self, X, targets, sample_weight, groups, task: str, num_classes: int = 0, real=None):
        self._check_params()
        if self.radius == "auto":
            if real is None:
                raise ValueError("radius='auto' needs a small real sample: fit(X, y, real=(X_real, y_real)).")
            if sample_weight is not None:
                raise ValueError(
                    "radius='auto' does not take `sample_weight` (the certificate is for the data as given)."
                )
            self._fit_auto(X, targets, *real, task)
            return
        if real is not None:
            raise ValueError("`real` is used by radius='auto' only; with a fixed radius, leave it out.")
        n = X.shape[0]
        weights = _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True, allow_all_zero_weights=True
        )
        if not weights.sum() > 0:
            raise ValueError("`sample_weight` must have a positive total; got all zeros.")
        needs_groups = self.objective in _GROUP_OBJECTIVES
        if needs_groups:
            if groups is None:
                raise ValueError(f"objective={self.objective!r} needs `groups` (one group label per row) in fit.")
            groups = column_or_1d(groups, warn=True)
            if groups.shape[0] != n:
                raise ValueError(f"`groups` must have one label per row of X ({n}); got {groups.shape[0]}.")
            group_labels, group_ids = np.unique(groups, return_inverse=True)
            num_groups = len(group_labels)
        else:
            group_ids, num_groups = np.zeros(n, np.int64), 0
        objective = self._build_objective(task, num_groups)
        x, targets, weights, group_ids = _canonical_rows(X, targets, weights, group_ids)
        if task != "regression" and len(np.unique(targets)) < 2:
            raise ValueError(
                "the training data hold a single class once rows of zero `sample_weight` are removed; "
                "at least 2 classes are needed."
            )
        columns = {"group": group_ids} if needs_groups else None
        if self.model == "linear":
            self._fit_linear(x, targets, weights, columns, objective, task, num_classes)
        else:
            self._fit_mlp(x, targets, weights, columns, objective, task, num_classes)

    def _fit_linear(self, x, targets, weights, columns, objective, task, num_classes):
        d = x.shape[1]
        x, targets, weights, columns = _pad(x, targets, weights, columns, features=True)
        loss = {"binary": "logistic", "multiclass": "softmax", "regression": "squared"}[task]
        with jax.enable_x64(True):
            solution = fit_linear(
                jnp.asarray(x, jnp.float64),
                targets,
                objective,
                loss=loss,
                l2=self.l2,
                weights=weights,
                columns=columns,
                num_classes=num_classes if task == "multiclass" else None,
                max_iter=self.max_iter,
                tol=self.tol,
            )
            w = np.asarray(solution.params["w"], np.float64)[:d]
            b = np.asarray(solution.params["b"], np.float64)
            self.n_iter_ = int(solution.iterations)
            converged = bool(solution.converged)
        if task == "multiclass":
            self.coef_, self.intercept_ = w.T.copy(), b.copy()
        elif task == "binary":
            self.coef_, self.intercept_ = w[None, :], b.reshape(1)
        else:
            self.coef_, self.intercept_ = w, float(b)
        if not converged:
            warnings.warn(
                f"fit_linear stopped at max_iter={self.max_iter} iterations before converging; "
                "increase `max_iter` or `tol`.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _fit_auto(self, x, targets, real_x, real_t, task):
        """radius='auto': the radius from the real sample and a certificate (robustlearn.calibrate.fit_robust)."""
        from robustlearn._src.calibration.fit import fit_robust

        loss = {"binary": "logistic", "multiclass": "softmax", "regression": "squared"}[task]
        k = self.k if self.objective == "cressie_read" else None
        with jax.enable_x64(True):
            fit = fit_robust(
                x, targets, real_x, real_t, kind=self.objective, k=k, confidence=self.confidence, loss=loss,
                l2=self.l2, seed=self._seed(),
            )  # fmt: skip
        w, b = np.asarray(fit.params["w"], np.float64), np.asarray(fit.params["b"], np.float64)
        if task == "multiclass":
            self.coef_, self.intercept_ = w.T.copy(), b.copy()
        elif task == "binary":
            self.coef_, self.intercept_ = w[None, :], b.reshape(1)
        else:
            self.coef_, self.intercept_ = w, float(b)
        self.n_iter_ = fit.iterations
        self.radius_ = fit.train_radius
        self.certificate_ = fit.certificate

    def _fit_mlp(self, x, targets, weights, columns, objective, task, num_classes):
        import optax
        from flax import nnx

        from robustlearn._src.training.trainer import Trainer

        d = x.shape[1]
        p = weights / weights.sum()
        self.x_mean_ = p @ x
        x_var = p @ (x - self.x_mean_) ** 2
        self.x_scale_ = np.where(x_var > 0, np.sqrt(x_var), 1.0)
        xs = (x - self.x_mean_) / self.x_scale_
        if task == "regression":
            self.y_mean_ = float(p @ targets)
            y_var = float(p @ (targets - self.y_mean_) ** 2)
            self.y_scale_ = math.sqrt(y_var) if y_var > 0 else 1.0
            targets = (targets - self.y_mean_) / self.y_scale_
            per_example, out_dim = _half_squared_error, 1
        else:
            per_example, out_dim = optax.softmax_cross_entropy_with_integer_labels, num_classes
        full_batch = self.batch_size is None
        # Full batch: pad to a bucketed size (zero-weight rows, zero feature columns) like
        # the linear model; minibatches keep the rows as they are.
        xs, targets, weights, columns = _pad(xs, targets, weights, columns, rows=full_batch, features=True)
        seed = self._seed()
        module = _mlp_class()((xs.shape[1], *self.hidden, out_dim), nnx.Rngs(seed))
        optimizer = optax.inject_hyperparams(_penalized_adam)(learning_rate=self.learning_rate, l2=self.l2)
        batch_size = None if full_batch else min(self.batch_size, xs.shape[0])
        trainer = Trainer(module, per_example, objective, optimizer, batch_size=batch_size, seed=seed, verbose=False)
        data = {
            "x": jnp.asarray(xs, jnp.float32),
            "y": jnp.asarray(targets, jnp.float32 if task == "regression" else jnp.int32),
            "weight": jnp.asarray(weights, jnp.float32),
        }
        if columns is not None:
            data |= {k: jnp.asarray(v, jnp.int32) for k, v in columns.items()}
        history = trainer.fit(data, epochs=self.epochs)
        self.n_iter_ = len(history)
        self.coefs_ = [np.asarray(layer.kernel[...], np.float64) for layer in module.layers]
        self.coefs_[0] = self.coefs_[0][:d]  # the padded inputs are always 0
        self.intercepts_ = [np.asarray(layer.bias[...], np.float64) for layer in module.layers]

    # ------------------------------------------------------------------- prediction

    def _scores(self, X):
        """Raw model outputs in float64 NumPy: (n,) or (n, C) (linear), (n, out) (MLP).

        Each row's output depends on that row only (no batch-size dependent float32
        kernels), so predictions of a subset equal the subset of the predictions.
        """
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, dtype=np.float64)
        if self.model == "linear":
            coef = np.asarray(self.coef_)
            return x @ coef.T + self.intercept_
        h = (x - self.x_mean_) / self.x_scale_
        for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            h = h @ w + b
            if i < len(self.coefs_) - 1:
                h = np.maximum(h, 0.0)
        return h

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coef_") or hasattr(self, "coefs_")


class RobustClassifier(ClassifierMixin, _Base):
    r"""Linear or MLP classifier minimizing a robust objective of the cross-entropy.

    .. math::

        \min_\theta\ V\big(\ell(\theta; x_1, y_1), \dots, \ell(\theta; x_n, y_n)\big)
            + \tfrac{\mu}{2}\|W\|^2

    with :math:`\ell` the logistic loss (two classes; ``coef_`` of shape ``(1, d)``) or
    the softmax cross-entropy (``coef_`` of shape ``(C, d)``), :math:`V` the objective,
    ``sample_weight`` as the nominal weights :math:`p_i \propto w_i`, and ``groups`` for
    the group objectives. Identical rows are merged (their weights summed) and rows of
    zero weight dropped before fitting, which changes no objective: integer weights are
    exactly repeated rows.

    Args:
        objective: ``"erm"``, ``"cvar"``, ``"chi_square"``, ``"kl"``, ``"cressie_read"``,
            ``"tv"``, ``"chi_square_penalty"``, ``"kl_penalty"`` (every reduction of
            :data:`robustlearn.REDUCTIONS`), ``"wasserstein"`` (exact Wasserstein-1 DRO;
            binary linear classifier only) or ``"worst_group"`` / ``"group_dro"`` (need
            ``groups`` in ``fit``; a linear model solves the exact worst-group minimax for
            both; an MLP minimizes the worst group of each batch, or runs online group DRO
            with ``"group_dro"``).
        alpha: CVaR tail fraction in ``(0, 1]``.
        radius: ball radius for ``chi_square``, ``kl``, ``cressie_read``, ``tv`` (in
            ``[0, 1]``) and ``wasserstein`` (in the units of the features' ``norm``); or
            ``"auto"`` (``chi_square``, ``kl``, ``cressie_read``, linear model): the radius
            comes from a small real sample passed as ``fit(..., real=(X_real, y_real))``
            and the fit is certified (:func:`robustlearn.calibrate.fit_robust`, no tuning).
        confidence: level of the ``radius="auto"`` certificate, in ``(0, 1)``.
        k: Cressie--Read exponent ``> 1``.
        lam: penalty strength ``> 0`` for the penalized forms.
        kappa: Wasserstein cost of flipping a label, in ``[0, inf]`` (``inf``: labels
            never move).
        norm: Wasserstein feature norm: ``"l1"``, ``"l2"`` or ``"linf"``.
        group_step_size: exponentiated-gradient step of online group DRO (MLP).
        model: ``"linear"`` (solved full batch) or ``"mlp"``.
        hidden: hidden layer sizes of the MLP.
        l2: ridge strength :math:`\mu`: the linear model adds
            :math:`\tfrac{\mu}{2}\|\text{coef\_}\|_F^2` to the objective (a mean over
            the examples, so ``Ridge(alpha)`` is ``l2 = alpha / n``); the MLP adds
            :math:`\tfrac{\mu}{2}\|\theta\|^2` over all its weights and biases (on
            standardized inputs).
        max_iter: L-BFGS iterations per smoothing stage of the linear solver.
        tol: gradient tolerance of the linear solver (None: ``sqrt(eps)`` of float64).
        epochs: MLP training epochs (Adam).
        batch_size: MLP minibatch size (None: full batch).
        learning_rate: Adam step size for the MLP.
        random_state: None, an int or a ``numpy.random.RandomState``; seeds the MLP's
            initialization and data order (the linear solver is deterministic).

    Attributes:
        classes_: the class labels.
        coef_, intercept_: linear model, shapes ``(1, d)`` and ``(1,)`` for two classes,
            ``(C, d)`` and ``(C,)`` otherwise (as ``LogisticRegression``).
        coefs_, intercepts_: MLP layer weights (float64), on standardized inputs
            ``(x - x_mean_) / x_scale_``.
        n_iter_: L-BFGS iterations (linear) or epochs run (MLP).
        n_features_in_: number of features seen in ``fit``.
        radius_, certificate_: with ``radius="auto"``, the
            :class:`~robustlearn.calibrate.Radius` trained at and the
            :class:`~robustlearn.calibrate.Certificate` of the real risk (its ``bound``).

    Examples:
        >>> import numpy as np
        >>> from robustlearn.estimators import RobustClassifier
        >>> x = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array(["a", "a", "b", "b"])
        >>> clf = RobustClassifier("cvar", alpha=0.5, l2=0.01).fit(x, y)
        >>> clf.predict([[0.2], [2.8]]).tolist(), clf.coef_.shape
        (['a', 'b'], (1, 1))
    """

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        groups: ArrayLike | None = None,
        real: tuple[ArrayLike, ArrayLike] | None = None,
    ) -> RobustClassifier:
        """Fits the model.

        Args:
            X: features, shape ``(n, d)``.
            y: class labels, shape ``(n,)``.
            sample_weight: optional non-negative weights, shape ``(n,)``: the nominal
                distribution of the robust objective.
            groups: group labels, shape ``(n,)``; needed by ``"worst_group"`` and
                ``"group_dro"``, ignored otherwise.
            real: ``(X_real, y_real)``, a small real sample, for ``radius="auto"`` only.

        Returns:
            self.
        """
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"RobustClassifier needs at least 2 classes in y; got 1 class ({self.classes_[0]!r}).")
        task = "binary" if len(self.classes_) == 2 else "multiclass"
        if real is not None:
            real_x, real_y = _real_pair(real, X.shape[1])
            unseen = np.setdiff1d(real_y, self.classes_)
            if unseen.size:
                raise ValueError(f"`real` holds labels absent from y: {unseen.tolist()}.")
            real = (real_x, encoder.transform(real_y))
        self._fit(X, encoder.transform(y), sample_weight, groups, task, len(self.classes_), real=real)
        return self

    def decision_function(self, X):
        """Scores: shape ``(n,)`` for two classes (positive class minus negative), else ``(n, C)``."""
        scores = self._scores(X)
        if scores.ndim == 2 and scores.shape[1] == 2:  # the MLP's two outputs
            return scores[:, 1] - scores[:, 0]
        return scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores

    def predict_proba(self, X):
        """Class probabilities, shape ``(n, C)``."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = special.expit(scores)
            return np.column_stack([1.0 - positive, positive])
        return special.softmax(scores, axis=1)

    def predict(self, X):
        """Most probable class label for each row of ``X``."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes_[index]


class RobustRegressor(RegressorMixin, _Base):
    r"""Linear or MLP regressor minimizing a robust objective of the squared loss.

    .. math::

        \min_\theta\ V\big(\ell(\theta; x_1, y_1), \dots, \ell(\theta; x_n, y_n)\big)
            + \tfrac{\mu}{2}\|w\|^2, \qquad \ell = \tfrac12 (f_\theta(x) - y)^2,

    with ``sample_weight`` as the nominal weights and ``groups`` for the group objectives.
    Takes the same arguments as :class:`RobustClassifier`. Features and targets are
    standardized internally (the linear solution is mapped back exactly; the MLP predicts
    ``y_mean_ + y_scale_ * output``), so targets of any scale fit as well as unit-scaled
    ones. ``objective="wasserstein"`` is not available: the squared loss grows faster than
    linearly, so its worst case over a Wasserstein-1 ball is infinite.

    Attributes:
        coef_, intercept_: linear model, shapes ``(d,)`` and a float (as ``Ridge``).
        coefs_, intercepts_: MLP layer weights (float64), on standardized inputs, output
            in standardized target units.
        n_iter_: L-BFGS iterations (linear) or epochs run (MLP).
        n_features_in_: number of features seen in ``fit``.

    Examples:
        >>> import numpy as np
        >>> from robustlearn.estimators import RobustRegressor
        >>> x = np.arange(6.0)[:, None]; y = 2 * x[:, 0] + 1
        >>> reg = RobustRegressor("chi_square", radius=0.1, l2=0.0).fit(x, y)
        >>> round(float(reg.predict([[10.0]])[0]), 3), round(float(reg.coef_[0]), 3)
        (21.0, 2.0)
    """

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        groups: ArrayLike | None = None,
        real: tuple[ArrayLike, ArrayLike] | None = None,
    ) -> RobustRegressor:
        """Fits the model.

        Args:
            X: features, shape ``(n, d)``.
            y: real targets, shape ``(n,)``.
            sample_weight: optional non-negative weights, shape ``(n,)``: the nominal
                distribution of the robust objective.
            groups: group labels, shape ``(n,)``; needed by ``"worst_group"`` and
                ``"group_dro"``, ignored otherwise.
            real: ``(X_real, y_real)``, a small real sample, for ``radius="auto"`` only.

        Returns:
            self.
        """
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        if real is not None:
            real_x, real_y = _real_pair(real, X.shape[1])
            real = (real_x, np.asarray(real_y, np.float64))
        self._fit(X, np.asarray(y, np.float64), sample_weight, groups, "regression", real=real)
        return self

    def predict(self, X):
        """Predicted targets, shape ``(n,)``."""
        scores = self._scores(X)
        if self.model == "linear":
            return scores
        return self.y_mean_ + self.y_scale_ * scores[:, 0]

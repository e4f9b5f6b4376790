"""scikit-learn-style estimators: robust linear and MLP models for tabular data.

Requires scikit-learn (``pip install robustlearn[sklearn]``). The objective is chosen by
name, with its hyperparameter among ``alpha`` (CVaR), ``radius`` (balls), ``k``
(Cressie--Read) and ``lam`` (penalties); unrelated ones are ignored. Linear models are
solved full-batch to high accuracy by :func:`robustlearn.train.fit_linear`; MLPs are
trained by :class:`robustlearn.train.Trainer` with Adam.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from robustlearn._src.objectives import base as _objectives
from robustlearn._src.reductions.registry import REDUCTIONS
from robustlearn._src.training.linear import fit_linear
from robustlearn._src.training.trainer import Trainer

_OBJECTIVES = tuple(REDUCTIONS)  # every registered reduction, by name


class _MLP(nnx.Module):
    def __init__(self, sizes, rngs):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class _Base(BaseEstimator):
    def __init__(
        self,
        objective: str = "cvar",
        *,
        alpha: float = 0.1,
        radius: float = 1.0,
        k: float = 2.0,
        lam: float = 1.0,
        model: str = "linear",
        hidden: tuple[int, ...] = (32,),
        l2: float = 1e-4,
        epochs: int = 200,
        batch_size: int | None = None,
        learning_rate: float = 1e-2,
        random_state: int = 0,
    ):
        self.objective = objective
        self.alpha = alpha
        self.radius = radius
        self.k = k
        self.lam = lam
        self.model = model
        self.hidden = hidden
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.random_state = random_state

    def _objective(self):
        if self.objective not in _OBJECTIVES:
            raise ValueError(f"`objective` must be one of {list(_OBJECTIVES)}; got {self.objective!r}.")
        record = REDUCTIONS[self.objective]
        return _objectives.from_reduction(record, **{name: getattr(self, name) for name in record.hyper_names})

    def _fit(self, x, targets, loss: str, out_dim: int):
        objective = self._objective()
        if self.model not in ("linear", "mlp"):
            raise ValueError(f"`model` must be 'linear' or 'mlp'; got {self.model!r}.")
        if not self.l2 >= 0:
            raise ValueError(f"`l2` must be in [0, inf); got {self.l2!r}.")
        x = jnp.asarray(x, jnp.float32)
        if self.model == "linear":
            solution = fit_linear(x, targets, objective, loss=loss, l2=self.l2, num_classes=out_dim or None)
            params = jax.device_get(solution.params)
            self.params_ = {"w": np.asarray(params["w"]), "b": np.asarray(params["b"])}
            return
        module = _MLP((x.shape[1], *self.hidden, max(out_dim, 1)), nnx.Rngs(self.random_state))
        if loss == "softmax":
            per_example = optax.softmax_cross_entropy_with_integer_labels
        else:

            def per_example(out, y):
                return 0.5 * (out[:, 0] - y) ** 2

        optimizer = optax.chain(optax.add_decayed_weights(self.l2), optax.adam(self.learning_rate))
        batch = None if self.batch_size is None else min(self.batch_size, x.shape[0])
        trainer = Trainer(
            module, per_example, objective, optimizer, batch_size=batch, seed=self.random_state, verbose=False
        )
        trainer.fit({"x": x, "y": jnp.asarray(targets)}, epochs=self.epochs)
        self.module_ = module

    def _scores(self, x):
        check_is_fitted(self)
        x = validate_data(self, x, reset=False, dtype=np.float64)
        if self.model == "linear":
            # float64 numpy: scores of a row do not depend on the other rows of the batch.
            w, b = self.params_["w"].astype(np.float64), self.params_["b"].astype(np.float64)
            return x @ w + (b[None, :] if b.ndim else b)
        return np.asarray(self.module_(jnp.asarray(x, jnp.float32)), np.float64)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "params_") or hasattr(self, "module_")


class RobustClassifier(ClassifierMixin, _Base):
    """Classifier minimizing a robust objective of the cross-entropy (softmax) loss.

    Args:
        objective: the name of a reduction in :data:`robustlearn.REDUCTIONS` (``"erm"``,
            ``"cvar"``, ``"chi_square"``, ``"kl"``, ``"cressie_read"``, ``"tv"``,
            ``"chi_square_penalty"``, ``"kl_penalty"``).
        alpha: CVaR tail fraction.
        radius: ball radius for ``chi_square``, ``kl``, ``cressie_read``, ``tv``.
        k: Cressie--Read exponent.
        lam: penalty strength for the penalized forms.
        model: ``"linear"`` (solved full-batch) or ``"mlp"``.
        hidden: hidden layer sizes of the MLP.
        l2: ridge penalty on the weights.
        epochs: MLP training epochs (Adam).
        batch_size: MLP minibatch size (None: full batch).
        learning_rate: Adam step size for the MLP.
        random_state: seed of the MLP initialization and data order.

    Examples:
        >>> import numpy as np
        >>> from robustlearn.estimators import RobustClassifier
        >>> x = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array(["a", "a", "b", "b"])
        >>> RobustClassifier("cvar", alpha=0.5, l2=0.01).fit(x, y).predict([[0.2], [2.8]]).tolist()
        ['a', 'b']
    """

    def fit(self, X, y):
        """Fits the model. ``X``: (n, d) features; ``y``: (n,) class labels."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"RobustClassifier needs at least 2 classes in y; got 1 class ({self.classes_[0]!r}).")
        self._fit(X, encoder.transform(y).astype(np.int32), "softmax", len(self.classes_))
        return self

    def decision_function(self, X):
        """Class scores: shape (n, n_classes), or (n,) for two classes (positive minus negative)."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict_proba(self, X):
        """Class probabilities, shape (n, n_classes)."""
        scores = self._scores(X)
        return np.asarray(jax.nn.softmax(jnp.asarray(scores), axis=-1), np.float64)

    def predict(self, X):
        """Most probable class label for each row of ``X``."""
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=-1)]


class RobustRegressor(RegressorMixin, _Base):
    """Regressor minimizing a robust objective of the squared loss ``(f(x) - y)^2 / 2``.

    Takes the same arguments as :class:`RobustClassifier`.

    Examples:
        >>> import numpy as np
        >>> from robustlearn.estimators import RobustRegressor
        >>> x = np.arange(6.0)[:, None]; y = 2 * x[:, 0] + 1
        >>> pred = RobustRegressor("chi_square", radius=0.1, l2=0.0).fit(x, y).predict([[10.0]])
        >>> round(float(pred[0]), 3)
        21.0
    """

    def fit(self, X, y):
        """Fits the model. ``X``: (n, d) features; ``y``: (n,) real targets."""
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        self._fit(X, y.astype(np.float32), "squared", 0)
        return self

    def predict(self, X):
        """Predicted targets, shape (n,)."""
        scores = self._scores(X)
        return scores if scores.ndim == 1 else scores[:, 0]

"""The gap suite's two learners. Every fit goes through the library: ``fit_linear`` or ``Trainer``.

(``radius_from_data`` trains its linear model by ``robustlearn.calibrate.fit_robust``, which calls
``fit_linear`` once: :func:`fit_radius_from_data`.)

- **linear**: a linear classifier (logistic loss for binary scenarios, softmax for multi-class ones) solved
  to high accuracy by :func:`robustlearn.train.fit_linear` for any Objective, with the L2 strength ``l2`` on
  the coefficients.
- **mlp**: a ReLU network with two hidden layers trained by :class:`robustlearn.train.Trainer` on minibatches,
  AdamW (``optax.inject_hyperparams``, so the weight decay is a traced value and a grid compiles once),
  with early stopping on the selection split (:class:`Selection`: one run serves both selection rules).

Compile budget. Both learners compile once per program structure: the objective's kind (its hyperparameters
travel in its state), the number of classes and the padded shapes. Training data are padded with zero-weight
rows to a row bucket and with zero columns to a feature bucket (:class:`Shapes`); a zero-weight row changes no
objective (every reduction and group mean takes the weights as the nominal distribution) and a zero column
changes no prediction, so padding changes the compiled shapes only. For the MLP a padded row also takes a
place in a minibatch: the effective minibatch is ``batch_size * n / n_padded`` on average (at least half
with the power-of-two buckets of the full run).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import robustlearn as rl
from robustlearn import calibrate, objectives

# Group DRO of the linear learner is the exact full-batch worst group mean over the groups *present*; padding
# the number of groups to this constant (absent ids count in no group) lets every scenario share one program.
LINEAR_GROUPS = 10


def _pow2(n: int, low: int) -> int:
    return max(low, 1 << max(int(n) - 1, 0).bit_length())


class Shapes:
    """Row and feature buckets. ``rows``/``dims`` fixed: one bucket for all sizes up to it (quick runs, fewest
    compiles); None: the next power of two (full runs, at most twice the data)."""

    def __init__(self, rows: int | None = None, dims: int | None = None, eval_rows: int = 1024):
        self.fixed_rows, self.fixed_dims, self.eval_min = rows, dims, eval_rows

    def rows(self, n: int) -> int:
        if self.fixed_rows is not None and n <= self.fixed_rows:
            return self.fixed_rows
        return _pow2(n, 1024)

    def dims(self, d: int) -> int:
        if self.fixed_dims is not None and d <= self.fixed_dims:
            return self.fixed_dims
        return _pow2(d, 32)

    def eval_rows(self, n: int) -> int:
        return _pow2(n, self.eval_min)

    def describe(self) -> str:
        r = f"{self.fixed_rows} rows (more: next power of two)" if self.fixed_rows else "next power of two >= 1024"
        d = f"{self.fixed_dims} features" if self.fixed_dims else "next power of two >= 32"
        return f"training rows padded to {r}, features to {d}"


def pad_rows(a: np.ndarray, n: int, fill=0) -> np.ndarray:
    a = np.asarray(a)
    if len(a) > n:
        raise ValueError(f"{len(a)} rows do not fit the padded size {n}")
    return np.concatenate([a, np.full((n - len(a),) + a.shape[1:], fill, a.dtype)])


def pad_x(x: np.ndarray, n: int, d: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    out = np.zeros((n, d), np.float32)
    out[: x.shape[0], : x.shape[1]] = x
    return out


class Data(NamedTuple):
    """Training rows of one fit: features, labels, nominal weights (mean 1 on real rows) and group ids."""

    x: np.ndarray
    y: np.ndarray
    weight: np.ndarray
    group: np.ndarray


def classification_metrics(logits: np.ndarray, split: Mapping[str, np.ndarray]) -> dict[str, float]:
    """accuracy, loss (mean cross-entropy), worst-group accuracy and loss over the groups present."""
    logits = np.asarray(logits, np.float64)
    y = np.asarray(split["y"])
    if not np.all(np.isfinite(logits)):
        nan = float("nan")
        return {"accuracy": nan, "loss": nan, "worst_group_accuracy": nan, "worst_group_loss": nan}
    shifted = logits - logits.max(axis=1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]
    right = logits.argmax(axis=1) == y
    groups = np.asarray(split["group"])
    present = np.unique(groups)
    return {
        "accuracy": float(right.mean()),
        "loss": float(losses.mean()),
        "worst_group_accuracy": float(min(right[groups == g].mean() for g in present)),
        "worst_group_loss": float(max(losses[groups == g].mean() for g in present)),
    }


def per_example_losses(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), np.asarray(y)]


# ------------------------------------------------------------------------------------------------ objectives


def objective_for(kind: str, hyper: Mapping[str, float], *, learner: str, num_groups: int) -> rl.objectives.Objective:
    """The library Objective of a method kind (hyperparameters from ``hyper``)."""
    if kind == "erm":
        return objectives.erm()
    if kind == "cvar":
        return objectives.cvar(hyper["alpha"])
    if kind == "chi_square":
        return objectives.chi_square(hyper["radius"])
    if kind == "kl":
        return objectives.kl(hyper["radius"])
    if kind == "group":  # full batch: the exact worst group; minibatches: Sagawa et al.'s online algorithm
        if learner == "linear":
            return objectives.worst_group(LINEAR_GROUPS)
        return objectives.group_dro(num_groups, step_size=hyper["step_size"])
    if kind == "wasserstein":
        if learner != "linear":
            raise ValueError("the exact Wasserstein objective is for the binary linear model only")
        return rl.wasserstein.linear_classification_objective(hyper["eps"])
    raise ValueError(f"unknown objective kind {kind!r}")


# ---------------------------------------------------------------------------------------------------- linear


class LinearModel(NamedTuple):
    w: np.ndarray  # (d,) binary or (d, C)
    b: np.ndarray
    binary: bool

    def logits(self, x: np.ndarray) -> np.ndarray:
        s = np.asarray(x, np.float64) @ self.w + self.b
        return np.stack([np.zeros_like(s), s], axis=1) if self.binary else s


def fit_linear_model(kind: str, hyper: Mapping[str, float], data: Data, num_classes: int, shapes: Shapes):
    """One configuration by ``rl.train.fit_linear`` on the padded data; returns a :class:`LinearModel`."""
    n, d = data.x.shape
    rows, dims = shapes.rows(n), shapes.dims(d)
    weight = pad_rows(np.asarray(data.weight, np.float32), rows)
    x = pad_x(data.x, rows, dims)
    y = pad_rows(np.asarray(data.y, np.int32), rows)
    binary = num_classes == 2
    obj = objective_for(kind, hyper, learner="linear", num_groups=LINEAR_GROUPS)
    columns = {"group": pad_rows(np.asarray(data.group, np.int32), rows)} if "group" in obj.requires else None
    sol = rl.train.fit_linear(
        x,
        y,
        obj,
        loss="logistic" if binary else "softmax",
        l2=float(hyper["l2"]),
        weights=weight,
        columns=columns,
        num_classes=None if binary else num_classes,
    )
    if not np.isfinite(float(sol.value)):
        raise FloatingPointError(f"fit_linear({obj.name}, l2={hyper['l2']}): non-finite objective")
    w = np.asarray(sol.params["w"], np.float64)[:d]
    return LinearModel(w, np.asarray(sol.params["b"], np.float64), binary)


class CertifiedLinearModel(NamedTuple):
    """A linear model trained by ``calibrate.fit_robust``, with its certificate's record (JSON-ready)."""

    w: np.ndarray
    b: np.ndarray
    binary: bool
    record: dict

    def logits(self, x: np.ndarray) -> np.ndarray:
        return LinearModel(self.w, self.b, self.binary).logits(x)


RADIUS_KIND, RADIUS_CONFIDENCE = "chi_square", 0.95  # calibrate.fit_robust's defaults
RADIUS_ESTIMATOR: Any = None  # the density-ratio estimator of the divergence; None: the library's default
# The bound is computed in float32 (the suite's precision): a real test loss within this relative rounding of
# the bound counts as covered (a near-constant model's loss equals its bound up to rounding).
COVER_RTOL = 1e-6


def fit_radius_from_data(hyper: Mapping[str, float], train: Mapping[str, np.ndarray], num_classes: int,
                         seed: int) -> CertifiedLinearModel:  # fmt: skip
    """``radius_from_data``: one ``calibrate.fit_robust`` on the synthetic rows of ``train`` with its real rows.

    The real rows (``source == 0``, the scenario's small ``real_train`` set) only size the radius (the
    upper confidence bound of the chi-square divergence between the joint rows (x, y), plus the statistical
    part); the model trains on 75% of the synthetic rows at that radius and is certified on the other 25%.
    The certified loss is the log loss (logistic for binary tasks, softmax otherwise), the loss of
    :func:`classification_metrics`. ``record`` holds the certificate and the suite's own recomputation of
    the mean log loss on the certification rows (``certified_rows_loss``).
    """
    source = np.asarray(train["source"])
    syn, real = source > 0, source == 0
    if not real.any():
        raise ValueError("radius_from_data needs real rows (source 0) to size the radius")
    x, y = np.asarray(train["x"], np.float64)[syn], np.asarray(train["y"])[syn]
    rx, ry = np.asarray(train["x"], np.float64)[real], np.asarray(train["y"])[real]
    binary = num_classes == 2
    loss = "logistic" if binary else "softmax"
    fit = calibrate.fit_robust(x, y, rx, ry, kind=RADIUS_KIND, confidence=RADIUS_CONFIDENCE, loss=loss,
                               l2=float(hyper["l2"]), estimator=RADIUS_ESTIMATOR, seed=seed)  # fmt: skip
    w, b = np.asarray(fit.params["w"], np.float64), np.asarray(fit.params["b"], np.float64)
    cert, r = fit.certificate, fit.radius
    held_out = np.setdiff1d(np.arange(len(y)), fit.train_index)
    model = LinearModel(w, b, binary)
    own = per_example_losses(model.logits(x[held_out]), y[held_out])
    record = {
        "bound": float(cert.bound),
        "empirical_risk": float(cert.empirical_risk),
        "premium": float(cert.premium),
        "radius": float(r.total),
        "radius_shift": float(r.shift),
        "radius_statistical": float(r.statistical),
        "train_radius": float(fit.train_radius.total),
        "divergence_estimate": float(r.divergence.estimate) if r.divergence is not None else None,
        "confidence": float(cert.confidence),
        "kind": RADIUS_KIND,
        "num_real": int(real.sum()),
        "num_train": int(len(fit.train_index)),
        "num_certify": int(len(held_out)),
        "certified_rows_loss": float(own.mean()),
    }
    return CertifiedLinearModel(w, b, binary, record)


# ------------------------------------------------------------------------------------------------------- MLP


class MLPConfig(NamedTuple):
    hidden: int = 128
    learning_rate: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 40
    patience: int = 5


def mlp_init(seed: int, d: int, d_pad: int, hidden: int, num_classes: int) -> dict:
    """He-normal weights for the true fan-in ``d``; the rows of the padded (always zero) inputs start at 0."""
    rng = np.random.default_rng([seed, 77])
    w1 = np.zeros((d_pad, hidden))
    w1[:d] = rng.normal(0, math.sqrt(2.0 / d), (d, hidden))
    return {
        "w1": jnp.asarray(w1, jnp.float32),
        "b1": jnp.zeros(hidden, jnp.float32),
        "w2": jnp.asarray(rng.normal(0, math.sqrt(2.0 / hidden), (hidden, hidden)), jnp.float32),
        "b2": jnp.zeros(hidden, jnp.float32),
        "w3": jnp.asarray(rng.normal(0, math.sqrt(1.0 / hidden), (hidden, num_classes)), jnp.float32),
        "b3": jnp.zeros(num_classes, jnp.float32),
    }


def mlp_apply(params, x):
    h = jax.nn.relu(x @ params["w1"] + params["b1"][None, :])
    h = jax.nn.relu(h @ params["w2"] + params["b2"][None, :])
    return h @ params["w3"] + params["b3"][None, :]


_mlp_apply = jax.jit(mlp_apply)
_ADAMW = optax.inject_hyperparams(optax.adamw)


def mlp_logits(params, x: np.ndarray, shapes: Shapes) -> np.ndarray:
    """Outputs for ``x`` (rows padded to an evaluation bucket, so each bucket compiles once)."""
    n = len(x)
    d_pad = params["w1"].shape[0]
    out = _mlp_apply(params, jnp.asarray(pad_x(x, shapes.eval_rows(n), d_pad)))
    return np.asarray(out, np.float64)[:n]


class Selection(rl.train.Callback):
    """Early stopping for several selection rules in one training run.

    After each epoch, every rule's selection split is scored by the scenario's metric. Each rule keeps the
    parameters of its best epoch and *freezes* after ``patience`` epochs without improvement, exactly as if
    ``EarlyStopping(patience=...)`` had stopped a run of its own (training does not depend on any selection
    split, so the frozen state is that run's result); training stops when every rule is frozen. A rule never
    sees another rule's split: selection without real data stays without real data.
    """

    order = 0

    def __init__(self, splits: Mapping[str, Mapping[str, np.ndarray]], metric: str, maximize: bool, patience: int,
                 shapes: Shapes):  # fmt: skip
        self.names = list(splits)
        self.splits = splits
        self.metric, self.maximize, self.patience, self.shapes = metric, maximize, patience, shapes
        self.provides = tuple(f"select_{k}" for k in self.names)

    def on_fit_start(self, trainer):
        self.best = {k: None for k in self.names}
        self.best_epoch = dict.fromkeys(self.names)
        self.params = dict.fromkeys(self.names)
        self.wait = dict.fromkeys(self.names, 0)
        self.frozen = dict.fromkeys(self.names, False)

    def on_epoch_end(self, trainer, row):
        params = trainer.state.params
        for k in self.names:
            split = self.splits[k]
            value = classification_metrics(mlp_logits(params, split["x"], self.shapes), split)[self.metric]
            row[f"select_{k}"] = value
            if self.frozen[k]:
                continue
            best = self.best[k]
            better = math.isfinite(value) and (best is None or (value > best if self.maximize else value < best))
            if better:
                self.best[k], self.best_epoch[k], self.params[k], self.wait[k] = value, row["epoch"], params, 0
            else:
                self.wait[k] += 1
                self.frozen[k] = self.wait[k] >= self.patience
        return all(self.frozen.values())


class MLPModel(NamedTuple):
    params: dict  # rule -> parameters (None if no epoch was finite)
    best_epoch: dict
    epochs: int

    def logits(self, x: np.ndarray, rule: str, shapes: Shapes) -> np.ndarray:
        p = self.params[rule]
        if p is None:
            return np.full((len(x), 2), np.nan)
        return mlp_logits(p, x, shapes)


class _Slot:
    """The configuration a reused Trainer trains next: its objective and optimizer (read when ``fit`` starts)."""

    objective: rl.objectives.Objective
    optimizer: optax.GradientTransformation


# One Trainer per program structure (objective kind, groups, classes, padded shapes, MLP size), reused for every
# configuration: a new Trainer would trace and lower its programs again (about 0.3-0.5 s per fit on 2 cores, the
# largest cost of a quick run) although the compiled program is the same (hyperparameters travel as arrays in the
# objective's and the optimizer's state). The reused Trainer's objective and optimizer take ``init`` from the
# slot (the current configuration's hyperparameters) and ``loss``/``update`` from the first configuration, which
# read every hyperparameter from that state; so a fit is exactly the fit of a fresh Trainer built with the
# current configuration (tests/test_gap_suite.py compares the two).
_TRAINERS: dict[tuple, tuple[rl.train.Trainer, _Slot]] = {}


def _trainer(kind: str, hyper: Mapping[str, float], num_classes: int, num_groups: int, rows: int, dims: int,
             cfg: MLPConfig) -> rl.train.Trainer:  # fmt: skip
    obj = objective_for(kind, hyper, learner="mlp", num_groups=num_groups)
    opt = _ADAMW(learning_rate=cfg.learning_rate, weight_decay=float(hyper["wd"]))
    key = (kind, num_groups if kind == "group" else 0, num_classes, rows, dims, cfg)
    if key not in _TRAINERS:
        slot = _Slot()
        objective = obj._replace(init=lambda k: slot.objective.init(k))
        optimizer = optax.GradientTransformationExtraArgs(lambda p: slot.optimizer.init(p), opt.update)
        trainer = rl.train.Trainer(
            mlp_apply,
            optax.softmax_cross_entropy_with_integer_labels,
            objective,
            optimizer,
            params=mlp_init(0, dims, dims, cfg.hidden, num_classes),
            batch_size=min(cfg.batch_size, rows),
            seed=0,
            verbose=False,
        )
        _TRAINERS[key] = (trainer, slot)
    trainer, slot = _TRAINERS[key]
    slot.objective, slot.optimizer = obj, opt
    return trainer


def fit_mlp_model(
    kind: str,
    hyper: Mapping[str, float],
    data: Data,
    num_classes: int,
    num_groups: int,
    selection: Mapping[str, Mapping[str, np.ndarray]],
    metric: str,
    maximize: bool,
    seed: int,
    cfg: MLPConfig,
    shapes: Shapes,
) -> MLPModel:
    """One configuration by ``rl.train.Trainer`` (minibatches, AdamW with weight decay ``hyper["wd"]``)."""
    n, d = data.x.shape
    rows, dims = shapes.rows(n), shapes.dims(d)
    train = {
        "x": pad_x(data.x, rows, dims),
        "y": pad_rows(np.asarray(data.y, np.int32), rows),
        "weight": pad_rows(np.asarray(data.weight, np.float32), rows),
        "group": pad_rows(np.asarray(data.group, np.int32), rows),
    }
    select = Selection(selection, metric, maximize, cfg.patience, shapes)
    trainer = _trainer(kind, hyper, num_classes, num_groups, rows, dims, cfg)
    trainer.seed = seed
    trainer.init_params = mlp_init(seed, d, dims, cfg.hidden, num_classes)
    trainer.callbacks = [select]
    try:
        history = trainer.fit(train, epochs=cfg.max_epochs)
        epochs = len(history.rows)
    except FloatingPointError:  # the rules keep their best finite epoch, if any
        epochs = len(trainer.history.rows)
    return MLPModel(dict(select.params), dict(select.best_epoch), epochs)


def describe_mlp(cfg: MLPConfig) -> str:
    return (
        f"ReLU MLP with two hidden layers of {cfg.hidden}, AdamW (learning rate {cfg.learning_rate:g}), "
        f"minibatches of {cfg.batch_size}, at most {cfg.max_epochs} epochs, early stopping with patience "
        f"{cfg.patience} on the selection split"
    )


def model_summary(model: Any) -> str:
    return type(model).__name__

"""The shared trainer: any model, any per-example loss, any Objective, any optax optimizer.

One epoch is one compiled function (``lax.scan`` over shuffled minibatches), so the
Python loop runs once per epoch. Minibatches have a static size: the last one is padded
with repeated examples whose ``"mask"`` is False, which removes them from every
reduction. The data order and the PRNG key of every step derive from ``(seed, epoch,
step)`` only, so a run resumed from a checkpoint is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, serialization

from robustlearn._src.objectives.base import Objective

_MAXIMIZE = ("accuracy",)


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree)."""

    params: Any
    opt_state: Any
    obj_state: Any
    step: jax.Array


class History:
    """Per-epoch metrics: a list of dicts, with table and plot views.

    Examples:
        >>> h = History([{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.25}])
        >>> h.columns()["val_loss"]
        [0.5, 0.25]
        >>> print(h.to_markdown())
        | epoch | val_loss |
        | --- | --- |
        | 1 | 0.5 |
        | 2 | 0.25 |
    """

    def __init__(self, rows: Sequence[dict] = ()):
        self.rows: list[dict] = [dict(r) for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"History({len(self.rows)} epochs)"

    def columns(self) -> dict[str, list]:
        """Metric name -> list of per-epoch values (None where missing)."""
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        return {k: [r.get(k) for r in self.rows] for k in keys}

    def to_markdown(self, keys: Sequence[str] | None = None, digits: int = 4) -> str:
        """The history as a markdown table."""
        cols = self.columns()
        keys = list(keys or cols)

        def fmt(v):
            return "" if v is None else (f"{v:.{digits}g}" if isinstance(v, float) else str(v))

        lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
        lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in self.rows]
        return "\n".join(lines)

    def plot(self, keys: Sequence[str] = ("train_objective", "val_loss"), ax: Any = None) -> Any:
        """Draws the metrics ``keys`` against the epoch, one line each, with a legend.

        Needs matplotlib (``pip install "robustlearn[plot]"``).

        Args:
            keys: metric names; names absent from the history are skipped.
            ax: a matplotlib ``Axes`` to draw into (default: the current one).

        Returns:
            The matplotlib ``Axes`` drawn into (call ``ax.figure.savefig(path)`` to save).
        """
        from robustlearn._src.optional import require

        plt = require("matplotlib.pyplot", "matplotlib", "plot")

        ax = ax or plt.gca()
        cols = self.columns()
        for k in keys:
            if k in cols:
                ax.plot(cols["epoch"], cols[k], label=k)
        ax.set_xlabel("epoch")
        ax.legend()
        return ax


# ------------------------------------------------------------------------ validation


def _leading(data: dict, name: str) -> int:
    if not isinstance(data, dict):
        raise TypeError(f"`{name}` must be a dict of arrays with a leading example axis; got {type(data).__name__}.")
    for key in ("x", "y"):
        if key not in data:
            raise ValueError(f"`{name}` must contain the key {key!r}; got keys {sorted(data)}.")
    sizes = {k: (np.shape(v)[0] if np.ndim(v) else None) for k, v in data.items()}
    if any(s is None for s in sizes.values()):
        raise ValueError(f"every array in `{name}` needs a leading example axis; got shapes {sizes}.")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the arrays in `{name}` disagree on the number of examples: {sizes}.")
    n = next(iter(sizes.values()))
    if n == 0:
        raise ValueError(f"`{name}` is empty (0 examples).")
    for reserved in ("mask",):
        if reserved in data:
            raise ValueError(f"`{name}` must not contain {reserved!r}: the trainer sets it.")
    if "group" in data and not np.issubdtype(np.asarray(data["group"]).dtype, np.integer):
        raise TypeError(f"`{name}['group']` must hold integer group ids.")
    if "group" in data and np.min(data["group"]) < 0:
        raise ValueError(f"`{name}['group']` must be non-negative group ids.")
    if "weight" in data:
        w = np.asarray(data["weight"])
        if w.shape != (n,) or not np.issubdtype(w.dtype, np.number) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"`{name}['weight']` must be {n} finite non-negative numbers (no NaN/inf).")
    return n


def _check_labels(y, out_shape, name: str) -> bool:
    """Checks integer labels against the number of classes; returns 'is a classifier'."""
    y = np.asarray(y)
    classifier = np.issubdtype(y.dtype, np.integer) and len(out_shape) == 2
    if classifier:
        num_classes = out_shape[-1]
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"labels in `{name}['y']` must be in [0, {num_classes - 1}] for a model with {num_classes} "
                f"outputs; got range [{lo}, {hi}]."
            )
    return classifier


def _first(data, k=1):
    return jax.tree.map(lambda a: a[:k], data)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Trains any model on any Objective with an optax optimizer.

    Args:
        model: a flax ``nnx.Module`` (its ``nnx.Param`` leaves are trained and written
            back after ``fit``; other nnx state, such as batch-norm statistics, is held
            fixed), or a function ``apply(params, x) -> outputs``.
        loss: per-example loss ``loss(outputs, y) -> (n,)``, e.g.
            ``optax.softmax_cross_entropy_with_integer_labels``.
        objective: an :class:`~robustlearn.objectives.Objective`.
        optimizer: an ``optax.GradientTransformation``.
        params: the initial parameter pytree; required when ``model`` is a function.
        batch_size: minibatch size, or None for full batch.
        seed: seeds the data order and the objective's PRNG keys.
        monitor: validation metric for early stopping and model selection (default
            ``"val_loss"`` with validation data, else ``"train_objective"``). Accuracy
            metrics are maximized, the others minimized.
        patience: stop after this many epochs without improvement (None: never).
        restore_best: at the end, keep the parameters of the best epoch by ``monitor``.
        checkpoint_dir: save a checkpoint there after every epoch; ``fit(resume=True)``
            continues from it.
        devices: None for the default device, or a sequence of devices (e.g.
            ``jax.devices()``): minibatches are sharded over them along the example
            axis, parameters are replicated. The result equals the 1-device result.
        verbose: print a progress bar with live metrics to stderr.
    """

    def __init__(
        self,
        model: nnx.Module | Callable[[Any, jax.Array], jax.Array],
        loss: Callable[[jax.Array, jax.Array], jax.Array],
        objective: Objective,
        optimizer: optax.GradientTransformation,
        *,
        params: Any = None,
        batch_size: int | None = None,
        seed: int = 0,
        monitor: str | None = None,
        patience: int | None = None,
        restore_best: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        devices: Sequence[jax.Device] | None = None,
        verbose: bool = True,
    ):
        if not isinstance(objective, Objective):
            raise TypeError(f"`objective` must be a robustlearn.objectives.Objective; got {type(objective).__name__}.")
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError("`optimizer` must be an optax.GradientTransformation.")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive int or None; got {batch_size!r}.")
        if patience is not None and patience < 1:
            raise ValueError(f"`patience` must be a positive int or None; got {patience!r}.")
        self._module = None
        if isinstance(model, nnx.Module):
            graphdef, module_params, rest = nnx.split(model, nnx.Param, ...)
            self._module = model
            self.apply = lambda p, x: nnx.merge(graphdef, p, rest)(x)
            params = module_params if params is None else params
        elif callable(model):
            if params is None:
                raise ValueError("`params` is required when `model` is an apply function.")
            self.apply = model
        else:
            raise TypeError("`model` must be a flax nnx.Module or a function apply(params, x).")
        self.loss = loss
        self.objective = objective
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.seed = seed
        self.monitor = monitor
        self.patience = patience
        self.restore_best = restore_best
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.verbose = verbose
        self.mesh = None
        if devices is not None:
            devices = list(devices)
            if not devices:
                raise ValueError("`devices` must name at least one device.")
            self.mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        self.init_params = params
        self.params = params
        self.state: TrainState | None = None
        self.history = History()
        self._epoch_fns: dict = {}

    # ------------------------------------------------------------------ pure pieces

    def loss_fn(self, params, batch):
        """Per-example losses of ``batch`` (the function objectives receive)."""
        return self.loss(self.apply(params, batch["x"]), batch["y"])

    def _replicated(self, tree):
        if self.mesh is None:
            return tree
        return jax.device_put(tree, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec()))

    def _shard_batch(self, batch):
        if self.mesh is None:
            return batch
        spec = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec("data"))
        return jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: spec, batch))

    def _epoch_fn(self, n: int, batch_size: int):
        key = (n, batch_size)
        if key in self._epoch_fns:
            return self._epoch_fns[key]
        steps = math.ceil(n / batch_size)
        pad = steps * batch_size - n
        objective, optimizer = self.objective, self.optimizer

        def epoch(state: TrainState, data, epoch_key):
            perm = jax.random.permutation(epoch_key, n)
            idx = jnp.concatenate([perm, perm[:pad]]).reshape(steps, batch_size)
            mask = jnp.concatenate([jnp.ones(n, bool), jnp.zeros(pad, bool)]).reshape(steps, batch_size)

            def body(carry, inputs):
                state, bad_step = carry
                idx_b, mask_b, i = inputs
                batch = jax.tree.map(lambda a: a[idx_b], data)
                batch["mask"] = mask_b
                batch = self._shard_batch(batch)
                step_key = jax.random.fold_in(epoch_key, i)

                def scalar(params):
                    return objective.loss(self.loss_fn, params, batch, state.obj_state, step_key)

                (value, (obj_state, metrics)), grads = jax.value_and_grad(scalar, has_aux=True)(state.params)
                updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
                params = optax.apply_updates(state.params, updates)
                finite = jnp.isfinite(value) & jnp.all(
                    jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
                )
                new = TrainState(params, opt_state, obj_state, state.step + 1)
                # After the first non-finite step, freeze the last finite state.
                keep = finite & (bad_step < 0)
                new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
                bad_step = jnp.where((bad_step < 0) & ~finite, state.step, bad_step)
                metrics = dict(metrics, objective=value)
                return (new, bad_step), metrics

            init = (state, jnp.asarray(-1, state.step.dtype))
            (state, bad_step), metrics = jax.lax.scan(body, init, (idx, mask, jnp.arange(steps)))
            return state, bad_step, jax.tree.map(jnp.mean, metrics)

        fn = jax.jit(epoch)
        self._epoch_fns[key] = fn
        return fn

    def _eval_fn(self, classifier: bool, num_groups: int):
        key = ("eval", classifier, num_groups)
        if key in self._epoch_fns:
            return self._epoch_fns[key]
        objective = self.objective

        def evaluate(params, obj_state, data, key):
            outputs = self.apply(params, data["x"])
            losses = self.loss(outputs, data["y"])
            value, _ = objective.loss(self.loss_fn, params, data, obj_state, key)
            out = {"loss": jnp.mean(losses), "objective": value}
            if classifier:
                correct = (jnp.argmax(outputs, axis=-1) == data["y"]).astype(losses.dtype)
                out["accuracy"] = jnp.mean(correct)
            if num_groups:
                g = data["group"]
                count = jax.ops.segment_sum(jnp.ones_like(losses), g, num_groups)
                present = count > 0
                safe = jnp.where(present, count, 1)
                group_loss = jax.ops.segment_sum(losses, g, num_groups) / safe
                out["worst_group_loss"] = jnp.max(jnp.where(present, group_loss, -jnp.inf))
                if classifier:
                    group_acc = jax.ops.segment_sum(correct, g, num_groups) / safe
                    out["worst_group_accuracy"] = jnp.min(jnp.where(present, group_acc, jnp.inf))
            return out

        fn = jax.jit(evaluate)
        self._epoch_fns[key] = fn
        return fn

    # ------------------------------------------------------------------ public API

    def metric_names(self, train, val=None) -> list[str]:
        """The metric names that ``fit(train, val)`` records (valid ``monitor`` values)."""
        classifier = val is not None and _check_labels(val["y"], self._out_shape(val), "val")
        return self._metric_names(val, classifier)

    @staticmethod
    def _metric_names(val, classifier: bool) -> list[str]:
        names = ["train_objective", "train_mean_loss"]
        if val is not None:
            names += ["val_loss", "val_objective"]
            names += ["val_accuracy"] if classifier else []
            if "group" in val:
                names += ["val_worst_group_loss"] + (["val_worst_group_accuracy"] if classifier else [])
        return names

    def _out_shape(self, data):
        x = _first(data)["x"]
        return jax.eval_shape(self.apply, self.init_params, x).shape

    def _validate(self, train, val, epochs):
        n = _leading(train, "train")
        if val is not None:
            _leading(val, "val")
        if self.objective.check is not None:
            self.objective.check(train)
            if val is not None:
                self.objective.check(val)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"`epochs` must be a positive int; got {epochs!r}.")
        batch_size = n if self.batch_size is None else self.batch_size
        if batch_size > n:
            raise ValueError(f"`batch_size` ({batch_size}) must be at most the number of training examples ({n}).")
        if self.mesh is not None and batch_size % self.mesh.size:
            raise ValueError(
                f"`batch_size` ({batch_size}) must be divisible by the number of devices ({self.mesh.size})."
            )
        # Shapes only (no compilation): the loss must give one value per example.
        k = min(n, 2)
        out = jax.eval_shape(self.loss_fn, self.init_params, _first(train, k))
        if out.shape != (k,):
            raise ValueError(f"`loss(outputs, y)` must return one loss per example, shape (n,); got {out.shape}.")
        _check_labels(train["y"], self._out_shape(train), "train")
        classifier = val is not None and _check_labels(val["y"], self._out_shape(val), "val")
        names = self._metric_names(val, classifier)
        monitor = self.monitor or ("val_loss" if val is not None else "train_objective")
        if monitor not in names:
            raise ValueError(f"unknown `monitor` metric {monitor!r}; available: {names}.")
        return n, batch_size, monitor, classifier

    def fit(self, train: dict, val: dict | None = None, *, epochs: int = 10, resume: bool = False) -> History:
        """Trains for ``epochs`` epochs (counting those of a resumed checkpoint).

        Args:
            train: dict with ``"x"``, ``"y"`` and optionally ``"weight"`` (nominal
                weights) and ``"group"`` (integer ids); leading axis = examples.
            val: the same structure for validation, evaluated after every epoch.
            epochs: total number of epochs.
            resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.

        Returns:
            The :class:`History` (also ``self.history``).

        Raises:
            FloatingPointError: a step produced a non-finite objective or gradient. The
                trainer then holds the last finite state and the checkpoint of the last
                completed epoch is left as it was.
        """
        n, batch_size, monitor, classifier = self._validate(train, val, epochs)
        maximize = any(monitor.endswith(m) for m in _MAXIMIZE)
        base_key = jax.random.PRNGKey(self.seed)
        params = self._replicated(self.init_params)
        state = TrainState(
            params,
            self.optimizer.init(params),
            self.objective.init(jax.random.fold_in(base_key, 0)),
            jnp.asarray(0, jnp.int32),
        )
        progress = {"epoch": 0, "best": None, "best_epoch": 0, "wait": 0}
        best_params = params
        history = History()
        if resume and self.checkpoint_dir and os.path.exists(self._ckpt_path()):
            state, best_params, progress, history = self._load(state)
            state = self._replicated(state)
            best_params = self._replicated(best_params)

        data = self._replicated(jax.tree.map(jnp.asarray, train))
        val_data = None if val is None else self._replicated(jax.tree.map(jnp.asarray, val))
        num_groups = int(np.max(val["group"])) + 1 if val is not None and "group" in val else 0
        epoch_fn = self._epoch_fn(n, batch_size)
        eval_fn = self._eval_fn(classifier, num_groups) if val is not None else None

        for epoch in range(progress["epoch"] + 1, epochs + 1):
            epoch_key = jax.random.fold_in(base_key, epoch)
            new_state, bad_step, metrics = epoch_fn(state, data, epoch_key)
            if int(bad_step) >= 0:
                self.state, self.params, self.history = new_state, new_state.params, history
                raise FloatingPointError(
                    f"non-finite objective or gradient at step {int(bad_step)} (epoch {epoch}); training stopped. "
                    f"`trainer.state` holds the last finite state"
                    + (f"; the checkpoint of epoch {epoch - 1} is kept." if self.checkpoint_dir else ".")
                )
            state = new_state
            row = {"epoch": epoch, "train_objective": float(metrics["objective"])}
            row["train_mean_loss"] = float(metrics["mean_loss"]) if "mean_loss" in metrics else None
            if eval_fn is not None:
                out = eval_fn(state.params, state.obj_state, val_data, jax.random.fold_in(epoch_key, -2 % 2**31))
                row |= {f"val_{k}": float(v) for k, v in out.items()}
            history.rows.append(row)
            score = row[monitor]
            better = progress["best"] is None or (score > progress["best"] if maximize else score < progress["best"])
            if better:
                progress |= {"best": score, "best_epoch": epoch, "wait": 0}
                best_params = state.params
            else:
                progress["wait"] += 1
            progress["epoch"] = epoch
            if self.checkpoint_dir:
                self._save(state, best_params, progress, history)
            if self.verbose:
                self._print_progress(epoch, epochs, row)
            if self.patience is not None and progress["wait"] >= self.patience:
                break
        if self.verbose:
            print(file=sys.stderr)
        self.state = state
        self.params = best_params if self.restore_best else state.params
        self.best_epoch = progress["best_epoch"]
        self.history = history
        if self._module is not None:
            nnx.update(self._module, self.params)
        return history

    def predict(self, x) -> jax.Array:
        """Model outputs for inputs ``x`` with the trained parameters."""
        return self.apply(self.params, jnp.asarray(x))

    # ---------------------------------------------------------------- checkpoints

    def _ckpt_path(self) -> str:
        return os.path.join(self.checkpoint_dir, "checkpoint.msgpack")

    def _save(self, state, best_params, progress, history):
        # Leaves are stored by position and restored into the structure of a freshly
        # initialized state, so any pytree (optax states, nnx.State) round-trips.
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        leaves = jax.tree.leaves(jax.device_get((state, best_params)))
        payload = {
            "leaves": {str(i): np.asarray(leaf) for i, leaf in enumerate(leaves)},
            "meta": json.dumps({"progress": progress, "history": history.rows}),
        }
        tmp = self._ckpt_path() + ".tmp"
        with open(tmp, "wb") as f:
            f.write(serialization.msgpack_serialize(payload))
        os.replace(tmp, self._ckpt_path())  # atomic: a crash never leaves half a checkpoint

    def _load(self, template_state):
        with open(self._ckpt_path(), "rb") as f:
            payload = serialization.msgpack_restore(f.read())
        treedef = jax.tree.structure((template_state, template_state.params))
        leaves = [payload["leaves"][str(i)] for i in range(treedef.num_leaves)]
        state, best_params = jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
        meta = json.loads(payload["meta"])
        return state, best_params, meta["progress"], History(meta["history"])

    @staticmethod
    def _print_progress(epoch, epochs, row):
        width = 20
        done = int(width * epoch / epochs)
        bar = "#" * done + "-" * (width - done)
        metrics = "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float))
        end = "\r" if sys.stderr.isatty() else "\n"
        print(f"[{bar}] epoch {epoch}/{epochs}  {metrics}", end=end, file=sys.stderr, flush=True)

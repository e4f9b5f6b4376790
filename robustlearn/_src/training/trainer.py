"""The shared trainer: any model, any per-example loss, any Objective, any optax optimizer.

One epoch is one compiled function (``lax.scan`` over shuffled minibatches), so the
Python loop runs once per epoch. Minibatches have a static size: the last one is padded
with repeated examples whose ``"mask"`` is False, which removes them from every
reduction. The data order and the PRNG key of every step derive from ``(seed, epoch,
step)`` only, so a run resumed from a checkpoint is bit-identical to an uninterrupted one.

The epoch and evaluation programs are compiled once per distinct program in the process
(:mod:`~robustlearn._src.training.compile_cache`): trainers that differ only in values
carried as arguments (the objective's hyperparameters, which live in its state; the
optimizer's with ``optax.inject_hyperparams``; the data; the initial parameters) share
one compilation.
"""

from __future__ import annotations

import functools
import numbers
import os
import secrets
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from robustlearn._src.objectives.base import Objective
from robustlearn._src.training import checkpoint as _ckpt
from robustlearn._src.training import compile_cache
from robustlearn._src.training import distributed as _dist
from robustlearn._src.training.callbacks import Callback, Checkpointer, EarlyStopping, ProgressBar, call, sort_callbacks
from robustlearn._src.training.data import (
    as_dataset,
    batch_plan,
    check_groups,
    check_labels,
    is_classifier,
    positive_int,
)
from robustlearn._src.training.metrics import History, evaluation_metrics, to_python
from robustlearn._src.training.model import _MODEL_STREAM, Model

_EVAL_STREAM = 2**31 - 2  # folds the epoch key into the validation key


class TrainState(NamedTuple):
    """Everything that changes during training (a pytree).

    Attributes:
        params: the trained parameters.
        opt_state: the optimizer's state.
        obj_state: the objective's state (its hyperparameters as arrays, group weights...).
        step: the number of optimizer steps taken.
        model_state: an nnx model's non-parameter variables (batch statistics, RNG
            streams...); ``()`` for function models.
    """

    params: Any
    opt_state: Any
    obj_state: Any
    step: jax.Array
    model_state: Any = ()


class _Prepared(NamedTuple):
    train: dict
    val: dict | None
    epochs: int
    plan: Any
    classifier: bool
    num_groups: int
    val_objective: bool
    train_names: tuple[str, ...]
    val_names: tuple[str, ...]


class _Shapes(NamedTuple):
    """What ``fit`` derives from shapes alone (cached per signature, see ``Trainer._shapes``)."""

    out: tuple[int, ...]
    val_out: tuple[int, ...] | None
    train_names: tuple[str, ...]
    val_names: tuple[str, ...]


def _signature(tree) -> tuple:
    """The structure of ``tree`` and each leaf's shape, dtype and sharding: what tracing sees."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((jnp.shape(x), jnp.result_type(x), getattr(x, "sharding", None)) for x in leaves)


def _check_seed(seed) -> tuple[int, bool]:
    if seed is None:
        return secrets.randbelow(2**31), True
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be an int in [0, 2**32) or None (draw one); got {seed!r}.")
    return int(seed), False


class Trainer:
    """Trains any model on any Objective with an optax optimizer.

    Args:
        model: a flax ``nnx.Module`` (its ``nnx.Param`` variables are trained; its other
            variables, such as batch-norm statistics and RNG streams, are the model
            state; both are written back after ``fit``), or a function
            ``apply(params, x) -> outputs``. Training runs the module in training mode
            (``module.train()``: dropout on, batch statistics updated), evaluation and
            :meth:`predict` in evaluation mode; the user's module keeps its own mode.
        loss: per-example loss ``loss(outputs, y) -> (n,)``, e.g.
            ``optax.softmax_cross_entropy_with_integer_labels``.
        objective: an :class:`~robustlearn.objectives.Objective`.
        optimizer: an ``optax.GradientTransformation``. Wrap it with
            ``optax.inject_hyperparams`` to make its hyperparameters traced values, so
            that trainers differing only in, e.g., the learning rate share one
            compilation.
        params: the initial parameter pytree; required when ``model`` is a function.
        batch_size: minibatch size, or None for full batch.
        seed: seeds the data order and the PRNG keys (an int in ``[0, 2**32)``); None
            draws one, recorded in ``trainer.seed`` (a resumed run adopts the
            checkpoint's).
        monitor: shorthand for ``EarlyStopping(monitor=...)``: the metric for model
            selection and early stopping (default ``"val_loss"`` with validation data,
            else ``"train_objective"``).
        patience: shorthand for ``EarlyStopping(patience=...)`` (None: never stop).
        restore_best: shorthand for ``EarlyStopping(restore_best=...)``: keep the
            parameters of the best epoch by ``monitor``.
        checkpoint_dir: shorthand for ``Checkpointer(checkpoint_dir)``.
        callbacks: :class:`~robustlearn.train.Callback` objects (``EarlyStopping``,
            ``Checkpointer``, ``ProgressBar``, your own).
        num_groups: number of groups for the validation group metrics (default: the
            objective's ``hyperparams["num_groups"]``).
        devices: None for the default device, or a sequence of devices (e.g.
            ``jax.devices()``): minibatches are sharded over them along the example
            axis, parameters are replicated. The result equals the 1-device result.
            After ``jax.distributed.initialize``, ``jax.devices()`` spans every
            process: then ``fit`` is a collective that every process calls (see
            ``fit``'s ``process_local``).
        verbose: shorthand for a :class:`~robustlearn.train.ProgressBar` on stderr.

    Attributes:
        params, model_state: the trained parameters and model state after ``fit``.
        state: the last :class:`TrainState`.
        history: the :class:`History` of the last ``fit``.
        best_epoch, stopped_epoch: from early stopping (None when it did not apply).
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
        seed: int | None = 0,
        monitor: str | None = None,
        patience: int | None = None,
        restore_best: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
        callbacks: Sequence[Callback] = (),
        num_groups: int | None = None,
        devices: Sequence[jax.Device] | None = None,
        verbose: bool = True,
    ):
        if not isinstance(objective, Objective):
            raise TypeError(f"`objective` must be a robustlearn.objectives.Objective; got {type(objective).__name__}.")
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError("`optimizer` must be an optax.GradientTransformation.")
        if not callable(loss):
            raise TypeError(f"`loss` must be a function loss(outputs, y) -> (n,); got {type(loss).__name__}.")
        self.batch_size = positive_int("batch_size", batch_size, allow_none=True)
        self.seed, self._seed_drawn = _check_seed(seed)
        # The shorthands are validated by the callbacks they build.
        EarlyStopping(monitor, patience=patience, restore_best=restore_best)
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, str | os.PathLike):
            raise TypeError(f"`checkpoint_dir` must be a path or None; got {checkpoint_dir!r}.")
        if not isinstance(verbose, bool):
            raise TypeError(f"`verbose` must be a bool; got {verbose!r}.")
        self.num_groups = positive_int("num_groups", num_groups, allow_none=True)
        if isinstance(callbacks, Callback) or not all(hasattr(cb, "on_epoch_end") for cb in callbacks):
            raise TypeError("`callbacks` must be a sequence of Callback objects (with an `on_epoch_end` method).")
        self._model = Model(model, params)
        self.loss = loss
        self.objective = objective
        self.optimizer = optimizer
        self.monitor = monitor
        self.patience = patience
        self.restore_best = restore_best
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self.mesh = None
        if devices is not None:
            devices = list(devices)
            if not devices:
                raise ValueError("`devices` must name at least one device.")
            self.mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        _dist.check_mesh(self.mesh)
        self._multiprocess = _dist.is_multiprocess(self.mesh)
        self.init_params = self._model.params
        self.params = self._model.params
        self.model_state = self._model.state
        self.state: TrainState | None = None
        self.history = History()
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.stop_training = False
        self._compiled: dict = {}
        self._active_callbacks: list = []

    # ------------------------------------------------------------------ pure pieces

    def apply(self, params, x):
        """Model outputs in evaluation mode, with the trainer's model state."""
        return self._model.eval_apply(params, self.model_state, x)

    def loss_fn(self, params, batch):
        """Per-example losses of ``batch`` in evaluation mode (the function objectives receive)."""
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

    def _make_epoch(self, plan, per_device: int | None = None):
        """The epoch program; ``per_device``: rows per device of process-local data (else data is replicated).

        With process-local data, ``data`` is ``(columns, rows)``: the columns sharded in
        blocks of ``per_device`` rows, and ``rows[i]`` the row of example ``i`` of the
        concatenation of the processes' data; minibatches are gathered across devices.
        """
        model, loss, objective, optimizer = self._model, self.loss, self.objective, self.optimizer
        n, batch_size, steps, pad = plan
        shard, mesh = self._shard_batch, self.mesh

        def robustlearn_epoch(state: TrainState, data, perm, epoch_key):
            if per_device is None:

                def gather(i):
                    return jax.tree.map(lambda a: a[i], data)
            else:
                data, rows = data
                perm = rows[perm]

                def gather(i):
                    return _dist.gather_rows(data, i, mesh, per_device)

            idx = jnp.concatenate([perm, perm[:pad]]).reshape(steps, batch_size)
            mask = jnp.concatenate([jnp.ones(n, bool), jnp.zeros(pad, bool)]).reshape(steps, batch_size)

            def body(carry, inputs):
                state, bad_step = carry
                idx_b, mask_b, i = inputs
                batch = gather(idx_b)
                batch["mask"] = mask_b
                batch = shard(batch)
                step_key = jax.random.fold_in(epoch_key, i)
                step_model_state = model.step_state(state.model_state, jax.random.fold_in(step_key, _MODEL_STREAM))

                def loss_fn(params, b):
                    return loss(model.train_apply(params, step_model_state, b["x"]), b["y"])

                def scalar(params):
                    return objective.loss(loss_fn, params, batch, state.obj_state, step_key)

                (value, (obj_state, metrics)), grads = jax.value_and_grad(scalar, has_aux=True)(state.params)
                updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
                params = optax.apply_updates(state.params, updates)
                model_state = model.updated_state(state.params, step_model_state, state.model_state, batch["x"])
                finite = jnp.isfinite(value) & jnp.all(
                    jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
                )
                new = TrainState(params, opt_state, obj_state, state.step + 1, model_state)
                # After the first non-finite step, freeze the last finite state.
                keep = finite & (bad_step < 0)
                new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, state)
                bad_step = jnp.where((bad_step < 0) & ~finite, state.step, bad_step)
                metrics = dict(metrics, objective=value)
                return (new, bad_step), metrics

            init = (state, jnp.asarray(-1, state.step.dtype))
            (state, bad_step), metrics = jax.lax.scan(body, init, (idx, mask, jnp.arange(steps)))
            return state, bad_step, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

        return robustlearn_epoch

    def _make_eval(self, prep: _Prepared):
        model, loss, objective = self._model, self.loss, self.objective
        classifier, num_groups, use_objective = prep.classifier, prep.num_groups, prep.val_objective

        def robustlearn_eval(params, model_state, obj_state, data, key):
            outputs = model.eval_apply(params, model_state, data["x"])
            losses = loss(outputs, data["y"])
            out = evaluation_metrics(outputs, losses, data, classifier=classifier, num_groups=num_groups)
            if use_objective:

                def loss_fn(p, b):
                    return loss(model.eval_apply(p, model_state, b["x"]), b["y"])

                value, metrics = objective.eval_loss(loss_fn, params, data, obj_state, key)
                extra = {k: v for k, v in metrics.items() if k not in ("objective", "mean_loss", *out)}
                out = {"loss": out.pop("loss"), "objective": value, **extra, **out}
            return out

        return robustlearn_eval

    def _cached(self, kind: str, signature, make: Callable):
        """``make()`` once per ``kind``, ``signature`` and identity of the trainer's parts
        (objective, optimizer, loss, model, mesh); a new part drops every cached entry."""
        owners = (self.objective, self.optimizer, self.loss, self._model, self.mesh)
        key = (kind, tuple(id(o) for o in owners), signature)
        hit = self._compiled.get(key)
        if hit is None:
            hit = (owners, make())  # the owners are kept alive: their ids cannot be reused
            self._compiled = {k: v for k, v in self._compiled.items() if k[1] == key[1]}  # drop stale entries
            self._compiled[key] = hit
        return hit[1]

    def _executable(self, kind: str, make: Callable, *args):
        """The compiled ``kind`` program for ``args`` (traced again only when something changed)."""
        return self._cached(kind, _signature(args), lambda: compile_cache.compiled(make(), *args))

    # ------------------------------------------------------------------ preparation

    def _first(self, data, k):
        return {key: jnp.asarray(v[:k]) for key, v in data.items()}

    def _num_groups(self) -> int | None:
        from_objective = self.objective.hyperparams.get("num_groups")
        if from_objective is not None and self.num_groups is not None and from_objective != self.num_groups:
            raise ValueError(
                f"`num_groups` ({self.num_groups}) differs from the objective's num_groups ({from_objective})."
            )
        return self.num_groups if self.num_groups is not None else from_objective

    def _plan(self, n: int):
        """The batch plan of ``n`` training examples (all processes' in a process-local run)."""
        plan = batch_plan(n, self.batch_size)
        if self.mesh is not None and plan.batch_size % self.mesh.size:
            raise ValueError(
                f"`batch_size` ({plan.batch_size}) must be divisible by the number of devices ({self.mesh.size})."
            )
        return plan

    def _prepare(self, train, val, epochs, *, defer_plan: bool = False) -> _Prepared:
        """Checks the data and derives the metric names (this process's data only).

        With ``defer_plan`` the batch plan is left None: it depends on the number of
        examples of every process (``fit`` with ``process_local=True``).
        """
        epochs = positive_int("epochs", epochs)
        train = as_dataset(train, "train")
        val = None if val is None else as_dataset(val, "val")
        objective = self.objective
        _objective_check(objective, train, "train")
        missing = [k for k in objective.requires if k not in train]
        if missing:
            raise ValueError(
                f"the objective {objective.name} needs the column(s) {missing} in the training data `train`; "
                f"got keys {sorted(train)}."
            )
        num_groups = 0
        val_objective = False
        if val is not None:
            val_objective = all(k in val for k in objective.requires)
            if val_objective:
                _objective_check(objective, val, "val")
            if "group" in val:
                num_groups = self._num_groups()
                if num_groups is None:
                    raise ValueError(
                        "`val` has 'group' ids but the number of groups is unknown: pass Trainer(num_groups=...) "
                        "(group objectives such as group_dro supply it)."
                    )
                check_groups(val, num_groups, "val")
        plan = None if defer_plan else self._plan(train["x"].shape[0])
        # The label dtypes against the loss, before tracing it (values: below, on every call).
        check_labels(train["y"], (), self.loss, "train")
        if val is not None:
            check_labels(val["y"], (), self.loss, "val")
        k = min(train["x"].shape[0], 2)
        shapes = self._shapes(train, val, k, num_groups, val_objective)
        # The label values against the outputs: every call (the shapes above are cached).
        classifier = check_labels(train["y"], shapes.out, self.loss, "train")
        if val is not None:
            check_labels(val["y"], shapes.val_out, self.loss, "val")
        return _Prepared(
            train, val, epochs, plan, classifier, num_groups, val_objective, shapes.train_names, shapes.val_names
        )

    def _shapes(self, train, val, k, num_groups, val_objective) -> _Shapes:
        """Output shapes and metric names of ``fit(train, val)``: traced (``jax.eval_shape`` of
        the model, the loss, the objective and the evaluation, ~20 ms) once per signature of
        the data, the parameters and the trainer's parts, then cached like the programs."""
        rows = lambda data: {key: v[:1] for key, v in data.items()}  # noqa: E731 (per-row shapes and dtypes)
        signature = (
            _signature(rows(train)),
            k,
            None if val is None else _signature(rows(val)),
            num_groups,
            val_objective,
            _signature((self.init_params, self._model.state)),
        )
        return self._cached("shapes", signature, lambda: self._trace_shapes(train, val, k, num_groups, val_objective))

    def _trace_shapes(self, train, val, k, num_groups, val_objective) -> _Shapes:
        objective = self.objective
        # Shapes only (no compilation): the loss must give one value per example.
        sample = self._first(train, k)
        params, mstate = self.init_params, self._model.state

        def forward(p, x):
            return self._model.eval_apply(p, mstate, x)

        try:
            out = jax.eval_shape(forward, params, sample["x"])
            losses = jax.eval_shape(self.loss, out, sample["y"])
        except Exception as e:
            e.add_note("(robustlearn: while evaluating loss(model(train['x']), train['y']) on 2 training examples)")
            raise
        if losses.shape != (k,):
            raise ValueError(f"`loss(outputs, y)` must return one loss per example, shape (n,); got {losses.shape}.")
        # Label values are checked by the caller on every call, not here (this is cached).
        classifier = is_classifier(train["y"], out.shape)
        val_out = None
        if val is not None:
            val_out = jax.eval_shape(
                lambda p, x: self._model.eval_apply(p, mstate, x), params, self._first(val, 1)["x"]
            )
        # Metric names (shapes only).
        batch = dict(sample, mask=jnp.ones(k, bool))
        obj_state = jax.eval_shape(objective.init, jax.random.PRNGKey(0))
        _, (_, train_metrics) = jax.eval_shape(
            lambda p, s: objective.loss(self.loss_fn, p, batch, s, jax.random.PRNGKey(0)), params, obj_state
        )
        train_names = [f"train_{m}" for m in _ordered(train_metrics, ("objective", "mean_loss"), ())]
        val_names = []
        if val is not None:
            prep = _Prepared(train, val, 1, None, classifier, num_groups, val_objective, (), ())  # what eval reads
            val_metrics = jax.eval_shape(
                self._make_eval(prep), params, mstate, obj_state, self._first(val, 2), jax.random.PRNGKey(0)
            )
            last = ("accuracy", "worst_group_loss", "worst_group_accuracy")
            val_names = [f"val_{m}" for m in _ordered(val_metrics, ("loss", "objective"), last)]
        return _Shapes(out.shape, None if val_out is None else val_out.shape, tuple(train_names), tuple(val_names))

    def metric_names(self, train, val=None) -> list[str]:
        """The metric names that ``fit(train, val)`` records (valid ``monitor`` values)."""
        prep = self._prepare(train, val, 1)
        return [*prep.train_names, *prep.val_names]

    def _build_callbacks(self) -> list:
        callbacks = list(self.callbacks)
        if any(isinstance(cb, EarlyStopping) for cb in callbacks):
            if self.monitor is not None or self.patience is not None or self.restore_best is not True:
                raise ValueError("pass `monitor`/`patience`/`restore_best` either to the Trainer or to EarlyStopping.")
        else:
            callbacks.append(EarlyStopping(self.monitor, patience=self.patience, restore_best=self.restore_best))
        if self.checkpoint_dir is not None:
            if any(isinstance(cb, Checkpointer) for cb in callbacks):
                raise ValueError("pass a checkpoint directory either as `checkpoint_dir` or as a Checkpointer.")
            callbacks.append(Checkpointer(self.checkpoint_dir))
        if self.verbose and not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.append(ProgressBar())
        if sum(isinstance(cb, Checkpointer) for cb in callbacks) > 1:
            raise ValueError("at most one Checkpointer per Trainer.")
        return sort_callbacks(callbacks)

    def _config(self, prep: _Prepared, state: TrainState) -> dict:
        """What a checkpoint must agree on to be resumed by this run (JSON)."""

        def spec(tree):
            out = {}
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
                out[jax.tree_util.keystr(path)] = f"{tuple(jnp.shape(leaf))} {jnp.result_type(leaf)}"
            return out

        initial = {}
        for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
            if jnp.ndim(leaf) == 0 and not jnp.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
                initial[jax.tree_util.keystr(path)] = float(np.asarray(jax.device_get(leaf)))
        return {
            "objective": {"name": self.objective.name},
            "optimizer": {"state": _describe_optimizer(state.opt_state), "initial": initial},
            "model": {"kind": self._model.describe(), "params": spec(state.params), "state": spec(state.model_state)},
            "data": {"train_examples": prep.plan.n},
            "batch_size": prep.plan.batch_size,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ public API

    def fit(
        self,
        train: dict,
        val: dict | None = None,
        *,
        epochs: int = 10,
        resume: bool = False,
        process_local: bool = False,
    ) -> History:
        """Trains for ``epochs`` epochs (counting those of a resumed checkpoint).

        Every ``fit`` starts from the initial parameters (those of the model or
        ``params`` when the trainer was built), unless it resumes a checkpoint.

        In a multi-process run (``devices`` spanning the processes of
        ``jax.distributed``), every process calls ``fit`` with the same arguments; the
        processes check that they agree (configuration, initial parameters, the data or
        its column structure, the checkpoint they resume from) and fail together.
        ``batch_size`` is always the global minibatch size, so the run equals the
        single-process run on the same data, up to the order of floating-point sums.

        Args:
            train: dict with ``"x"``, ``"y"`` and the columns the objective needs
                (``"weight"``: nominal weights, ``"group"``: integer ids...); leading
                axis = examples. Python lists are converted; NaN/inf are an error.
            val: the same structure for validation, evaluated after every epoch in
                evaluation mode without advancing the objective's state. Columns the
                objective needs may be missing: then ``val_objective`` and the
                objective's own validation metrics are skipped.
            epochs: total number of epochs.
            resume: continue from the checkpoint of the trainer's Checkpointer
                (``checkpoint_dir``) if there is one; training starts from scratch when
                the directory holds no checkpoint yet.
            process_local: False: ``train`` and ``val`` are the whole datasets,
                identical on every process (checked by a hash). True: each process
                passes its own rows (any number, at least one, the same columns and
                dtypes); the datasets are the concatenations of all processes' rows in
                process order, each process keeps its rows on its own devices, and
                every minibatch is drawn from the whole concatenation (the same
                minibatches as a single-process run on it). Without several processes
                both are the same.

        Returns:
            The :class:`History` (also ``self.history``).

        Raises:
            FloatingPointError: a step produced a non-finite objective or gradient. The
                trainer then holds the last finite state and the checkpoint of the last
                completed epoch is left as it was.
            CheckpointError: the checkpoint cannot be read or does not fit this run, or
                the processes found different checkpoints.
            RuntimeError: another process failed (its own error is raised there).
        """
        multi = self._multiprocess
        local_mode = False
        error, prep, callbacks, loaded = None, None, None, None
        try:
            if not isinstance(resume, bool):
                raise TypeError(f"`resume` must be a bool; got {resume!r}.")
            if not isinstance(process_local, bool):
                raise TypeError(f"`process_local` must be a bool; got {process_local!r}.")
            if process_local and not multi and jax.process_count() > 1:
                raise ValueError(
                    f"`process_local=True` in a run of {jax.process_count()} processes needs `devices` spanning all "
                    f"of them (e.g. `devices=jax.devices()`)."
                )
            local_mode = process_local and multi
            prep = self._prepare(train, val, epochs, defer_plan=local_mode)
            callbacks = self._build_callbacks()
            checkpointer = next((cb for cb in callbacks if isinstance(cb, Checkpointer)), None)
            if resume and checkpointer is None:
                raise ValueError(
                    "`resume=True` needs a checkpoint directory: pass `checkpoint_dir=` or a Checkpointer."
                )
            loaded = checkpointer.load() if resume else None
        except Exception as e:
            if not multi:
                raise
            error = e
        if multi:
            prep = self._agree_on_start(error, prep, callbacks, loaded, resume, local_mode)
        if loaded is not None and self._seed_drawn:
            self.seed = loaded[0]["config"]["seed"]
        params = self._replicated(self.init_params)
        base_key = jax.random.PRNGKey(self.seed)
        opt_state = self.optimizer.init(params)
        obj_state = self.objective.init(jax.random.fold_in(base_key, 0))
        state = self._replicated(TrainState(params, opt_state, obj_state, jnp.asarray(0, jnp.int32), self._model.state))
        self._run_config = self._config(prep, state)
        self.history = History()
        self.stop_training = False
        self.best_epoch = self.stopped_epoch = None
        start, stopped, saved_callbacks, restore = 1, False, [], None
        if loaded is not None:
            meta, trees, path = loaded
            _ckpt.compare_config(meta["config"], self._run_config, path)
            state = self._replicated(_ckpt.restore_tree(state, trees.get("state", []), "state", path))
            self.history = History.from_json(meta["history"])
            start, stopped = meta["progress"]["epoch"] + 1, meta["progress"]["stopped"]
            saved_callbacks = meta["callbacks"]
            if start - 1 > prep.epochs:
                raise ValueError(f"the checkpoint {path!r} holds {start - 1} epochs, more than `epochs`={prep.epochs}.")

            def restore(i, tree_path=path, trees=trees):
                """A function rebuilding callback ``i``'s arrays into a template, or None."""
                entries = trees.get(f"callback{i}")
                if entries is None:
                    return None
                return lambda t: self._replicated(_ckpt.restore_tree(t, entries, f"callback {i} ", tree_path))

        self.state, self.params, self.model_state = state, state.params, state.model_state
        self._epochs, self._start_epoch, self._active_callbacks = prep.epochs, start, callbacks
        self._default_monitor = "val_loss" if prep.val is not None else "train_objective"
        provided = [name for cb in callbacks for name in getattr(cb, "provides", ())]
        self._metric_order = [*prep.train_names, *prep.val_names]
        self._available_metrics = [*self._metric_order, *provided]
        self._checkpointer = checkpointer = next((cb for cb in callbacks if isinstance(cb, Checkpointer)), None)
        if checkpointer is not None:
            checkpointer.last_saved_epoch = start - 1 if loaded is not None else None

        data, val_data, per_device = self._device_data(prep, local_mode)
        error = None
        started = []
        try:
            start_error = None
            try:
                for cb in callbacks:
                    call(cb, "on_fit_start", self)
                    started.append(cb)
                if loaded is not None:
                    self._load_callback_states(callbacks, saved_callbacks, restore, loaded[2])
            except Exception as e:
                if not multi:
                    raise
                start_error = e
            if multi:
                self._agree_on_errors(start_error, "while starting the callbacks")
            if not stopped and start <= prep.epochs:
                order = self._epoch_order(start, prep.plan.n)
                epoch_fn = self._executable(
                    "epoch", lambda: self._make_epoch(prep.plan, per_device), state, data, order, jax.random.PRNGKey(0)
                )
                eval_fn = None
                if val_data is not None:
                    eval_args = (state.params, state.model_state, state.obj_state, val_data, jax.random.PRNGKey(0))
                    eval_fn = self._executable("eval", lambda: self._make_eval(prep), *eval_args)
                for epoch in range(start, prep.epochs + 1):
                    state, order = self._run_epoch(
                        epoch, state, data, order, val_data, epoch_fn, eval_fn, base_key, callbacks
                    )
                    if self.stop_training:
                        break
        except BaseException as e:
            error = e
            raise
        finally:
            self.params, self.model_state = self.state.params, self.state.model_state
            for cb in started:
                call(cb, "on_fit_end", self, error)
        self.best_epoch = next((cb.best_epoch for cb in callbacks if isinstance(cb, EarlyStopping)), None)
        self.stopped_epoch = self.history.stopped_epoch
        self._model.write_back(self.params, self.model_state)
        return self.history

    # ------------------------------------------------------------------ several processes

    def _device_data(self, prep: _Prepared, local_mode: bool):
        """The training and validation data on the devices, and the rows per device (process-local data)."""
        if not local_mode:
            data = self._replicated(jax.tree.map(jnp.asarray, prep.train))
            val_data = None if prep.val is None else self._replicated(jax.tree.map(jnp.asarray, prep.val))
            return data, val_data, None
        lay = self._layouts["train"]
        rows = self._replicated(jnp.asarray(_dist.positions(lay)))
        data = (_dist.assemble(prep.train, self.mesh, lay), rows)
        val_data = None
        if prep.val is not None:
            val_lay = self._layouts["val"]
            val_data = _dist.assemble(prep.val, self.mesh, val_lay, mask=val_lay.padded)
        return data, val_data, lay.per_device

    _START_FIELDS = (
        "arguments", "initial parameters", "columns of `train`", "columns of `val`", "data of `train`",
        "data of `val`", "checkpoint",
    )  # fmt: skip

    def _agree_on_start(self, error, prep, callbacks, loaded, resume, local_mode) -> _Prepared:
        """The collective start of ``fit``: the processes fail together or agree on what must agree.

        Returns ``prep`` with the batch plan of all processes' data (process-local data).
        """
        must = dict.fromkeys(self._START_FIELDS)
        gathered = {"train": 0, "val": 0, "seed": self.seed if self._seed_drawn else 0}
        if error is None:
            must["arguments"] = _dist.digest(
                prep.epochs, resume, local_mode, self.batch_size, None if self._seed_drawn else self.seed,
                self.objective.name, self.objective.hyperparams, self._model.describe(), self.num_groups,
                [type(cb).__qualname__ for cb in callbacks], prep.val is None,
                str(jax.tree.structure(jax.eval_shape(self.optimizer.init, self.init_params))),
            )  # fmt: skip
            must["initial parameters"] = _dist.tree_digest((self.init_params, self._model.state))
            for split in ("train", "val"):
                data = getattr(prep, split)
                columns = None if data is None else {k: [str(v.dtype), list(v.shape[1:])] for k, v in data.items()}
                must[f"columns of `{split}`"] = _dist.digest(columns)
                content = [] if data is None or local_mode else [item for kv in sorted(data.items()) for item in kv]
                must[f"data of `{split}`"] = _dist.digest(local_mode, *content)
                gathered[split] = 0 if data is None else data["x"].shape[0]
            if loaded is None:
                must["checkpoint"] = _dist.digest(None)
            else:
                arrays = [item for entries in loaded[1].values() for e in entries for item in (e[0], e[1])]
                must["checkpoint"] = _dist.digest(loaded[0], *arrays)
        found = _dist.agree(error, must, gathered)
        if found.failed:
            self._raise_failed(error, found.failed, "while preparing `fit`")
        if found.field is not None:
            where = f"process(es) {found.differing} differ from process 0 in the {found.field}"
            if found.field == "checkpoint":
                raise _ckpt.CheckpointError(
                    f"the processes found different checkpoints to resume from ({where}): the checkpoint directory "
                    f"must be one directory shared by every process."
                )
            hint = " Pass `process_local=True` if each process holds its own rows." if "data" in found.field else ""
            raise ValueError(f"every process must call `fit` with the same arguments: {where}.{hint}")
        if self._seed_drawn:
            self.seed = found.gathered["seed"][0]  # process 0's draw
        if local_mode:
            self._layouts = {"train": _dist.layout(self.mesh, found.gathered["train"])}
            if prep.val is not None:
                self._layouts["val"] = _dist.layout(self.mesh, found.gathered["val"])
            prep = prep._replace(plan=self._plan(self._layouts["train"].total))
        return prep

    def _agree_on_errors(self, error, when: str) -> None:
        """Every process raises if one failed (its own error there, a RuntimeError elsewhere)."""
        found = _dist.agree(error, {})
        if found.failed:
            self._raise_failed(error, found.failed, when)

    @staticmethod
    def _raise_failed(error, failed, when):
        if error is not None:
            error.add_note(f"(robustlearn: process {jax.process_index()}; the other processes stop too)")
            raise error
        raise RuntimeError(
            f"process(es) {failed} failed {when} (their error is in their own output); fit stopped on every process."
        )

    def _epoch_order(self, epoch: int, n: int):
        """The order of the ``n`` training examples in ``epoch`` (on the devices): a permutation
        drawn by NumPy from ``(seed, epoch)`` only, the same in every process.

        Drawn on the host, not in the epoch program: ``jax.random.permutation`` sorts random
        keys, and XLA:CPU's sort took ~60 of the ~160 ms of a 100-step epoch of 1e5 rows
        (benchmarks/perf/step_parts.py); NumPy draws it in about 1 ms, while the previous
        epoch runs.
        """
        dtype = np.int32 if n < 2**31 else np.int64
        return self._replicated(jnp.asarray(np.random.default_rng([self.seed, epoch]).permutation(n).astype(dtype)))

    def _run_epoch(self, epoch, state, data, order, val_data, epoch_fn, eval_fn, base_key, callbacks):
        """Runs ``epoch`` in ``order``; returns the state and the next epoch's order (drawn meanwhile)."""
        epoch_key = jax.random.fold_in(base_key, epoch)
        new_state, bad_step, metrics = epoch_fn(state, data, order, epoch_key)
        upcoming = self._epoch_order(epoch + 1, order.shape[0]) if epoch < self._epochs else None
        if int(bad_step) >= 0:
            self.state = new_state
            saved = getattr(self._checkpointer, "last_saved_epoch", None)
            raise FloatingPointError(
                f"non-finite objective or gradient at step {int(bad_step)} (epoch {epoch}); training stopped. "
                f"`trainer.state` holds the last finite state"
                + (f"; the checkpoint of epoch {saved} is kept." if saved else ".")
            )
        state = new_state
        values = {f"train_{k}": v for k, v in metrics.items()}
        if eval_fn is not None:
            key = jax.random.fold_in(epoch_key, _EVAL_STREAM)
            out = eval_fn(state.params, state.model_state, state.obj_state, val_data, key)
            values |= {f"val_{k}": v for k, v in out.items()}
        values = jax.device_get(values)
        row = {"epoch": epoch} | {k: to_python(values[k]) for k in self._metric_order if k in values}
        self.state, self.params, self.model_state = state, state.params, state.model_state
        self.history.rows.append(row)
        metrics_digest = _dist.digest(row) if self._multiprocess else None
        error = None
        try:
            for cb in callbacks:
                if call(cb, "on_epoch_end", self, row) and not self.stop_training:
                    self.stop_training = True
                    if self.history.stopped_epoch is None:  # EarlyStopping records its own reason
                        self.history.stopped_epoch = epoch
                        self.history.notes.append(f"{type(cb).__name__} stopped training after epoch {epoch}")
        except Exception as e:
            if not self._multiprocess:
                raise
            error = e
        if self._multiprocess:
            self._agree_on_epoch(epoch, error, metrics_digest)
        return state, upcoming

    def _agree_on_epoch(self, epoch, error, metrics_digest) -> None:
        """After the callbacks: fail together, check the metrics agree, stop together."""
        found = _dist.agree(error, {"metrics": metrics_digest}, {"stop": int(self.stop_training)})
        if found.failed:
            self._raise_failed(error, found.failed, f"in a callback after epoch {epoch}")
        if found.field is not None:  # replicated values are identical by construction: never silently different
            raise RuntimeError(f"the metrics of epoch {epoch} differ between processes {found.differing} and 0.")
        stoppers = [p for p, stop in enumerate(found.gathered["stop"]) if stop]
        if stoppers and not self.stop_training:
            self.stop_training = True
            if self.history.stopped_epoch is None:
                self.history.stopped_epoch = epoch
            self.history.notes.append(f"process(es) {stoppers} stopped training after epoch {epoch}")
            if self._checkpointer is not None:  # the checkpoint of this epoch must record the stop
                self._checkpointer.save(self)

    def _load_callback_states(self, callbacks, saved, restore, path) -> None:
        stateful = [(i, cb) for i, cb in enumerate(callbacks) if call(cb, "state_dict") is not None]
        names = [type(cb).__qualname__ for _, cb in stateful]
        if names != [s["class"] for s in saved]:
            raise _ckpt.CheckpointError(
                f"checkpoint {path!r} does not fit this run: other callbacks with state: "
                f"{[s['class'] for s in saved]} in the checkpoint, {names} now."
            )
        for j, ((_, cb), entry) in enumerate(zip(stateful, saved, strict=True)):
            cb.load_state_dict(dict(entry["state"], arrays=restore(j)))

    def _checkpoint_bytes(self) -> bytes:
        trees = {"state": self.state}
        saved = []
        for cb in self._active_callbacks:
            state = call(cb, "state_dict")
            if state is None:
                continue
            state = dict(state)
            arrays = state.pop("arrays", None)
            if arrays is not None:
                trees[f"callback{len(saved)}"] = arrays
            saved.append({"class": type(cb).__qualname__, "state": state})
        meta = {
            "config": self._run_config,
            "progress": {"epoch": self.history.rows[-1]["epoch"] if self.history.rows else 0,
                         "stopped": bool(self.stop_training)},
            "history": self.history.to_json(),
            "callbacks": saved,
            "versions": {"jax": jax.__version__},
        }  # fmt: skip
        return _ckpt.encode(trees, meta)

    def predict(self, x) -> jax.Array:
        """Model outputs for inputs ``x`` with the trained parameters, in evaluation mode.

        In a multi-process run each process predicts its own ``x`` on its first device of the mesh
        (with its copy of the replicated parameters), without communication.
        """
        params, model_state = self.params, self.model_state
        if self._multiprocess:
            device = next(d for d in self.mesh.devices.flat if d.process_index == jax.process_index())
            params, model_state = jax.tree.map(lambda a: _local_copy(a, device), (params, model_state))
            x = jax.device_put(jnp.asarray(x), device)
        else:
            x = self._replicated(jnp.asarray(x))
        if self._model.module is not None:
            return _predict_module(self._model.graphdef_eval, params, model_state, x)
        return _predict_function(self._model._apply, params, x)


@functools.partial(jax.jit, static_argnums=0)
def _predict_module(graphdef, params, state, x):
    return nnx.merge(graphdef, params, state, copy=True)(x)


def _local_copy(leaf, device):
    """This process's copy of a replicated array, on ``device``."""
    if not isinstance(leaf, jax.Array):
        return leaf
    shard = next((s.data for s in leaf.addressable_shards if s.device == device), leaf.addressable_data(0))
    return jax.device_put(shard, device)


def _predict_function(apply, params, x):
    return apply(params, x)


def _objective_check(objective: Objective, data: dict, name: str) -> None:
    """``objective.check(data)``, its error naming the split."""
    if objective.check is None:
        return
    try:
        objective.check(data)
    except (ValueError, TypeError) as e:
        raise type(e)(f"in `{name}`: {e}") from None


def _ordered(names, first: tuple[str, ...], last: tuple[str, ...]) -> list[str]:
    """``names`` with ``first`` in front, ``last`` at the end, the others sorted between."""
    middle = sorted(n for n in names if n not in first and n not in last)
    return [n for n in first if n in names] + middle + [n for n in last if n in names]


def _describe_optimizer(opt_state) -> str:
    """The classes of an optax state, e.g. ``(ScaleByAdamState, EmptyState)``."""

    def walk(node) -> str:
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            inner = [walk(getattr(node, f)) for f in node._fields]
            inner = [s for s in inner if s]
            return type(node).__name__ + (f"({', '.join(inner)})" if inner else "")
        if isinstance(node, list | tuple):
            return "(" + ", ".join(walk(n) for n in node) + ")"
        if isinstance(node, dict) and any(isinstance(v, tuple) and hasattr(v, "_fields") for v in node.values()):
            return "{" + ", ".join(f"{k}: {walk(v)}" for k, v in node.items()) + "}"
        return ""

    return walk(opt_state)

"""The model a Trainer trains, as pure functions of ``(params, model_state, x)``.

Two kinds of model:

* a function ``apply(params, x)`` with a params pytree: no other state;
* a flax ``nnx.Module``: its ``nnx.Param`` variables are the parameters; every other
  variable (``BatchStat``, ``RngKey``/``RngCount``, caches, custom ones) is the *model
  state*, carried in the train state and in the checkpoint and written back after
  ``fit``. Training uses the module in training mode and evaluation in evaluation mode
  (``module.train()`` / ``module.eval()`` on copies: the two graph definitions differ in
  static attributes such as ``Dropout.deterministic`` and
  ``BatchNorm.use_running_average``); the user's module keeps its own mode.

Randomness and batch statistics in a training step (the semantics the Trainer documents):

* **RNG streams.** Every ``RngKey`` of the module is replaced, for one step, by
  ``fold_in(key, bits(fold_in(model_key, j)))`` with ``j`` the stream's index and
  ``model_key`` derived from the step key, itself from ``(seed, epoch, step)``. Each call
  of ``loss_fn`` within a step rebuilds the module from the same state, so every call of
  one step sees the same dropout masks (WRM's inner ascent and its outer loss perturb
  and differentiate the same network); the next step draws new ones. The stored
  ``RngKey``/``RngCount`` values do not change during training.
* **Batch statistics** (and every other non-RNG variable) are updated once per step by a
  forward pass in training mode on the step's clean minibatch (padding rows included:
  they repeat real examples) with the step's parameters before the update and the same
  dropout masks. The updates that calls of ``loss_fn`` make are discarded, so an
  objective that evaluates the loss on perturbed inputs never moves the statistics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

_MODEL_STREAM = 0x6E6E78  # folds the step key into the key of the model's RNG streams


def _is_variable(v) -> bool:
    return isinstance(v, nnx.Variable)


class Model:
    """Adapter over an ``nnx.Module`` or an ``apply(params, x)`` function."""

    def __init__(self, model, params):
        self.module = None
        if isinstance(model, nnx.Module):
            graphdef, module_params, state = nnx.split(model, nnx.Param, ...)
            del graphdef
            training, evaluating = nnx.clone(model), nnx.clone(model)
            training.train()
            evaluating.eval()
            self.graphdef_train = nnx.split(training, nnx.Param, ...)[0]
            self.graphdef_eval = nnx.split(evaluating, nnx.Param, ...)[0]
            self.module = model
            # Copies: the split State shares its Variables with the module, which
            # ``fit`` updates; the initial values must stay as they are.
            self.params = jax.tree.map(lambda a: a, module_params if params is None else params)
            self.state = jax.tree.map(lambda a: a, state)
            variables = jax.tree.leaves(state, is_leaf=_is_variable)
            self.kinds = tuple(
                "key" if isinstance(v, nnx.RngKey) else "count" if isinstance(v, nnx.RngCount) else "other"
                for v in variables
            )
            self._apply = None
        elif callable(model):
            if params is None:
                raise ValueError("`params` is required when `model` is an apply function.")
            self.params = params
            self.state = ()
            self.kinds = ()
            self._apply = model
        else:
            raise TypeError("`model` must be a flax nnx.Module or a function apply(params, x).")
        self.updates_state = "other" in self.kinds
        self.uses_rng = "key" in self.kinds

    # ------------------------------------------------------------------ pure pieces

    def step_state(self, state, key: jax.Array):
        """The model state of one training step: fresh RNG keys derived from ``key``."""
        if not self.uses_rng:
            return state
        leaves, treedef = jax.tree.flatten(state)
        out, j = [], 0
        for leaf, kind in zip(leaves, self.kinds, strict=True):
            if kind == "key":
                bits = jax.random.bits(jax.random.fold_in(key, j), (), jnp.uint32)
                leaf = jax.random.fold_in(leaf, bits)
                j += 1
            out.append(leaf)
        return jax.tree.unflatten(treedef, out)

    def train_apply(self, params, state, x):
        """Outputs in training mode (state updates discarded)."""
        if self.module is None:
            return self._apply(params, x)
        return nnx.merge(self.graphdef_train, params, state, copy=True)(x)

    def eval_apply(self, params, state, x):
        """Outputs in evaluation mode."""
        if self.module is None:
            return self._apply(params, x)
        return nnx.merge(self.graphdef_eval, params, state, copy=True)(x)

    def updated_state(self, params, step_state, state, x):
        """The model state after a training-mode forward pass on ``x`` (RNG leaves unchanged)."""
        if not self.updates_state:
            return state
        module = nnx.merge(self.graphdef_train, params, step_state, copy=True)
        module(x)
        new = nnx.split(module, nnx.Param, ...)[2]
        new_leaves, treedef = jax.tree.flatten(new)
        old_leaves = jax.tree.leaves(state)
        leaves = [
            jax.lax.stop_gradient(n) if kind == "other" else o
            for n, o, kind in zip(new_leaves, old_leaves, self.kinds, strict=True)
        ]
        return jax.tree.unflatten(treedef, leaves)

    # ------------------------------------------------------------------ after fit

    def write_back(self, params, state) -> None:
        """Writes the trained parameters and model state into the user's module."""
        if self.module is not None:
            nnx.update(self.module, params)
            if self.kinds:
                nnx.update(self.module, state)

    def describe(self) -> str:
        """The module's class name, or ``"function"`` (for checkpoints; shapes are compared separately)."""
        return "function" if self.module is None else type(self.module).__qualname__

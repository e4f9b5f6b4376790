"""Reductions on a batch sharded over 8 simulated CPU devices equal the 1-device result.

The suite's own process has one CPU device, so sharded inputs are tested here, in a subprocess
with 8: a 1-D vector and a batch of rows, each sharded along the reduced axis.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import subprocess_xla_flags
from tests.strategies import CASES

EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from tests.strategies import CASES

    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    losses = np.random.default_rng(0).standard_normal(4 * 1024)
    out = {}
    for case in CASES:
        fn = jax.jit(lambda x, case=case: case.value(x, **case.hyper))
        wfn = jax.jit(lambda x, case=case: case.weights(x, **case.hyper))
        sharded = jax.device_put(losses, NamedSharding(mesh, P("data")))
        assert len(sharded.sharding.device_set) == 8
        grad = jax.jit(jax.grad(lambda x, case=case: case.value(x, **case.hyper)))(sharded)
        # A batch of rows, each reduced over the sharded axis (P(None, "data")).
        rows = jax.device_put(losses.reshape(4, 1024), NamedSharding(mesh, P(None, "data")))
        assert len(rows.sharding.device_set) == 8
        values = np.asarray(case.value(rows, **case.hyper)).tolist()
        out[case.name] = [float(fn(sharded)), np.asarray(wfn(sharded)).tolist(), np.asarray(grad).tolist(), values]
    json.dump(out, sys.stdout)
    """
)


def test_eight_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS=subprocess_xla_flags(EIGHT_DEVICES), JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sharded = json.loads(result.stdout)
    losses = np.random.default_rng(0).standard_normal(4 * 1024)
    for case in CASES:
        value, q, grad, values = sharded[case.name]
        assert abs(value - float(case.value(losses, **case.hyper))) <= 1e-9
        np.testing.assert_allclose(q, case.weights(losses, **case.hyper), atol=1e-12)
        np.testing.assert_allclose(grad, q, atol=1e-12)
        np.testing.assert_allclose(values, case.value(losses.reshape(4, 1024), **case.hyper), rtol=1e-12)


TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np, optax
    from flax import nnx
    import robustlearn as rl

    assert len(jax.devices()) == 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    data = {"x": x, "y": (x[:, 0] - x[:, 1] > 0).astype(np.int32), "group": (x[:, 2] > 1).astype(np.int32)}

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 16, rngs=rngs)
            self.l2 = nnx.Linear(16, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    class Net(nnx.Module):  # batch statistics over the sharded batch, dropout masks of sharded shapes
        def __init__(self, rngs):
            # No bias before BatchNorm: its gradient is exactly 0, i.e. rounding noise that
            # Adam would scale up to full steps (different noise on 1 and 8 devices).
            self.l1 = nnx.Linear(3, 16, use_bias=False, rngs=rngs)
            self.bn = nnx.BatchNorm(16, rngs=rngs)
            self.drop = nnx.Dropout(0.3, rngs=rngs)
            self.l2 = nnx.Linear(16, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(jax.nn.relu(self.bn(self.l1(x)))))

    def arrays(tree):
        keys = lambda a: jax.random.key_data(a) if jax.numpy.issubdtype(a.dtype, jax.dtypes.prng_key) else a
        return [np.asarray(keys(leaf)).tolist() for leaf in jax.tree.leaves(tree)]

    out = {}
    for model, objective in ((MLP, rl.objectives.cvar(0.2)), (Net, rl.objectives.erm())):
        for name, devices in (("one", None), ("eight", jax.devices())):
            trainer = rl.train.Trainer(
                model(nnx.Rngs(0)), optax.softmax_cross_entropy_with_integer_labels, objective,
                optax.adam(0.01), batch_size=64, devices=devices, num_groups=2, verbose=False,
            )
            history = trainer.fit(data, data, epochs=4)
            leaves = jax.tree.leaves(trainer.params)
            if devices is not None:
                assert all(len(leaf.sharding.device_set) == 8 for leaf in leaves)
            out[f"{model.__name__}-{name}"] = {
                "params": arrays(trainer.params), "state": arrays(trainer.model_state), "history": history.rows,
            }
    json.dump(out, sys.stdout)
    """
)


@pytest.mark.parametrize("model", ["MLP", "Net"])
def test_trainer_on_eight_devices_equals_one_device(model, _trained_on_eight_devices):
    one, eight = _trained_on_eight_devices[f"{model}-one"], _trained_on_eight_devices[f"{model}-eight"]
    for tree in ("params", "state"):
        for a, b in zip(one[tree], eight[tree], strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    for row_one, row_eight in zip(one["history"], eight["history"], strict=True):
        for key, value in row_one.items():
            assert row_eight[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.fixture(scope="module")
def _trained_on_eight_devices():
    env = dict(os.environ, XLA_FLAGS=subprocess_xla_flags(EIGHT_DEVICES), JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)

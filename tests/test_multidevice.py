"""Reductions on a batch sharded over 8 simulated CPU devices equal the 1-device result."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.strategies import CASES

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
        out[case.name] = [float(fn(sharded)), np.asarray(wfn(sharded)).tolist(), np.asarray(grad).tolist()]
    json.dump(out, sys.stdout)
    """
)


def test_eight_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sharded = json.loads(result.stdout)
    losses = np.random.default_rng(0).standard_normal(4 * 1024)
    for case in CASES:
        value, q, grad = sharded[case.name]
        assert abs(value - float(case.value(losses, **case.hyper))) <= 1e-9
        np.testing.assert_allclose(q, case.weights(losses, **case.hyper), atol=1e-12)
        np.testing.assert_allclose(grad, q, atol=1e-12)


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

    out = {}
    for name, devices in (("one", None), ("eight", jax.devices())):
        trainer = rl.train.Trainer(
            MLP(nnx.Rngs(0)), optax.softmax_cross_entropy_with_integer_labels, rl.objectives.cvar(0.2),
            optax.adam(0.01), batch_size=64, devices=devices, verbose=False,
        )
        history = trainer.fit(data, data, epochs=4)
        leaves = jax.tree.leaves(trainer.params)
        if devices is not None:
            assert all(len(leaf.sharding.device_set) == 8 for leaf in leaves)
        out[name] = {"params": [np.asarray(leaf).tolist() for leaf in leaves], "history": history.rows}
    json.dump(out, sys.stdout)
    """
)


def test_trainer_on_eight_devices_equals_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    for a, b in zip(out["one"]["params"], out["eight"]["params"], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    for row_one, row_eight in zip(out["one"]["history"], out["eight"]["history"], strict=True):
        for key, value in row_one.items():
            assert row_eight[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key

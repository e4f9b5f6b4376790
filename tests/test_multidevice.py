"""Reductions on a batch sharded over 8 simulated CPU devices equal the 1-device result."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

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

"""The float32-exact reductions under XLA's default CPU code generator.

The suite compiles with XLA:CPU's faster-compiling elemental generator and LLVM at -O0
(tests/conftest.py); users run the default generator (fusion emitters), optimized, whose
``exp``/``log1p``/``expm1`` and fused reductions are different code. So the float32 tests
that compare every reduction with its float64 reference (tests/test_reference.py) and
replay the table of extreme inputs (tests/test_float32.py) run again here under XLA's
defaults, in a subprocess (XLA reads its flags once per process).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DEFAULT_CODEGEN_ENV, FAST_COMPILE_FLAGS, xla_has_the_flag

ROOT = Path(__file__).resolve().parents[1]
SELECTED = "test_float32_matches_the_float64_reference or test_extreme_inputs_in_float32"


@pytest.mark.skipif(not xla_has_the_flag(), reason="the suite itself runs XLA's default generator (jaxlib >= 0.11)")
def test_float32_tests_pass_under_the_default_code_generator():
    flags = os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE_FLAGS, "").strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ROBUSTLEARN_TESTS_"))}
    env |= {"XLA_FLAGS": flags, DEFAULT_CODEGEN_ENV: "1", "JAX_PLATFORMS": "cpu"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/test_float32.py",
        "tests/test_reference.py",
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        SELECTED,
    ]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", out.stdout).group(1))
    assert passed >= 83, out.stdout[-2000:]  # 8 reductions' references + the extreme-input table


QUICK_VS_DEFAULT = """
import json
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import robustlearn as rl
from robustlearn._src import program_store
from robustlearn._src.training import linear

rng = np.random.default_rng(5)
x = rng.normal(size=(300, 4))
y = (rng.random(300) < 1 / (1 + np.exp(-x @ np.array([2.0, -1.0, 0.5, 0.0])))).astype(np.int32)
out = {}
for name, objective in [
    ("cvar", rl.objectives.cvar(0.3)),
    ("chi_square", rl.objectives.chi_square(0.5)),
    ("wasserstein", rl.wasserstein.linear_classification_objective(0.1, kappa=1.0)),
]:
    fits = []
    for limit in (2**24, -1):  # program_store's quick options, then XLA's defaults
        linear.QUICK_MAX_ELEMENTS = limit
        sol = rl.train.fit_linear(x, y, objective, l2=1e-3)
        fits.append([float(sol.value), np.asarray(sol.params["w"]).tolist(), float(sol.params["b"])])
    out[name] = fits
out["quick"] = program_store.stats["quick"]
print(json.dumps(out))
"""


@pytest.mark.skipif(not xla_has_the_flag(), reason="jaxlib >= 0.11 has no quick options: one code generator")
def test_fit_linear_compiled_for_compilation_speed_finds_the_same_solution():
    # Without a persistent cache fit_linear compiles with XLA:CPU's elemental generator
    # (program_store.QUICK_OPTIONS); under XLA's defaults (a user's process) that is other
    # code than the default program's, so the two must reach the same optimum.
    flags = os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE_FLAGS, "").strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ROBUSTLEARN_TESTS_"))}
    env |= {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", QUICK_VS_DEFAULT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.pop("quick") == 3
    for name, (quick, default) in result.items():
        assert quick[0] == pytest.approx(default[0], rel=1e-10), name
        np.testing.assert_allclose(quick[1] + [quick[2]], default[1] + [default[2]], rtol=1e-5, atol=1e-6, err_msg=name)

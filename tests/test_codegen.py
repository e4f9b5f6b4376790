"""The float32-exact reductions under XLA's default CPU code generator.

The suite compiles with XLA:CPU's faster-compiling elemental generator and LLVM at -O0
(tests/conftest.py); users run the default generator (fusion emitters), optimized, whose
``exp``/``log1p``/``expm1`` and fused reductions are different code. So the float32 tests
that compare every reduction with its float64 reference (tests/test_reference.py) and
replay the table of extreme inputs (tests/test_float32.py), marked ``default_codegen``, run
here under XLA's defaults, in a subprocess (XLA reads its flags once per process), and not
in the suite's own process (tests/conftest.py skips them there); with the root finder's
solves whose ``f`` the default generator rounds differently in different fusions
(tests/test_float32.py), and the test that
``fit_linear``'s quick-compiled solver (elemental generator) finds the default one's
solution (tests/test_linear.py; in the suite's own process both are the same code).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_CODEGEN_ENV, DEFAULT_CODEGEN_FILES, FAST_COMPILE_FLAGS, xla_has_the_flag

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not xla_has_the_flag(), reason="the suite itself runs XLA's default generator (jaxlib >= 0.11)")
def test_float32_tests_pass_under_the_default_code_generator():
    flags = os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE_FLAGS, "").strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ROBUSTLEARN_TESTS_"))}
    env |= {"XLA_FLAGS": flags, DEFAULT_CODEGEN_ENV: "1", "JAX_PLATFORMS": "cpu"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        *DEFAULT_CODEGEN_FILES,
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "default_codegen and not slow",  # (replaces the default "not slow")
    ]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", out.stdout).group(1))
    assert passed >= 87, out.stdout[-2000:]  # 8 reductions' references, the extreme-input table, fit_linear, 3 solves

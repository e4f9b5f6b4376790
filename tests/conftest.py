"""Tests run in float64 so that results can be compared to references at 1e-6.

Compilation is most of the suite's time (about 70% on CPU: thousands of small programs,
each compiled in ~0.5 s), so the run compiles for speed of compilation:

* XLA:CPU's older elemental code generator (``--xla_cpu_use_fusion_emitters=false``)
  compiles the reductions ~40% faster; their compiled code runs 1.3-1.5x slower, which tests
  on small arrays do not notice. LLVM without its optimizations
  (``--xla_backend_optimization_level=0``; XLA's own HLO passes still run) in one module
  (``--xla_cpu_parallel_codegen_split_count=1``: the workers already use both cores) then
  halves it: the value, weights and gradient of the eight reductions at two lengths compile
  in 3.4 s instead of 7.2 s, and the suite runs in 229 s instead of 382 s (2 AMD EPYC cores).
  None of these changes IEEE semantics (XLA:CPU compiles without fast-math).
  The float32-exactness tests (marked ``default_codegen``) run under XLA's defaults instead,
  in tests/test_codegen.py's subprocess. Only with jaxlib < 0.11: the first flag is gone
  from jaxlib 0.11.2's XLA, which aborts the process on an unknown flag.
* One persistent compilation cache, in a temporary directory, is shared by the xdist
  workers: a program one worker compiled is loaded by the other, and programs dropped by
  ``jax.clear_caches()`` (below) are loaded back instead of compiled again. A run writes
  ~2,500 programs there; with ``zstandard`` installed (a dev dependency) JAX compresses
  each in ~0.6 ms instead of zlib's ~5.6 ms.
"""

import os
import shutil
import sys
import tempfile
from importlib.metadata import version

FAST_COMPILE_FLAGS = (
    "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0 --xla_cpu_parallel_codegen_split_count=1"
)
DEFAULT_CODEGEN_ENV = "ROBUSTLEARN_TESTS_DEFAULT_CODEGEN"  # set to 1: XLA's default generator
# The files whose tests marked ``default_codegen`` tests/test_codegen.py runs under XLA's defaults.
DEFAULT_CODEGEN_FILES = ("tests/test_float32.py", "tests/test_reference.py", "tests/test_linear.py")


def xla_has_the_flag() -> bool:
    """Whether the installed XLA accepts FAST_COMPILE_FLAGS (jaxlib 0.10.2 does, 0.11.2 aborts)."""
    return tuple(int(part) for part in version("jaxlib").split(".")[:2]) < (0, 11)


def fast_compile() -> bool:
    """Whether the suite compiles with FAST_COMPILE_FLAGS (this XLA has them, not turned off)."""
    return os.environ.get(DEFAULT_CODEGEN_ENV) != "1" and xla_has_the_flag()


def subprocess_xla_flags(*flags: str) -> str:
    """``XLA_FLAGS`` for a test's subprocess: ``flags`` plus the suite's fast-compile flag
    (when the suite uses it). Subprocesses that compare results with each other or with this
    process compile with the same generator as the suite."""
    return " ".join([*flags, *([FAST_COMPILE_FLAGS] if fast_compile() else [])])


# Before JAX creates its CPU backend (it reads XLA_FLAGS once, at the first computation).
if fast_compile() and FAST_COMPILE_FLAGS not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE_FLAGS).strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from robustlearn import enable_compilation_cache  # noqa: E402
from robustlearn._src import program_store  # noqa: E402

_CACHE_ENV = "ROBUSTLEARN_TESTS_JAX_CACHE"
_BENCH_ENV = "ROBUSTLEARN_TESTS_BENCH_CACHE"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "default_codegen(also_here=False): float32-exactness tests that tests/test_codegen.py runs "
        "under XLA's default code generator; not under the suite's fast-compile flags unless also_here",
    )
    # The controller (or a run without xdist) makes the directories; workers inherit them.
    config._robustlearn_owned = []
    for env, prefix in ((_CACHE_ENV, "robustlearn-tests-jax-cache-"), (_BENCH_ENV, "robustlearn-tests-bench-cache-")):
        if not os.environ.get(env):
            os.environ[env] = tempfile.mkdtemp(prefix=prefix)
            config._robustlearn_owned.append(env)
    enable_compilation_cache(os.environ[_CACHE_ENV], min_compile_seconds=0.0)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    for env in getattr(config, "_robustlearn_owned", ()):
        shutil.rmtree(os.environ.pop(env), ignore_errors=True)
    if hasattr(config, "workeroutput"):
        # An xdist worker, after its last hook: every result has reached the controller
        # (its "workerfinished" event). Exiting without the interpreter's teardown skips
        # freeing thousands of compiled programs one by one (~4 s at the end of each run).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.workeroutput.get("exitstatus", 0))


# Each new example may compile new programs (a new size or hyperparameter): the default
# profile keeps the suite within its time budget; HYPOTHESIS_PROFILE=thorough draws 10x more.
settings.register_profile("default", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def bench_cache():
    """The benchmarks' generator cache of this test run, shared by the xdist workers (the cVAE
    that tests/test_scenarios.py and tests/test_generators.py use trains once per run, not
    once per worker; the cache writes each entry atomically), never the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ROBUSTLEARN_BENCH_CACHE", os.environ[_BENCH_ENV])
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


# Every compiled XLA:CPU program keeps ~150-300 memory mappings until its executable is
# freed, and a test worker compiles thousands of programs: past Linux's vm.max_map_count
# (65530 by default) the next compilation cannot map its code and the worker dies with
# SIGSEGV/SIGABRT inside backend_compile. Dropping JAX's caches frees them (1.6-3.6 s, and
# the worker's later tests trace and load their programs again). Counted after every test of
# one run (2026-11-28): at most 4,211 more mappings over any 10 tests and 1,460 in one test,
# and a worker's count would have peaked at ~30,000-38,000 without a clear. The caches are
# dropped 20,000 mappings (almost 5x the largest 10-test growth) below the limit: at the
# default limit a run needs no clear, at a larger one never more.
_MAPS = "/proc/self/maps"
_HAS_MAPS = os.path.exists(_MAPS)  # Linux only


def _map_limit() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65530


_MAX_MAPS = _map_limit() - 20_000
_CHECK_EVERY = 10
_tests_run = 0


def _map_count() -> int:
    with open(_MAPS, "rb") as f:
        return f.read().count(b"\n")


def pytest_runtest_teardown(item):
    global _tests_run
    _tests_run += 1
    if _HAS_MAPS and _tests_run % _CHECK_EVERY == 0 and _map_count() > _MAX_MAPS:
        jax.clear_caches()
        program_store.clear_memory()


def pytest_collection_modifyitems(config, items):
    # Under the fast-compile flags these tests would check code no user runs: they run once,
    # under XLA's defaults, in tests/test_codegen.py's subprocess (~12 s of suite time saved).
    skip = pytest.mark.skip(reason="runs under XLA's default code generator in tests/test_codegen.py")
    for item in items:
        marker = item.get_closest_marker("default_codegen")
        if marker is None:
            continue
        if item.nodeid.split("::")[0] not in DEFAULT_CODEGEN_FILES:
            raise pytest.UsageError(f"{item.nodeid} is marked default_codegen outside DEFAULT_CODEGEN_FILES")
        if fast_compile() and not marker.kwargs.get("also_here", False):
            item.add_marker(skip)

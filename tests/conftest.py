"""Tests run in float64 so that results can be compared to references at 1e-6."""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

# Each new example may compile new programs (a new size or hyperparameter): the default
# profile keeps the suite within its time budget; HYPOTHESIS_PROFILE=thorough draws 10x more.
settings.register_profile("default", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


# Every compiled XLA:CPU program keeps ~150-300 memory mappings until its executable is
# freed, and a test worker compiles thousands of programs: past Linux's vm.max_map_count
# (65530 by default) the next compilation cannot map its code and the worker dies with
# SIGSEGV/SIGABRT inside backend_compile. Dropping JAX's caches frees them.
_MAPS = "/proc/self/maps"
_HAS_MAPS = os.path.exists(_MAPS)  # Linux only
_MAX_MAPS = 20_000
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

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

"""robustlearn: distributionally robust learning in JAX, as a drop-in for ERM.

Replace ``losses.mean()`` by a robust reduction, e.g. ``robustlearn.cvar(losses, 0.1)``;
each reduction has a ``*_weights`` twin that returns the worst-case distribution, and
:data:`REDUCTIONS` lists them all. The namespaces (``objectives``, ``train``,
``wasserstein``, ``importance``, ``benchmark``, ``estimators``) load on first use, so a
reduction needs neither flax nor scikit-learn.
"""

import importlib as _importlib

from robustlearn._src.cache import enable_compilation_cache
from robustlearn._src.cache import enable_from_environment as _enable_cache_from_environment
from robustlearn._src.reductions.api import (
    chi_square,
    chi_square_penalty,
    chi_square_penalty_weights,
    chi_square_weights,
    cressie_read,
    cressie_read_weights,
    cvar,
    cvar_weights,
    erm,
    erm_weights,
    kl,
    kl_penalty,
    kl_penalty_weights,
    kl_weights,
    tv,
    tv_weights,
)
from robustlearn._src.reductions.registry import REDUCTIONS, Hyper, Reduction

__version__ = "0.2.0"

_NAMESPACES = (
    "benchmark",
    "calibrate",
    "contamination",
    "estimators",
    "importance",
    "objectives",
    "train",
    "wasserstein",
)

__all__ = [
    *_NAMESPACES,
    "REDUCTIONS",
    "Hyper",
    "Reduction",
    "enable_compilation_cache",
    "chi_square",
    "chi_square_penalty",
    "chi_square_penalty_weights",
    "chi_square_weights",
    "cressie_read",
    "cressie_read_weights",
    "cvar",
    "cvar_weights",
    "erm",
    "erm_weights",
    "kl",
    "kl_penalty",
    "kl_penalty_weights",
    "kl_weights",
    "tv",
    "tv_weights",
]

_enable_cache_from_environment()


def __getattr__(name: str):
    # PEP 562: import a namespace on first access (flax loads with `train`, not before).
    if name in _NAMESPACES:
        module = _importlib.import_module(f"robustlearn.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'robustlearn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NAMESPACES))

"""Optional dependencies: a clear error naming the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def require(module: str, package: str, extra: str) -> ModuleType:
    """Imports ``module``, or raises ImportError naming ``pip install "robustlearn[extra]"``."""
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        raise ImportError(
            f"this feature needs {package}, which is not installed; "
            f'install it with `pip install "robustlearn[{extra}]"` (or `pip install {package}`).'
        )
    return importlib.import_module(module)

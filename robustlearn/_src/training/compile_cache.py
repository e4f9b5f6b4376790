"""One XLA compilation per distinct program, shared by every Trainer in the process.

``jax.jit`` caches compilations per Python function object, and every Trainer builds its
own epoch function (it closes over that trainer's objective, optimizer and model), so a
grid of trainers would compile once per point although the programs are the same: the
hyperparameters that differ travel as arguments (in the objective's state; in the
optimizer's state with ``optax.inject_hyperparams``). Here a function is traced and
lowered per trainer (cheap), and the XLA compilation (the expensive part) is looked up
by the lowered program itself:

* the key is a SHA-256 of the StableHLO text (which embeds every closed-over constant,
  so two programs that differ in any value get different keys), plus the argument and
  result tree structures, the backend and the devices the program is placed on;
* hoisted constants, if a JAX configuration produces them, enter the key by value;
* the cache is an LRU of ``MAX_ENTRIES`` executables.

A trainer whose objective or optimizer is replaced after a fit traces the new program,
gets a different key, and compiles it: nothing stale is ever reused.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Callable

import jax
import numpy as np

MAX_ENTRIES = 64

_lock = threading.Lock()
_cache: collections.OrderedDict[str, Callable] = collections.OrderedDict()
stats = {"hits": 0, "misses": 0}


def clear() -> None:
    """Empties the cache (tests; frees the executables)."""
    with _lock:
        _cache.clear()
        stats.update(hits=0, misses=0)


def _placement(args) -> str:
    """Backend and device ids of every argument (the executable is bound to them)."""
    parts = []
    for leaf in jax.tree.leaves(args):
        sharding = getattr(leaf, "sharding", None)
        if sharding is None:
            parts.append("host")
        else:
            ids = sorted(d.id for d in sharding.device_set)
            parts.append(f"{type(sharding).__name__}:{ids}")
    return jax.default_backend() + "|" + ";".join(sorted(set(parts)))


def _key(lowered, args) -> str:
    h = hashlib.sha256()
    h.update(lowered.as_text().encode())
    h.update(str(lowered.in_tree).encode())
    h.update(str(lowered.out_tree).encode())
    h.update(_placement(args).encode())
    # With some JAX settings large constants are passed as hidden arguments instead of
    # being embedded in the program text: then their values must enter the key.
    consts = getattr(getattr(lowered, "_lowering", None), "const_args", None) or ()
    for c in consts:
        arr = np.asarray(c)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def compiled(fn: Callable, *args) -> Callable:
    """``jax.jit(fn)`` lowered for ``args``, compiled at most once per distinct program.

    Returns a callable that takes arguments of the same structure, shapes, dtypes and
    placement as ``args``.
    """
    lowered = jax.jit(fn).lower(*args)
    key = _key(lowered, args)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return hit
    executable = lowered.compile()
    with _lock:
        stats["misses"] += 1
        _cache[key] = executable
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return executable

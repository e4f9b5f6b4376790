"""robustlearn's solvers kept on disk ready to run, so a fresh process skips tracing too.

JAX's persistent compilation cache (:func:`robustlearn.enable_compilation_cache`) saves
XLA's compilation, but every process still traces and lowers the program before it can
look the compiled code up: for ``fit_linear`` that is 0.4-0.6 s of a 0.8 s first call. Once
the user has turned that cache on (and so agreed to compiled code on disk), robustlearn
also stores its own solvers' executables next to it, under a key computed *before*
tracing from everything that decides the program:

* the function (module and name) and its static arguments, with functions compared by
  a fingerprint of their code (bytecode, constants, names) and of their closures' values;
* the shapes, dtypes and tree structure of the arguments;
* the source of every robustlearn module (so any edit to robustlearn invalidates all
  entries), the versions of Python, JAX, jaxlib, NumPy and optax, the JAX settings that
  change traced programs, ``XLA_FLAGS``, and the backend, its version, the devices and
  (on CPU) the host's instruction set;
* robustlearn's own tracing switches (the reductions' solve path).

Only programs whose whole static part can be fingerprinted by value are stored: functions
defined in robustlearn (whose globals are covered by the source hash) or in JAX, NumPy or
optax (covered by their versions), and closures over plain values, arrays and such
functions. A function defined elsewhere (say in the user's script, whose globals can
change between runs without changing its code) is never stored: it takes the ordinary
path, traced in every process and compiled through JAX's cache. A stored entry also holds
its full key text, compared on load; an entry that cannot be read is recompiled and
rewritten.

Without JAX's persistent cache every process compiles its solvers again, so there
:func:`call` may run a variant jitted for compilation speed (:func:`quick_jit`): XLA:CPU's
older elemental code generator, which compiles ``fit_linear``'s solvers in about a third
of the time (0.57 s against 1.70 s for χ² on 5·10⁴ × 20) and runs them 0.7-2× as long. A
stored program is compiled with XLA's defaults: it is compiled once and run many times.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import platform
import sys
import tempfile
import threading
import types
import warnings
from collections.abc import Callable

import jax
import numpy as np

from robustlearn._src import checks as _checks

SUBDIR = "robustlearn-programs"
# Modules whose functions may appear in a stored program's static part: robustlearn's
# (their source enters the key) and those whose versions enter the key.
_VERSIONED = ("jax", "jaxlib", "numpy", "optax")
_TRUSTED_PREFIXES = ("robustlearn", *_VERSIONED)
# JAX settings that change what a function traces to or how it runs.
_JAX_SETTINGS = (
    "jax_enable_x64",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_enable_checks",
)

MAX_LOADED = 64

_lock = threading.Lock()
_loaded: collections.OrderedDict[str, Callable] = collections.OrderedDict()
stats = {"stored": 0, "loaded": 0, "memory": 0, "bypassed": 0, "quick": 0}

# XLA options that shorten XLA:CPU's compilation (module docstring). An XLA without one of
# them rejects the compilation ("No such compile option"): then the default is used.
QUICK_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
# And LLVM without its optimizations (XLA's own HLO passes still run): 0.13-0.17 s less
# compilation for fit_linear's solvers, whose code then runs 1.6-1.9x as long.
QUICKEST_OPTIONS = QUICK_OPTIONS | {"xla_backend_optimization_level": 0}
_quick_accepted: bool | None = None  # unknown until the first quick compilation


class _NotStable(Exception):
    """The static part holds something whose behaviour is not fixed by its fingerprint."""


def _module_trusted(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] in _TRUSTED_PREFIXES


def _code_fingerprint(code: types.CodeType) -> tuple:
    consts = tuple(_code_fingerprint(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return ("code", code.co_qualname, code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars)


def fingerprint(value, depth: int = 0) -> tuple:
    """A by-value description of ``value``, the same in every process where it behaves the same.

    Raises:
        _NotStable: ``value`` holds a function defined outside the trusted modules, a JAX
            array, or another object that is only known by identity.
    """
    if depth > 12:
        raise _NotStable("too deep")
    deeper = functools.partial(fingerprint, depth=depth + 1)
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return (type(value).__name__, value)
    if isinstance(value, types.FunctionType):
        if not _module_trusted(value.__globals__.get("__name__")):
            raise _NotStable(f"function {value.__qualname__} defined outside robustlearn")
        try:
            cells = tuple(deeper(cell.cell_contents) for cell in value.__closure__ or ())
        except ValueError as err:  # an empty cell
            raise _NotStable("empty closure cell") from err
        return (
            "function",
            value.__globals__["__name__"],
            _code_fingerprint(value.__code__),
            deeper(value.__defaults__),
            deeper(value.__kwdefaults__),
            cells,
        )
    if isinstance(value, types.MethodType):
        return ("method", deeper(value.__func__), deeper(value.__self__))
    if isinstance(value, functools.partial):
        return ("partial", deeper(value.func), deeper(value.args), deeper(value.keywords))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, hashlib.sha256(value.tobytes()).hexdigest())
    if isinstance(value, np.generic):
        return ("numpy", value.dtype.str, repr(value.item()))
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, type):
        if not _module_trusted(value.__module__):
            raise _NotStable(f"class {value.__qualname__} defined outside robustlearn")
        return ("type", value.__module__, value.__qualname__)
    if isinstance(value, types.ModuleType):
        if not _module_trusted(value.__name__):
            raise _NotStable(f"module {value.__name__}")
        return ("module", value.__name__)
    if isinstance(value, jax.Array):
        raise _NotStable("a JAX array (known by identity, as jax.jit treats closed-over arrays)")
    cls = type(value)
    own = cls.__module__.split(".")[0] == "robustlearn"
    stable = getattr(value, "stable_parts", None)
    if own and callable(stable):
        return ((cls.__module__, cls.__qualname__), deeper(stable()))
    if isinstance(value, tuple | list | dict | frozenset | set):
        if not (own or cls in (tuple, list, dict, frozenset, set)):
            raise _NotStable(f"container {cls.__qualname__} defined outside robustlearn")
        name = (cls.__module__, cls.__qualname__)
        if isinstance(value, dict):
            return (name, tuple((deeper(k), deeper(v)) for k, v in value.items()))
        if isinstance(value, frozenset | set):
            return (name, tuple(sorted(repr(deeper(v)) for v in value)))
        return (name, tuple(deeper(v) for v in value))
    if own:  # a robustlearn object: by its attributes
        slots = getattr(cls, "__slots__", None)
        if slots is not None:
            return ((cls.__module__, cls.__qualname__), tuple((s, deeper(getattr(value, s))) for s in slots))
        if hasattr(value, "__dict__"):
            return ((cls.__module__, cls.__qualname__), tuple((k, deeper(v)) for k, v in sorted(vars(value).items())))
    raise _NotStable(f"{cls.__qualname__} is known by identity only")


@functools.cache
def _source_hash() -> str:
    """SHA-256 of every robustlearn source file (paths and contents)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.cache
def _versions() -> str:
    parts = [sys.version]
    for name in _VERSIONED:
        try:
            parts.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name}=absent")
    return ";".join(parts)


@functools.cache
def _host_isa() -> str:
    """The CPU's instruction-set flags (XLA:CPU compiles for the host it runs on)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return hashlib.sha256(line.encode()).hexdigest()
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _environment() -> str:
    backend = jax.default_backend()
    devices = jax.devices()
    client = devices[0].client
    settings = ";".join(f"{s}={getattr(jax.config, s, None)!r}" for s in _JAX_SETTINGS)
    from robustlearn._src.reductions import engine  # noqa: PLC0415 - avoids an import cycle

    parts = [
        _source_hash(),
        _versions(),
        settings,
        os.environ.get("XLA_FLAGS", ""),
        backend,
        client.platform_version,
        f"{len(devices)}x{devices[0].device_kind}",
        _host_isa() if backend == "cpu" else "",
        repr(engine._path()),
    ]
    return "\n".join(parts)


def _aval(leaf) -> str:
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        raise _NotStable(f"argument of type {type(leaf).__name__}")
    weak = getattr(getattr(leaf, "aval", None), "weak_type", False)
    sharding = getattr(leaf, "sharding", None)
    placement = "" if sharding is None else f"{type(sharding).__name__}{sorted(d.id for d in sharding.device_set)}"
    return f"{np.dtype(leaf.dtype).str}{tuple(leaf.shape)}{'w' if weak else ''}{placement}"


def _directory() -> pathlib.Path | None:
    base = jax.config.jax_compilation_cache_dir
    return pathlib.Path(base) / SUBDIR if base else None


def _key_text(jitted, args, static: dict) -> str:
    fn = getattr(jitted, "__wrapped__", jitted)
    leaves, tree = jax.tree.flatten(args)
    return "\n".join(
        [
            f"{fn.__module__}.{fn.__qualname__}",
            repr(fingerprint(static)),
            str(tree),
            ";".join(_aval(leaf) for leaf in leaves),
            _environment(),
        ]
    )


def quick_jit(fun: Callable, options: dict = QUICK_OPTIONS, **jit_kwargs) -> Callable | None:
    """``jax.jit(fun, **jit_kwargs)`` compiled with ``options`` (:data:`QUICK_OPTIONS` or
    :data:`QUICKEST_OPTIONS`), for :func:`call`'s ``quick``.

    None on a JAX whose ``jit`` takes no compiler options.
    """
    try:
        return jax.jit(fun, compiler_options=options, **jit_kwargs)
    except TypeError:
        return None


def _call_quick(quick, jitted, args: tuple, static: dict):
    global _quick_accepted
    if _quick_accepted is not False:
        try:
            out = quick(*args, **static)
        except RuntimeError as err:  # jax.errors.JaxRuntimeError (XlaRuntimeError before)
            if "No such compile option" not in str(err):
                raise
            _quick_accepted = False
        else:
            _quick_accepted = True
            stats["quick"] += 1
            return out
    return jitted(*args, **static)


def call(jitted, args: tuple, static: dict, *, quick: Callable | None = None):
    """``jitted(*args, **static)``, its executable stored on disk when possible.

    ``jitted`` is a ``jax.jit`` of a function of the arrays ``args`` and of the hashable
    keyword arguments ``static`` (its ``static_argnames``). Without JAX's persistent
    compilation cache, when the static part cannot be fingerprinted by value (see the
    module's docstring), under ``jax.disable_jit`` or NaN/inf debugging, or inside a
    transformation, this is an ordinary jitted call: of ``quick`` (the same function
    through :func:`quick_jit`), when given and no persistent cache is on, else of
    ``jitted``.
    """
    directory = _directory()
    cached = directory is not None and jax.config.jax_enable_compilation_cache
    traced = any(_checks.is_traced(leaf) for leaf in jax.tree.leaves(args))
    if not cached or jax.config.jax_disable_jit or jax.config.jax_debug_nans or jax.config.jax_debug_infs or traced:
        if quick is not None and not cached and not (jax.config.jax_disable_jit or traced):
            return _call_quick(quick, jitted, args, static)
        return jitted(*args, **static)
    try:
        text = _key_text(jitted, args, static)
    except _NotStable:
        stats["bypassed"] += 1
        return jitted(*args, **static)
    digest = hashlib.sha256(text.encode()).hexdigest()
    with _lock:
        program = _loaded.get(digest)
        if program is not None:
            _loaded.move_to_end(digest)
    if program is not None:
        stats["memory"] += 1
        return program(*args)
    path = directory / f"{digest}.bin"
    program = _load(path, text)
    if program is not None:
        try:
            # Errors of a program that cannot run surface when its results are awaited.
            out = jax.block_until_ready(program(*args))
        except Exception as err:  # noqa: BLE001 - a stored program that cannot run is replaced
            warnings.warn(f"robustlearn: a stored program failed to run ({err!r}); compiling it again.", stacklevel=2)
            program = None
        else:
            stats["loaded"] += 1
    if program is None:
        program = _compile_fresh(jitted, args, static)
        _store(path, text, program)
        out = program(*args)
    with _lock:
        _loaded[digest] = program
        while len(_loaded) > MAX_LOADED:
            _loaded.popitem(last=False)
    return out


def _compile_fresh(jitted, args, static):
    """Compiles without JAX's persistent cache: an XLA:CPU executable loaded from that cache
    serializes without its generated functions (it fails to run when loaded again)."""
    with _lock:
        before = jax.config.jax_enable_compilation_cache
        jax.config.update("jax_enable_compilation_cache", False)
        try:
            return jitted.lower(*args, **static).compile()
        finally:
            jax.config.update("jax_enable_compilation_cache", before)


def _load(path: pathlib.Path, text: str):
    from jax.experimental import serialize_executable  # noqa: PLC0415 - only when the cache is on

    try:
        with open(path, "rb") as f:
            stored_text, blob, in_tree, out_tree = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - a damaged entry is recompiled, never trusted
        warnings.warn(f"robustlearn: ignoring an unreadable stored program {path} ({err!r}).", stacklevel=3)
        return None
    if stored_text != text:
        return None
    try:
        return serialize_executable.deserialize_and_load(blob, in_tree, out_tree)
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"robustlearn: ignoring a stored program that failed to load {path} ({err!r}).", stacklevel=3)
        return None


def _store(path: pathlib.Path, text: str, compiled) -> None:
    from jax.experimental import serialize_executable  # noqa: PLC0415

    try:
        blob, in_tree, out_tree = serialize_executable.serialize(compiled)
        payload = pickle.dumps((text, blob, in_tree, out_tree), protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as f:
            f.write(payload)
        os.replace(f.name, path)
        stats["stored"] += 1
    except Exception as err:  # noqa: BLE001 - storing is an optimization; the result is already computed
        warnings.warn(f"robustlearn: could not store a compiled program in {path.parent} ({err!r}).", stacklevel=3)


def clear_memory() -> None:
    """Forgets the programs held in this process (frees their executables)."""
    with _lock:
        _loaded.clear()

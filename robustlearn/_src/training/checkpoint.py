"""Checkpoint files: a self-describing format, safe writes, and refusals that name the difference.

Format (version 1), one file::

    8 bytes   magic b"RLCKPT01"
    8 bytes   header length H (little-endian uint64)
    4 bytes   CRC-32 of the header
    H bytes   header: UTF-8 JSON
    ...       body: the arrays' raw little-endian bytes, back to back

The header holds the format version, the run's configuration, the training progress
(epoch, history, callback states) and, for every array, its tree and path (e.g.
``state.params['l1']['kernel'].value``), shape, dtype, byte range, and the PRNG
implementation for key arrays; plus the body's length and CRC-32. Reading checks all of
it, so a truncated, empty or garbage file is a clear error naming the file. Nothing is
unpickled or evaluated: arrays are rebuilt with ``np.frombuffer`` from a whitelist of
dtypes into the structure of a freshly initialized template, and every path, shape and
dtype must match the template.

Writes go to a private temporary file created in the target directory with
``O_CREAT | O_EXCL`` (and ``O_NOFOLLOW`` where the OS has it; ``tempfile.mkstemp``),
flushed and fsynced, then renamed over the final name (``os.replace``: atomic, and a
symbolic link planted at the final name is replaced, never followed). The previous
checkpoint is renamed to ``checkpoint.prev.rlck`` only once the new one is complete.
Reads refuse symbolic links.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT_VERSION = 1
MAGIC = b"RLCKPT01"
_PREFIX = struct.Struct("<8sQI")
CURRENT = "checkpoint.rlck"
PREVIOUS = "checkpoint.prev.rlck"
CORRUPT = "checkpoint.corrupt.rlck"
_TMP_PREFIX = ".checkpoint-"
_TMP_SUFFIX = ".tmp"
_DTYPES = {
    name: np.dtype(jnp.dtype(name))
    for name in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
    )
}  # fmt: skip


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit the run resuming from it."""


# ---------------------------------------------------------------------------- writing


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _entries(trees: Mapping[str, Any]):
    """(tree, path, numpy array, key impl) for every leaf of every tree."""
    for tree_name, tree in trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            impl = None
            if _is_key(leaf):
                impl = str(jax.random.key_impl(leaf))
                leaf = jax.random.key_data(leaf)
            arr = np.asarray(jax.device_get(leaf))
            yield tree_name, jax.tree_util.keystr(path), arr, impl


def encode(trees: Mapping[str, Any], meta: dict) -> bytes:
    """The bytes of a checkpoint holding the array ``trees`` and the JSON ``meta``."""
    arrays, chunks, offset, crc = [], [], 0, 0
    for tree_name, path, arr, impl in _entries(trees):
        name = arr.dtype.name
        if name not in _DTYPES:
            raise TypeError(f"cannot checkpoint {tree_name}{path}: unsupported dtype {arr.dtype}.")
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        arrays.append(
            {"tree": tree_name, "path": path, "shape": list(arr.shape), "dtype": name, "key_impl": impl,
             "offset": offset, "nbytes": len(raw)}
        )  # fmt: skip
        chunks.append(raw)
        crc = zlib.crc32(raw, crc)
        offset += len(raw)
    header = {"format": FORMAT_VERSION, "meta": meta, "arrays": arrays, "body_nbytes": offset, "body_crc32": crc}
    header_bytes = json.dumps(header, allow_nan=True).encode()
    prefix = _PREFIX.pack(MAGIC, len(header_bytes), zlib.crc32(header_bytes))
    return b"".join([prefix, header_bytes, *chunks])


def _open_private(directory: str) -> tuple[int, str]:
    """A new temporary file in ``directory``: O_CREAT|O_EXCL, never a link (``mkstemp``)."""
    return tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=directory)


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform/filesystem
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def probe_writable(directory: str) -> None:
    """Creates ``directory`` if needed and checks that a file can be created in it.

    Raises:
        PermissionError / OSError: with a message naming the directory.
    """
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = _open_private(directory)
    except OSError as e:
        raise type(e)(
            e.errno, f"cannot write checkpoints in {directory!r}: {e.strerror or e}; nothing was written or removed"
        ) from e
    os.close(fd)
    os.unlink(tmp)


def write(directory: str, data: bytes) -> str:
    """Writes ``data`` as the current checkpoint of ``directory``, keeping the previous one.

    Returns:
        The path of the new checkpoint.

    Raises:
        OSError: the directory is not writable, the disk is full...; the checkpoints
            already there are left as they were.
    """
    current, previous = os.path.join(directory, CURRENT), os.path.join(directory, PREVIOUS)
    try:
        fd, tmp = _open_private(directory)
    except OSError as e:
        raise type(e)(
            e.errno, f"cannot write a checkpoint in {directory!r}: {e.strerror or e}; the existing checkpoints are kept"
        ) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # The new file is complete: only now demote the current one (a regular file;
        # a planted link is simply replaced below, never followed).
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(current).st_mode):
                os.replace(current, previous)
        os.replace(tmp, current)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return current


def remove_stale_temporaries(directory: str) -> None:
    """Deletes temporary files of interrupted writes (ours: prefix and suffix; never follows links)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        os.unlink(path)


# ---------------------------------------------------------------------------- reading


def read_bytes(path: str) -> bytes:
    """The content of ``path``; symbolic links are refused."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP or (os.path.islink(path) and not hasattr(os, "O_NOFOLLOW")):
            raise CheckpointError(f"checkpoint {path!r} is a symbolic link; refusing to read it.") from None
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read()


def decode(data: bytes, path: str) -> tuple[dict, dict[str, list[tuple[str, np.ndarray, str | None]]]]:
    """Parses checkpoint bytes into ``(meta, {tree: [(path, array, key_impl), ...]})``.

    Raises:
        CheckpointError: empty, truncated, garbage or corrupted data, naming ``path``.
    """
    hint = f"; pass `fallback=True` to Checkpointer to resume from {PREVIOUS} instead"
    if not data:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes){hint}.")
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        if data[:6] == MAGIC[:6]:
            raise CheckpointError(f"checkpoint {path!r} has format {data[6:8]!r}, this version reads 01{hint}.")
        raise CheckpointError(f"{path!r} is not a robustlearn checkpoint (unknown content){hint}.")
    _, header_len, header_crc = _PREFIX.unpack_from(data)
    header_bytes = data[_PREFIX.size : _PREFIX.size + header_len]
    if len(header_bytes) < header_len:
        raise CheckpointError(f"checkpoint {path!r} is truncated ({len(data)} bytes, header incomplete){hint}.")
    if zlib.crc32(header_bytes) != header_crc:
        raise CheckpointError(f"checkpoint {path!r} is corrupted (header checksum mismatch){hint}.")
    header = json.loads(header_bytes)
    body = memoryview(data)[_PREFIX.size + header_len :]
    if len(body) != header["body_nbytes"]:
        kind = "truncated" if len(body) < header["body_nbytes"] else "corrupted (trailing bytes)"
        raise CheckpointError(
            f"checkpoint {path!r} is {kind}: {len(data)} bytes, expected "
            f"{_PREFIX.size + header_len + header['body_nbytes']}{hint}."
        )
    if zlib.crc32(body) != header["body_crc32"]:
        raise CheckpointError(f"checkpoint {path!r} is corrupted (data checksum mismatch){hint}.")
    trees: dict[str, list] = {}
    for entry in header["arrays"]:
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"checkpoint {path!r} holds an unsupported dtype {entry['dtype']!r}.")
        raw = body[entry["offset"] : entry["offset"] + entry["nbytes"]]
        arr = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype).reshape(entry["shape"])
        trees.setdefault(entry["tree"], []).append((entry["path"], arr, entry["key_impl"]))
    return header["meta"], trees


def restore_tree(template, stored: list[tuple[str, np.ndarray, str | None]], what: str, path: str):
    """The arrays of ``stored`` in the structure of ``template``; paths, shapes and dtypes must match."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    now = {jax.tree_util.keystr(p): leaf for p, leaf in flat}
    saved = {p: (arr, impl) for p, arr, impl in stored}
    missing, extra = [p for p in now if p not in saved], [p for p in saved if p not in now]
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {path!r} does not fit this run: {what} differs in structure "
            f"(only in the checkpoint: {extra[:3]}{'...' if len(extra) > 3 else ''}; "
            f"only now: {missing[:3]}{'...' if len(missing) > 3 else ''})."
        )
    leaves = []
    for p, leaf in now.items():
        arr, impl = saved[p]
        if _is_key(leaf):
            want_impl = str(jax.random.key_impl(leaf))
            data = jax.random.key_data(leaf)
            if impl != want_impl or arr.shape != data.shape:
                raise CheckpointError(
                    f"checkpoint {path!r} does not fit this run: {what}{p} is a {impl} key of shape {arr.shape} in "
                    f"the checkpoint, a {want_impl} key of shape {data.shape} now."
                )
            leaves.append(jax.random.wrap_key_data(jnp.asarray(arr), impl=impl))
            continue
        shape, dtype = tuple(np.shape(leaf)), np.dtype(jnp.result_type(leaf))
        if arr.shape != shape or arr.dtype != dtype:
            raise CheckpointError(
                f"checkpoint {path!r} does not fit this run: other shape or dtype: {what}{p} is "
                f"{arr.shape} {arr.dtype} in the checkpoint, {shape} {dtype} now."
            )
        leaves.append(jnp.asarray(arr))
    return jax.tree.unflatten(treedef, leaves)


def compare_config(saved: dict, now: dict, path: str) -> None:
    """Raises a CheckpointError naming the first configuration entry that differs."""
    labels = {
        "objective": "other objective",
        "optimizer": "other optimizer",
        "model": "other model (shapes or dtypes of the parameters or model state)",
        "data": "other training data",
        "batch_size": "other batch size",
        "seed": "other seed",
    }
    for key, label in labels.items():
        a, b = saved.get(key), now.get(key)
        if a != b:
            raise CheckpointError(
                f"checkpoint {path!r} does not fit this run: {label}: {_difference(a, b)}. Resume with the same "
                f"configuration, or train from scratch in another directory."
            )


def _difference(a, b) -> str:
    """The first differing entry of two JSON values, as 'where: checkpoint X, now Y'."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if a.get(k) != b.get(k):
                if k not in a or k not in b:
                    return f"{k!r} {'only in the checkpoint' if k not in b else 'only now'}"
                return f"{k}: {_difference(a[k], b[k])}"
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b, strict=True):
            if x != y:
                return _difference(x, y)
    return f"{a!r} in the checkpoint, {b!r} now"

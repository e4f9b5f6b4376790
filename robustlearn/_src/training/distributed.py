"""Multi-process training: agreement between processes, and data held per process.

A Trainer whose ``devices`` span several processes (``jax.distributed``) runs one SPMD
program on all of them. Two things must then hold, and this module provides them:

* **The processes agree.** They must call ``fit`` with the same configuration (seed,
  batch size, epochs, objective, optimizer, initial parameters, column structure; the
  same data in global mode), resume from the same checkpoint, and fail together: a
  check that fails on one process only would otherwise leave the others blocked in
  the next collective. :func:`agree` gathers a small integer record of every process
  (an error flag, counts, SHA-256 digests of what must agree) in one ``allgather``, and
  every process raises the same kind of error when they differ.
* **Process-local data.** With ``fit(..., process_local=True)`` every process passes its
  own rows; the global dataset is their concatenation in process order. :func:`assemble`
  places each process's rows on its devices (padded to equal blocks: jax arrays are
  evenly sharded), :func:`positions` maps an example's index in the concatenation to its
  row in the padded global array, and :func:`gather_rows` assembles a minibatch from
  rows held on other devices: every device picks the requested rows it holds, the
  others contribute zeros, and a reduce-scatter sums them, as unsigned integers of the
  same width (the bits of every value are moved unchanged, including ``-0.0``).
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DIGEST_INTS = 8  # a digest travels as 8 int32 (the first 32 bytes of SHA-256, 4 per int)


def processes(mesh) -> list[int]:
    """The process indices of a mesh's devices, sorted (``[0]`` without a mesh)."""
    if mesh is None:
        return [jax.process_index()]
    return sorted({d.process_index for d in mesh.devices.flat})


def is_multiprocess(mesh) -> bool:
    """Whether ``mesh`` spans several processes (then ``fit`` is a collective)."""
    return len(processes(mesh)) > 1


def check_mesh(mesh) -> None:
    """A mesh spanning several processes must hold every process, each in one contiguous block.

    Raises:
        ValueError: naming the missing processes or the process whose devices are split.
    """
    if mesh is None:
        return
    owners = [d.process_index for d in mesh.devices.flat]
    present = sorted(set(owners))
    if len(present) == 1:
        return
    missing = sorted(set(range(jax.process_count())) - set(present))
    if missing:
        raise ValueError(
            f"`devices` spans processes {present} but not {missing}: a multi-process Trainer needs devices of every "
            f"process (e.g. `jax.devices()`), or of this process only (`jax.local_devices()`)."
        )
    blocks = [p for i, p in enumerate(owners) if i == 0 or owners[i - 1] != p]
    if len(blocks) != len(present):
        split = next(p for p in present if blocks.count(p) > 1)
        raise ValueError(
            f"the devices of process {split} are not adjacent in `devices`: list each process's devices together "
            f"(`jax.devices()` does)."
        )


# ---------------------------------------------------------------------- agreement


def digest(*parts) -> np.ndarray:
    """SHA-256 of ``parts`` (JSON-able values, numpy arrays, bytes) as ``DIGEST_INTS`` int32."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, np.ndarray):
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=repr).encode())
        h.update(b"\x00")
    return np.frombuffer(h.digest()[: 4 * DIGEST_INTS], "<i4").astype(np.int32)


def tree_digest(tree) -> np.ndarray:
    """Digest of a pytree's structure and leaf values (PRNG keys by their key data)."""
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        leaves += [jax.tree_util.keystr(path), np.asarray(jax.device_get(leaf))]
    return digest(str(jax.tree.structure(tree)), *leaves)


def allgather(record: np.ndarray) -> np.ndarray:
    """Every process's int32 vector ``record`` (same length everywhere), shape ``(processes, k)``."""
    from jax.experimental import multihost_utils

    out = multihost_utils.process_allgather(np.asarray(record, np.int32))
    return np.asarray(out).reshape(jax.process_count(), -1)


class Agreement(NamedTuple):
    """What :func:`agree` found.

    Attributes:
        failed: the processes that met an error.
        field: the first ``must`` field on which the processes differ (None: they agree).
        differing: the processes that differ from process 0 in ``field``.
        gathered: name -> every process's value of a ``gathered`` field.
    """

    failed: list[int]
    field: str | None
    differing: list[int]
    gathered: dict[str, list[int]]


def agree(error: BaseException | None, must: dict, gathered: dict | None = None) -> Agreement:
    """One allgather over all processes: the error flags, what must agree, what is gathered.

    Every process passes the same names in the same order (the record has a fixed
    layout, also on a process that failed).

    Args:
        error: the exception this process met (or None).
        must: name -> a digest (``DIGEST_INTS`` int32, from :func:`digest`), or None on
            a process that failed.
        gathered: name -> an int in ``[-2**31, 2**31)`` (a row count, a drawn seed).
    """
    gathered = gathered or {}
    parts = [np.zeros(DIGEST_INTS, np.int32) if v is None else np.asarray(v, np.int32) for v in must.values()]
    record = np.concatenate([[int(error is not None)], *parts, list(gathered.values())]).astype(np.int32)
    table = allgather(record)
    failed = [p for p in range(table.shape[0]) if table[p, 0]]
    field, differing = None, []
    if not failed:
        for i, name in enumerate(must):
            block = table[:, 1 + i * DIGEST_INTS : 1 + (i + 1) * DIGEST_INTS]
            differing = [p for p in range(table.shape[0]) if (block[p] != block[0]).any()]
            if differing:
                field = name
                break
    offset = 1 + len(must) * DIGEST_INTS
    values = {name: table[:, offset + i].tolist() for i, name in enumerate(gathered)}
    return Agreement(failed, field, differing, values)


# ---------------------------------------------------------------------- process-local data


class Layout(NamedTuple):
    """Where the processes' rows live in the padded global array.

    Attributes:
        counts: rows of every process (process order).
        per_device: rows per device block (the largest share, rounded up).
        starts: the first global row of every process's block.
        blocks: rows of every process's block (``per_device`` times its device count).
    """

    counts: tuple[int, ...]
    per_device: int
    starts: tuple[int, ...]
    blocks: tuple[int, ...]

    @property
    def total(self) -> int:
        """Examples in the global dataset."""
        return sum(self.counts)

    @property
    def padded(self) -> bool:
        """Whether some process's block holds padding rows."""
        return any(c != b for c, b in zip(self.counts, self.blocks, strict=True))


def layout(mesh, counts: list[int]) -> Layout:
    """The layout of ``counts[p]`` rows per process on ``mesh`` (process blocks contiguous)."""
    owners = [d.process_index for d in mesh.devices.flat]
    num_devices = {p: owners.count(p) for p in set(owners)}
    per_device = max(-(-counts[p] // num_devices[p]) for p in num_devices)
    starts = [0] * len(counts)
    for p in num_devices:
        starts[p] = owners.index(p) * per_device
    blocks = [per_device * num_devices.get(p, 0) for p in range(len(counts))]
    return Layout(tuple(counts), per_device, tuple(starts), tuple(blocks))


def positions(lay: Layout) -> np.ndarray:
    """Row in the padded global array of each example of the concatenation (process order)."""
    return np.concatenate([s + np.arange(c) for s, c in zip(lay.starts, lay.counts, strict=True)]).astype(np.int32)


def _canonical(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=jax.dtypes.canonicalize_dtype(a.dtype))


def assemble(data: dict[str, np.ndarray], mesh, lay: Layout, mask: bool = False) -> dict[str, jax.Array]:
    """Global arrays sharded along ``"data"`` from this process's rows (padded by repeating its last row).

    With ``mask``, adds a boolean ``"mask"`` column that is False on the padding rows.
    """
    me = jax.process_index()
    n, block = lay.counts[me], lay.blocks[me]
    sharding = NamedSharding(mesh, P("data"))
    local = dict(data)
    if mask:
        local["mask"] = np.ones(n, bool)
    out = {}
    for key, value in local.items():
        value = _canonical(value)
        pad = block - n
        if pad:
            filler = np.zeros((pad, *value.shape[1:]), value.dtype) if key == "mask" else np.repeat(value[-1:], pad, 0)
            value = np.concatenate([value, filler])
        global_shape = (lay.per_device * mesh.size, *value.shape[1:])
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


_UINT = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


def _to_bits(a):
    if a.dtype == jnp.bool_:
        return a.astype(jnp.uint8)
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        a = jnp.stack([a.real, a.imag], axis=-1)
    return jax.lax.bitcast_convert_type(a, _UINT[a.dtype.itemsize])


def _from_bits(bits, dtype):
    if dtype == jnp.bool_:
        return bits != 0
    if jnp.issubdtype(dtype, jnp.complexfloating):
        parts = jax.lax.bitcast_convert_type(bits, jnp.finfo(dtype).dtype)
        return jax.lax.complex(parts[..., 0], parts[..., 1])
    return jax.lax.bitcast_convert_type(bits, dtype)


def gather_rows(data: dict, idx: jax.Array, mesh, per_device: int) -> dict:
    """``{k: v[idx]}`` for arrays ``v`` sharded in blocks of ``per_device`` rows; the result is sharded too.

    ``idx`` (replicated, length divisible by the number of devices) holds rows of the
    global array. Each device selects the rows of ``idx`` that it holds and zeros
    elsewhere; a reduce-scatter over the devices sums the (bit patterns of the) rows,
    and every device keeps its slice of the minibatch. The communication per step is one
    minibatch, whatever the size of the dataset.
    """

    def local(block, rows):
        here = rows - jax.lax.axis_index("data") * per_device
        mine = (here >= 0) & (here < per_device)
        out = {}
        for key, value in block.items():
            bits = _to_bits(value[jnp.clip(here, 0, per_device - 1)])
            keep = mine.reshape(mine.shape + (1,) * (bits.ndim - 1))
            bits = jnp.where(keep, bits, jnp.zeros((), bits.dtype))
            out[key] = _from_bits(jax.lax.psum_scatter(bits, "data", scatter_dimension=0, tiled=True), value.dtype)
        return out

    spec = {k: P("data") for k in data}
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, P()), out_specs=spec)(data, idx)

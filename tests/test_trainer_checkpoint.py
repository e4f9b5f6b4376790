"""Checkpoints: the documented format, refusals that name the difference, nothing lost, no links followed."""

import errno
import json
import os
import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import robustlearn as rl
from robustlearn import objectives
from robustlearn._src.training import checkpoint as _ckpt

CE = optax.softmax_cross_entropy_with_integer_labels
CheckpointError = rl.train.CheckpointError


class MLP(nnx.Module):
    def __init__(self, rngs, hidden=8):
        self.l1 = nnx.Linear(2, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def _data(seed=0, n=96):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    return {"x": x, "y": (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)}


TRAIN, VAL = _data(0), _data(1, 40)


def _trainer(directory=None, *, hidden=8, objective=None, optimizer=None, callbacks=(), **kwargs):
    return rl.train.Trainer(
        MLP(nnx.Rngs(0), hidden),
        CE,
        objective or objectives.cvar(0.5),
        optimizer or optax.adam(0.05),
        batch_size=32,
        checkpoint_dir=directory,
        callbacks=callbacks,
        verbose=False,
        **kwargs,
    )


def _files(directory):
    """Name -> bytes of every file in the directory (links reported as such)."""
    out = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        out[name] = f"link -> {os.readlink(path)}" if os.path.islink(path) else open(path, "rb").read()
    return out


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference():
    """An uninterrupted 4-epoch run."""
    trainer = _trainer()
    trainer.fit(TRAIN, VAL, epochs=4)
    return trainer


@pytest.fixture
def saved(tmp_path):
    """A directory with the checkpoints of epochs 2 (previous) and 3 (latest)."""
    _trainer(tmp_path).fit(TRAIN, VAL, epochs=3)
    assert sorted(os.listdir(tmp_path)) == sorted([_ckpt.CURRENT, _ckpt.PREVIOUS])
    return tmp_path


def test_the_file_follows_the_documented_format(saved):
    # Parsed here from the format description alone (not with the library's reader).
    data = open(saved / _ckpt.CURRENT, "rb").read()
    magic, header_len, header_crc = struct.unpack_from("<8sQI", data)
    assert magic == b"RLCKPT01"
    header_bytes = data[20 : 20 + header_len]
    assert zlib.crc32(header_bytes) == header_crc
    header = json.loads(header_bytes)
    body = data[20 + header_len :]
    assert len(body) == header["body_nbytes"] and zlib.crc32(body) == header["body_crc32"]
    assert header["format"] == 1 and header["meta"]["progress"] == {"epoch": 3, "stopped": False}
    config = header["meta"]["config"]
    assert config["objective"]["name"] == "cvar(alpha=0.5)" and config["batch_size"] == 32 and config["seed"] == 0
    assert config["model"]["params"]["['l1']['kernel'].value"] == "(2, 8) float32"
    assert config["optimizer"]["state"] == "(ScaleByAdamState, EmptyState)"
    # The arrays: the latest train state of a 3-epoch run, bit for bit.
    trainer = _trainer()
    trainer.fit(TRAIN, VAL, epochs=3)
    arrays = {(a["tree"], a["path"]): a for a in header["arrays"]}
    for path, leaf in jax.tree_util.tree_flatten_with_path(trainer.state)[0]:
        entry = arrays[("state", jax.tree_util.keystr(path))]
        raw = body[entry["offset"] : entry["offset"] + entry["nbytes"]]
        stored = np.frombuffer(raw, np.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"])
        np.testing.assert_array_equal(stored, np.asarray(leaf))


def test_resume_continues_bit_for_bit(saved, reference):
    resumed = _trainer(saved)
    resumed.fit(TRAIN, VAL, epochs=4, resume=True)
    assert resumed.history.rows == reference.history.rows
    _assert_same_params(resumed.params, reference.params)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"hidden": 16},
            r"other model .*: params: \['l1'\]\['bias'\]\.value: '\(8,\) float32' in the checkpoint, "
            r"'\(16,\) float32' now",
        ),
        ({"optimizer": optax.sgd(0.05)}, r"other optimizer: .*ScaleByAdamState.* in the checkpoint, .*EmptyState"),
        ({"objective": objectives.kl(0.5)}, r"other objective: .*'cvar\(alpha=0.5\)' in the checkpoint, 'kl\(radius"),
        (
            {"optimizer": optax.inject_hyperparams(optax.adam)(learning_rate=0.05)},
            r"other optimizer: state: .*ScaleByAdamState, EmptyState.* in the checkpoint, .*InjectStatefulHyperparams",
        ),
        ({"seed": 1}, r"other seed: 0 in the checkpoint, 1 now"),
    ],
    ids=["other-shape", "other-optimizer", "other-objective", "injected-optimizer", "other-seed"],
)
def test_a_checkpoint_of_another_configuration_is_refused_and_kept(saved, kwargs, match):
    before = _files(saved)
    with pytest.raises(CheckpointError, match=match) as error:
        _trainer(saved, **kwargs).fit(TRAIN, VAL, epochs=4, resume=True)
    assert str(saved / _ckpt.CURRENT) in str(error.value)
    assert _files(saved) == before


def test_another_injected_learning_rate_is_refused(tmp_path):
    inject = optax.inject_hyperparams(optax.adam)
    _trainer(tmp_path, optimizer=inject(learning_rate=0.05)).fit(TRAIN, epochs=1)
    with pytest.raises(CheckpointError, match=r"other optimizer: initial: \.hyperparams\['learning_rate'\]: 0\.05"):
        _trainer(tmp_path, optimizer=inject(learning_rate=0.01)).fit(TRAIN, epochs=2, resume=True)


def _corrupt(path, how):
    data = open(path, "rb").read()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = b""
    elif how == "garbage":
        data = np.random.default_rng(0).bytes(len(data))
    elif how == "bit-flip":
        data = data[:-10] + bytes([data[-10] ^ 1]) + data[-9:]
    open(path, "wb").write(data)


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("truncated", r"is truncated"),
        ("empty", r"is empty \(0 bytes\)"),
        ("garbage", r"is not a robustlearn checkpoint"),
        ("bit-flip", r"is corrupted \(data checksum mismatch\)"),
    ],
)
def test_an_unreadable_checkpoint_is_a_clear_error_and_the_previous_one_is_kept(saved, reference, how, match):
    current = saved / _ckpt.CURRENT
    _corrupt(current, how)
    before = _files(saved)
    with pytest.raises(CheckpointError, match=match) as error:
        _trainer(saved).fit(TRAIN, VAL, epochs=4, resume=True)
    assert repr(str(current)) in str(error.value) and "fallback=True" in str(error.value)
    assert _files(saved) == before
    # The fallback resumes from the previous checkpoint (epoch 2) and still reproduces the run.
    checkpointer = rl.train.Checkpointer(saved, fallback=True)
    resumed = _trainer(callbacks=[checkpointer])
    resumed.fit(TRAIN, VAL, epochs=4, resume=True)
    assert resumed.history.rows == reference.history.rows
    _assert_same_params(resumed.params, reference.params)
    assert open(saved / _ckpt.CORRUPT, "rb").read() == before[_ckpt.CURRENT]  # moved aside, not deleted


def test_a_missing_latest_checkpoint_resumes_from_the_previous_one(saved, reference):
    # What a crash between the two renames of a save leaves behind.
    os.unlink(saved / _ckpt.CURRENT)
    resumed = _trainer(saved)
    resumed.fit(TRAIN, VAL, epochs=4, resume=True)
    assert resumed.history.rows == reference.history.rows


def test_a_read_only_directory_is_a_clear_error_and_loses_nothing(saved, monkeypatch):
    before = _files(saved)
    os.chmod(saved, 0o555)
    try:
        if os.geteuid() == 0:
            # root ignores permission bits: fail the private file's creation as the OS would.
            def denied(directory):
                raise PermissionError(errno.EACCES, "Permission denied")

            monkeypatch.setattr(_ckpt, "_open_private", denied)
        with pytest.raises(PermissionError, match=rf"cannot write checkpoints in '{saved}'.*nothing was written"):
            _trainer(saved).fit(TRAIN, VAL, epochs=4, resume=True)
        with pytest.raises(PermissionError, match="the existing checkpoints are kept"):
            _ckpt.write(str(saved), b"new")
    finally:
        os.chmod(saved, 0o755)
    assert _files(saved) == before
    monkeypatch.undo()
    _trainer(saved).fit(TRAIN, VAL, epochs=4, resume=True)  # still resumable


def test_links_planted_at_the_fixed_names_are_never_followed(tmp_path):
    directory, outside = tmp_path / "ckpt", tmp_path / "outside"
    directory.mkdir()
    outside.mkdir()
    victims = {}
    for name in (_ckpt.CURRENT, _ckpt.PREVIOUS, _ckpt.CORRUPT, "checkpoint.msgpack", "checkpoint.msgpack.tmp"):
        victim = outside / f"victim-{name}"
        victim.write_bytes(b"precious")
        os.symlink(victim, directory / name)
        victims[victim] = b"precious"
    _trainer(directory).fit(TRAIN, epochs=3)
    for victim, content in victims.items():
        assert victim.read_bytes() == content
    assert not os.path.islink(directory / _ckpt.CURRENT) and not os.path.islink(directory / _ckpt.PREVIOUS)
    # Reading refuses a link too, even to a valid checkpoint.
    os.replace(directory / _ckpt.CURRENT, outside / "valid.rlck")
    os.symlink(outside / "valid.rlck", directory / _ckpt.CURRENT)
    with pytest.raises(CheckpointError, match="is a symbolic link; refusing to read it"):
        _trainer(directory).fit(TRAIN, epochs=4, resume=True)


def test_resume_without_a_checkpoint_directory_is_an_error():
    with pytest.raises(ValueError, match=r"`resume=True` needs a checkpoint directory"):
        _trainer().fit(TRAIN, epochs=2, resume=True)


def test_resume_in_an_empty_directory_trains_from_scratch(tmp_path, reference):
    trainer = _trainer(tmp_path / "new")
    trainer.fit(TRAIN, VAL, epochs=4, resume=True)
    assert trainer.history.rows == reference.history.rows


def test_a_checkpoint_beyond_the_requested_epochs_is_an_error(saved):
    with pytest.raises(ValueError, match=r"holds 3 epochs, more than `epochs`=2"):
        _trainer(saved).fit(TRAIN, VAL, epochs=2, resume=True)


def test_only_process_zero_writes_and_every_process_reads(tmp_path, monkeypatch, reference):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    _trainer(tmp_path / "ckpt").fit(TRAIN, VAL, epochs=2)
    assert not os.path.exists(tmp_path / "ckpt")
    monkeypatch.undo()
    _trainer(tmp_path / "ckpt").fit(TRAIN, VAL, epochs=2)  # process 0 writes
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    resumed = _trainer(tmp_path / "ckpt")
    resumed.fit(TRAIN, VAL, epochs=4, resume=True)  # process 1 reads it
    assert resumed.history.rows == reference.history.rows


def test_an_early_stopped_run_resumes_as_stopped(tmp_path):
    def run(epochs, resume):
        trainer = _trainer(tmp_path, optimizer=optax.adam(0.5), patience=1, monitor="val_loss")
        trainer.fit(TRAIN, VAL, epochs=epochs, resume=resume)
        return trainer

    stopped = run(30, resume=False)
    assert stopped.stopped_epoch is not None and len(stopped.history) < 30
    again = run(30, resume=True)  # nothing left to train
    assert again.history.rows == stopped.history.rows
    assert again.best_epoch == stopped.best_epoch and again.stopped_epoch == stopped.stopped_epoch
    _assert_same_params(again.params, stopped.params)


def test_seed_none_draws_a_seed_and_resume_adopts_the_checkpoints(tmp_path):
    first = _trainer(tmp_path, seed=None)
    assert isinstance(first.seed, int)
    first.fit(TRAIN, epochs=2)
    full = _trainer(seed=first.seed)
    full.fit(TRAIN, epochs=3)
    resumed = _trainer(tmp_path, seed=None)
    resumed.fit(TRAIN, epochs=3, resume=True)
    assert resumed.seed == first.seed
    assert resumed.history.rows == full.history.rows


def test_prng_key_arrays_round_trip():
    keys = {"k": jax.random.key(3), "raw": jnp.arange(3.0)}
    meta, trees = _ckpt.decode(_ckpt.encode({"t": keys}, {"a": 1}), "mem")
    back = _ckpt.restore_tree(keys, trees["t"], "t", "mem")
    assert meta == {"a": 1}
    np.testing.assert_array_equal(jax.random.key_data(back["k"]), jax.random.key_data(keys["k"]))
    np.testing.assert_array_equal(back["raw"], keys["raw"])

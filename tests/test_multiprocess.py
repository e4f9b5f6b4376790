"""Multi-process training through ``jax.distributed``, on localhost.

Worker processes (``tests/_mp_worker.py``) join ``jax.distributed`` (coordinator on
127.0.0.1 at a free port, gloo CPU collectives, one CPU device each) and hold only their
shard of the data: uneven shards (27 and 34 of the 61 training rows, 11 and 15 of the 26
validation rows), so the padding of the process-local blocks is exercised. The
single-process reference runs the same worker code without ``jax.distributed`` on the
concatenated data, with the same seed, batch size and initial parameters, hence the same
global minibatch order. Everything runs in float64.

Tolerance of "equal to the single-process run": the minibatches are assembled bit-exactly
(each device contributes the bit patterns of its rows to a reduce-scatter of integers) and
every per-example computation is the same; only sums over the minibatch (the reductions,
the gradients) are split into per-device partial sums added by an all-reduce, i.e. the same
float64 additions in another order, a few ulps (1e-16 relative) per sum. 12 SGD steps with
momentum amplify this little: the parameters are checked to ``TOL = 1e-10`` (absolute, on
parameters of size ~1; measured differences are below 1e-15), the metrics to 1e-10 relative.
A wrong global reduction (e.g. the mean of per-process CVaRs) is off by ~1e-1.

The launches run once per test session (a lock file shares them between xdist workers):
two processes plus the reference (about 100 s of CPU time in all on an idle 2-core
machine). The 4-process variant is marked slow.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

import robustlearn as rl
from tests import _references as ref
from tests._mp_worker import BATCH, CUTS, KILL_EPOCH, mlp, reduction_losses
from tests.conftest import subprocess_xla_flags
from tests.strategies import CASES

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("multi-process CPU collectives (gloo) are tested on Linux/macOS", allow_module_level=True)

import fcntl  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-10
LAUNCH_TIMEOUT = 420  # seconds per launch: a loaded 2-core machine is slow; a hang must still end
OBJECTIVES = ["erm", "cvar", "kl", "group_dro", "wrm"]


# ---------------------------------------------------------------------- launching


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(n: int, out: Path, scenarios: str, *extra: str, until_killed: int | None = None) -> dict:
    """Runs ``n`` worker processes (``tests/_mp_worker.py``); see :func:`_run`.

    Returns:
        ``{"codes": [...], "results": [dict or None], "stderr": [str]}``.
    """
    port = _free_port() if n > 1 else 0
    cmds = [
        [sys.executable, "-m", "tests._mp_worker", "--process-id", str(i), "--num-processes", str(n),
         "--port", str(port), "--out", str(out), "--scenarios", scenarios, *extra]
        for i in range(n)
    ]  # fmt: skip
    codes = _run(cmds, out, ROOT, until_killed)
    results = []
    for i in range(n):
        path = out / f"result-{i}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    return {"codes": codes, "results": results, "stderr": [(out / f"stderr-{i}.txt").read_text() for i in range(n)]}


def _run(cmds: list[list[str]], out: Path, cwd: Path, until_killed: int | None = None) -> list[int]:
    """Runs the commands side by side to completion (or, with ``until_killed``, until that one dies).

    Their output goes to ``out/stdout-i.txt`` and ``out/stderr-i.txt``. Every child is
    killed in the end, whatever happens: a process left waiting in a collective for a
    dead peer must not outlive the test. Returns the exit codes.
    """
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    env["XLA_FLAGS"] = subprocess_xla_flags()  # every launch compiles like the suite (and like each other)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    # Launches side by side compile the same programs: share them (robustlearn's documented switch).
    env["ROBUSTLEARN_COMPILATION_CACHE"] = str(out.parent / "jax-cache")
    procs = []
    with contextlib.ExitStack() as files:
        try:
            for i, cmd in enumerate(cmds):
                stdout = files.enter_context(open(out / f"stdout-{i}.txt", "w"))
                stderr = files.enter_context(open(out / f"stderr-{i}.txt", "w"))
                procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout, stderr=stderr))
            deadline = time.monotonic() + LAUNCH_TIMEOUT
            failed_at = None
            while any(p.poll() is None for p in procs):
                if until_killed is not None and procs[until_killed].poll() is not None:
                    break  # the scheduler would now stop the whole job
                if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                    failed_at = time.monotonic()  # the others may wait for the dead one: a grace period
                if time.monotonic() > deadline or (failed_at is not None and time.monotonic() > failed_at + 10):
                    break
                time.sleep(0.1)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait(timeout=60)
    return [p.returncode for p in procs]


def _completed(launch: dict, what: str, scenarios: str) -> list[dict]:
    """Every process's results, which must hold ``scenarios`` (else a failure showing the processes' stderr)."""
    names = scenarios.split(",")
    for i, result in enumerate(launch["results"]):
        bad = None
        if result is None:
            bad = "no result"
        else:
            crashed = [n for n in names if isinstance(result.get(n), dict) and "crashed" in result[n]]
            missing = [n for n in names if n not in result]
            if crashed:
                bad = f"scenario {crashed[0]} crashed:\n{result[crashed[0]]['crashed']}"
            elif missing:
                bad = f"scenarios {missing} did not finish"
        if bad is not None:
            tails = "\n".join(
                f"--- process {j} (exit {code}):\n{err[-3000:]}"
                for j, (code, err) in enumerate(zip(launch["codes"], launch["stderr"], strict=True))
            )
            pytest.fail(f"{what}, process {i}: {bad}\n{tails}")
    return launch["results"]


def _once(tmp_path_factory, name: str, produce):
    """``produce(directory)`` computed once per test session, shared by xdist workers through a lock file."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the base directory of the whole session
    path = root / f"robustlearn-{name}.json"
    with open(root / f"robustlearn-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                try:
                    data = {"ok": produce(root / f"robustlearn-{name}")}
                except BaseException:
                    data = {"error": traceback.format_exc()}
                path.write_text(json.dumps(data))
            data = json.loads(path.read_text())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if "error" in data:
        pytest.fail(f"the {name} launches failed:\n{data['error']}")
    return data["ok"]


REFERENCE = "train,reductions,callbacks"
MAIN = "train,reductions,callbacks,agreement"


def _launches(directory: Path) -> dict:
    """The reference (1 process) beside 2 processes; then 2 new processes resume the killed run.

    The 2 processes run MAIN, then the scenario ``killed``, in which process 1 dies
    (SIGKILL) in the middle of epoch 4; the launch ends when it is dead (process 0,
    stuck in that epoch, is killed as a job scheduler would).
    """
    kill_dir = directory / "ckpt-killed"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        one = pool.submit(_launch, 1, directory / "one", REFERENCE, "--checkpoint-dir", str(directory / "ckpt-one"))
        two = _launch(
            2, directory / "two", f"{MAIN},killed", "--checkpoint-dir", str(directory / "ckpt-two"),
            "--kill-dir", str(kill_dir), until_killed=1,
        )  # fmt: skip
        from robustlearn._src.training import checkpoint as _ckpt

        path = str(kill_dir / _ckpt.CURRENT)
        meta = _ckpt.decode(_ckpt.read_bytes(path), path)[0] if os.path.exists(path) else None
        resumed = _launch(2, directory / "resumed", "callbacks", "--checkpoint-dir", str(kill_dir), "--resume")
        return {
            "one": one.result(),
            "two": two,
            "killed_checkpoint_epoch": None if meta is None else meta["progress"]["epoch"],
            "resumed": resumed,
        }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = _once(tmp_path_factory, "mp2", _launches)
    return {
        "one": _completed(data["one"], "single-process reference", REFERENCE)[0],
        "two": _completed(data["two"], "2 processes", MAIN),
        "two_launch": data["two"],
        "killed_checkpoint_epoch": data["killed_checkpoint_epoch"],
        "resumed": data["resumed"],
    }


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays])


# ---------------------------------------------------------------------- training equals one process


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_processes_train_like_one(runs, objective):
    _check_training(runs["two"], runs["one"], objective)


def _check_training(procs: list[dict], reference: dict, objective: str) -> None:
    one = reference["train"][objective]
    procs = [r["train"][objective] for r in procs]
    expected = _flat(one["params"])
    for p in procs:
        # Replicated parameters: bit-identical on every process.
        np.testing.assert_array_equal(_flat(p["params"]), _flat(procs[0]["params"]))
    got = _flat(procs[0]["params"])
    assert np.max(np.abs(got - expected)) <= TOL
    # The objectives train differently (a mix-up of objectives would not pass).
    assert np.max(np.abs(got - _flat(reference["train"]["erm"]["params"]))) > 1e-3 or objective == "erm"
    assert len(procs[0]["history"]) == len(one["history"]) == 3
    for row_mp, row_one in zip(procs[0]["history"], one["history"], strict=True):
        assert row_mp.keys() == row_one.keys()
        for key, value in row_one.items():
            assert row_mp[key] == pytest.approx(value, rel=TOL, abs=TOL), key


def test_global_data_on_every_process_trains_like_one(runs):
    """The default: every process passes the whole dataset (checked identical by a hash)."""
    expected = _flat(runs["one"]["train"]["erm"]["params"])
    for r in runs["two"]:
        assert np.max(np.abs(_flat(r["train"]["erm_global_data"]["params"]) - expected)) <= TOL


def test_shards_are_uneven():
    """The test data exercise the padding of process-local blocks and of the last minibatch."""
    sizes = np.diff([0, *CUTS[2], 61])
    assert len(set(sizes)) > 1 and 61 % BATCH != 0


# ---------------------------------------------------------------------- reductions across processes


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reduction_of_a_batch_sharded_across_processes_is_global(runs, case):
    _check_reduction(runs["two"], runs["one"]["reductions"][case.name], case)


def _check_reduction(procs: list[dict], one: dict, case) -> None:
    losses = reduction_losses()
    results = [r["reductions"][case.name] for r in procs]
    assert all(r["devices"] == len(procs) for r in results)
    value = results[0]["value"]
    assert all(r["value"] == value for r in results)  # the same scalar on every process
    grad = np.concatenate([r["grad"] for r in results])  # the processes' shards, in process order
    scale = max(1.0, float(np.max(np.abs(losses))))
    # Against the single-process run on the concatenated losses: value, and the gradient
    # is the global worst-case distribution.
    assert abs(value - one["value"]) <= 1e-12 * scale
    np.testing.assert_allclose(grad, one["weights"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(one["grad"], one["weights"], rtol=0, atol=1e-12)
    assert abs(grad.sum() - 1) <= 1e-12 and np.all(grad >= -1e-15)
    # Against independent references where there is one (a linear program, duals)...
    independent = {
        "erm": lambda v: float(np.mean(v)),
        "cvar": lambda v: ref.cvar(v, np.full(v.size, 1 / v.size), case.hyper["alpha"]),
        "kl": lambda v: ref.kl_dual_upper(v, np.full(v.size, 1 / v.size), case.hyper["radius"]),
        "chi_square": lambda v: ref.cressie_read_dual_upper(v, np.full(v.size, 1 / v.size), case.hyper["radius"], 2.0),
    }
    if case.name in independent:
        reference = independent[case.name]
        assert abs(value - reference(losses)) <= 1e-6 * scale
        # ... which is not the mean of the processes' own values (a per-process reduction).
        per_process = np.mean([reference(part) for part in np.split(losses, len(procs))])
        assert case.name == "erm" or abs(value - per_process) > 1e-2


# ---------------------------------------------------------------------- callbacks, checkpoints


def test_validation_and_early_stopping_decide_the_same_everywhere(runs):
    one = runs["one"]["callbacks"]
    procs = [r["callbacks"] for r in runs["two"]]
    assert procs[0]["history"] == procs[1]["history"]  # identical rows, bit for bit
    for key in ("stopped_epoch", "best_epoch", "restored_epoch", "notes"):
        assert procs[0][key] == procs[1][key] == one[key], key
    # A real decision: stopped before the last epoch, restored an earlier one.
    assert one["best_epoch"] < one["stopped_epoch"] < 12
    for row_mp, row_one in zip(procs[0]["history"], one["history"], strict=True):
        for key, value in row_one.items():
            assert row_mp[key] == pytest.approx(value, rel=TOL, abs=TOL), key
    assert np.max(np.abs(_flat(procs[0]["params"]) - _flat(one["params"]))) <= TOL


def test_only_process_zero_prints_progress(runs):
    first, second = runs["two_launch"]["stderr"]
    epochs = len(runs["two"][0]["callbacks"]["history"])
    # One line per epoch of the uninterrupted run (and of the killed run, up to epoch 3).
    assert len(re.findall(r"^epoch +\d+/12 ", first, re.M)) == epochs + KILL_EPOCH - 1
    assert "early stopping after epoch" in first and "restored the parameters" in first
    assert not re.search(r"^epoch +\d+/12 ", second, re.M) and "early stopping" not in second


def test_checkpoints_are_written_by_process_zero_only(runs):
    procs = [r["callbacks"] for r in runs["two"]]
    epochs = len(procs[0]["history"])
    assert procs[0]["writes"] == epochs and procs[1]["writes"] == 0
    assert procs[0]["files"] == ["checkpoint.prev.rlck", "checkpoint.rlck"]  # no temporary left


def test_resume_after_a_process_is_killed_mid_epoch(runs):
    killed = runs["two_launch"]
    assert killed["codes"][1] == -signal.SIGKILL, killed["stderr"][1][-2000:]
    assert "killing myself mid-epoch" in killed["stderr"][1]
    # No process finished that run (process 0 may notice the dead peer in a collective and raise).
    assert all("killed" not in r or "crashed" in r["killed"] for r in killed["results"])
    # The last complete epoch, written by process 0: epoch 4 never ended.
    assert runs["killed_checkpoint_epoch"] == KILL_EPOCH - 1
    resumed = [r["callbacks"] for r in _completed(runs["resumed"], "resumed run", "callbacks")]
    uninterrupted = runs["two"][0]["callbacks"]
    for r in resumed:
        assert r["start_epoch"] == KILL_EPOCH  # every process restored the checkpoint
        assert r["history"] == uninterrupted["history"]
        for key in ("stopped_epoch", "best_epoch", "restored_epoch", "notes"):
            assert r[key] == uninterrupted[key], key
        # Bit-identical: the restored state is exact and the computation deterministic.
        np.testing.assert_array_equal(_flat(r["params"]), _flat(uninterrupted["params"]))
        np.testing.assert_array_equal(_flat(r["last_state"]), _flat(uninterrupted["last_state"]))
    assert resumed[0]["writes"] == len(uninterrupted["history"]) - (KILL_EPOCH - 1) and resumed[1]["writes"] == 0


# ---------------------------------------------------------------------- agreement


def test_processes_that_disagree_fail_together(runs):
    first, second = (r["agreement"] for r in runs["two"])
    for case in ("seed", "global_data"):
        assert first[case]["type"] == second[case]["type"] == "ValueError", case
        assert "every process must call `fit` with the same arguments" in first[case]["message"]
    message = first["global_data"]["message"]
    assert "data of `train`" in message and "process_local=True" in message
    # A check failing on process 1 only: its own error there, a RuntimeError naming it on process 0.
    assert second["nan_on_one"]["type"] == "ValueError" and "NaN" in second["nan_on_one"]["message"]
    assert first["nan_on_one"]["type"] == "RuntimeError" and "[1]" in first["nan_on_one"]["message"]
    # A checkpoint directory that is not shared: process 1 finds nothing to resume from.
    for r in (first, second):
        assert r["checkpoint"]["type"] == "CheckpointError"
        assert "different checkpoints" in r["checkpoint"]["message"]


def test_a_drawn_seed_is_process_zeros(runs):
    first, second = (r["agreement"] for r in runs["two"])
    assert first["drawn_seed"] == second["drawn_seed"]


def test_predict_is_local_to_each_process(runs):
    first, second = (r["agreement"]["predict"] for r in runs["two"])
    assert first["x"] != second["x"]
    np.testing.assert_array_equal(_flat(first["params"]), _flat(second["params"]))
    names = ["b1", "b2", "w1", "w2"]  # jax.tree.leaves order of the params dict
    for r in (first, second):
        p = {k: np.asarray(v) for k, v in zip(names, r["params"], strict=True)}
        expected = np.tanh(np.asarray(r["x"]) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]  # the MLP, in numpy
        np.testing.assert_allclose(r["out"], expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- in this process


def test_process_local_must_be_a_bool():
    import optax

    from tests._mp_worker import dataset, init_params

    t = rl.train.Trainer(
        mlp, optax.softmax_cross_entropy_with_integer_labels, rl.objectives.erm(), optax.sgd(0.1),
        params=init_params(), batch_size=BATCH, verbose=False,
    )  # fmt: skip
    with pytest.raises(TypeError, match="process_local"):
        t.fit(dataset(61, 0), epochs=1, process_local=1)


def _fake_mesh(owners):
    from types import SimpleNamespace

    return SimpleNamespace(devices=np.array([SimpleNamespace(process_index=p) for p in owners], dtype=object))


def test_a_mesh_must_hold_every_process_in_one_block(monkeypatch):
    import jax

    from robustlearn._src.training import distributed

    monkeypatch.setattr(jax, "process_count", lambda: 3)
    distributed.check_mesh(_fake_mesh([0, 0, 1, 1, 2, 2]))
    distributed.check_mesh(_fake_mesh([1, 1]))  # this process only: no collective
    with pytest.raises(ValueError, match=r"spans processes \[0, 1\] but not \[2\]"):
        distributed.check_mesh(_fake_mesh([0, 1]))
    with pytest.raises(ValueError, match="devices of process 0 are not adjacent"):
        distributed.check_mesh(_fake_mesh([0, 1, 0, 2]))


def test_layout_of_uneven_process_local_rows():
    """3 processes with 2, 1 and 2 devices holding 5, 0 and 4 rows: blocks of 3 rows per device."""
    from robustlearn._src.training import distributed

    lay = distributed.layout(_fake_mesh([0, 0, 1, 2, 2]), [5, 0, 4])
    assert lay.per_device == 3 and lay.starts == (0, 6, 9) and lay.blocks == (6, 3, 6)
    assert lay.total == 9 and lay.padded
    # Example i of the concatenation lives at row positions[i] of the padded global array.
    np.testing.assert_array_equal(distributed.positions(lay), [0, 1, 2, 3, 4, 9, 10, 11, 12])
    assert not distributed.layout(_fake_mesh([0, 1]), [4, 4]).padded


# ---------------------------------------------------------------------- 4 processes


@pytest.fixture(scope="module")
def runs4(tmp_path_factory):
    def launches(directory):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            one = pool.submit(_launch, 1, directory / "one", "train,reductions")
            four = _launch(4, directory / "four", "train,reductions")
            return {"one": one.result(), "four": four}

    data = _once(tmp_path_factory, "mp4", launches)
    return {
        "one": _completed(data["one"], "single-process reference", "train,reductions")[0],
        "four": _completed(data["four"], "4 processes", "train,reductions"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_four_processes_train_like_one(runs4, objective):
    _check_training(runs4["four"], runs4["one"], objective)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reduction_sharded_across_four_processes_is_global(runs4, case):
    _check_reduction(runs4["four"], runs4["one"]["reductions"][case.name], case)


# ---------------------------------------------------------------------- the documented example


@pytest.mark.slow
def test_documented_two_process_example_runs(tmp_path):
    """The script and command lines of docs/training.md, as written (2 processes)."""
    text = (ROOT / "docs" / "training.md").read_text()
    script = re.search(r"```python\n(# train_two_processes\.py.*?)```", text, re.S).group(1)
    commands = re.search(r"```bash\n(python train_two_processes\.py.*?)```", text, re.S).group(1)
    assert commands.count("python train_two_processes.py") == 2 and "0 2 12355" in commands
    (tmp_path / "train_two_processes.py").write_text(script)
    port = str(_free_port())  # instead of the documented 12355, which may be taken here
    cmds = [[sys.executable, "train_two_processes.py", str(i), "2", port] for i in range(2)]
    assert _run(cmds, tmp_path / "logs", tmp_path) == [0, 0]
    printed = [(tmp_path / "logs" / f"stdout-{i}.txt").read_text() for i in range(2)]
    progress = [(tmp_path / "logs" / f"stderr-{i}.txt").read_text() for i in range(2)]
    tables = [re.findall(r"^\|.*\|$", text, re.M) for text in printed]  # (gloo also prints a line)
    assert tables[0][0] == "| epoch | train_objective |" and len(tables[0]) == 2 + 5 and tables[1] == []
    assert len(re.findall(r"^epoch +\d/5 ", progress[0], re.M)) == 5
    assert not re.search(r"^epoch ", progress[1], re.M)
    assert (tmp_path / "checkpoints" / "checkpoint.rlck").is_file()

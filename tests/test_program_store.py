"""The program store: fit_linear's solvers kept on disk ready to run, keyed before tracing."""

import collections
import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robustlearn as rl
from robustlearn import objectives
from robustlearn._src import program_store
from robustlearn._src.reductions import engine
from robustlearn._src.training import linear as _linear
from tests.conftest import subprocess_xla_flags


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The program store in a fresh directory, with nothing held in memory."""
    monkeypatch.setattr(program_store, "_directory", lambda: tmp_path)
    monkeypatch.setattr(program_store, "_loaded", collections.OrderedDict())
    monkeypatch.setattr(program_store, "stats", dict.fromkeys(program_store.stats, 0))
    return tmp_path


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ np.array([2.0, -1.0, 0.5])))).astype(np.int32)
    return x, y


def _same(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_hyperparameters_share_a_stored_program_and_shapes_do_not(store):
    x, y = _data(41)
    a = rl.train.fit_linear(x, y, objectives.cvar(0.3))
    assert len(list(store.iterdir())) == 1  # the smoothed solve and the exact value: one program
    b = rl.train.fit_linear(x, y, objectives.cvar(0.5))
    assert len(list(store.iterdir())) == 1
    assert program_store.stats == {"stored": 1, "loaded": 0, "memory": 1, "bypassed": 0, "quick": 0}
    assert float(a.value) != float(b.value)
    rl.train.fit_linear(*_data(42), objectives.cvar(0.5))
    assert len(list(store.iterdir())) == 2


def test_stored_program_gives_the_jitted_result_bit_for_bit(store, monkeypatch):
    x, y = _data(43)
    objective = objectives.chi_square(0.7)
    stored = rl.train.fit_linear(x, y, objective)
    program_store.clear_memory()
    loaded = rl.train.fit_linear(x, y, objective)  # from disk
    assert program_store.stats["loaded"] == 1
    monkeypatch.setattr(program_store, "_directory", lambda: None)
    monkeypatch.setattr(_linear, "QUICK_MAX_ELEMENTS", -1)  # XLA's default options, as stored
    jitted = rl.train.fit_linear(x, y, objective)
    _same(stored, jitted)
    _same(loaded, jitted)


def _second_moment():
    # Defined outside robustlearn: its globals could change between runs without its code.
    def loss(loss_fn, params, batch, state, key):
        value = jnp.mean(loss_fn(params, batch) ** 2)
        return value, (state, {})

    return objectives.Objective(name="second_moment", init=lambda key: (), loss=loss)


def test_objectives_defined_outside_robustlearn_are_never_stored(store):
    rl.train.fit_linear(*_data(44), _second_moment())
    assert program_store.stats["bypassed"] == 1
    assert not list(store.iterdir())


def test_fingerprint_is_by_value_for_robustlearn_and_refuses_the_rest():
    fp = program_store.fingerprint
    assert fp(objectives.cvar(0.3).loss) == fp(objectives.cvar(0.9).loss)
    assert fp(objectives.cvar(0.3).loss) != fp(objectives.kl(0.3).loss)
    assert fp(np.arange(3.0)) == fp(np.arange(3.0)) != fp(np.arange(4.0))
    assert fp((1, "a", None)) != fp((1, "b", None))
    for unknown in (lambda v: v, jnp.arange(3.0), object(), _second_moment().loss):
        with pytest.raises(program_store._NotStable):
            fp(unknown)


def test_key_changes_with_the_solve_path_and_the_settings():
    base = program_store._environment()
    with engine._forcing("loop_free", not engine.loop_free()):
        assert program_store._environment() != base
    with jax.enable_x64(False):
        assert program_store._environment() != base
    assert program_store._environment() == base


def test_a_damaged_entry_warns_and_is_compiled_again(store):
    x, y = _data(45)
    objective = objectives.kl(0.2)
    first = rl.train.fit_linear(x, y, objective)
    (path,) = store.iterdir()
    path.write_bytes(b"not a program")
    program_store.clear_memory()
    with pytest.warns(UserWarning, match="unreadable stored program"):
        again = rl.train.fit_linear(x, y, objective)
    _same(first, again)
    program_store.clear_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rl.train.fit_linear(x, y, objective)  # the rewritten entry loads cleanly
    assert program_store.stats["loaded"] == 1


def test_an_entry_for_another_key_is_not_used(store):
    x, y = _data(46)
    objective = objectives.kl(0.2)
    first = rl.train.fit_linear(x, y, objective)
    (path,) = store.iterdir()
    _, blob, in_tree, out_tree = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps(("another key", blob, in_tree, out_tree)))
    program_store.clear_memory()
    again = rl.train.fit_linear(x, y, objective)
    assert program_store.stats["loaded"] == 0 and program_store.stats["stored"] == 2
    _same(first, again)


def test_seed_zero_key_is_prngkey_zero():
    np.testing.assert_array_equal(np.asarray(_linear._seed_zero_key()), np.asarray(jax.random.PRNGKey(0)))


_FRESH = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import robustlearn as rl
    from robustlearn._src import program_store
    cache, mode = sys.argv[1], sys.argv[2]
    rl.enable_compilation_cache(cache)
    if mode == "jax-cache-only":
        program_store._directory = lambda: None
    traces = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, d, **k: traces.append(name) if name.endswith("jaxpr_trace_duration") else None)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)); y = (rng.random(50) < 0.5).astype(np.int32)
    sol = rl.train.fit_linear(x, y, rl.objectives.cvar(0.4))
    print(json.dumps({"stats": program_store.stats, "traces": len(traces),
                      "w": [float(v).hex() for v in sol.params["w"]], "value": float(sol.value).hex()}))
    """
)


def test_a_fresh_process_runs_the_stored_program_without_tracing(tmp_path):
    # The first process fills JAX's own cache only; the second finds the solver there but
    # must store a program compiled afresh (one loaded from JAX's cache serializes without
    # its code on XLA:CPU); the third runs the stored programs without tracing anything.
    env = {k: v for k, v in os.environ.items() if k != "ROBUSTLEARN_COMPILATION_CACHE"}
    env["XLA_FLAGS"] = subprocess_xla_flags()

    def fresh(mode):
        cmd = [sys.executable, "-c", _FRESH, str(tmp_path / "cache"), mode]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    jax_only, storing, loading = fresh("jax-cache-only"), fresh("store"), fresh("store")
    assert jax_only["stats"]["stored"] == 0
    assert storing["stats"]["stored"] == 1
    assert loading["stats"] == {"stored": 0, "loaded": 1, "memory": 0, "bypassed": 0, "quick": 0}
    assert loading["traces"] == 0
    for run in (storing, loading):
        assert (run["w"], run["value"]) == (jax_only["w"], jax_only["value"])


def test_without_a_cache_the_solver_is_compiled_for_compilation_speed(store, monkeypatch):
    # No persistent cache: every process compiles, so fit_linear asks for program_store's
    # quick options (up to QUICK_MAX_ELEMENTS entries of x); with the cache, XLA's defaults.
    x, y = _data(46)
    rl.train.fit_linear(x, y, objectives.kl(0.4))
    assert program_store.stats["stored"] == 1 and program_store.stats["quick"] == 0
    monkeypatch.setattr(program_store, "_directory", lambda: None)
    rl.train.fit_linear(x, y, objectives.kl(0.4))
    assert program_store.stats["quick"] == 1
    monkeypatch.setattr(_linear, "QUICK_MAX_ELEMENTS", x.size - 1)
    rl.train.fit_linear(x, y, objectives.kl(0.4))
    assert program_store.stats["quick"] == 1
    # Up to 2^20 entries also LLVM without optimizations, up to 2^24 with them, then the defaults.
    monkeypatch.undo()
    assert _linear._quick_solver(2**20) is _linear._solve_quickest
    assert _linear._quick_solver(2**20 + 1) is _linear._solve_quick
    assert _linear._quick_solver(2**24 + 1) is None
    assert program_store.QUICKEST_OPTIONS == program_store.QUICK_OPTIONS | {"xla_backend_optimization_level": 0}


def test_an_xla_without_the_quick_options_gets_its_defaults(monkeypatch):
    # XLAs that no longer have an option reject the compilation; the call then compiles with
    # the defaults, and later calls do not try again.
    monkeypatch.setattr(program_store, "_directory", lambda: None)
    monkeypatch.setattr(program_store, "_quick_accepted", None)
    calls = []

    def f(x):
        calls.append(1)  # once per trace
        return jnp.sum(jnp.exp(x))

    default = jax.jit(f)
    rejected = jax.jit(f, compiler_options={"xla_no_such_option_in_any_xla": True})
    x = jnp.arange(5.0)
    out = program_store.call(default, (x,), {}, quick=rejected)
    assert float(out) == pytest.approx(float(np.exp(np.arange(5.0)).sum()))
    assert program_store._quick_accepted is False
    traces = len(calls)
    program_store.call(default, (x + 1,), {}, quick=rejected)
    assert len(calls) == traces  # the default program, from jax.jit's cache; no new attempt
    # Another compilation error is the caller's: raised, and the options stay accepted.
    monkeypatch.setattr(program_store, "_quick_accepted", None)
    invalid = jax.jit(f, compiler_options={"xla_backend_optimization_level": "high"})
    with pytest.raises(jax.errors.JaxRuntimeError, match="not a valid int"):
        program_store.call(default, (x,), {}, quick=invalid)
    assert program_store._quick_accepted is None

"""The persistent compilation cache: one call or one environment variable, never behind the user's back."""

import os
import subprocess
import sys

PROBE = (
    "import jax, jax.numpy as jnp, robustlearn as rl; "
    "print(jax.config.jax_compilation_cache_dir); "
    "rl.cvar(jnp.arange(7.0), 0.5).block_until_ready()"
)


def _run(env_extra, code=PROBE):
    env = {k: v for k, v in os.environ.items() if k != "ROBUSTLEARN_COMPILATION_CACHE"} | env_extra
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return out.stdout.strip().splitlines()[0]


def test_off_unless_asked(tmp_path):
    assert _run({"XDG_CACHE_HOME": str(tmp_path)}) == "None"
    assert not any(tmp_path.iterdir())


def test_environment_variable_turns_it_on_and_programs_are_stored(tmp_path):
    cache = tmp_path / "cache"
    assert _run({"ROBUSTLEARN_COMPILATION_CACHE": str(cache)}) == str(cache)
    assert any(cache.iterdir()), "no compiled program was written"


def test_default_directory_follows_xdg(tmp_path):
    assert _run({"ROBUSTLEARN_COMPILATION_CACHE": "1", "XDG_CACHE_HOME": str(tmp_path)}) == str(
        tmp_path / "robustlearn" / "jax"
    )


def test_a_directory_the_user_set_is_kept(tmp_path):
    code = (
        f"import jax; jax.config.update('jax_compilation_cache_dir', {str(tmp_path / 'mine')!r}); "
        f"import robustlearn as rl; print(rl.enable_compilation_cache({str(tmp_path / 'other')!r}))"
    )
    assert _run({}, code) == str(tmp_path / "mine")

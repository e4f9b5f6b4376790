"""Docs hygiene: every public name is documented, docstrings are clean, imports stay light."""

import importlib
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import robustlearn as rl

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMESPACES = ["robustlearn", *(f"robustlearn.{ns}" for ns in rl._NAMESPACES)]
# Control characters other than newline: what a non-raw docstring makes of \b, \v, \t, \r ...
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def _public_objects():
    for ns in NAMESPACES:
        module = importlib.import_module(ns)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            yield f"{ns}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                        yield f"{ns}.{name}.{attr}", member


def test_public_docstrings_have_no_control_characters():
    bad = [name for name, obj in _public_objects() if CONTROL.search(inspect.getdoc(obj) or "")]
    assert not bad, f"control characters in the docstrings of {bad} (use r-strings for LaTeX)"


def test_every_exported_name_appears_in_the_api_reference():
    documented = set()
    for page in (ROOT / "docs").glob("*.md"):
        documented |= set(re.findall(r"^::: (robustlearn[\w.]*)", page.read_text(), re.M))
    missing = []
    for ns in NAMESPACES:
        module = importlib.import_module(ns)
        for name in module.__all__:
            if inspect.ismodule(getattr(module, name)):
                continue
            if f"{ns}.{name}" not in documented:
                missing.append(f"{ns}.{name}")
    assert not missing, f"exported but not in any `::: name` block of docs/: {missing}"


def test_every_registered_reduction_has_its_public_functions_and_objective():
    for record in rl.REDUCTIONS.values():
        for fn in (getattr(rl, record.name), getattr(rl, f"{record.name}_weights")):
            params = list(inspect.signature(fn).parameters)
            assert params[: 1 + len(record.hyper)] == ["losses", *record.hyper_names], fn
            assert params[1 + len(record.hyper) :] == ["weights", "where", "axis"], fn
        factory = getattr(rl.objectives, record.name)
        assert list(inspect.signature(factory).parameters) == list(record.hyper_names)


@pytest.mark.parametrize(
    "code", ["import robustlearn", "import robustlearn as rl, jax.numpy as jnp; rl.cvar(jnp.ones(3), 0.5)"]
)
def test_reductions_do_not_import_flax(code):
    # A drop-in reduction must not pay for flax (~0.4 s) or the optional extras.
    probe = (
        f"{code}; import sys; print(sorted(m for m in ('flax', 'optax', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_missing_extra_names_the_install_command(monkeypatch):
    from robustlearn._src import optional

    monkeypatch.setattr(optional.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r'pip install "robustlearn\[sklearn\]"'):
        optional.require("sklearn", "scikit-learn", "sklearn")


def test_fit_linear_does_not_import_flax():
    # The full-batch solver (and so the estimators' linear models' first fit) skips flax.
    probe = (
        "import robustlearn as rl, numpy as np; "
        "rl.train.fit_linear(np.eye(3), np.array([0, 1, 0]), rl.objectives.erm(), l2=0.1); "
        "import sys; print('flax' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stdout + out.stderr

"""Guards requirements.lock: everything the runtime imports is pinned there, and every shipped workflow validates.

`make demo` runs this file as a script in the runtime venv (before the test lock is installed), so a runtime import
missing from requirements.lock fails the first command a newcomer types and CI's first step. `make test` collects it
again: the import probe runs in a fresh interpreter that loads only Refinery's own modules, so the test packages
installed beside them cannot hide a missing pin. Only the standard library is used here (pytest is not installed in
the runtime venv).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages", "storage", "schemas", "api")

# Imports every module of the runtime packages and every third-party module they import lazily (inside functions),
# with every module that no requirements.lock distribution provides made unimportable: the test packages installed in
# the same venv then behave as absent (optional imports fall back, hard ones fail), as in the runtime venv.
PROBE = r"""
import importlib, importlib.abc, json, re, sys, pkgutil
from importlib.metadata import packages_distributions
packages, lazy, pins = json.loads(sys.argv[1])
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
providers = packages_distributions()
blocked = {m for m, ds in providers.items() if m not in packages and not any(norm(d) in pins for d in ds)}

class Unpinned(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r} (its distribution is not in requirements.lock)")
        return None

sys.meta_path.insert(0, Unpinned())
failed = {}
for name in [f"{p}.{i.name}" for p in packages for i in pkgutil.iter_modules([p])] + lazy:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
loaded = sorted({m.split(".")[0] for m in list(sys.modules)} - set(sys.stdlib_module_names) - set(packages))
print(json.dumps({"failed": failed, "dists": {m: providers.get(m, []) for m in loaded}}))
"""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: Path) -> dict[str, str]:
    """Distribution name (normalised) -> pinned version, from a pip lock file of `name==version` lines."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_normalise(name.split("[")[0])] = version
    return pins


def lazy_third_party_imports() -> list[str]:
    """Top-level third-party modules imported anywhere in the runtime packages' source, including inside functions."""
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return sorted(names - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"})


def probe_runtime_imports() -> dict:
    pins = sorted(pinned(ROOT / "requirements.lock"))
    argument = json.dumps([list(PACKAGES), lazy_third_party_imports(), pins])
    result = subprocess.run(
        [sys.executable, "-c", PROBE, argument], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"import probe crashed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_runtime_module_imports_and_its_distributions_are_pinned_in_requirements_lock() -> None:
    report = probe_runtime_imports()
    assert not report["failed"], "modules that do not import: " + "; ".join(
        f"{name}: {error}" for name, error in report["failed"].items()
    )
    pins = pinned(ROOT / "requirements.lock")
    unpinned = {
        module: dists
        for module, dists in report["dists"].items()
        if dists and not any(_normalise(dist) in pins for dist in dists)
    }
    assert not unpinned, f"imported at run time but missing from requirements.lock: {unpinned}"


def test_test_lock_does_not_repeat_runtime_pins() -> None:
    runtime, test = pinned(ROOT / "requirements.lock"), pinned(ROOT / "requirements-test.lock")
    assert not set(runtime) & set(test), f"pinned in both locks: {sorted(set(runtime) & set(test))}"


def test_every_shipped_workflow_validates() -> None:
    refinery = Path(sys.executable).with_name("refinery")
    command = [str(refinery)] if refinery.exists() else [sys.executable, "-m", "pipeline.cli"]
    for spec in sorted((ROOT / "workflows").glob("*.yaml")):
        result = subprocess.run(
            [*command, "validate", str(spec)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{spec.name}: {result.stdout}{result.stderr}"


if __name__ == "__main__":
    for check in (
        test_every_runtime_module_imports_and_its_distributions_are_pinned_in_requirements_lock,
        test_test_lock_does_not_repeat_runtime_pins,
        test_every_shipped_workflow_validates,
    ):
        check()
        print(f"ok  {check.__name__}")

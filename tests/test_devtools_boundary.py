"""The local dev stack (devtools/) stays out of the gateway: no module under app/ imports
it, eagerly or inside a function, and the `imagegate` distribution does not ship it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Imports every module of the app package, in a fresh interpreter run from the repository
# root (so devtools is importable there), then lists what of the dev stack got loaded.
PROBE = """
import importlib, importlib.util, json, pkgutil, sys
import app, app.cli, app.main
modules = [info.name for info in pkgutil.walk_packages(app.__path__, "app.")]
for name in modules:
    importlib.import_module(name)
print(json.dumps({
    "modules": modules,
    "devtools_importable": importlib.util.find_spec("devtools") is not None,
    "loaded": sorted(
        name for name in sys.modules
        if name.split(".")[0] == "devtools" or name.startswith("app.devstack")
    ),
}))
"""


def _is_devtools(module: str) -> bool:
    return module == "devtools" or module.startswith("devtools.")


def test_importing_every_app_module_loads_no_dev_stack_module() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["loaded"] == []
    assert {"app.main", "app.cli", "app.db.engine"} <= set(report["modules"])
    assert report["devtools_importable"]  # it could have been imported; it was not


def test_no_module_under_app_imports_devtools_even_lazily() -> None:
    offenders: list[str] = []
    for path in sorted((REPO / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if _is_devtools(n)
            ]
    assert offenders == []
    assert not (REPO / "app" / "devstack.py").exists()


def test_the_distribution_packages_app_only() -> None:
    """What `pip install .` (and the Dockerfile's `pip install -e .`) would package:
    setuptools matches `include` against package names with fnmatch."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert (REPO / "devtools" / "__init__.py").is_file()  # a package it could pick up
    for name in ("devtools", "devtools.stack", "devtools.postgres"):
        assert not any(fnmatchcase(name, pattern) for pattern in include), (name, include)
    assert any(fnmatchcase("app.db", pattern) for pattern in include)

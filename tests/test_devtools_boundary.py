"""The local dev stack (devtools/) stays out of the gateway: importing every app module
loads none of it, and the `imagegate` distribution does not ship it. That no module under
app/ imports it, eagerly or inside a function, is an import-linter contract
(`.venv/bin/lint-imports`, pyproject.toml)."""

from __future__ import annotations

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


def test_the_distribution_packages_app_only() -> None:
    """What `pip install .` (and the Dockerfile's `pip install -e .`) would package:
    setuptools matches `include` against package names with fnmatch."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert (REPO / "devtools" / "__init__.py").is_file()  # a package it could pick up
    for name in ("devtools", "devtools.stack", "devtools.postgres"):
        assert not any(fnmatchcase(name, pattern) for pattern in include), (name, include)
    assert any(fnmatchcase("app.db", pattern) for pattern in include)

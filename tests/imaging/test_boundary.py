"""app/imaging is a leaf: it imports nothing from app but itself (stdlib and Pillow only).

Check it with `.venv/bin/pytest -q tests/imaging`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import app.imaging

PACKAGE = Path(app.imaging.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the package
                names.add("app.imaging")
            elif node.module is not None:
                names.add(node.module)
    return names


def test_imaging_imports_nothing_above_it() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 4  # aspect, decode, formats, webp: the walk sees the package
    crossing = {
        f"{path.name}: {name}"
        for path in modules
        for name in _imports(path)
        if (name == "app" or name.startswith("app."))
        and name != "app.imaging"
        and not name.startswith("app.imaging.")
    }
    assert crossing == set()


def test_the_walk_sees_an_import_from_above(tmp_path: Path) -> None:
    # The check above passes only if _imports really finds app imports.
    module = tmp_path / "m.py"
    module.write_text("from app.storage.base import ImageStore\nimport app.settings\n")
    assert _imports(module) == {"app.storage.base", "app.settings"}

"""backends/ sits low: it imports only errors, config, fsinfo, environment, confine and
locations (a leaf that imports only errors) and itself, never the coordinator, workers, index,
repo or hub (STYLE.md 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import orbit_fast.backends

ALLOWED = {"orbit_fast.errors", "orbit_fast.config", "orbit_fast.fsinfo", "orbit_fast.environment",
           "orbit_fast.confine", "orbit_fast.locations"}  # fmt: skip


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        out += [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
            else [])  # fmt: skip
    return out


def test_backends_import_only_what_lies_below_them() -> None:
    root = Path(orbit_fast.backends.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        for name in _imports(path):
            if (name == "orbit_fast" or name.startswith("orbit_fast.")) and not (
                    name in ALLOWED or name.startswith("orbit_fast.backends")):  # fmt: skip
                wrong.append(f"{path.relative_to(root)}: {name}")
    assert not wrong
    assert len(list(root.rglob("*.py"))) >= 10  # the walk saw the package, smb/ included


def test_confine_imports_only_the_kernels() -> None:
    """confine.py lies below the backends (the local store is built on it): it needs only the
    scan kernel's path resolution."""
    path = Path(orbit_fast.backends.__file__).parent.parent / "confine.py"
    assert [n for n in _imports(path) if n.split(".")[0] == "orbit_fast"] == [
        "orbit_fast._native"]

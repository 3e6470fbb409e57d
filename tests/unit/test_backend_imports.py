"""backends/ sits low: it imports only errors, config, fsinfo, environment and locations (a
leaf that imports only errors) and itself,
never the coordinator, workers, index, repo or hub (STYLE.md 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import orbit_fast.backends

ALLOWED = {"orbit_fast.errors", "orbit_fast.config", "orbit_fast.fsinfo", "orbit_fast.environment",
           "orbit_fast.locations"}


def test_backends_import_only_what_lies_below_them() -> None:
    root = Path(orbit_fast.backends.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                else [])  # fmt: skip
            for name in names:
                if (name == "orbit_fast" or name.startswith("orbit_fast.")) and not (
                        name in ALLOWED or name.startswith("orbit_fast.backends")):  # fmt: skip
                    wrong.append(f"{path.relative_to(root)}: {name}")
    assert not wrong
    assert len(list(root.rglob("*.py"))) >= 10  # the walk saw the package, smb/ included

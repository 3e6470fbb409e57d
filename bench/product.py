"""The product as the end-to-end benchmarks run it: the installed CLI, bytecode compiled.

`pip install .` (the README's install) compiles every module's bytecode. An editable install
under PYTHONDONTWRITEBYTECODE=1, which our machines set, compiles orbit_fast's modules from
source again in every process: the coordinator and each worker pay it on every run, a fixed
cost no user pays that skews short runs against single-binary peers like rclone.
"""

from __future__ import annotations

import compileall
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORBIT = str(Path(sys.executable).with_name("orbit-fast"))


def commit() -> str:
    """The short commit measured, for the result files."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


def compile_bytecode() -> None:
    """Write orbit_fast's bytecode as an installed wheel has it (ignored by git)."""
    compileall.compile_dir(str(ROOT / "orbit_fast"), quiet=1)

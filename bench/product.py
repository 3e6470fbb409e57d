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


def write_result(kind: str, results: dict[str, object]) -> None:
    """bench/results/<kind>-<time>.json: `results` with the machine, Python and commit."""
    import json
    import os
    import platform
    import time

    results.update(machine=platform.machine(), cpus=os.cpu_count(), python=sys.version.split()[0],
                   commit=commit(), when=time.strftime("%Y-%m-%dT%H:%M:%S"))  # fmt: skip
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(results, indent=2))

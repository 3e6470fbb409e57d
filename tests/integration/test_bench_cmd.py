"""`orbit-fast bench` runs the real kernels and reports every stage (no timing asserted)."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_bench_reports_each_stage_with_cores_for_10gbe() -> None:
    proc = run_cli("bench", "--size-mb", "4", "--rounds", "1", "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["stage"] for r in rows] == [
        "chunk (FastCDC, avg 1 MiB)", "chunk + id (keyed BLAKE3)",
        "chunk + id + lz4", "chunk + id + zstd:3",
    ]  # fmt: skip
    for r in rows:
        assert r["bytes_per_s"] > 0 and r["cores_for_10gbe"] >= 1
    human = run_cli("bench", "--size-mb", "2", "--rounds", "1").stdout
    assert "cores for 10GbE" in human and "zstd:3" in human

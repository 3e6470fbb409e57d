"""The backup's tree builder and parent comparison at the guide's scale, without the disk (#16).

    .venv/bin/python bench/bench_tree_meta.py [--entries 10000000] [--per-dir 100]

Feeds the real backup loop (coordinator/backup.py: `_files_to_read`, `_file_done`,
`_dir_done`, TreeWriter, TreeReader with its checks) with synthetic directory listings instead
of a walk, and stands in for the rest: every file "read" gets one made-up chunk id at once (no
workers), and trees are stored as files in a tmpfs directory instead of packs (each still
compressed, named by the keyed id, decompressed, checked against it and decoded). Two runs
over the same listings, in one process each: the first builds every tree; the second, with
the first as its parent, compares every directory with its parent tree and finds every file
unchanged. Prints, per run, the wall time, the peak RSS of that run's process (ru_maxrss) and
the trees written; the time per entry is what the walk and the chunking add to.

The tree is N entries in directories of --per-dir files, 100 directories per parent
directory: for 10M entries, 100,000 leaf directories under 1,000 under 10 under the root.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = 1_700_000_000_000_000_000


def listings(entries: int, per_dir: int) -> Iterator[tuple[bytes, list]]:
    """Depth-first listings, as coordinator.backup.walk yields them."""
    leaves = max(1, entries // per_dir)
    levels = []  # fan-out per level, 100 each, until the leaves fit
    n = leaves
    while n > 1:
        levels.append(min(100, n))
        n = (n + 99) // 100
    levels.reverse()
    dstat = (1, 0, T0, T0, 0o40755, T0, 1, 0, 0, 1)
    counter = [0]

    def visit(rel: bytes, depth: int) -> Iterator[tuple[bytes, list]]:
        if depth == len(levels):
            base = counter[0]
            counter[0] += per_dir
            yield rel, [(b"file%09d.dat" % (base + i),
                         (0, 1000 + i, T0 + base + i, T0, 0o100644, T0 + base + i, base + i,
                          1000, 1000, 1)) for i in range(per_dir)]  # fmt: skip
            return
        names = [b"dir%03d" % i for i in range(levels[depth])]
        yield rel, [(name, dstat) for name in names]
        for name in names:
            yield from visit(rel + b"/" + name if rel else name, depth + 1)

    yield from visit(b"", 0)


class TmpfsWriter:
    """PackWriter's has/add, one file per blob in a tmpfs directory (not this process's
    memory, as a repository on disk is not)."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.chunks_written = self.bytes_written = 0

    def has(self, blob_id: bytes) -> bool:
        return os.path.exists(os.path.join(self.store, blob_id.hex()))

    def add(self, blob_id: bytes, blob: bytes, raw_len: int) -> None:
        with open(os.path.join(self.store, blob_id.hex()), "wb") as f:
            f.write(blob)
        self.chunks_written += 1
        self.bytes_written += len(blob)


def one_run(entries: int, per_dir: int, store: str, parent: bytes) -> dict:
    from orbit_fast import progress as p
    from orbit_fast.cancel import CancelToken
    from orbit_fast.compression import decompress
    from orbit_fast.coordinator import backup as b
    from orbit_fast.hashing import chunk_id
    from orbit_fast.repo import tree as treefmt
    from orbit_fast.repo.trees import TreeReader, TreeWriter, label

    key = bytes(range(32))

    class MemReader(TreeReader):
        def __init__(self) -> None:
            self.key, self.trees_read, self.bytes_read = key, 0, 0

        def load(self, tid: bytes, where: bytes = b"") -> treefmt.TreeBlob:
            with open(os.path.join(store, tid.hex()), "rb") as f:
                raw = decompress(f.read(), max_bytes=treefmt.MAX_TREE_BYTES)
            assert chunk_id(key, raw) == tid
            self.trees_read += 1
            return treefmt.decode(label(tid, where), raw)

    run = object.__new__(b.Backup)
    run.cancel, run.remote, run.tree, run.src = CancelToken(), False, None, None
    run.counters, run.warnings = p.Counters(), []
    run.emit = lambda ev: None
    run._warn = lambda path, msgid, message: print(path, msgid, message, file=sys.stderr)
    run.reader = MemReader()
    run.trees = TreeWriter(TmpfsWriter(store), key)  # type: ignore[arg-type]
    run.waiting = {b"": (None, 0, parent)}
    run.inflight, run.idents, run.object_sizes = {}, {}, {}
    run.root_tree = None
    run.files_new = run.files_changed = run.files_unchanged = 0
    run.files_total = run.dirs_total = run.bytes_total = 0
    run.last_progress = 0.0
    t0 = time.perf_counter()
    for path in run._files_to_read(listings(entries, per_dir)):
        f = run.inflight[path]  # "read": one chunk, named from the path
        f.chunks.append(chunk_id(key, path.encode()))
        f.done = f.size
        run._file_done(path, f)
    dt = time.perf_counter() - t0
    assert run.root_tree is not None and not run.inflight
    return {"seconds": round(dt, 2), "us_per_entry": round(dt / entries * 1e6, 2),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "trees_written": run.trees.trees_added, "trees_read": run.reader.trees_read,
            "files_unchanged": run.files_unchanged, "files_new": run.files_new,
            "root": run.root_tree.hex()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--per-dir", type=int, default=100)
    ap.add_argument("--store", default="/dev/shm/orbit-tree-meta")
    ap.add_argument("--child", default="")  # internal: "first" or the parent root in hex
    args = ap.parse_args()
    if args.child:
        parent = b"" if args.child == "first" else bytes.fromhex(args.child)
        print(json.dumps(one_run(args.entries, args.per_dir, args.store, parent)))
        return
    rows = {}
    parent = "first"
    import shutil

    os.makedirs(args.store, exist_ok=False)
    try:
        for name in ("initial (every tree built)", "no change (compared with the parent)"):
            out = subprocess.run([sys.executable, __file__, "--entries", str(args.entries),
                                  "--per-dir", str(args.per_dir), "--store", args.store,
                                  "--child", parent], check=True, stdout=subprocess.PIPE,
                                 text=True).stdout  # fmt: skip
            rows[name] = json.loads(out)
            parent = rows[name]["root"]
    finally:
        shutil.rmtree(args.store)
    print(f"{args.entries:,} entries, {args.per_dir} per directory "
          "(no disk: trees on tmpfs, no workers)")
    print("| run | s | us/entry | peak RSS MiB | trees written | trees read |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['seconds']} | {r['us_per_entry']} | {r['peak_rss_mib']} | "
              f"{r['trees_written']:,} | {r['trees_read']:,} |")
    from bench.product import write_result

    write_result("tree-meta", {"entries": args.entries, "per_dir": args.per_dir, "rows": rows})


if __name__ == "__main__":
    main()

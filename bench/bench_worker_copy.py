"""A worker's per-file cost without the pool: single-block copies through `_Runner.run`.

Usage:  python bench/bench_worker_copy.py SRC_TREE [--files 10000]
Copies the first files of SRC_TREE (e.g. the bench tree's small/, on /dev/shm) into a scratch
directory in one process and thread, best of 3, and prints CPU microseconds per file: what the
worker's own Python and system calls cost, without the scheduling and page-allocation noise of
an end-to-end run (docs/performance.md, "Confinement"). For a before/after, run it with
PYTHONPATH set to each checkout; it speaks the task formats before #15, after #15 (one
CopyBlock per file) and after #16 (CopyFiles, BATCH files per task).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from orbit_fast import messages as m
from orbit_fast.workers import worker as w
from orbit_fast.workers.ring import SharedRing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--dst", default="/dev/shm/orbit-bench-worker-copy")
    a = ap.parse_args()
    src, dst = os.path.abspath(a.src), a.dst
    rels = sorted(os.path.relpath(os.path.join(dp, f), src)
                  for dp, _, fn in os.walk(src) for f in fn)[: a.files]  # fmt: skip
    ring = SharedRing.create(1 << 20, 1)
    new = hasattr(m, "Ident")  # the task format after #15: paths relative to the trees
    batched = hasattr(m, "CopyFiles")  # after #16: whole files in batches
    best = float("inf")
    try:
        for _ in range(3):
            shutil.rmtree(dst, ignore_errors=True)
            for d in {os.path.dirname(r) for r in rels}:
                os.makedirs(os.path.join(dst, d), exist_ok=True)
            tasks: list[m.Task] = [_task(src, dst, r, new) for r in rels]
            if batched:
                fins = [t.finalize for t in tasks]  # type: ignore[union-attr]
                tasks = [m.CopyFiles(task_id=1, slot=0, files=fins[i : i + BATCH],  # type: ignore[arg-type]
                                     sparse=True) for i in range(0, len(fins), BATCH)]  # fmt: skip
            if new:
                s, d = os.stat(src), os.stat(dst)
                trees = w._Trees([m.TreeRef(os.fsencode(src), s.st_dev, s.st_ino),
                                  m.TreeRef(os.fsencode(dst), d.st_dev, d.st_ino)])  # fmt: skip
                runner = w._Runner(ring, trees)
            else:
                runner = w._Runner(ring)  # type: ignore[call-arg]
            c0 = time.process_time()
            for t in tasks:
                res = runner.run(t)  # type: ignore[arg-type]
                assert isinstance(res, m.FilesCopied) and not res.failed if batched \
                    else isinstance(res, m.BlockCopied), res  # fmt: skip
            best = min(best, time.process_time() - c0)
    finally:
        ring.close()
        shutil.rmtree(dst, ignore_errors=True)
    fmt = "after #16" if batched else "after #15" if new else "before #15"
    print(f"{fmt}: {best / len(rels) * 1e6:.1f} us CPU per file "
          f"({len(rels)} files)")


BATCH = 64  # coordinator/sync/tree.py BATCH_FILES


def _task(src: str, dst: str, rel: str, new: bool) -> m.Task:
    st = os.lstat(os.path.join(src, rel))
    d, n = os.path.split(rel)
    tmp = os.path.join(d, f".{n}.orbit-00000000.tmp")
    if new:
        ident = m.Ident(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        fin = m.Finalize(tmp=os.fsencode(tmp), dst=os.fsencode(rel), size=st.st_size,
                         mtime_ns=st.st_mtime_ns, atime_ns=st.st_atime_ns, mode=st.st_mode,
                         src=os.fsencode(rel), src_id=ident, fsync=False)  # fmt: skip
        if hasattr(m, "CopyFiles"):
            return m.FinalizeFile(task_id=1, finalize=fin)  # a carrier: batched by the caller
        return m.CopyBlock(task_id=1, slot=0, src=os.fsencode(rel), src_id=ident,  # type: ignore[call-arg]
                           tmp=os.fsencode(tmp), offset=0, length=st.st_size, sparse=True,
                           finalize=fin)  # fmt: skip
    a, b = os.fsencode(os.path.join(src, rel)), os.fsencode(os.path.join(dst, rel))
    t = os.fsencode(os.path.join(dst, tmp))
    old_fin = m.Finalize(tmp=t, dst=b, size=st.st_size, mtime_ns=st.st_mtime_ns,  # type: ignore[call-arg]
                         atime_ns=st.st_atime_ns, mode=st.st_mode, src=a,
                         src_mtime_ns=st.st_mtime_ns, fsync=False)  # fmt: skip
    return m.CopyBlock(task_id=1, slot=0, src=a, tmp=t, offset=0,  # type: ignore[call-arg]
                       length=st.st_size, sparse=True, finalize=old_fin)  # fmt: skip


if __name__ == "__main__":
    main()

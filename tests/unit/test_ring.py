from __future__ import annotations

import os

from orbit_fast.workers.ring import SHM_PREFIX, SharedRing, reap_stale_segments


def test_acquire_until_full_then_release() -> None:
    ring = SharedRing.create(4096, 3)
    try:
        got = [ring.acquire() for _ in range(3)]
        assert sorted(got) == [0, 1, 2] and ring.acquire() is None  # the producer must wait
        ring.release(got[1])
        assert ring.acquire() == got[1]
        v = ring.view(2, 10)
        v[:] = b"0123456789"
        other = SharedRing.attach(ring.name, 4096, 3)
        assert bytes(other.view(2, 10)) == b"0123456789"
        v.release()
        other.close()
    finally:
        ring.close()
    assert not os.path.exists(f"/dev/shm/{ring.name}")


def test_reaps_segments_of_dead_pids_only(tmp_path) -> None:
    dead = tmp_path / f"{SHM_PREFIX}999999999-abcd"
    alive = tmp_path / f"{SHM_PREFIX}{os.getpid()}-abcd"
    other = tmp_path / "someone-else"
    for p in (dead, alive, other):
        p.write_bytes(b"")
    assert reap_stale_segments(str(tmp_path)) == 1
    assert not dead.exists() and alive.exists() and other.exists()

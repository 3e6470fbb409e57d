"""SharedRing: fixed slots of one shared-memory segment, lent by the coordinator to workers.

The coordinator creates the segment, owns the free-slot list and is the only process that
unlinks it; a task that names a slot lends it to one worker until its result comes back. When
every slot is lent the coordinator waits (back-pressure), so memory is slots x slot size
whatever the file sizes. Workers attach by name (`SharedRing.attach`).
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by create()/attach(): a run with nothing to copy makes no ring
    from multiprocessing import shared_memory

SHM_PREFIX = "orbit-"


class SharedRing:
    def __init__(self, shm: shared_memory.SharedMemory, slot_size: int, slots: int, owner: bool):
        self._shm = shm
        self.slot_size = slot_size
        self.slots = slots
        self._owner = owner
        self._buf: memoryview | None = shm.buf
        self._free = list(range(slots - 1, -1, -1)) if owner else []

    @classmethod
    def create(cls, slot_size: int, slots: int) -> SharedRing:
        from multiprocessing import shared_memory

        name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=slot_size * slots)
        return cls(shm, slot_size, slots, owner=True)

    @classmethod
    def attach(cls, name: str, slot_size: int, slots: int) -> SharedRing:
        # A multiprocessing child shares the parent's resource tracker: no unregister here
        # (RECIPES.md §4, case 1).
        from multiprocessing import shared_memory

        return cls(shared_memory.SharedMemory(name=name), slot_size, slots, owner=False)

    @property
    def name(self) -> str:
        return self._shm.name

    def view(self, slot: int, length: int | None = None) -> memoryview:
        assert self._buf is not None, "ring is closed"
        start = slot * self.slot_size
        return self._buf[start : start + (self.slot_size if length is None else length)]

    # -- coordinator side --
    def acquire(self) -> int | None:
        """A free slot number, or None when all are lent out (the caller waits for results)."""
        return self._free.pop() if self._free else None

    def release(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def close(self) -> None:
        """Drop our views, close, and (creator only) unlink the segment, exactly once."""
        if self._buf is None:
            return
        self._buf.release()
        self._buf = None
        self._shm.close()
        if self._owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass


def reap_stale_segments(shm_dir: str = "/dev/shm") -> int:
    """Remove segments left by coordinators that were killed with SIGKILL (their resource
    tracker died with them). A segment is stale when the pid in its name is gone."""
    removed = 0
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(SHM_PREFIX):
            continue
        pid_s = name[len(SHM_PREFIX) :].split("-", 1)[0]
        if not pid_s.isdigit() or _alive(int(pid_s)):
            continue
        try:
            os.unlink(os.path.join(shm_dir, name))
            removed += 1
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

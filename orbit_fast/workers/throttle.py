"""Throttle: one bandwidth limit shared by every worker process of a run (--bwlimit), or of the
hub (its global limit).

Its state is 32 bytes in a file under /dev/shm named like the rings (so a coordinator killed
with SIGKILL leaves nothing that reap_stale_segments does not remove): the rates up and down,
and for each the time the last reservation ends (GCRA, the "virtual scheduling" form of a
token bucket). A worker reserves the bytes of a task before it moves them: under a lock (flock
between processes, a mutex between a worker's threads) the reservation starts at the later of
now and the end of the previous one and lasts bytes / rate; the worker sleeps until its start.
Reservations are made only a short horizon ahead (HORIZON_S): the others nap and ask again, so
a change of rate or a release is seen at once instead of after the booked-up queue.
The workers' tasks together then move at most `rate` bytes a second, however many there are,
with no credit piling up while idle (a burst is at most one task). CLOCK_MONOTONIC is one clock
for every process of the machine. The coordinator changes the rates when a timetable says so;
a rate of 0 is no limit.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
import struct
import threading
import time

from orbit_fast.units import Rate
from orbit_fast.workers.ring import SHM_PREFIX

SHM_DIR = "/dev/shm"
UP, DOWN = 0, 1
# rate up, rate down (bytes/s), reserved-until up, down (monotonic s), released (1.0: stop
# waiting, the run is stopping)
_STATE = struct.Struct("<2d2dd")
# Bookings reach at most this far ahead (plus one task's bytes / rate); a task that would
# start later naps and asks again.
HORIZON_S = 0.05
_NAP_S = 0.02


class Throttle:
    def __init__(self, name: str, fd: int, owner: bool) -> None:
        self.name = name
        self._fd = fd
        self._owner = owner
        self._mm: mmap.mmap | None = mmap.mmap(fd, _STATE.size)
        self._mutex = threading.Lock()

    @classmethod
    def create(cls, rate: Rate) -> Throttle:
        name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-bw"
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CREAT | os.O_EXCL
                     | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)  # fmt: skip
        os.ftruncate(fd, _STATE.size)
        t = cls(name, fd, owner=True)
        t.set_rate(rate)
        return t

    @classmethod
    def attach(cls, name: str) -> Throttle:
        if "/" in name or not name.startswith(SHM_PREFIX):
            raise ValueError(f"not a throttle: {name!r}")
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        return cls(name, fd, owner=False)

    def _locked(self) -> _Held:
        return _Held(self)

    def set_rate(self, rate: Rate) -> None:
        with self._locked() as mm:
            _, _, tat_up, tat_down, released = _STATE.unpack_from(mm)
            _STATE.pack_into(mm, 0, float(rate.up), float(rate.down), tat_up, tat_down,
                             released)  # fmt: skip

    def rate(self) -> Rate:
        with self._locked() as mm:
            up, down = _STATE.unpack_from(mm)[:2]
        return Rate(int(up), int(down))

    def release(self) -> None:
        """The run is stopping: every wait ends now (what is in flight finishes unlimited,
        so a Ctrl-C does not wait out reservations booked seconds ahead)."""
        with self._locked() as mm:
            state = list(_STATE.unpack_from(mm))
            state[4] = 1.0
            _STATE.pack_into(mm, 0, *state)

    def reserve(self, nbytes: int, way: int) -> float | None:
        """Book `nbytes` in direction `way` (UP or DOWN) if the bookings before it end within
        HORIZON_S: the seconds to wait before moving them; None: not yet, ask again."""
        if nbytes <= 0:
            return 0.0
        with self._locked() as mm:
            state = list(_STATE.unpack_from(mm))
            rate = state[way]
            if rate <= 0 or state[4]:
                return 0.0
            now = time.monotonic()
            start = max(state[2 + way], now)
            if start - now > HORIZON_S:
                return None
            state[2 + way] = start + nbytes / rate
            _STATE.pack_into(mm, 0, *state)
        return float(start - now)

    def charge(self, nbytes: int, way: int) -> None:
        """Wait until `nbytes` may move (or the limit is lifted, or the run released). Tasks
        book only a short horizon ahead, so a new rate (a timetable's) holds within about
        one task's time, and a release ends every wait at once."""
        while (delay := self.reserve(nbytes, way)) is None:
            time.sleep(_NAP_S)
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        if self._mm is None:
            return
        self._mm.close()
        self._mm = None
        os.close(self._fd)
        if self._owner:
            try:
                os.unlink(os.path.join(SHM_DIR, self.name))
            except FileNotFoundError:
                pass


class _Held:
    """The throttle's state, locked against every thread of every process using it."""

    def __init__(self, t: Throttle) -> None:
        self.t = t

    def __enter__(self) -> mmap.mmap:
        t = self.t
        assert t._mm is not None, "throttle is closed"
        t._mutex.acquire()
        fcntl.flock(t._fd, fcntl.LOCK_EX)
        return t._mm

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.t._fd, fcntl.LOCK_UN)
        self.t._mutex.release()

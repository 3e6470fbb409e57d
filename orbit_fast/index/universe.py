"""The universe: chunk id -> (pack, offset, stored length, raw length) for every repository.

Only the coordinator opens it (an exclusive flock on "<path>.lock", like the jobs DB; a hub's
backups borrow the hub's claim, one at a time: state_file.StateClaims). It is a
cache of the repositories, never the truth: every entry can be rebuilt from the pack indexes
(`orbit-fast index rebuild`), and `Repository` reconciles it with the repository's list of packs
whenever it opens one, so a lost or stale universe never loses data.

On disk (docs/universe.md has the layout and the measurements behind the choice):
- `<path>`: a checkpoint. A header, the hash table (48-byte records, ext/table.pyx) and the
  pack registry (msgpack). Replaced only whole: written to a temp file, fsynced, renamed.
- `<path>-journal`: what changed since that checkpoint, in batches (one per pack added or per
  prune) with a CRC each, fsynced before the change is used. A torn tail is dropped on open:
  the packs it named are re-indexed by the next reconcile.
The table is mapped copy-on-write from the checkpoint. Until something changes, lookups read
the checkpoint with pread and leave the mapping untouched; the first changes go to a small
overlay table; many changes (or a drop) merge it into the mapped table, which is then private
memory until the next checkpoint. Memory: nothing of the table while it is unchanged, at most
6 MiB of overlay, at most the table (48 bytes per slot, 60-80 bytes per entry) once merged;
plus about 150 bytes per pack for the registry. docs/universe.md has the numbers.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from array import array
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from orbit_fast._native import kernels
from orbit_fast.errors import DatabaseError
from orbit_fast.fsinfo import fsync_path
from orbit_fast.index import private, state_file
from orbit_fast.index.state_file import StateClaims

if TYPE_CHECKING:
    import numpy as np

# numpy is imported only where record arrays are built (adding packs, listing entries): a
# no-change backup never needs it, and it is a third of the CLI's start-up time.
RECORD_BYTES = 48  # id (32 bytes), pack, offset, stored length, raw length (uint32 each)


def __getattr__(name: str) -> Any:
    if name == "RECORD":  # the numpy dtype of a record, built on first use
        import numpy as np

        return np.dtype([("id", "V32"), ("pack", "<u4"), ("offset", "<u4"), ("stored", "<u4"),
                         ("raw", "<u4")])  # fmt: skip
    raise AttributeError(name)


_MAGIC = b"ORBUNIV1"
_VERSION = 1
# magic, version, generation, capacity, count, meta offset, meta length; then a CRC of those.
_HEADER = struct.Struct("<8sIQQQQQ")
_TABLE_AT = 4096
_JMAGIC = b"ORBJRNL1"
_JHEADER = struct.Struct("<8sQ")
_BATCH = struct.Struct("<II")  # payload length, crc32 of payload
MIN_CAPACITY = 1 << 16
MAX_LOAD = 0.8  # linear probing: ~3 probes per hit, ~13 per miss at 0.8 (Knuth)
GROWN_LOAD = 0.6  # after growing: 60-80 bytes of table per entry (bench/bench_universe.py)
# Growing copies the old table into the new one this many bytes at a time and releases each
# piece as it goes, so the two are never resident together (both multiples of 48 and of the
# page size, as madvise needs).
_REHASH_STEP = 256 * 12288
# Changes to a table still as its checkpoint has it go to a small table of their own first
# (the overlay: 6 MiB), so a backup that adds a few packs, or the journal of one replayed
# at open, leaves the checkpoint's table unread (see lookup). Past 3/4 of it, the overlay is
# merged into the table, which is then in memory; close() writes a checkpoint before that.
_OVERLAY_SLOTS = 1 << 17


class PackInfo(msgspec.Struct, array_like=True, frozen=True):
    number: int
    repo: int
    name: bytes  # 32 bytes: BLAKE3 of the pack file
    chunks: int


class _Meta(msgspec.Struct, array_like=True):
    repos: dict[str, int]
    packs: list[PackInfo]
    next_pack: int


class _Batch(msgspec.Struct, array_like=True):
    repos: dict[str, int]
    packs: list[PackInfo]
    records: bytes  # RECORD rows
    dropped: list[int]


class Location(NamedTuple):
    pack: bytes  # pack name
    offset: int
    stored: int
    raw: int


class Universe:
    def __init__(self, path: str, lock_fd: int, claims: StateClaims | None = None) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._claims = claims
        self._generation = 0
        self._table: mmap.mmap | bytes = b""
        # The checkpoint, open while _table is its mapping with no change in it: lookups then
        # read the file (pread) instead of the mapping. A page of a mapping, once touched,
        # stays in the process's memory, and a fault maps up to 2 MiB around it (large
        # folios): the 10,101 tree lookups of a no-change backup of 1M files brought in the
        # whole 74 MiB table. -1 once the table has changed or was never mapped.
        self._clean_fd = -1
        # Changes since the checkpoint while _clean_fd is open (anonymous: pages appear as
        # entries land on them, so a few entries cost a few pages, not 6 MiB).
        self._overlay: mmap.mmap | bytes = b""
        self._overlay_n = 0
        self._checkpoint_count = 0  # entries in the checkpoint's table
        self.count = 0
        self._repos: dict[str, int] = {}
        self._packs: dict[int, PackInfo] = {}
        self._by_name: dict[tuple[int, bytes], int] = {}
        self._next_pack = 1
        self._journal: int = -1
        self._journal_bytes = 0
        self._k = kernels()

    # ---- opening and closing --------------------------------------------------------------

    @classmethod
    def open(cls, path: str, claims: StateClaims | None = None) -> Universe:
        """Open the index; `claims`: the handle holding it (a hub), else it is claimed for
        this caller alone (DatabaseBusy if another has it)."""
        path = os.path.abspath(path)
        lock_fd = state_file.claim(
            path, "the universe index", "UNIVERSE_PATH (or --universe-path)",
            "its journal relies on local locking and fsync", claims,
        )  # fmt: skip
        self = cls(path, lock_fd, claims)
        try:
            self._load()
        except BaseException:
            self.close(checkpoint=False)
            raise
        return self

    @classmethod
    def ensure(cls, path: str, claims: StateClaims | None = None) -> None:
        """Write an empty index at `path` if there is none: a hub's state files all exist
        from its first start (the guide's state-backup script copies this one with cp)."""
        if os.path.exists(path):
            return
        u = cls.open(path, claims)
        try:
            u.checkpoint()
        finally:
            u.close(checkpoint=False)

    def _load(self) -> None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            pass
        else:
            with f:
                head = f.read(_HEADER.size + 4)
                if len(head) < _HEADER.size + 4:
                    raise self._corrupt("its header is truncated")
                magic, version, gen, cap, count, meta_at, meta_len = _HEADER.unpack_from(head)
                (crc,) = struct.unpack_from("<I", head, _HEADER.size)
                if magic != _MAGIC or crc != zlib.crc32(head[: _HEADER.size]):
                    raise self._corrupt("it is not a universe checkpoint")
                if version != _VERSION:
                    raise DatabaseError(
                        f"the universe index {self.path} has format {version}; this orbit-fast "
                        f"reads format {_VERSION}. Upgrade orbit-fast, or move the file away "
                        "and run `orbit-fast index rebuild REPO`"
                    )
                f.seek(meta_at)
                meta = msgspec.msgpack.decode(f.read(meta_len), type=_Meta)
                if cap:
                    self._table = mmap.mmap(
                        f.fileno(), cap * RECORD_BYTES, access=mmap.ACCESS_COPY,
                        offset=_TABLE_AT,
                    )  # fmt: skip
                    self._clean_fd = os.dup(f.fileno())
            self._generation, self.count, self._checkpoint_count = gen, count, count
            self._repos = meta.repos
            self._next_pack = meta.next_pack
            for p in meta.packs:
                self._register(p)
        self._replay_journal()
        if not os.path.exists(self.path):
            # A first, empty checkpoint: the file named by UNIVERSE_PATH always exists, so a
            # plain `cp` of it (the deployment guide's backup script) never fails.
            self.checkpoint()

    def _corrupt(self, why: str) -> DatabaseError:
        return DatabaseError(
            f"the universe index {self.path} is damaged ({why}); move it away and run "
            "`orbit-fast index rebuild REPO` for each repository (it is a cache of them)"
        )

    def _replay_journal(self) -> None:
        jpath = self.path + "-journal"
        fd = private.open_private(jpath, os.O_RDWR | os.O_CREAT)  # 0600 even if it was not
        self._journal = fd
        head = os.pread(fd, _JHEADER.size, 0)
        good_end = _JHEADER.size
        if len(head) == _JHEADER.size and head[:8] == _JMAGIC:
            (gen,) = _JHEADER.unpack(head)[1:]
            if gen == self._generation:
                with open(fd, "rb", closefd=False) as f:
                    f.seek(good_end)
                    while True:
                        bh = f.read(_BATCH.size)
                        if len(bh) < _BATCH.size:
                            break
                        n, crc = _BATCH.unpack(bh)
                        payload = f.read(n)
                        if len(payload) < n or zlib.crc32(payload) != crc:
                            break  # a torn tail: reconcile re-indexes the packs it named
                        self._apply(msgspec.msgpack.decode(payload, type=_Batch))
                        good_end += _BATCH.size + n
                os.ftruncate(fd, good_end)
                self._journal_bytes = good_end
                return
        # Missing, foreign or from an older checkpoint (a crash between writing a checkpoint
        # and resetting the journal): everything in it is already in the checkpoint.
        self._reset_journal()

    def _reset_journal(self) -> None:
        os.ftruncate(self._journal, 0)
        os.pwrite(self._journal, _JHEADER.pack(_JMAGIC, self._generation), 0)
        os.fsync(self._journal)
        self._journal_bytes = _JHEADER.size

    def close(self, checkpoint: bool = True) -> None:
        """Release the index; write a checkpoint first if the journal has grown large."""
        if self._lock_fd < 0:
            return
        try:
            # Replaying the journal costs every open; a checkpoint writes the whole table.
            if checkpoint and self._journal >= 0 and (
                self._journal_bytes > max(8 << 20, len(self._table) // 4)
                or self._overlay_n > _OVERLAY_SLOTS * 3 // 8  # the next open's replay fits
            ):
                self.checkpoint()
        finally:
            if self._journal >= 0:
                os.close(self._journal)
                self._journal = -1
            self._unclean()
            for table in (self._table, self._overlay):
                if isinstance(table, mmap.mmap):
                    table.close()
            state_file.release(self._lock_fd, self._claims)
            self._lock_fd = -1

    def __enter__(self) -> Universe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(checkpoint=exc[0] is None)

    def checkpoint(self) -> None:
        """Write the whole index as a new checkpoint and start an empty journal."""
        self._merge_overlay()
        gen = self._generation + 1
        meta = msgspec.msgpack.encode(
            _Meta(self._repos, sorted(self._packs.values(), key=lambda p: p.number),
                  self._next_pack)  # fmt: skip
        )
        cap = len(self._table) // RECORD_BYTES
        meta_at = _TABLE_AT + cap * RECORD_BYTES
        head = _HEADER.pack(_MAGIC, _VERSION, gen, cap, self.count, meta_at, len(meta))
        tmp = f"{self.path}.tmp-{os.getpid()}"
        # 0600 whatever the umask: the rename below makes this file the universe.
        with os.fdopen(private.open_private(tmp), "wb") as f:
            f.write(head + struct.pack("<I", zlib.crc32(head)))
            f.seek(_TABLE_AT)
            f.write(memoryview(self._table))
            f.write(meta)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fsync_path(os.path.dirname(self.path))
        self._generation, self._checkpoint_count = gen, self.count
        self._reset_journal()

    # ---- the pack registry ----------------------------------------------------------------

    def _register(self, p: PackInfo) -> None:
        self._packs[p.number] = p
        self._by_name[(p.repo, p.name)] = p.number

    def repo_number(self, repo_id: str) -> int:
        """The small number that stands for a repository (by its config id) in the index."""
        n = self._repos.get(repo_id)
        if n is None:
            n = max(self._repos.values(), default=0) + 1
            self._commit(_Batch({repo_id: n}, [], b"", []))
        return n

    def packs_of(self, repo_id: str) -> dict[bytes, int]:
        """Name -> number of every pack of that repository the index knows."""
        repo = self._repos.get(repo_id)
        return {p.name: n for n, p in self._packs.items() if p.repo == repo}

    def pack_name(self, number: int) -> bytes:
        return self._packs[number].name

    # ---- changes --------------------------------------------------------------------------

    def add_pack(self, repo_id: str, name: bytes, records: np.ndarray) -> int:
        """Index a pack that is completely written: `records` are RECORD rows with `pack` 0,
        filled in here. Durable (journal fsynced) when this returns."""
        repo = self.repo_number(repo_id)
        known = self._by_name.get((repo, name))
        number = self._next_pack if known is None else known
        rows = records.copy()  # numpy is loaded: the caller made `records` with it
        rows["pack"] = number
        # A known pack's entries are written again: its chunks may have been pointed
        # elsewhere since, and the caller is saying they live here.
        info = [] if known is not None else [PackInfo(number, repo, name, len(rows))]
        self._commit(_Batch({}, info, rows.tobytes(), []))
        return number

    def drop_packs(self, repo_id: str, names: list[bytes]) -> None:
        """Forget packs (before they are deleted from the repository) and all their entries."""
        repo = self._repos.get(repo_id)
        if repo is None:
            return  # a repository it never indexed: none of its packs are known
        numbers = [n for name in names if (n := self._by_name.get((repo, name))) is not None]
        if numbers:
            self._commit(_Batch({}, [], b"", numbers))

    def _commit(self, batch: _Batch) -> None:
        payload = msgspec.msgpack.encode(batch)
        data = _BATCH.pack(len(payload), zlib.crc32(payload)) + payload
        os.pwrite(self._journal, data, self._journal_bytes)
        os.fsync(self._journal)
        self._journal_bytes += len(data)
        self._apply(batch)

    def _apply(self, batch: _Batch) -> None:
        self._repos.update(batch.repos)
        for p in batch.packs:
            self._register(p)
            self._next_pack = max(self._next_pack, p.number + 1)
        n = len(batch.records) // RECORD_BYTES
        if n and self._clean_fd >= 0 and self._overlay_n + n <= _OVERLAY_SLOTS * 3 // 4:
            self._add_to_overlay(batch.records, n)
        elif batch.records:
            self._merge_overlay()
            self._reserve(n)
            self.count += self._k.table_insert(self._table, batch.records)
        if batch.dropped:
            self._merge_overlay()
            dead = bytearray(max(batch.dropped) // 8 + 1)
            for num in batch.dropped:
                dead[num >> 3] |= 1 << (num & 7)
                gone = self._packs.pop(num, None)
                if gone is not None:
                    self._by_name.pop((gone.repo, gone.name), None)
            self._rehash(len(self._table) // RECORD_BYTES, dead)

    def _add_to_overlay(self, records: bytes, n: int) -> None:
        if not self._overlay:
            self._overlay = mmap.mmap(-1, _OVERLAY_SLOTS * RECORD_BYTES)
        ids = b"".join(records[i : i + 32] for i in range(0, len(records), RECORD_BYTES))
        known = self.lookup(ids)  # counted once: in neither the checkpoint nor the overlay
        self.count += sum(1 for i in range(n) if known[4 * i] == 0)
        self._overlay_n += self._k.table_insert(self._overlay, records)

    def _merge_overlay(self) -> None:
        """Put the overlay's entries in the table (which from then on is in memory)."""
        if self._clean_fd < 0:
            return
        overlay, n = self._overlay, self._overlay_n
        self._unclean()
        self._overlay, self._overlay_n = b"", 0
        if n:
            self.count = self._checkpoint_count
            self._reserve(n)
            self.count += self._k.table_rehash(overlay, self._table, b"")
        if isinstance(overlay, mmap.mmap):
            overlay.close()

    def _reserve(self, n: int) -> None:
        cap = len(self._table) // RECORD_BYTES
        if self.count + n <= MAX_LOAD * cap:
            return
        self._rehash(max(MIN_CAPACITY, int((self.count + n) / GROWN_LOAD)), bytearray())

    def _rehash(self, capacity: int, dead: bytearray) -> None:
        assert self._clean_fd < 0 or not self._overlay_n, "merge the overlay first"
        new = mmap.mmap(-1, capacity * RECORD_BYTES)  # anonymous: zero pages appear on use
        old, kept = self._table, 0
        if isinstance(old, mmap.mmap):
            view = memoryview(old)
            for at in range(0, len(old), _REHASH_STEP):
                kept += self._k.table_rehash(view[at : at + _REHASH_STEP], new, dead)
                # Copied: its pages go (a checkpoint's are read again from the file, the
                # old private ones are not needed).
                old.madvise(mmap.MADV_DONTNEED, at, min(_REHASH_STEP, len(old) - at))
            view.release()
            old.close()
        self._table, self.count = new, kept
        self._unclean()

    def _unclean(self) -> None:
        if self._clean_fd >= 0:
            os.close(self._clean_fd)
            self._clean_fd = -1

    # ---- queries --------------------------------------------------------------------------

    def lookup(self, ids: bytes | bytearray | memoryview) -> array[int]:
        """Flat uint32 (pack number, offset, stored, raw) per 32-byte id, 4 values each; pack
        0 where the id is unknown."""
        out = array("I", bytes(len(ids) // 32 * 16))
        if self._clean_fd >= 0:
            cap = len(self._table) // RECORD_BYTES
            self._k.table_lookup_fd(self._clean_fd, _TABLE_AT, cap, ids, out)
            if self._overlay_n:  # newer than the checkpoint: its answers win
                newer = array("I", bytes(len(out) * 4))
                if self._k.table_lookup(self._overlay, ids, newer):
                    for i in range(0, len(out), 4):
                        if newer[i]:
                            out[i : i + 4] = newer[i : i + 4]
        elif len(self._table):
            self._k.table_lookup(self._table, ids, out)
        return out

    def locate(self, repo_id: str, ids: list[bytes]) -> list[Location | None]:
        """Where each chunk of that repository is stored, or None."""
        repo = self._repos.get(repo_id)
        rows = self.lookup(b"".join(ids))
        out: list[Location | None] = []
        for i in range(0, len(rows), 4):
            pack, off, stored, raw = rows[i : i + 4]
            info = self._packs.get(pack) if pack else None
            out.append(Location(info.name, off, stored, raw) if info and info.repo == repo
                       else None)  # fmt: skip
        return out

    def records(self) -> np.ndarray:
        """Every entry, as RECORD rows (a copy)."""
        import numpy as np

        self._merge_overlay()
        dtype = __getattr__("RECORD")
        view = np.frombuffer(memoryview(self._table), dtype) if len(self._table) else None
        return np.zeros(0, dtype) if view is None else view[view["pack"] != 0].copy()

"""Pure-Python twins of the compiled kernels in orbit_fast._native: same names, same results.

They are the test oracle and the readable specification; ORBIT_KERNEL=reference selects them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

# Every compiled module exports this same number; bump it (and theirs) on any change of a
# signature or a result.
ABI = 7


def is_zero(buf: ReadableBuffer) -> bool:
    """True when every byte of ``buf`` is 0 (an empty buffer is all zeros)."""
    mv = memoryview(buf).cast("B")
    return mv.nbytes == 0 or not any(mv)


FILE, DIR, LINK, OTHER = 0, 1, 2, 3
# What scan_pair reports per side: kind, size, mtime_ns, atime_ns, mode, ino, dev.
Side: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, int, int]
# What scan_dir reports: kind, size, mtime_ns, atime_ns, mode, ctime_ns, ino, uid, gid, dev.
Full: TypeAlias = tuple[int, int, int, int, int, int, int, int, int, int, int, int]


def _stats(dir_fd: int) -> list[tuple[bytes, os.stat_result]]:
    """Sorted (name, lstat) of the directory open at `dir_fd`, like _list in C: every entry
    lstat'ed relative to that fd (a duplicate of it is read; the caller closes its own)."""
    fd = os.dup(dir_fd)
    out = []
    try:
        os.lseek(fd, 0, os.SEEK_SET)  # the duplicate shares the caller's offset: from the start
        for name in os.listdir(fd):  # str names (surrogateescape); fsencode gives the bytes
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished since readdir
            out.append((os.fsencode(name), st))
    finally:
        os.close(fd)
    out.sort(key=lambda t: t[0])
    return out


def _kind(m: int) -> int:
    return (FILE if stat.S_ISREG(m) else DIR if stat.S_ISDIR(m)
            else LINK if stat.S_ISLNK(m) else OTHER)  # fmt: skip


def scan_dir(dir_fd: int) -> list[tuple[bytes, Full]]:
    """Sorted (name, (kind, size, mtime_ns, atime_ns, mode, ctime_ns, ino, uid, gid, dev,
    nlink, rdev)) of the directory open at `dir_fd`, for a backup."""
    return [(name, (_kind(st.st_mode), st.st_size, st.st_mtime_ns, st.st_atime_ns, st.st_mode,
                    st.st_ctime_ns, st.st_ino, st.st_uid, st.st_gid, st.st_dev, st.st_nlink,
                    st.st_rdev))
            for name, st in _stats(dir_fd)]  # fmt: skip


def scan_pair(
    src_fd: int, dst_fd: int, fold_unchanged: int
) -> tuple[list[tuple[bytes, Side | None, Side | None]], int]:
    """Compare one source directory with its destination twin, both open directory fds
    (`dst_fd` -1: no such directory in the destination).

    Returns ``(entries, folded)``: entries is a list, sorted by name, of ``(name, src, dst)``
    where ``src``/``dst`` are ``(kind, size, mtime_ns, atime_ns, mode, ino, dev, uid, gid,
    ctime_ns, nlink)``
    or None when that side lacks the name; folded counts the unchanged regular files left out
    (``fold_unchanged`` bits: 1 same size, mtime and permission bits on both sides; 2 also the
    same owner and group; 4 only files with one link on both sides; 8 only files whose source
    ctime is before the destination's), always 0 without ``fold_unchanged``. A
    destination that cannot be read raises OSError with filename b"dst".
    """

    def side(st: os.stat_result) -> Side:
        return (_kind(st.st_mode), st.st_size, st.st_mtime_ns, st.st_atime_ns, st.st_mode,
                st.st_ino, st.st_dev, st.st_uid, st.st_gid, st.st_ctime_ns,
                st.st_nlink)  # fmt: skip

    src = [(name, side(st)) for name, st in _stats(src_fd)]
    try:
        dst = {name: side(st) for name, st in _stats(dst_fd)} if dst_fd >= 0 else {}
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, b"dst") from exc
    names = {name for name, _ in src}
    out: list[tuple[bytes, Side | None, Side | None]] = []
    folded = 0
    for name, s in src:
        d = dst.get(name)
        if (fold_unchanged & 1 and d is not None and s[0] == d[0] == FILE and s[1] == d[1]
                and s[2] == d[2] and s[4] & 0o7777 == d[4] & 0o7777
                and (not fold_unchanged & 2 or (s[7], s[8]) == (d[7], d[8]))
                and (not fold_unchanged & 4 or s[10] == d[10] == 1)
                and (not fold_unchanged & 8 or s[9] < d[9])):  # fmt: skip
            folded += 1
            continue
        out.append((name, s, d))
    out += [(name, None, d) for name, d in dst.items() if name not in names]
    out.sort(key=lambda t: t[0])
    return out, folded


def open_beneath(dirfd: int, rel: bytes, flags: int, mode: int, use_openat2: bool) -> int:
    """An fd for `rel` below the directory `dirfd`, following no symlink in any component and
    never leaving dirfd's tree: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), or (without
    `use_openat2`) a walk that opens each directory O_PATH | O_NOFOLLOW relative to the one
    before. O_NOFOLLOW and O_CLOEXEC are always added. A `rel` that is not clean (an "", "."
    or ".." component, absolute, a NUL) is refused with EINVAL before any system call; b""
    opens dirfd's directory again."""
    if rel and (b"\0" in rel or any(c in (b"", b".", b"..") for c in rel.split(b"/"))):
        raise OSError(errno.EINVAL, "unsafe path (not a clean relative path)", rel)
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    if use_openat2:
        return _openat2(dirfd, rel or b".", flags, mode)
    parent, _, last = rel.rpartition(b"/")
    fd = dirfd
    try:
        for part in parent.split(b"/") if parent else ():
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=fd)  # fmt: skip
            if fd != dirfd:
                os.close(fd)
            fd = nxt
        return os.open(last or b".", flags, mode, dir_fd=fd)
    finally:
        if fd != dirfd:
            os.close(fd)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]  # fmt: skip


def _openat2(dirfd: int, path: bytes, flags: int, mode: int) -> int:
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, 0x08 | 0x04)  # BENEATH|NO_SYMLINKS
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    while True:
        fd = libc.syscall(437, dirfd, path, ctypes.byref(how), ctypes.sizeof(how))  # openat2
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EINTR, errno.EAGAIN):  # EAGAIN: a rename raced the lookup
            raise OSError(err, os.strerror(err), path)


class Chunker:
    """FastCDC, byte by byte: the specification of ext/cdc.pyx (see its docstring)."""

    def __init__(self, gear: bytes, min_size: int, avg_size: int, max_size: int,
                 mask_s: int, mask_l: int) -> None:  # fmt: skip
        if len(gear) != 2048:
            raise ValueError(f"gear table must be 2048 bytes, got {len(gear)}")
        if not (0 < min_size <= avg_size <= max_size):
            raise ValueError("need 0 < min_size <= avg_size <= max_size")
        self._gear = [int.from_bytes(gear[i * 8 : i * 8 + 8], "little") for i in range(256)]
        self._min, self._avg, self._max = min_size, avg_size, max_size
        self._ms, self._ml = mask_s, mask_l
        self._fp = 0
        self._start = 0
        self._offset = 0

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def chunk_start(self) -> int:
        return self._start

    def feed(self, data: ReadableBuffer, out: memoryview) -> tuple[int, int]:
        ncuts = 0
        i = 0
        mem = memoryview(data).cast("B")
        while i < len(mem) and ncuts < len(out):
            j = self._offset + i - self._start
            cut = j + 1 == self._max  # the chunk ends at max, hashed byte or not
            if j >= self._min:
                self._fp = ((self._fp << 1) + self._gear[mem[i]]) & 0xFFFFFFFFFFFFFFFF
                mask = self._ms if j + 1 < self._avg else self._ml
                cut = cut or (self._fp & mask) == 0
            if cut:
                out[ncuts] = self._offset + i + 1
                ncuts += 1
                self._start = self._offset + i + 1
                self._fp = 0
            i += 1
        self._offset += i
        return ncuts, i


# ---- table: the universe's hash table (ext/table.pyx) -------------------------------------

_REC, _KEY = 48, 32


def _home(key: bytes | memoryview, cap: int) -> int:
    return (int.from_bytes(key[:8], "little") * cap) >> 64


def _put(t: memoryview, cap: int, rec: bytes | memoryview) -> int:
    i = _home(rec, cap)
    for _ in range(cap):
        at = i * _REC
        if int.from_bytes(t[at + 32 : at + 36], "little") == 0:
            t[at : at + _REC] = rec
            return 1
        if t[at : at + _KEY] == rec[:_KEY]:
            t[at + _KEY : at + _REC] = rec[_KEY:]
            return 0
        i = 0 if i + 1 == cap else i + 1
    return -1


def table_lookup(table: ReadableBuffer, keys: ReadableBuffer, out: WriteableBuffer) -> int:
    """Find each 32-byte key; write (pack, offset, stored, raw) to `out` (4 uint32 per key,
    pack 0 for a miss). Returns the number of hits."""
    t, ks, o = memoryview(table).cast("B"), memoryview(keys).cast("B"), memoryview(out)
    if ks.nbytes % _KEY or len(o) < 4 * (ks.nbytes // _KEY):
        raise ValueError("keys must be 32 bytes each and out must hold 4 uint32 per key")
    cap, hits = t.nbytes // _REC, 0
    for k in range(ks.nbytes // _KEY):
        key = ks[k * _KEY : (k + 1) * _KEY]
        o[4 * k : 4 * k + 4] = _u32(0, 0, 0, 0)
        i = _home(key, cap) if cap else 0
        for _ in range(cap):
            at = i * _REC
            if int.from_bytes(t[at + 32 : at + 36], "little") == 0:
                break
            if t[at : at + _KEY] == key:
                vals = t[at + _KEY : at + _REC]
                o[4 * k : 4 * k + 4] = _u32(
                    *(int.from_bytes(vals[j : j + 4], "little") for j in range(0, 16, 4))
                )
                hits += 1
                break
            i = 0 if i + 1 == cap else i + 1
    return hits


def table_lookup_fd(fd: int, at: int, cap: int, keys: ReadableBuffer,
                    out: WriteableBuffer) -> int:
    """table_lookup on the table stored in file `fd` (`cap` slots from byte `at`), read with
    pread rather than mapped."""
    ks = memoryview(keys).cast("B")
    if ks.nbytes % _KEY or len(memoryview(out)) < 4 * (ks.nbytes // _KEY):
        raise ValueError("keys must be 32 bytes each and out must hold 4 uint32 per key")
    data = os.pread(fd, cap * _REC, at) if cap > 0 else b""
    if len(data) < cap * _REC:
        raise OSError(errno.EIO, "reading the universe's table failed")
    return table_lookup(data, keys, out)


def _u32(*vals: int) -> memoryview:
    return memoryview(b"".join(v.to_bytes(4, "little") for v in vals)).cast("I")


def table_insert(table: WriteableBuffer, records: ReadableBuffer) -> int:
    """Insert 48-byte records (overwriting an existing key's location); returns how many keys
    were new. ValueError if the table fills up."""
    t, rs = memoryview(table).cast("B"), memoryview(records).cast("B")
    if rs.nbytes % _REC:
        raise ValueError("records must be 48 bytes each")
    cap, added = t.nbytes // _REC, 0
    for k in range(rs.nbytes // _REC):
        rec = rs[k * _REC : (k + 1) * _REC]
        if int.from_bytes(rec[32:36], "little") == 0:
            continue
        r = _put(t, cap, rec) if cap else -1
        if r < 0:
            raise ValueError("the table is full")
        added += r
    return added


def table_rehash(src: ReadableBuffer, dst: WriteableBuffer, dead: ReadableBuffer) -> int:
    """Copy the records of `src` whose pack is not set in the bitmap `dead` into empty `dst`;
    returns how many were kept."""
    s, d, bits = memoryview(src).cast("B"), memoryview(dst).cast("B"), bytes(dead)
    dcap, kept = d.nbytes // _REC, 0
    for k in range(s.nbytes // _REC):
        rec = s[k * _REC : (k + 1) * _REC]
        p = int.from_bytes(rec[32:36], "little")
        if p == 0 or (p < len(bits) * 8 and (bits[p >> 3] >> (p & 7)) & 1):
            continue
        r = _put(d, dcap, rec) if dcap else -1
        if r < 0:
            raise ValueError("the destination table is full")
        kept += r
    return kept

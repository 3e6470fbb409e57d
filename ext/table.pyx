# cython: language_level=3
"""Probe and insert in the universe's fixed-record hash table (index/universe.py owns it).

The table is a flat buffer of 48-byte records: chunk id (32 bytes), then four little-endian
uint32: pack number, offset in the pack, stored length, raw length. Pack 0 marks an empty
slot (pack numbers start at 1). Open addressing with linear probing; a key's home slot is
(first 8 bytes of the id as uint64 * capacity) >> 64, so any capacity works (no power of two:
the table can grow by 1.5x and stay under 100 bytes of disk per entry). Ids are keyed
BLAKE3 outputs, uniform, so their first bytes are a good hash.

GIL: released around every loop. Buffers are borrowed for the call only; `table`/`dst` are
written, everything else only read. Bounds: len(table) a multiple of 48; keys 32 bytes each;
records 48 bytes each; `out` 4 uint32 per key. The caller keeps the load below 1 (universe.py
grows at 0.8); a full table is reported as an error, never looped on.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.errno cimport errno
from libc.string cimport memcmp, memcpy
from posix.unistd cimport pread

ABI = 7

DEF REC = 48
DEF KEY = 32
DEF WIN = 85  # slots read by one pread in table_lookup_fd (4,080 bytes: one or two pages)

cdef extern from *:
    """
    static inline Py_ssize_t orbit_home(uint64_t h, uint64_t cap) {
        return (Py_ssize_t)(((unsigned __int128)h * cap) >> 64);
    }
    """
    Py_ssize_t orbit_home(uint64_t h, uint64_t cap) nogil


cdef inline uint32_t _pack_of(const uint8_t* rec) noexcept nogil:
    cdef uint32_t p
    memcpy(&p, rec + KEY, 4)
    return p


cdef inline Py_ssize_t _put(uint8_t* t, Py_ssize_t cap, const uint8_t* rec) noexcept nogil:
    """Insert or overwrite one record; 1 if added, 0 if overwritten, -1 if the table is full."""
    cdef uint64_t h
    cdef Py_ssize_t i, n
    cdef uint8_t* slot
    memcpy(&h, rec, 8)
    i = orbit_home(h, cap)
    for n in range(cap):
        slot = t + i * REC
        if _pack_of(slot) == 0:
            memcpy(slot, rec, REC)
            return 1
        if memcmp(slot, rec, KEY) == 0:
            memcpy(slot + KEY, rec + KEY, REC - KEY)
            return 0
        i += 1
        if i == cap:
            i = 0
    return -1


def table_lookup(const uint8_t[::1] table, const uint8_t[::1] keys, uint32_t[::1] out):
    """Find each 32-byte key of `keys`; write (pack, offset, stored, raw) to `out` (4 per key,
    pack 0 for a miss). Returns the number of hits."""
    cdef Py_ssize_t cap = table.shape[0] // REC
    cdef Py_ssize_t nkeys = keys.shape[0] // KEY
    cdef Py_ssize_t k, i, n, hits = 0
    cdef uint64_t h
    cdef const uint8_t* key
    cdef const uint8_t* slot
    if keys.shape[0] % KEY or out.shape[0] < 4 * nkeys:
        raise ValueError("keys must be 32 bytes each and out must hold 4 uint32 per key")
    if nkeys == 0:
        return 0
    if cap == 0:
        out[: 4 * nkeys] = 0
        return 0
    with nogil:
        for k in range(nkeys):
            key = &keys[k * KEY]
            memcpy(&h, key, 8)
            i = orbit_home(h, cap)
            out[4 * k] = 0
            for n in range(cap):
                slot = &table[i * REC]
                if _pack_of(slot) == 0:
                    break
                if memcmp(slot, key, KEY) == 0:
                    memcpy(&out[4 * k], slot + KEY, 16)
                    hits += 1
                    break
                i += 1
                if i == cap:
                    i = 0
    return hits


def table_insert(uint8_t[::1] table, const uint8_t[::1] records):
    """Insert 48-byte records (an existing key's location is overwritten). Returns how many
    keys were new. Raises ValueError if the table fills up (the caller grows it first)."""
    cdef Py_ssize_t cap = table.shape[0] // REC
    cdef Py_ssize_t nrec = records.shape[0] // REC
    cdef Py_ssize_t k, r, added = 0
    cdef bint full = False
    if records.shape[0] % REC:
        raise ValueError("records must be 48 bytes each")
    if nrec == 0:
        return 0
    if cap == 0:
        raise ValueError("the table is full")
    with nogil:
        for k in range(nrec):
            if _pack_of(&records[k * REC]) == 0:
                continue  # pack 0 would read as an empty slot
            r = _put(&table[0], cap, &records[k * REC])
            if r < 0:
                full = True
                break
            added += r
    if full:
        raise ValueError("the table is full")
    return added


def table_rehash(const uint8_t[::1] src, uint8_t[::1] dst, const uint8_t[::1] dead):
    """Copy every record of `src` whose pack is not marked in the bitmap `dead` (bit p of byte
    p // 8; packs beyond the bitmap live) into the empty table `dst`. Growing passes an empty
    bitmap, dropping packs a filled one. Returns the number of records kept."""
    cdef Py_ssize_t scap = src.shape[0] // REC
    cdef Py_ssize_t dcap = dst.shape[0] // REC
    cdef Py_ssize_t nbits = dead.shape[0] * 8
    cdef Py_ssize_t k, r, kept = 0
    cdef uint32_t p
    cdef bint full = False
    if scap == 0:
        return 0
    with nogil:
        for k in range(scap):
            p = _pack_of(&src[k * REC])
            if p == 0:
                continue
            if p < nbits and (dead[p >> 3] >> (p & 7)) & 1:
                continue
            if dcap == 0:
                full = True
                break
            r = _put(&dst[0], dcap, &src[k * REC])
            if r < 0:
                full = True
                break
            kept += r
    if full:
        raise ValueError("the destination table is full")
    return kept


def table_lookup_fd(int fd, long long at, Py_ssize_t cap, const uint8_t[::1] keys,
                    uint32_t[::1] out):
    """table_lookup on a table stored in the file `fd` (`cap` slots from byte `at`), read with
    pread: a probe touches one or two pages of the page cache and nothing is mapped, so a few
    lookups in a large table leave the process's memory as it was. OSError if a read fails or
    comes back short."""
    cdef Py_ssize_t nkeys = keys.shape[0] // KEY
    cdef Py_ssize_t k, i, j, n, cnt, hits = 0
    cdef ssize_t got
    cdef uint64_t h
    cdef int err = 0
    cdef bint done
    cdef const uint8_t* key
    cdef const uint8_t* slot
    cdef uint8_t win[WIN * REC]
    if keys.shape[0] % KEY or out.shape[0] < 4 * nkeys:
        raise ValueError("keys must be 32 bytes each and out must hold 4 uint32 per key")
    if cap <= 0:
        out[: 4 * nkeys] = 0
        return 0
    with nogil:
        for k in range(nkeys):
            key = &keys[k * KEY]
            memcpy(&h, key, 8)
            i = orbit_home(h, cap)
            out[4 * k] = 0
            n = 0
            done = False
            while not done and n < cap:
                cnt = cap - i if cap - i < WIN else WIN
                got = pread(fd, win, cnt * REC, at + i * REC)
                if got != cnt * REC:
                    err = errno if got < 0 else 5  # EIO: the file is shorter than its table
                    break
                for j in range(cnt):
                    slot = &win[j * REC]
                    if _pack_of(slot) == 0:
                        done = True
                        break
                    if memcmp(slot, key, KEY) == 0:
                        memcpy(&out[4 * k], slot + KEY, 16)
                        hits += 1
                        done = True
                        break
                    n += 1
                    if n == cap:
                        break
                i += cnt
                if i == cap:
                    i = 0
            if err:
                break
    if err:
        raise OSError(err, "reading the universe's table failed")
    return hits

# cython: language_level=3
"""FastCDC content-defined chunking (normalized, 64-bit gear hash), streaming.

Definition (the reference twin in orbit_fast/_native/reference.py is the readable spec): for
chunk-relative byte index j (0-based), bytes with j < min are not hashed; from j = min on,
``fp = (fp << 1) + gear[byte]`` (mod 2^64) and the chunk ends after byte j when
``j + 1 < avg`` and ``fp & mask_s == 0``, or ``j + 1 >= avg`` and ``fp & mask_l == 0``, or
``j + 1 == max`` (whether byte j was hashed or not, so min == max gives fixed-size chunks). Then fp = 0 and the next chunk starts. The masks select high bits of fp (never
bit 63; chunking.top_bits_mask), which depend on the most recent bytes. The last chunk of a stream may be shorter than min.

Streaming: `Chunker.feed` may be given the stream in pieces of any size; it keeps the chunk
start, fp and the stream offset between calls, so the cut points are those of the whole
stream at once. GIL: released for the scan. Buffers: `data` is borrowed for the call only;
`out` (uint64 absolute end offsets) is written, at most len(out) cuts per call, and a call
that fills `out` stops there: call again with the rest (`consumed` says how far it got).
"""

from libc.stdint cimport uint8_t, uint64_t

ABI = 7


cdef class Chunker:
    cdef uint64_t gear[256]
    cdef uint64_t gear_ls[256]  # gear << 1, for the first byte of a pair
    cdef uint64_t mask_s, mask_l
    cdef Py_ssize_t min_size, avg_size, max_size
    cdef uint64_t fp
    cdef uint64_t _start  # absolute offset of the current chunk's first byte
    cdef uint64_t _offset  # absolute offset of the next byte to be fed

    def __init__(self, const uint8_t[::1] gear, Py_ssize_t min_size, Py_ssize_t avg_size,
                 Py_ssize_t max_size, uint64_t mask_s, uint64_t mask_l):
        cdef int i, k
        cdef uint64_t v
        if gear.shape[0] != 2048:
            raise ValueError(f"gear table must be 2048 bytes, got {gear.shape[0]}")
        if not (0 < min_size <= avg_size <= max_size):
            raise ValueError("need 0 < min_size <= avg_size <= max_size")
        for i in range(256):
            v = 0
            for k in range(8):  # little-endian uint64 entries
                v |= (<uint64_t>gear[i * 8 + k]) << (8 * k)
            self.gear[i] = v
            self.gear_ls[i] = v << 1
        self.min_size, self.avg_size, self.max_size = min_size, avg_size, max_size
        self.mask_s, self.mask_l = mask_s, mask_l
        self.fp = 0
        self._start = 0
        self._offset = 0

    @property
    def offset(self):
        """Absolute stream offset of the next byte to feed."""
        return self._offset

    @property
    def chunk_start(self):
        """Absolute offset where the current (unfinished) chunk began."""
        return self._start

    def feed(self, const uint8_t[::1] data, uint64_t[::1] out):
        """Scan `data` (the next bytes of the stream); write chunk end offsets into `out`.

        Returns ``(ncuts, consumed)``: cuts written to out[:ncuts], and how many bytes of
        `data` were scanned (all of them unless `out` filled up first).
        """
        cdef Py_ssize_t n = data.shape[0]
        cdef Py_ssize_t cap = out.shape[0]
        cdef Py_ssize_t i = 0, ncuts = 0
        cdef Py_ssize_t j, stop, cut
        cdef uint64_t fp = self.fp
        cdef uint64_t start = self._start
        cdef uint64_t base = self._offset
        cdef Py_ssize_t mn = self.min_size, av = self.avg_size, mx = self.max_size
        cdef const uint8_t *p
        if n == 0 or cap == 0:
            return 0, 0
        p = &data[0]
        with nogil:
            while i < n and ncuts < cap:
                j = <Py_ssize_t>(base + i - start)  # chunk-relative index of byte i
                if j < mn:  # not hashed: jump to the first hashed byte
                    i = i + (mn - j) if mn - j < n - i else n
                    continue
                if j + 1 < av:  # strict mask up to the byte where j + 1 == av - 1
                    stop = i + (av - 1 - j)
                    cut = _scan(p, i, stop if stop < n else n, &fp, self.mask_s,
                                self.gear, self.gear_ls)
                    if cut < 0:
                        i = stop if stop < n else n
                        continue
                else:  # loose mask up to max, where the chunk ends regardless
                    stop = i + (mx - j)
                    cut = _scan(p, i, stop if stop < n else n, &fp, self.mask_l,
                                self.gear, self.gear_ls)
                    if cut < 0:
                        if stop > n:
                            i = n
                            continue
                        cut = stop  # forced cut at max
                i = cut
                out[ncuts] = base + i
                ncuts += 1
                start = base + i
                fp = 0
        self.fp = fp
        self._start = start
        self._offset = base + i
        return ncuts, i


cdef inline Py_ssize_t _scan(const uint8_t *p, Py_ssize_t i, Py_ssize_t stop, uint64_t *fpp,
                             uint64_t m, const uint64_t *g, const uint64_t *gl) noexcept nogil:
    """Hash p[i:stop] into *fpp; return one past the byte after which the chunk ends, or -1.

    Two bytes per step (FastCDC 2020's "rolling two bytes"): after the first byte fp holds
    fp1 << 1, tested against m << 1 (exact because m has no bit 63); adding the second byte's
    gear value gives fp2 itself. One shift per pair instead of two.
    """
    cdef uint64_t fp = fpp[0]
    cdef uint64_t mls = m << 1
    cdef const uint8_t *q
    # Four pairs per turn, written out: one loop test per 8 bytes, and the compiler schedules
    # the eight table loads ahead of the hash chain (3.3 -> 4.2 GB/s here, docs/performance.md).
    while i + 8 <= stop:
        q = p + i
        fp = (fp << 2) + gl[q[0]]
        if (fp & mls) == 0:
            return i + 1
        fp += g[q[1]]
        if (fp & m) == 0:
            return i + 2
        fp = (fp << 2) + gl[q[2]]
        if (fp & mls) == 0:
            return i + 3
        fp += g[q[3]]
        if (fp & m) == 0:
            return i + 4
        fp = (fp << 2) + gl[q[4]]
        if (fp & mls) == 0:
            return i + 5
        fp += g[q[5]]
        if (fp & m) == 0:
            return i + 6
        fp = (fp << 2) + gl[q[6]]
        if (fp & mls) == 0:
            return i + 7
        fp += g[q[7]]
        if (fp & m) == 0:
            return i + 8
        i += 8
    while i + 2 <= stop:
        fp = (fp << 2) + gl[p[i]]
        if (fp & mls) == 0:
            return i + 1
        fp += g[p[i + 1]]
        if (fp & m) == 0:
            return i + 2
        i += 2
    if i < stop:
        fp = (fp << 1) + g[p[i]]
        if (fp & m) == 0:
            return i + 1
    fpp[0] = fp
    return -1

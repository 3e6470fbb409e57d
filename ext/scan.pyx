# cython: language_level=3
"""One step of the merge-walk: list a source directory and its destination twin, compare.

`scan_pair` reads both directories with readdir + fstatat(AT_SYMLINK_NOFOLLOW) with the GIL
released, sorts each listing by name (bytes order) in C and merges them. With
`fold_unchanged`, a name that is a regular file on both sides with equal size, mtime (ns) and
permission bits produces no Python object at all: it is only counted. That is what makes a
no-change rerun cost one stat per side per file and nothing more.

Buffers: the C arrays and names are owned by this module and freed before returning. Bounds:
names are at most NAME_MAX bytes (readdir's d_name). Errors: the source directory cannot be
opened or read -> OSError; a destination that does not exist or is not a directory is empty;
an entry that vanishes between readdir and fstatat is left out.
"""

from libc.errno cimport ELOOP, ENOENT, ENOTDIR, errno
from libc.stdlib cimport free, qsort, realloc
from libc.string cimport strcmp, strdup
from posix.fcntl cimport AT_SYMLINK_NOFOLLOW, O_CLOEXEC, O_DIRECTORY, O_RDONLY, open
from posix.unistd cimport close
from posix.stat cimport S_ISDIR, S_ISLNK, S_ISREG, fstatat, struct_stat

ABI = 3

cdef enum:
    K_FILE = 0
    K_DIR = 1
    K_LINK = 2
    K_OTHER = 3

# Kind codes, shared with orbit_fast._native.reference and coordinator/scan.py.
FILE, DIR, LINK, OTHER = K_FILE, K_DIR, K_LINK, K_OTHER


cdef extern from "<fcntl.h>" nogil:
    enum: O_NOFOLLOW  # POSIX.1-2008; not in Cython's posix/fcntl.pxd


cdef extern from "<dirent.h>" nogil:
    ctypedef struct c_DIR "DIR":
        pass
    struct dirent:
        char d_name[256]
    c_DIR *fdopendir(int fd)
    dirent *readdir(c_DIR *d)
    int closedir(c_DIR *d)
    int dirfd(c_DIR *d)


cdef struct Ent:
    char *name
    int kind
    long long size
    long long mtime_ns
    long long atime_ns
    unsigned int mode
    long long ctime_ns
    unsigned long long ino
    unsigned int uid
    unsigned int gid


cdef int _cmp(const void *a, const void *b) noexcept nogil:
    return strcmp((<const Ent *>a).name, (<const Ent *>b).name)


cdef void _free(Ent *ents, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        free(ents[i].name)
    free(ents)


cdef int _list(const char *path, bint follow, Ent **out, Py_ssize_t *count) noexcept nogil:
    """Fill *out with the sorted entries of path; 0, or -1 with errno set. Without `follow`,
    a symlink in place of the directory fails (ENOTDIR on Linux) instead of being entered."""
    cdef int flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (0 if follow else O_NOFOLLOW)
    cdef int dfd = open(path, flags)
    cdef c_DIR *d
    if dfd < 0:
        return -1
    d = fdopendir(dfd)
    if d == NULL:
        close(dfd)
        return -1
    cdef dirent *de
    cdef struct_stat st
    cdef Ent *ents = NULL
    cdef Ent *grown
    cdef Py_ssize_t n = 0, cap = 0
    cdef int fd, err
    cdef const char *name
    fd = dirfd(d)
    while True:
        errno = 0
        de = readdir(d)
        if de == NULL:
            if errno != 0:
                err = errno
                closedir(d)
                _free(ents, n)
                errno = err
                return -1
            break
        name = de.d_name
        if name[0] == b'.' and (name[1] == 0 or (name[1] == b'.' and name[2] == 0)):
            continue
        if fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0:
            if errno == ENOENT:
                continue  # vanished since readdir
            err = errno
            closedir(d)
            _free(ents, n)
            errno = err
            return -1
        if n == cap:
            cap = cap * 2 if cap else 64
            grown = <Ent *>realloc(ents, cap * sizeof(Ent))
            if grown == NULL:
                closedir(d)
                _free(ents, n)
                errno = 12  # ENOMEM
                return -1
            ents = grown
        ents[n].name = strdup(name)
        if ents[n].name == NULL:
            closedir(d)
            _free(ents, n)
            errno = 12
            return -1
        if S_ISREG(st.st_mode):
            ents[n].kind = K_FILE
        elif S_ISDIR(st.st_mode):
            ents[n].kind = K_DIR
        elif S_ISLNK(st.st_mode):
            ents[n].kind = K_LINK
        else:
            ents[n].kind = K_OTHER
        ents[n].size = st.st_size
        ents[n].mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec
        ents[n].atime_ns = st.st_atim.tv_sec * 1000000000LL + st.st_atim.tv_nsec
        ents[n].mode = st.st_mode
        ents[n].ctime_ns = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec
        ents[n].ino = st.st_ino
        ents[n].uid = st.st_uid
        ents[n].gid = st.st_gid
        n += 1
    closedir(d)
    if n > 1:
        qsort(ents, n, sizeof(Ent), _cmp)
    out[0] = ents
    count[0] = n
    return 0


cdef tuple _side(Ent *e):
    return (e.kind, e.size, e.mtime_ns, e.atime_ns, e.mode)


def scan_pair(bytes src_dir, bytes dst_dir, bint fold_unchanged, bint follow=False):
    """Compare one source directory with its destination twin.

    Returns ``(entries, folded)``: entries is a list, sorted by name, of
    ``(name, src, dst)`` where ``name`` is bytes and ``src``/``dst`` are
    ``(kind, size, mtime_ns, atime_ns, mode)`` or None when that side lacks the name; folded
    counts the unchanged regular files left out (always 0 without ``fold_unchanged``).

    Symlinks in place of either directory are not entered unless ``follow`` (the tree roots,
    which the user named): the source then raises OSError (ENOTDIR on Linux), the destination
    is empty.
    """
    cdef const char *sp = src_dir
    cdef const char *dp = dst_dir
    cdef Ent *s = NULL
    cdef Ent *d = NULL
    cdef Py_ssize_t ns = 0, nd = 0, i = 0, j = 0, folded = 0
    cdef int rc, err = 0, dst_err = 0, c
    with nogil:
        rc = _list(sp, follow, &s, &ns)
        if rc != 0:
            err = errno
        else:
            if _list(dp, follow, &d, &nd) != 0:
                dst_err = errno
    if rc != 0:
        raise OSError(err, _strerror(err), src_dir)
    if dst_err not in (0, ENOENT, ENOTDIR, ELOOP):
        _free(s, ns)
        raise OSError(dst_err, _strerror(dst_err), dst_dir)
    out = []
    try:
        while i < ns or j < nd:
            if i < ns and j < nd:
                c = strcmp(s[i].name, d[j].name)
            else:
                c = -1 if i < ns else 1
            if c < 0:
                out.append((<bytes>s[i].name, _side(&s[i]), None))
                i += 1
            elif c > 0:
                out.append((<bytes>d[j].name, None, _side(&d[j])))
                j += 1
            else:
                if (fold_unchanged and s[i].kind == K_FILE and d[j].kind == K_FILE
                        and s[i].size == d[j].size and s[i].mtime_ns == d[j].mtime_ns
                        and (s[i].mode & 0o7777) == (d[j].mode & 0o7777)):
                    folded += 1
                else:
                    out.append((<bytes>s[i].name, _side(&s[i]), _side(&d[j])))
                i += 1
                j += 1
    finally:
        _free(s, ns)
        _free(d, nd)
    return out, folded


def scan_dir(bytes path, bint follow=False):
    """List one directory for a backup: a list, sorted by name, of ``(name, (kind, size,
    mtime_ns, atime_ns, mode, ctime_ns, ino, uid, gid))``; the fields a snapshot records and
    its "unchanged since the parent" test needs, from one fstatat per entry. A symlink in
    place of the directory raises OSError unless ``follow``."""
    cdef const char *p = path
    cdef Ent *e = NULL
    cdef Py_ssize_t n = 0, i
    cdef int rc, err = 0
    with nogil:
        rc = _list(p, follow, &e, &n)
        if rc != 0:
            err = errno
    if rc != 0:
        raise OSError(err, _strerror(err), path)
    try:
        return [(<bytes>e[i].name, (e[i].kind, e[i].size, e[i].mtime_ns, e[i].atime_ns,
                                    e[i].mode, e[i].ctime_ns, e[i].ino, e[i].uid, e[i].gid))
                for i in range(n)]
    finally:
        _free(e, n)


def _strerror(int err):
    import os
    return os.strerror(err)

# cython: language_level=3
"""One step of the merge-walk: list a source directory and its destination twin, compare.

`scan_pair` reads both directories with readdir + fstatat(AT_SYMLINK_NOFOLLOW) with the GIL
released, sorts each listing by name (bytes order) in C and merges them. With
`fold_unchanged`, a name that is a regular file on both sides with equal size, mtime (ns) and
permission bits produces no Python object at all: it is only counted. That is what makes a
no-change rerun cost one stat per side per file and nothing more.

Both take directories as open fds, which the caller got from confine.Tree (each directory
reached from its tree's root without following a symlink): the kernel lists what is at that
fd, whatever happens to the names above it meanwhile. Buffers: the C arrays and names are
owned by this module and freed before returning. Bounds: names are at most NAME_MAX bytes
(readdir's d_name). Errors: a directory that cannot be read -> OSError; an entry that vanishes
between readdir and fstatat is left out.
"""

from libc.errno cimport ENOENT, errno
from libc.stdlib cimport free, qsort, realloc
from libc.string cimport memcpy, strcmp, strdup
from posix.fcntl cimport AT_SYMLINK_NOFOLLOW, F_DUPFD_CLOEXEC, fcntl
from posix.unistd cimport close
from posix.stat cimport S_ISDIR, S_ISLNK, S_ISREG, fstatat, struct_stat

ABI = 7

cdef enum:
    K_FILE = 0
    K_DIR = 1
    K_LINK = 2
    K_OTHER = 3

# Kind codes, shared with orbit_fast._native.reference and coordinator/scan.py.
FILE, DIR, LINK, OTHER = K_FILE, K_DIR, K_LINK, K_OTHER


cdef extern from "<dirent.h>" nogil:
    ctypedef struct c_DIR "DIR":
        pass
    struct dirent:
        char d_name[256]
    c_DIR *fdopendir(int fd)
    dirent *readdir(c_DIR *d)
    int closedir(c_DIR *d)
    int dirfd(c_DIR *d)
    void rewinddir(c_DIR *d)


cdef struct Ent:
    char *name
    int kind
    long long size
    long long mtime_ns
    long long atime_ns
    unsigned int mode
    long long ctime_ns
    unsigned long long ino
    unsigned long long dev
    unsigned int uid
    unsigned int gid
    unsigned long long nlink
    unsigned long long rdev


cdef int _cmp(const void *a, const void *b) noexcept nogil:
    return strcmp((<const Ent *>a).name, (<const Ent *>b).name)


cdef void _free(Ent *ents, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        free(ents[i].name)
    free(ents)


cdef int _list(int dir_fd, Ent **out, Py_ssize_t *count) noexcept nogil:
    """Fill *out with the sorted entries of the directory open at dir_fd (a duplicate is read:
    the caller keeps and closes its own); 0, or -1 with errno set."""
    cdef int dfd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0)
    cdef c_DIR *d
    if dfd < 0:
        return -1
    d = fdopendir(dfd)
    if d == NULL:
        close(dfd)
        return -1
    rewinddir(d)  # the duplicate shares the caller's offset: read from the start, always
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
        ents[n].dev = st.st_dev
        ents[n].uid = st.st_uid
        ents[n].gid = st.st_gid
        ents[n].nlink = st.st_nlink
        ents[n].rdev = st.st_rdev
        n += 1
    closedir(d)
    if n > 1:
        qsort(ents, n, sizeof(Ent), _cmp)
    out[0] = ents
    count[0] = n
    return 0


cdef tuple _side(Ent *e):
    return (e.kind, e.size, e.mtime_ns, e.atime_ns, e.mode, e.ino, e.dev, e.uid, e.gid,
            e.ctime_ns, e.nlink)


def scan_pair(int src_fd, int dst_fd, int fold_unchanged):
    """Compare one source directory with its destination twin, both given as open directory
    fds (dst_fd -1: the destination has no such directory).

    Returns ``(entries, folded)``: entries is a list, sorted by name, of
    ``(name, src, dst)`` where ``name`` is bytes and ``src``/``dst`` are
    ``(kind, size, mtime_ns, atime_ns, mode, ino, dev, uid, gid, ctime_ns, nlink)`` or None
    when that side lacks the name; folded counts the unchanged regular files left out (always
    0 without ``fold_unchanged``). ``fold_unchanged`` is bits: 1 folds files of the same size,
    mtime and permission bits; 2 also asks the same owner and group (a sync that keeps them);
    4 folds no file with more than one link on either side (a sync that keeps hard links sees
    every name of a set, and every name the destination links to another); 8 folds only files
    whose source ctime is before the destination's (equal is not before: ctimes tick coarsely) (its xattrs or ACLs may have changed: a sync
    that keeps them compares them). The caller opened the directories (confine.Tree.open_dir: no
    symlink followed on the way); an error reading the source raises OSError with
    filename None, one reading the destination OSError with filename b"dst".
    """
    cdef Ent *s = NULL
    cdef Ent *d = NULL
    cdef Py_ssize_t ns = 0, nd = 0, i = 0, j = 0, folded = 0
    cdef int rc, err = 0, dst_err = 0, c
    with nogil:
        rc = _list(src_fd, &s, &ns)
        if rc != 0:
            err = errno
        elif dst_fd >= 0:
            if _list(dst_fd, &d, &nd) != 0:
                dst_err = errno
    if rc != 0:
        raise OSError(err, _strerror(err))
    if dst_err != 0:
        _free(s, ns)
        raise OSError(dst_err, _strerror(dst_err), b"dst")
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
                if (fold_unchanged & 1 and s[i].kind == K_FILE and d[j].kind == K_FILE
                        and s[i].size == d[j].size and s[i].mtime_ns == d[j].mtime_ns
                        and (s[i].mode & 0o7777) == (d[j].mode & 0o7777)
                        and (not fold_unchanged & 2
                             or (s[i].uid == d[j].uid and s[i].gid == d[j].gid))
                        and (not fold_unchanged & 4 or (s[i].nlink == 1 and d[j].nlink == 1))
                        and (not fold_unchanged & 8 or s[i].ctime_ns < d[j].ctime_ns)):
                    folded += 1
                else:
                    out.append((<bytes>s[i].name, _side(&s[i]), _side(&d[j])))
                i += 1
                j += 1
    finally:
        _free(s, ns)
        _free(d, nd)
    return out, folded


def scan_dir(int dir_fd):
    """List one directory (an open fd, the caller's) for a backup: a list, sorted by name,
    of ``(name, (kind, size, mtime_ns, atime_ns, mode, ctime_ns, ino, uid, gid, dev, nlink,
    rdev))``; the fields a snapshot records and its "unchanged since the parent" test needs,
    from one fstatat per entry."""
    cdef Ent *e = NULL
    cdef Py_ssize_t n = 0, i
    cdef int rc, err = 0
    with nogil:
        rc = _list(dir_fd, &e, &n)
        if rc != 0:
            err = errno
    if rc != 0:
        raise OSError(err, _strerror(err))
    try:
        return [(<bytes>e[i].name, (e[i].kind, e[i].size, e[i].mtime_ns, e[i].atime_ns,
                                    e[i].mode, e[i].ctime_ns, e[i].ino, e[i].uid, e[i].gid,
                                    e[i].dev, e[i].nlink, e[i].rdev))
                for i in range(n)]
    finally:
        _free(e, n)


def _strerror(int err):
    import os
    return os.strerror(err)


# ---- resolving a path below a tree's root (confine.py) -------------------------------------

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *path, int flags, ...)
    enum: O_NOFOLLOW
    enum: O_PATH
    enum: O_DIRECTORY
    enum: O_CLOEXEC
    enum: O_CREAT

cdef extern from *:
    """
    #include <errno.h>
    #include <fcntl.h>
    #include <stdint.h>
    #include <sys/syscall.h>
    #include <unistd.h>
    #ifndef SYS_openat2
    #define SYS_openat2 437
    #endif
    struct orbit_open_how { uint64_t flags; uint64_t mode; uint64_t resolve; };
    /* RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS (linux/openat2.h); EAGAIN: a rename raced it. */
    static int orbit_openat2(int dirfd, const char *path, int flags, int mode) {
        struct orbit_open_how how = {(uint64_t)flags,
                                     (uint64_t)((flags & O_CREAT) ? mode : 0), 0x08 | 0x04};
        long r;
        do {
            r = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        } while (r < 0 && (errno == EAGAIN || errno == EINTR));
        return (int)r;
    }
    static int orbit_errno(void) { return errno; }
    static void orbit_set_errno(int e) { errno = e; }
    static const char *orbit_dot = ".";
    """
    int orbit_openat2(int dirfd, const char *path, int flags, int mode) nogil
    int orbit_errno() nogil
    void orbit_set_errno(int e) nogil
    const char *orbit_dot


cdef bint _clean(const char *rel, Py_ssize_t n) noexcept nogil:
    """confine.check_rel in C: "/"-joined components, none empty, "." or "..", no NUL."""
    cdef Py_ssize_t i, start = 0
    for i in range(n + 1):
        if i < n and rel[i] == 0:
            return False
        if i < n and rel[i] != b'/':
            continue
        if i == start:  # empty: a leading "/", "//" or a trailing "/"
            return n == 0
        if rel[start] == b'.' and (i - start == 1 or (i - start == 2 and rel[start + 1] == b'.')):
            return False
        start = i + 1
    return True


cdef int _beneath(int dirfd, const char *rel, Py_ssize_t n, int flags, int mode,
                  bint use_openat2) noexcept nogil:
    """openat below dirfd following no symlink (see open_beneath); -1 with errno set."""
    cdef int fd, nxt, r, err
    cdef Py_ssize_t i, start
    cdef char part[256]
    if not _clean(rel, n):
        orbit_set_errno(22)  # EINVAL
        return -2
    flags |= O_NOFOLLOW | O_CLOEXEC
    if use_openat2:
        return orbit_openat2(dirfd, rel if n else orbit_dot, flags, mode)
    # The walk: each directory opened O_PATH | O_NOFOLLOW relative to the one before.
    fd = dirfd
    start = 0
    for i in range(n):
        if rel[i] != b'/':
            continue
        if i - start > 255:
            if fd != dirfd:
                close(fd)
            orbit_set_errno(36)  # ENAMETOOLONG
            return -1
        memcpy(part, rel + start, i - start)
        part[i - start] = 0
        nxt = openat(fd, part, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd != dirfd:
            close(fd)
        if nxt < 0:
            return -1
        fd = nxt
        start = i + 1
    r = openat(fd, rel + start if n else orbit_dot, flags, mode)
    if fd != dirfd:
        err = orbit_errno()
        close(fd)
        orbit_set_errno(err)
    return r


def open_beneath(int dirfd, bytes rel, int flags, int mode, bint use_openat2):
    """An fd for `rel` below the directory `dirfd`, following no symlink in any component and
    never leaving dirfd's tree: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), or (without
    `use_openat2`) a walk that opens each directory O_PATH | O_NOFOLLOW relative to the one
    before. O_NOFOLLOW and O_CLOEXEC are always added. A `rel` that is not clean (as
    confine.check_rel: an "", "." or ".." component, absolute, a NUL) is refused with EINVAL
    before any system call; b"" opens dirfd's directory again. Errors: OSError with filename
    `rel` (EINVAL, ELOOP, ENOTDIR, EXDEV, ENOENT, ...)."""
    cdef const char *p = rel
    cdef Py_ssize_t n = len(rel)
    cdef int fd, err = 0
    with nogil:
        fd = _beneath(dirfd, p, n, flags, mode, use_openat2)
        if fd < 0:
            err = errno
    if fd == -2:
        raise OSError(err, "unsafe path (not a clean relative path)", rel)
    if fd < 0:
        raise OSError(err, _strerror(err), rel)
    return fd

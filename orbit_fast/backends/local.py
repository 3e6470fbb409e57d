"""A Store on a local (or locally mounted) directory: both halves and part uploads (parts.py);
no server copy.

Confined (confine.py, #15): the root is opened once (created on the first write if missing)
and every object is reached relative to directory descriptors, following no symlink in any
component of its name; names are checked first (confine.check_rel: a bad one raises
confine.Escape, an OSError with EINVAL). A symlink inside the root is no object: listings
skip it (list_info reports it to on_skip), opening it fails with ELOOP, stat_info and size
see no file there, delete and sweep_temp remove the link itself. So whoever can write below
the root cannot make this store read, write, delete or touch anything outside it.

Writes go to a temp file in the object's directory, are fsynced, then renamed into place and
the directory fsynced: a crash leaves the old state or the new one, plus at most a temp file
(".tmp-*", ignored by `list` and swept by `sweep_temp`). Exclusive writes use link(), which
fails if the name exists, atomically. Read handles are kept open (a few per pack read in a row).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
from collections import OrderedDict
from collections.abc import Callable, Iterator

from orbit_fast.backends.base import (
    TEMP_NAME,
    CantCopy,
    Capabilities,
    Descend,
    FileMeta,
    ObjectInfo,
    OnDir,
    OnSkip,
    is_temp,
    upload_temp_name,
)
from orbit_fast.backends.base import TMP_PREFIX as _TMP
from orbit_fast.backends.parts import FileUpload, FileUploads
from orbit_fast.confine import Escape, Tree, check_rel, create_fresh_at, open_beneath

_OPEN_FILES = 16
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put at an object's name never blocks the open (regular files ignore it).
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_READ = 0x7FFFF000  # Linux returns at most this much from one read(2)
_BTMP = _TMP.encode()


def _check(name: str) -> bytes:
    """An object's name as bytes: a clean relative path, not the root itself."""
    b = check_rel(name)
    if not b:
        raise Escape(name, "empty name")
    return b


def _split(b: bytes) -> tuple[bytes, bytes]:
    d, _, base = b.rpartition(b"/")
    return d, base


def _not_a_file(st: os.stat_result, shown: str) -> OSError:
    """What stat_info and size say of an entry that is no object (objects are files)."""
    kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
    return FileNotFoundError(errno.ENOENT, f"no object there ({kind})", shown)


def _xattr_names(fd: int) -> tuple[str, ...]:
    try:
        return tuple(os.listxattr(fd))
    except OSError:  # a filesystem without xattrs
        return ()


def _file_meta(st: os.stat_result, xattrs: tuple[str, ...]) -> FileMeta:
    """What a copy to another kind of store keeps or reports of a file."""
    return FileMeta(st.st_mode, st.st_uid, st.st_gid, st.st_atime_ns, st.st_nlink, xattrs)


def _give(fd: int, meta: FileMeta | None, mtime_ns: int) -> None:
    """The file open at `fd` made as `meta` says (the caller decided what it may carry):
    owner first, since a chown clears the setuid and setgid bits; then mode and times."""
    atime = mtime_ns
    if meta is not None:
        if meta.uid >= 0 or meta.gid >= 0:
            os.fchown(fd, meta.uid, meta.gid)
        if meta.mode >= 0:
            os.fchmod(fd, stat.S_IMODE(meta.mode))
        if meta.atime_ns is not None:
            atime = meta.atime_ns
    os.utime(fd, ns=(atime, mtime_ns))


def _read_to_end(fd: int, size: int) -> bytes:
    """The file's bytes, in one read(2) when it still has the `size` expected."""
    data = os.read(fd, min(size + 1, _MAX_READ))
    if len(data) <= size and len(data) < _MAX_READ:
        return data  # a short read of a regular file is its end
    parts = [data]
    while chunk := os.read(fd, 1 << 20 if len(data) > size else _MAX_READ):
        parts.append(chunk)
    return b"".join(parts)


class LocalStore(FileUploads):
    capabilities = Capabilities(min_part_bytes=0, max_part_bytes=0, dir_mtimes=True,
                                file_meta=True)  # fmt: skip

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root
        self._tree: Tree | None = None
        self._fds: OrderedDict[str, int] = OrderedDict()

    # ---- the root and the names below it ------------------------------------------------------

    def _top(self, create: bool = False) -> Tree:
        """The root, opened once. A store outlives a run in a worker (workers/objects.py keeps
        it per thread), so the path is checked to still name the directory held: one that was
        replaced since (the operator's move or rm -r between runs) is opened anew, as the path
        named it before this store held descriptors; nothing below it is ever resolved by path.
        FileNotFoundError if it is missing and `create` is false."""
        t = self._tree
        if t is not None:
            try:
                st = os.stat(self.root)
                if st.st_ino == t.ino and st.st_dev == t.dev:
                    return t
            except FileNotFoundError:
                pass
            self.close()
        try:
            t = Tree.open(self.root)
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(self.root, exist_ok=True)
            t = Tree.open(self.root)
        self._tree = t
        return t

    def _show(self, name: str | bytes) -> str:
        return os.path.join(self.root, os.fsdecode(name))

    def _named(self, exc: OSError, name: str | bytes) -> OSError:
        """`exc` naming the object's path (the *at calls name only the last component)."""
        if exc.filename != self.root:
            exc.filename, exc.filename2 = self._show(name), None
        return exc

    @staticmethod
    def _parent(t: Tree, b: bytes, create: bool = False) -> tuple[int, bytes]:
        """(fd of the directory of object `b`, b's last component); the fd is the root's own
        when `b` is one component (close it with _release). With `create` the directories
        are made as needed (none followed)."""
        d, base = _split(b)
        if not d:
            return t.fd, base
        try:
            return open_beneath(t.fd, d, _DIR), base
        except FileNotFoundError:
            if not create:
                raise
        t.makedirs(d)
        return open_beneath(t.fd, d, _DIR), base

    def keep_from(self, src: object, name: str, target: str) -> None:
        """--backup-dir: `src`'s file `name` as `target` here, before it is replaced or
        deleted: a hard link (nothing copied, nothing ever missing), or a copy when the two
        are on different filesystems."""
        if not isinstance(src, LocalStore):
            raise CantCopy(f"{self._show(target)}: cannot keep {name} from {src!r}")
        st, dt = src._top(), self._top(create=True)
        tmp = upload_temp_name(target)
        sfd, sname = self._parent(st, _check(name))
        try:
            dfd, dname = self._parent(dt, _check(tmp), create=True)
            try:
                try:
                    os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    fin = os.open(sname, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
                    try:
                        was = os.fstat(fin)
                        fout = create_fresh_at(dfd, dname)
                        try:
                            with (open(fin, "rb", closefd=False) as a,
                                  open(fout, "wb", closefd=False) as b):  # fmt: skip
                                shutil.copyfileobj(a, b, 1 << 20)
                            os.utime(fout, ns=(was.st_atime_ns, was.st_mtime_ns))
                        finally:
                            os.close(fout)
                    finally:
                        os.close(fin)
            finally:
                self._release(dt, dfd)
        finally:
            self._release(st, sfd)
        dt.rename(tmp, target)

    @staticmethod
    def _release(t: Tree, fd: int) -> None:
        if fd != t.fd:
            os.close(fd)

    def _open(self, b: bytes, flags: int) -> int:
        return open_beneath(self._top().fd, b, flags)

    def _lstat(self, name: str) -> os.stat_result:
        """The entry at `name`, which must be an object (a regular file)."""
        b = _check(name)
        try:
            t = self._top()
            d, base = self._parent(t, b)
            try:
                st = os.stat(base, dir_fd=d, follow_symlinks=False)
            finally:
                self._release(t, d)
        except OSError as exc:
            raise self._named(exc, name) from None
        if not stat.S_ISREG(st.st_mode):
            raise _not_a_file(st, self._show(name))
        return st

    # ---- BlobStore (base.py) ----------------------------------------------------------------

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False, private: bool = False, mtime_ns: int | None = None,
              durable: bool = True, meta: FileMeta | None = None) -> None:  # fmt: skip
        b = _check(name)
        try:
            t = self._top(create=True)
            d, base = self._parent(t, b, create=True)
        except OSError as exc:
            raise self._named(exc, name) from None
        try:
            self._write_in(d, base, data, exclusive, private, mtime_ns, durable, meta)
        except OSError as exc:
            raise self._named(exc, name) from None
        finally:
            self._release(t, d)

    def _write_in(self, d: int, base: bytes, data: bytes | bytearray | memoryview,
                  exclusive: bool, private: bool, mtime_ns: int | None, durable: bool,
                  meta: FileMeta | None = None) -> None:  # fmt: skip
        tmp = _BTMP + secrets.token_hex(6).encode()
        # A private object is created 0600, so that it is never readable by others, not even
        # between its write and a chmod.
        fd = os.open(tmp, _CREATE, 0o600 if private else 0o644, dir_fd=d)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
            if mtime_ns is not None:  # with the owner and mode of `meta`, before the rename
                _give(fd, meta, mtime_ns)
        except BaseException:
            os.close(fd)
            os.unlink(tmp, dir_fd=d)
            raise
        os.close(fd)
        try:
            if exclusive:  # FileExistsError if it is there, whatever it is (a link included)
                os.link(tmp, base, src_dir_fd=d, dst_dir_fd=d, follow_symlinks=False)
                os.unlink(tmp, dir_fd=d)
            else:  # renameat replaces a link at the name, never writes through it
                os.rename(tmp, base, src_dir_fd=d, dst_dir_fd=d)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=d)
            except FileNotFoundError:
                pass
            raise
        if durable:
            os.fsync(d)

    def _fd(self, name: str) -> int:
        fd = self._fds.pop(name, None)
        if fd is None:
            b = _check(name)
            try:
                fd = self._open(b, _READ)
            except OSError as exc:
                raise self._named(exc, name) from None
            if len(self._fds) >= _OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[name] = fd
        return fd

    def _read(self, name: str, size: int | None,
              meta: bool = False) -> tuple[bytes, os.stat_result, FileMeta | None]:  # fmt: skip
        """The bytes of object `name` and the fstat of the fd they were read from, taken after
        the read (what a copy compares with its listing). `size`: what the caller expects
        (None: ask fstat first). `meta`: the FileMeta too, its xattr names listed on that fd
        while it is open (one listxattr), its atime as it was before this read moved it."""
        got: FileMeta | None = None
        b = _check(name)
        try:
            fd = self._open(b, _READ)
            try:
                atime = 0
                if size is None or meta:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        raise _not_a_file(st, self._show(name))
                    size, atime = size if size is not None else st.st_size, st.st_atime_ns
                data = _read_to_end(fd, size)
                st = os.fstat(fd)
                if meta:
                    got = _file_meta(st, _xattr_names(fd))._replace(atime_ns=atime)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._named(exc, name) from None
        if not stat.S_ISREG(st.st_mode):
            raise _not_a_file(st, self._show(name))
        return data, st, got

    def read(self, name: str) -> bytes:
        return self._read(name, None)[0]

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        data = os.pread(self._fd(name), length, offset)
        if len(data) != length:
            raise OSError(f"{self._show(name)}: short read at {offset} ({len(data)} of {length})")
        return data

    def size(self, name: str) -> int:
        return self._lstat(name).st_size

    def exists(self, name: str) -> bool:
        """Whether anything is at `name` (a link too: the name is taken)."""
        b = _check(name)
        try:
            t = self._top()
            d, base = self._parent(t, b)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            os.stat(base, dir_fd=d, follow_symlinks=False)
            return True
        except (FileNotFoundError, NotADirectoryError):
            return False
        finally:
            self._release(t, d)

    def _dirs(self, prefix: str, descend: Descend | None,
              on_error: Callable[[str, OSError], None]
              ) -> Iterator[tuple[str, int, list[os.DirEntry[str]]]]:  # fmt: skip
        """(rel, fd, entries in name order) of every directory below prefix, depth first;
        subdirectories entered by fd (O_NOFOLLOW: a symlink is never entered), those that
        `descend` refuses skipped. The fd is open while the caller looks at the entries. A
        directory that vanished is skipped; one that cannot be read goes to `on_error`."""
        top = check_rel(prefix.strip("/"))
        try:
            # Its own descriptor of the root: the listing runs in a thread of its own
            # (sync/objects.py) while the store serves other calls.
            root = os.dup(self._top().fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            yield from self._dirs_below(root, os.fsdecode(top), descend, on_error)
        finally:
            os.close(root)

    def _dirs_below(self, root: int, top: str, descend: Descend | None,
                    on_error: Callable[[str, OSError], None]
                    ) -> Iterator[tuple[str, int, list[os.DirEntry[str]]]]:  # fmt: skip
        stack = [top]
        while stack:
            rel = stack.pop()
            try:
                fd = open_beneath(root, os.fsencode(rel), _DIR)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                on_error(rel, self._named(exc, rel))
                continue
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                yield rel, fd, entries
                subdirs = []
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        child = f"{rel}/{e.name}" if rel else e.name
                        if descend is None or descend(child):
                            subdirs.append(child)
            finally:
                os.close(fd)
            stack.extend(reversed(subdirs))

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        def fail(rel: str, exc: OSError) -> None:
            raise exc

        for rel, _, entries in self._dirs(prefix, None, fail):
            for e in entries:
                if e.name.startswith(_TMP) or is_temp(e.name):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield (f"{rel}/{e.name}" if rel else e.name), st.st_size

    def is_empty(self) -> bool:
        """No entry at all in the directory (or no directory): any file, even a temp file or
        an empty directory, means something else lives here."""
        try:
            return not os.listdir(self._top().fd)
        except (FileNotFoundError, NotADirectoryError):
            return True

    def sweep_temp(self, prefix: str) -> int:
        """Delete temp files a crashed writer left below prefix; returns how many."""
        n = 0
        for _, fd, entries in self._dirs(prefix, None, lambda rel, exc: None):
            for e in entries:
                if (e.name.startswith(_TMP) or is_temp(e.name)) and not e.is_dir(
                        follow_symlinks=False):  # fmt: skip
                    try:
                        os.unlink(e.name, dir_fd=fd)
                        n += 1
                    except FileNotFoundError:
                        pass
        return n

    def remove_temp(self, name: str) -> bool:
        """Delete a stale temp file (SMBStore.remove_temp): FileNotFoundError when it is gone,
        False when it cannot be removed now."""
        try:
            self._lstat(name)  # gone: FileNotFoundError (confined, as every access here)
            self.delete(name)
        except FileNotFoundError:
            raise
        except OSError:
            return False
        return True

    def delete(self, name: str) -> None:
        self.delete_handle(name)
        b = _check(name)
        try:
            t = self._top()
            d, base = self._parent(t, b)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._named(exc, name) from None
        try:
            os.unlink(base, dir_fd=d)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._named(exc, name) from None
        finally:
            self._release(t, d)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
        if self._tree is not None:
            self._tree.close()
            self._tree = None

    # ---- FileStore (base.py) ----------------------------------------------------------------

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None, on_dir: OnDir | None = None,
                  meta: bool = False) -> Iterator[ObjectInfo]:  # fmt: skip
        """Regular files below prefix, depth first in name order. Symlinks, devices and the like
        are reported to `on_skip` (objects have no such kinds); a symlink to a directory is
        never entered; directories `descend` refuses are not read. `meta`: no FileMeta in
        listings here (no dos_meta)."""

        def unreadable(rel: str, exc: OSError) -> None:
            if on_skip is None:
                raise exc
            on_skip(rel, f"cannot list: {exc.strerror or exc}")

        for rel, _, entries in self._dirs(prefix, descend, unreadable):
            for e in entries:
                child = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    if on_dir is not None:  # for the directory times (engine.py)
                        try:
                            on_dir(child, e.stat(follow_symlinks=False).st_mtime_ns)
                        except FileNotFoundError:
                            pass
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    if not is_temp(e.name):
                        yield ObjectInfo(child, st.st_size, st.st_mtime_ns)
                    elif on_skip is not None:  # not a file of the tree, but users see it
                        on_skip(child, TEMP_NAME)
                elif on_skip is not None:
                    kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                    on_skip(child, f"{kind}: object stores keep only files")

    def set_dir_mtime(self, name: str, mtime_ns: int) -> None:
        """Give the directory `name` the source's time (a sync from a store that lists
        directories with times: SMB); through the root's fd, no link followed."""
        self._top().utime(name, (mtime_ns, mtime_ns))

    def stat_info(self, name: str, meta: bool = False) -> ObjectInfo:
        """The lstat of `name`; with `meta`, its FileMeta too, the xattr names listed on the
        fd its ranged reads use (held for an upload in parts, opened if not)."""
        st = self._lstat(name)
        got = None
        if meta:
            try:
                names = _xattr_names(self._fd(name))
            except OSError as exc:
                raise self._named(exc, name) from None
            got = _file_meta(st, names)
        return ObjectInfo(name, st.st_size, st.st_mtime_ns, meta=got)

    def read_info(self, name: str, expect: ObjectInfo | None = None,
                  meta: bool = False) -> tuple[bytes, ObjectInfo]:  # fmt: skip
        """The object and the info of what was read: the fstat of the fd it was read from,
        after the read. With `expect` (a listing's), one read(2) takes a file still of that
        size; the caller compares the info with it (a mismatch: replaced or written since)."""
        data, st, got = self._read(name, None if expect is None else expect.size, meta)
        return data, ObjectInfo(name, len(data), st.st_mtime_ns, meta=got)

    def put_file(self, name: str, data: bytes, mtime_ns: int, durable: bool = True,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        self.write(name, data, mtime_ns=mtime_ns, durable=durable, meta=meta)
        return ObjectInfo(name, len(data), mtime_ns)

    # PartUploads (base.py), and FileOps for FileUpload (parts.py)

    def begin_upload(self, name: str, size: int, part_bytes: int, mtime_ns: int,
                     token: str = "", md5: str = "",
                     meta: FileMeta | None = None) -> FileUpload:  # fmt: skip
        _check(name)  # the object's name is first used at commit: refuse a bad one at once
        return super().begin_upload(name, size, part_bytes, mtime_ns, token, md5, meta)

    def create_sized(self, tmp: str, size: int) -> None:
        """A new temp file of `size` bytes: whatever is at its predictable name (a stale one
        of ours, or a symlink someone put there) is removed, never followed."""
        b = _check(tmp)
        try:
            t = self._top(create=True)
            d, base = self._parent(t, b, create=True)
            try:
                try:
                    os.unlink(base, dir_fd=d)
                except FileNotFoundError:
                    pass
                fd = os.open(base, _CREATE, 0o644, dir_fd=d)
            finally:
                self._release(t, d)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._named(exc, tmp) from None

    def pwrite(self, tmp: str, offset: int, data: bytes) -> None:
        # Never through a symlink put in its place since create_sized (ELOOP instead).
        b = _check(tmp)
        try:
            fd = self._open(b, os.O_WRONLY)
        except OSError as exc:
            raise self._named(exc, tmp) from None
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        finally:
            os.close(fd)

    def commit(self, tmp: str, name: str, mtime_ns: int,
               meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        self.delete_handle(tmp)
        self.delete_handle(name)
        sb, db = _check(tmp), _check(name)
        try:
            t = self._top()
            sd, sbase = self._parent(t, sb)
            try:
                # The temp file is beside its object (upload_temp_name): one directory fd.
                same = _split(sb)[0] == _split(db)[0]
                dd, dbase = (sd, _split(db)[1]) if same else self._parent(t, db)
                try:
                    if meta is None:
                        os.utime(sbase, ns=(mtime_ns, mtime_ns), dir_fd=sd,
                                 follow_symlinks=False)  # fmt: skip
                    else:  # owner and mode before the rename: nobody sees the file without
                        fd = os.open(sbase, _READ | os.O_NOFOLLOW, dir_fd=sd)
                        try:
                            _give(fd, meta, mtime_ns)
                        finally:
                            os.close(fd)
                    os.rename(sbase, dbase, src_dir_fd=sd, dst_dir_fd=dd)
                    st = os.stat(dbase, dir_fd=dd, follow_symlinks=False)
                finally:
                    if not same:
                        self._release(t, dd)
            finally:
                self._release(t, sd)
        except OSError as exc:
            raise self._named(exc, name) from None
        return ObjectInfo(name, st.st_size, st.st_mtime_ns)

    def discard(self, tmp: str) -> None:
        self.delete(tmp)

    def delete_handle(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)

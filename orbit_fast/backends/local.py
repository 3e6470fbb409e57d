"""A Store on a local (or locally mounted) directory: both halves and part uploads (parts.py);
no server copy.

Writes go to a temp file in the object's directory, are fsynced, then renamed into place and
the directory fsynced: a crash leaves the old state or the new one, plus at most a temp file
(".tmp-*", ignored by `list` and swept by `sweep_temp`). Exclusive writes use link(), which
fails if the name exists, atomically. Read handles are kept open (a few per pack read in a row).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections import OrderedDict
from collections.abc import Iterator

from orbit_fast.backends.base import TMP_PREFIX as _TMP
from orbit_fast.backends.base import (
    Capabilities,
    Descend,
    ObjectInfo,
    OnSkip,
    is_temp,
)
from orbit_fast.backends.parts import FileUploads
from orbit_fast.fsinfo import create_fresh, fsync_path

_OPEN_FILES = 16


class LocalStore(FileUploads):
    capabilities = Capabilities(min_part_bytes=0, max_part_bytes=0)

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._dirs_made: set[str] = set()

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def _makedirs(self, directory: str) -> None:
        if directory not in self._dirs_made:
            os.makedirs(directory, exist_ok=True)
            self._dirs_made.add(directory)

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False, private: bool = False, mtime_ns: int | None = None,
              durable: bool = True) -> None:  # fmt: skip
        path = self._path(name)
        directory = os.path.dirname(path)
        self._makedirs(directory)
        tmp = os.path.join(directory, f"{_TMP}{secrets.token_hex(6)}")
        # A private object is created 0600, so that it is never readable by others, not even
        # between its write and a chmod.
        mode = 0o600 if private else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
            if mtime_ns is not None:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        try:
            if exclusive:
                os.link(tmp, path)  # FileExistsError if it is there
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        if durable:
            fsync_path(directory)

    def _fd(self, name: str) -> int:
        fd = self._fds.pop(name, None)
        if fd is None:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
            if len(self._fds) >= _OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        self._fds[name] = fd
        return fd

    def read(self, name: str) -> bytes:
        with open(self._path(name), "rb") as f:
            return f.read()

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        data = os.pread(self._fd(name), length, offset)
        if len(data) != length:
            raise OSError(f"{self._path(name)}: short read at {offset} ({len(data)} of {length})")
        return data

    def size(self, name: str) -> int:
        return os.stat(self._path(name)).st_size

    def exists(self, name: str) -> bool:
        return os.path.lexists(self._path(name))

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        top = self._path(prefix)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for fname in sorted(filenames):
                if fname.startswith(_TMP) or is_temp(fname):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, fname)).st_size
                except FileNotFoundError:
                    continue
                yield (fname if rel == "." else f"{rel}/{fname}"), size

    def is_empty(self) -> bool:
        """No entry at all in the directory (or no directory): any file, even a temp file or
        an empty directory, means something else lives here."""
        return not os.path.isdir(self.root) or not os.listdir(self.root)

    def sweep_temp(self, prefix: str) -> int:
        """Delete temp files a crashed writer left below prefix; returns how many."""
        n = 0
        for dirpath, _, filenames in os.walk(self._path(prefix)):
            for fname in filenames:
                if fname.startswith(_TMP) or is_temp(fname):
                    try:
                        os.unlink(os.path.join(dirpath, fname))
                        n += 1
                    except FileNotFoundError:
                        pass
        return n

    def delete(self, name: str) -> None:
        self.delete_handle(name)
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    # ---- FileStore (base.py) ----------------------------------------------------------------

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None) -> Iterator[ObjectInfo]:  # fmt: skip
        """Regular files below prefix, depth first in name order. Symlinks, devices and the like
        are reported to `on_skip` (objects have no such kinds); directories `descend` refuses
        are not read."""
        stack = [prefix.strip("/")]
        while stack:
            rel = stack.pop()
            try:
                with os.scandir(self._path(rel)) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if on_skip is None:
                    raise
                on_skip(rel, f"cannot list: {exc.strerror or exc}")
                continue
            subdirs = []
            for e in entries:
                child = f"{rel}/{e.name}" if rel else e.name
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if descend is None or descend(child):
                        subdirs.append(child)
                elif stat.S_ISREG(st.st_mode):
                    if not is_temp(e.name):
                        yield ObjectInfo(child, st.st_size, st.st_mtime_ns)
                elif on_skip is not None:
                    kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                    on_skip(child, f"{kind}: object stores keep only files")
            stack.extend(reversed(subdirs))

    def stat_info(self, name: str) -> ObjectInfo:
        st = os.stat(self._path(name))
        return ObjectInfo(name, st.st_size, st.st_mtime_ns)

    def read_info(self, name: str, expect: ObjectInfo | None = None) -> tuple[bytes, ObjectInfo]:
        with open(self._path(name), "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        return data, ObjectInfo(name, len(data), st.st_mtime_ns)

    def put_file(self, name: str, data: bytes, mtime_ns: int,
                 durable: bool = True) -> ObjectInfo:  # fmt: skip
        self.write(name, data, mtime_ns=mtime_ns, durable=durable)
        return ObjectInfo(name, len(data), mtime_ns)

    # FileOps for FileUpload (parts.py)

    def create_sized(self, tmp: str, size: int) -> None:
        path = self._path(tmp)
        self._makedirs(os.path.dirname(path))
        fd = create_fresh(path, 0o644)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    def pwrite(self, tmp: str, offset: int, data: bytes) -> None:
        # Never through a symlink put in its place since create_sized (ELOOP instead).
        fd = os.open(self._path(tmp), os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        finally:
            os.close(fd)

    def commit(self, tmp: str, name: str, mtime_ns: int) -> ObjectInfo:
        self.delete_handle(tmp)
        self.delete_handle(name)
        src = self._path(tmp)
        os.utime(src, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        os.replace(src, self._path(name))
        return self.stat_info(name)

    def discard(self, tmp: str) -> None:
        self.delete(tmp)

    def delete_handle(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)

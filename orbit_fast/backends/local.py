"""A Store on a local (or locally mounted) directory.

Writes go to a temp file in the object's directory, are fsynced, then renamed into place and
the directory fsynced: a crash leaves the old state or the new one, plus at most a temp file
(".tmp-*", ignored by `list` and swept by `sweep_temp`). Exclusive writes use link(), which
fails if the name exists, atomically. Read handles are kept open (a few per pack read in a row).
"""

from __future__ import annotations

import os
import secrets
from collections import OrderedDict
from collections.abc import Iterator

from orbit_fast.backends.base import TMP_PREFIX as _TMP
from orbit_fast.backends.base import Capabilities

_OPEN_FILES = 16


class LocalStore:
    capabilities = Capabilities(ranged_reads=True, atomic_rename=True, server_side_copy=False,
                                exclusive_create=True, min_part_bytes=0,
                                max_part_bytes=0)  # fmt: skip

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._dirs_made: set[str] = set()

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False) -> None:  # fmt: skip
        path = self._path(name)
        directory = os.path.dirname(path)
        if directory not in self._dirs_made:
            os.makedirs(directory, exist_ok=True)
            self._dirs_made.add(directory)
        tmp = os.path.join(directory, f"{_TMP}{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
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
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

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
                if fname.startswith(_TMP):
                    continue
                try:
                    size = os.stat(os.path.join(dirpath, fname)).st_size
                except FileNotFoundError:
                    continue
                yield (fname if rel == "." else f"{rel}/{fname}"), size

    def sweep_temp(self, prefix: str) -> int:
        """Delete temp files a crashed writer left below prefix; returns how many."""
        n = 0
        for dirpath, _, filenames in os.walk(self._path(prefix)):
            for fname in filenames:
                if fname.startswith(_TMP):
                    try:
                        os.unlink(os.path.join(dirpath, fname))
                        n += 1
                    except FileNotFoundError:
                        pass
        return n

    def delete(self, name: str) -> None:
        fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

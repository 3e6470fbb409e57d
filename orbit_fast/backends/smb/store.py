"""SMBStore: a Store on an SMB share through smbprotocol's smbclient,
`smb://[user@]host[:port]/share/path`: both halves, part uploads (parts.py) and server copies
between stores of one server and login. Credentials: credentials.py; the compound requests of
listings and small reads: wire.py.

Writes go to a temp name beside the object and are renamed into place (replace, or, for an
exclusive write, a rename that fails if the name exists), so readers never see part of an
object. Reads and writes use requests of at most IO_BYTES (1 MiB: the fastest size on loopback,
RECIPES.md 8). smbclient needs `port=` on every call (its session cache is keyed by
host:port), which `_do` supplies.
"""

from __future__ import annotations

import errno
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from orbit_fast.backends.base import (
    TEMP_NAME,
    TMP_PREFIX,
    Capabilities,
    Descend,
    ObjectInfo,
    OnSkip,
    ProbesByListing,
    ServerCopy,
    TransientError,
    is_temp,
    listed_name,
    upload_temp_name,
)
from orbit_fast.backends.parts import FileUploads
from orbit_fast.backends.smb.credentials import resolve
from orbit_fast.backends.smb.wire import IO_BYTES, Entry, read_compound, scan
from orbit_fast.backends.smb.wire import MTIME_PRECISION_NS as _US
from orbit_fast.environment import getenv
from orbit_fast.errors import RemoteError

# Files below this are read with one compound request (open, reads of IO_BYTES, close).
COMPOUND_READ = 8 << 20
_OPEN_FILES = 8


class SMBStore(ProbesByListing, FileUploads):
    capabilities = Capabilities(min_part_bytes=0, max_part_bytes=0, mtime_ns_precision=_US)

    def __init__(self, url: str) -> None:
        import smbclient

        self._smb = smbclient
        self.url = url
        share = resolve(url)
        self.host, self.port, self._root = share.host, share.port, share.root
        self._fds: OrderedDict[str, Any] = OrderedDict()
        self._dirs_made: set[str] = set()
        self._orphans: set[str] = set()  # our temp objects a failed cleanup left behind
        # A connection cache of our own: smbclient's global one would hand this store another
        # store's session (other credentials) for the same host:port.
        self._caches = threading.local()
        self._login = share.login
        self._connect()
        self._first_tree_connect()

    def _first_tree_connect(self) -> None:
        """Open the share once, with a deadline: smbprotocol waits without one when a share is
        missing and it chases a DFS referral, so a wrong share name would hang the job."""
        done: list[BaseException | None] = []
        cache = self._cache  # the caller's connection: the helper thread must not make its own

        def run() -> None:
            try:
                self._do("open", "", self._smb.makedirs, self._root, exist_ok=True,
                         cache=cache)  # fmt: skip
                done.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.append(exc)

        t = threading.Thread(target=run, daemon=True, name="orbit-smb-connect")
        t.start()
        t.join(float(getenv("ORBIT_SMB_TIMEOUT") or 15))
        if not done:
            raise RemoteError(
                f"{self.url}: the SMB server at {self.host}:{self.port} did not answer when the "
                "share was opened; check the share name (a missing share can look like this)"
            )
        if done[0] is not None:
            raise done[0]

    @property
    def _cache(self) -> dict[str, Any]:
        """This thread's connection cache: one SMB connection per thread, since smbprotocol
        runs out of credits when threads share one (RECIPES.md 8)."""
        cache = getattr(self._caches, "cache", None)
        if cache is None:
            cache = self._caches.cache = {}
        return cache

    def _connect(self) -> None:
        try:
            self._smb.register_session(self.host, port=self.port, connection_timeout=10,
                                       connection_cache=self._cache,
                                       **self._login)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._error("connect to", "", exc) from None

    def _p(self, name: str) -> str:
        return self._root + ("\\" + name.replace("/", "\\") if name else "")

    def _error(self, what: str, name: str, exc: BaseException) -> BaseException:
        """Classify an smbprotocol/smbclient failure into the Store contract."""
        from smbprotocol.exceptions import (
            SMBAuthenticationError,
            SMBException,
            SMBResponseException,
        )

        where = f"{self.url}/{name}" if name else self.url
        if isinstance(exc, FileNotFoundError | FileExistsError | IsADirectoryError):
            return exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return FileNotFoundError(errno.ENOENT, "no such object", where)
        if isinstance(exc, OSError) and exc.errno == errno.EEXIST:
            return FileExistsError(errno.EEXIST, "object exists", where)
        if isinstance(exc, PermissionError):
            return RemoteError(f"the SMB server denied access to {where}; check the account's "
                               "rights on the share")  # fmt: skip
        text = str(exc)
        if isinstance(exc, SMBAuthenticationError) or "STATUS_LOGON_FAILURE" in text:
            return RemoteError(f"the SMB server at {self.host}:{self.port} refused the login; "
                               "check ORBIT_SMB_PASSWORD / the credentials file")  # fmt: skip
        if "STATUS_BAD_NETWORK_NAME" in text:
            return RemoteError(f"{where}: no such share on {self.host}:{self.port}")
        if "STATUS_ACCESS_DENIED" in text:
            return RemoteError(f"the SMB server denied access to {where}")
        if isinstance(exc, OSError | ConnectionError | TimeoutError) or (
            isinstance(exc, SMBException) and not isinstance(exc, SMBResponseException)
        ) or "connect" in text.lower():
            self._drop_connection()
            return TransientError(f"{what} {where}: {exc}")
        return RemoteError(f"SMB could not {what} {where}: {exc}")

    def _drop_connection(self) -> None:
        self.close()  # handles on a dead connection are gone with it
        try:
            self._smb.reset_connection_cache(connection_cache=self._cache)
        except Exception:  # noqa: BLE001 - it is being dropped anyway
            pass
        self._cache.clear()

    def _do(self, what: str, name: str, fn: Any, *args: Any, cache: dict[str, Any] | None = None,
            **kw: Any) -> Any:  # fmt: skip
        try:
            # Credentials on every call: after a dropped connection smbclient logs in again.
            return fn(*args, port=self.port, connection_cache=self._cache if cache is None
                      else cache, **self._login, **kw)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._error(what, name, exc) from None

    # ---- BlobStore (base.py) ----------------------------------------------------------------

    def _makedirs_for(self, name: str) -> str:
        directory = name.rsplit("/", 1)[0] if "/" in name else ""
        if directory and directory not in self._dirs_made:
            self._do("create", directory, self._smb.makedirs, self._p(directory), exist_ok=True)
            self._dirs_made.add(directory)
        return directory

    def write(self, name: str, data: bytes | bytearray | memoryview, exclusive: bool = False,
              private: bool = False, mtime_ns: int | None = None) -> None:  # fmt: skip
        # `private`: files on a share have no mode of ours; the share's rules decide.
        directory = self._makedirs_for(name)
        tmp = (f"{directory}/" if directory else "") + TMP_PREFIX + secrets.token_hex(6)
        view = memoryview(data)
        try:
            with self._do("write", name, self._smb.open_file, self._p(tmp), mode="wb",
                          buffering=0) as f:  # fmt: skip
                while view:
                    n = f.write(view[:IO_BYTES])  # short writes happen: loop on the count
                    view = view[n:]
        except (RemoteError, TransientError):
            self._quiet_remove(tmp)
            raise
        except Exception as exc:  # noqa: BLE001 - classified
            self._quiet_remove(tmp)
            raise self._error("write", name, exc) from None
        self._close_handle(name)
        try:
            if mtime_ns is not None:
                self._do("set the mtime of", name, self._smb.utime, self._p(tmp),
                         ns=(mtime_ns, mtime_ns))  # fmt: skip
            if exclusive:
                self._do("create", name, self._smb.rename, self._p(tmp), self._p(name))
            else:
                self._do("write", name, self._smb.replace, self._p(tmp), self._p(name))
        except BaseException:
            self._quiet_remove(tmp)
            raise
        for orphan in list(self._orphans):  # the server is back: clean up after the outage
            self._quiet_remove(orphan)

    def _quiet_remove(self, name: str) -> None:
        try:
            self._smb.remove(self._p(name), port=self.port, connection_cache=self._cache,
                             **self._login)  # fmt: skip
            self._orphans.discard(name)
        except Exception as exc:  # noqa: BLE001 - the server is away: retry after a write
            if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self._orphans.discard(name)
            else:
                self._orphans.add(name)

    def _file(self, name: str) -> Any:
        f = self._fds.pop(name, None)
        if f is None:
            # Shared like a POSIX open: other readers (our parallel part reads) and writers
            # and renames elsewhere go on; the default would lock the file for us alone.
            f = self._do("read", name, self._smb.open_file, self._p(name), mode="rb",
                         buffering=0, share_access="rwd")  # fmt: skip
            if len(self._fds) >= _OPEN_FILES:
                self._fds.popitem(last=False)[1].close()
        self._fds[name] = f
        return f

    def read(self, name: str) -> bytes:
        return self.read_range(name, 0, self.size(name))

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        out = bytearray(length)
        view, got = memoryview(out), 0
        try:
            f = self._file(name)
            f.seek(offset)
            while got < length:
                n = f.readinto(view[got : got + IO_BYTES])
                if not n:
                    break
                got += n
        except (RemoteError, TransientError, FileNotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001
            self._fds.pop(name, None)
            raise self._error("read", name, exc) from None
        if got != length:
            raise TransientError(f"{self.url}/{name}: short read at {offset} ({got} of {length})")
        return bytes(out)

    def size(self, name: str) -> int:
        return int(self._do("stat", name, self._smb.stat, self._p(name)).st_size)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for info in self.list_info(prefix):
            yield info.name, info.size

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None) -> Iterator[ObjectInfo]:  # fmt: skip
        # One directory at a time: reading several at once from threads was slower (listing
        # is CPU-bound in smbprotocol, and threads share the GIL).
        stack = [prefix.strip("/")]
        while stack:
            rel = stack.pop()
            try:
                entries = sorted(self._scandir(rel), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            subdirs = []
            for e in entries:
                child = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir:
                    if descend is None or descend(child):
                        subdirs.append(child)
                elif is_temp(e.name):
                    if on_skip is not None:  # not a file of the tree, but users see it
                        on_skip(child, TEMP_NAME)
                elif listed_name(child, self.url, on_skip):
                    yield ObjectInfo(child, e.size, e.mtime_ns)
            stack.extend(reversed(subdirs))

    def stat_info(self, name: str) -> ObjectInfo:
        st = self._do("stat", name, self._smb.stat, self._p(name))
        return ObjectInfo(name, int(st.st_size), int(st.st_mtime_ns) // _US * _US)

    def read_info(self, name: str, expect: ObjectInfo | None = None) -> tuple[bytes, ObjectInfo]:
        """The object and its info. With `expect` (from a listing moments ago) and a file
        below COMPOUND_READ, one compound request opens, reads (one byte more than expected,
        to see that the size still holds) and closes, with no stat; anything else is a stat
        and a read."""
        if expect is not None and expect.mtime_ns is not None and expect.size < COMPOUND_READ:
            got = self._do("read", name, read_compound, self._p(name), want=expect.size + 1)
            if got is not None and len(got[0]) == expect.size:
                return got[0], ObjectInfo(name, expect.size, got[1])
        info = self.stat_info(name)
        data = self.read_range(name, 0, info.size)
        self._close_handle(name)
        return data, info

    def put_file(self, name: str, data: bytes, mtime_ns: int,
                 durable: bool = True) -> ObjectInfo:  # fmt: skip
        self.write(name, data, mtime_ns=mtime_ns)
        return ObjectInfo(name, len(data), mtime_ns // 100 * 100 // _US * _US)

    # ---- ServerCopier (base.py) -------------------------------------------------------------

    def server_copy_from(self, src: object) -> ServerCopy | None:
        """FSCTL_SRV_COPYCHUNK from `src` when it is on the same server, with the same login."""
        if not (isinstance(src, SMBStore) and (src.host, src.port) == (self.host, self.port)
                and src._login == self._login):  # fmt: skip
            return None

        def copy(name: str, size: int, mtime_ns: int | None) -> ObjectInfo:
            return self.copy_from(src, name, size, mtime_ns)

        return copy

    def copy_from(self, other: SMBStore, name: str, size: int,
                  mtime_ns: int | None) -> ObjectInfo:  # fmt: skip
        """Server-side copy (FSCTL_SRV_COPYCHUNK): the data never leaves the server. The
        copy has the server's time of copying, so it gets `mtime_ns`, else the source's."""
        if mtime_ns is None:
            mtime_ns = other.stat_info(name).mtime_ns
        self._makedirs_for(name)
        tmp = upload_temp_name(name)
        try:
            self._do("copy", name, self._smb.copyfile, other._p(name), self._p(tmp))
        except BaseException:
            self._quiet_remove(tmp)
            raise
        return self.commit(tmp, name, mtime_ns or 0)

    # FileOps for FileUpload (parts.py)

    def create_sized(self, tmp: str, size: int) -> None:
        self._makedirs_for(tmp)

        def create(path: str, **kw: Any) -> None:
            with self._smb.open_file(path, mode="wb", buffering=0, **kw) as f:
                f.truncate(size)

        self._do("create", tmp, create, self._p(tmp))

    def pwrite(self, tmp: str, offset: int, data: bytes) -> None:
        def write(path: str, **kw: Any) -> None:
            with self._smb.open_file(path, mode="r+b", buffering=0, share_access="rwd",
                                     **kw) as f:  # fmt: skip
                f.seek(offset)
                view = memoryview(data)
                while view:
                    view = view[f.write(view[:IO_BYTES]) :]  # short writes: loop on the count

        self._do("write", tmp, write, self._p(tmp))

    def commit(self, tmp: str, name: str, mtime_ns: int) -> ObjectInfo:
        self._close_handle(tmp)
        self._close_handle(name)
        self._do("set the mtime of", name, self._smb.utime, self._p(tmp),
                 ns=(mtime_ns, mtime_ns))  # fmt: skip
        self._do("write", name, self._smb.replace, self._p(tmp), self._p(name))
        return self.stat_info(name)

    def discard(self, tmp: str) -> None:
        self.delete(tmp)

    def _scandir(self, rel: str) -> Sequence[Entry]:
        entries: list[Entry] = self._do("list", rel, scan, self._p(rel))  # what scan returns
        return entries

    def sweep_temp(self, prefix: str) -> int:
        n = 0
        stack = [prefix.strip("/")]
        while stack:
            rel = stack.pop()
            try:
                entries = self._scandir(rel)
            except FileNotFoundError:
                continue
            for e in entries:
                child = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir:
                    stack.append(child)
                elif e.name.startswith(TMP_PREFIX) or is_temp(e.name):
                    self._quiet_remove(child)
                    n += 1
        return n

    def remove_temp(self, name: str) -> bool:
        """Delete a stale temp file (a sync's sweep, sync/object_copies.py): False, and the
        file stays, when the server refuses (a writer holds it open: a sharing violation) or
        is away, for a later run to try again; FileNotFoundError when it is gone. No retry,
        no dropped connection: a refusal here is an answer, not a fault."""
        try:
            self._smb.remove(self._p(name), port=self.port, connection_cache=self._cache,
                             **self._login)  # fmt: skip
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise FileNotFoundError(errno.ENOENT, "no such object", name) from None
            return False
        except Exception:  # noqa: BLE001 - the server is away: a later run tries again
            return False
        return True

    def _close_handle(self, name: str) -> None:
        f = self._fds.pop(name, None)
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - a handle on a dead connection
                pass

    def delete(self, name: str) -> None:
        self._close_handle(name)
        try:
            self._do("delete", name, self._smb.remove, self._p(name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Close open read handles (the connection stays cached for this store)."""
        while self._fds:
            try:
                self._fds.popitem()[1].close()
            except Exception:  # noqa: BLE001 - closing a handle on a dead connection
                pass

"""SMBStore: a Store on an SMB share, `smb://[user@]host[:port]/share/path`: both halves,
part uploads (parts.py) and server copies between stores of one server and login.
Credentials: credentials.py. The data path is raw SMB2 requests (wire.py, packets.py) on an
smbprotocol connection whose session and tree smbclient's pool sets up (channel.py): one
compound request, one round trip, per small file.

Writes go to a temp name beside the object and are renamed into place in the same compound
(replace, or, for an exclusive write, a rename that fails if the name exists), so readers never
see part of an object. Reads and writes use requests of at most IO_BYTES (1 MiB: the fastest
size on loopback, RECIPES.md 8). Times are kept to the share's 100 ns.

A file's creation time and its DOS attributes READONLY, HIDDEN, SYSTEM and ARCHIVE are its
FileMeta here (capabilities.dos_meta): every reply about a file and every directory record
carries them, so stats, reads and listings give them with meta=True at no cost (the infos of
writes always); writes, commits and server copies given a FileMeta with them set them
(docs/sync.md, "File metadata").
"""

from __future__ import annotations

import errno
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from orbit_fast.backends.base import (
    DOS_ATTRS_KEPT,
    TEMP_NAME,
    TMP_PREFIX,
    CantCopy,
    Capabilities,
    Descend,
    FileMeta,
    ObjectInfo,
    OnDir,
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
from orbit_fast.backends.smb.packets import (
    STATUS_INVALID_OWNER,
    TIME_PRECISION_NS,
    Attrs,
    Entry,
    SecurityRefused,
    StatusError,
)
from orbit_fast.backends.smb.wire import COMPOUND_READ, Wire
from orbit_fast.environment import getenv
from orbit_fast.errors import RemoteError

_LISTS_IN_FLIGHT = 16


def _meta(attrs: Attrs | Entry) -> FileMeta:
    """What a reply or a directory record says of a file's creation time and DOS attributes."""
    return FileMeta(btime_ns=attrs.btime_ns, dos_attrs=attrs.attributes & DOS_ATTRS_KEPT)


def _info(name: str, attrs: Attrs, meta: bool = True) -> ObjectInfo:
    return ObjectInfo(name, attrs.size, attrs.mtime_ns, meta=_meta(attrs) if meta else None)


def _dos(meta: FileMeta | None) -> tuple[int | None, int, bytes | None]:
    """The creation time, DOS attributes and security descriptor of `meta` to give a file
    (None, -1, None: none)."""
    if meta is None:
        return None, -1, None
    attrs = meta.dos_attrs & DOS_ATTRS_KEPT if meta.dos_attrs >= 0 else -1
    return meta.btime_ns, attrs, meta.security


class _ThreadConn:
    """One thread's smbclient connection cache and the Wire on it."""

    def __init__(self) -> None:
        self.cache: dict[str, Any] = {}
        self.wire: Wire | None = None


class SMBStore(ProbesByListing, FileUploads):
    capabilities = Capabilities(min_part_bytes=0, max_part_bytes=0,
                                mtime_ns_precision=TIME_PRECISION_NS,
                                dir_mtimes=True, dos_meta=True, nt_security=True)  # fmt: skip

    def __init__(self, url: str) -> None:
        import smbclient

        self._smb = smbclient
        self.url = url
        share = resolve(url)
        self.host, self.port, self._root = share.host, share.port, share.root
        # The URL's directory below the share, as CREATE requests name it.
        self._base = "\\".join(self._root.split("\\")[4:])
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
        local = self._local  # the caller's connection: the helper thread must not make its own

        def run() -> None:
            try:
                self._do("open", "", lambda w: w.mkdir(""), local=local)
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
    def _local(self) -> Any:
        """This thread's connection cache and Wire: one SMB connection per thread, since
        smbprotocol runs out of credits when threads share one (RECIPES.md 8)."""
        local = getattr(self._caches, "conn", None)
        if local is None:  # a plain object, so that the connect thread can be handed it
            local = self._caches.conn = _ThreadConn()
        return local

    @property
    def _cache(self) -> dict[str, Any]:
        return self._local.cache  # type: ignore[no-any-return]

    def _connect(self, local: Any = None) -> None:
        """A Channel (channel.py) in this thread's cache, with a session smbclient logs in."""
        from smbclient._pool import ClientConfig

        from orbit_fast.backends.smb.channel import Channel

        cache = (local or self._local).cache
        key = f"{self.host.lower()}:{self.port}"
        try:
            conn = cache.get(key)
            if conn is None or not conn.transport.connected or conn._t_exc is not None:
                conn = Channel(ClientConfig().client_guid, self.host, self.port,
                               require_signing=True)  # fmt: skip
                conn.connect(timeout=10)
                cache[key] = conn
            self._smb.register_session(self.host, port=self.port, connection_timeout=10,
                                       connection_cache=cache, **self._login)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._error("connect to", "", exc) from None

    def _open_wire(self, local: Any) -> Wire:
        from smbclient._pool import get_smb_tree
        from smbprotocol.exceptions import BadNetworkName, NotFound

        self._connect(local)
        try:
            tree, _ = get_smb_tree(self._root, port=self.port, connection_cache=local.cache,
                                   connection_timeout=10, **self._login)  # fmt: skip
        except (BadNetworkName, NotFound):  # NotFound: after smbclient's DFS referral attempt
            share = self._root.split("\\")[3]
            raise RemoteError(f"{self.url}: no such share {share!r} on {self.host}:{self.port}"
                              "; check the share name") from None
        if tree.is_dfs_share:
            raise RemoteError(f"{self.url}: the share is a DFS namespace; name the share that "
                              "holds the files (its target) instead")  # fmt: skip
        conn = local.cache[f"{self.host.lower()}:{self.port}"]
        local.wire = Wire(conn, tree.session, tree, self._base)
        return local.wire  # type: ignore[no-any-return]

    def _wire(self, local: Any) -> Wire:
        wire = local.wire
        if wire is None or not wire.channel.transport.connected or \
                wire.channel._t_exc is not None:  # fmt: skip
            wire = self._open_wire(local)
        return wire  # type: ignore[no-any-return]

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
        if isinstance(exc, SecurityRefused):  # --smb-security
            why = ("its owner is an account the destination does not know, or may not give "
                   "it (a local account of another server?)"
                   if exc.status == STATUS_INVALID_OWNER else exc.strerror)  # fmt: skip
            return RemoteError(
                f"the SMB server refused the security descriptor of {where}: {why}; "
                "--smb-security needs WRITE_DAC and WRITE_OWNER on the files the account "
                "writes, and SeRestorePrivilege (Samba: root, or `net sam rights grant "
                "ACCOUNT SeRestorePrivilege`) to give them another owner"
            )
        if isinstance(exc, FileNotFoundError | FileExistsError | IsADirectoryError | RemoteError
                      | TransientError):  # fmt: skip
            return exc
        if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return FileNotFoundError(errno.ENOENT, "no such object", where)
        if isinstance(exc, OSError) and exc.errno == errno.EEXIST:
            return FileExistsError(errno.EEXIST, "object exists", where)
        if isinstance(exc, OSError) and exc.errno == errno.EISDIR:
            return IsADirectoryError(errno.EISDIR, "a directory", where)
        if isinstance(exc, PermissionError) or (isinstance(exc, OSError)
                                                and exc.errno == errno.EACCES):  # fmt: skip
            return RemoteError(f"the SMB server denied access to {where}; check the account's "
                               "rights on the share")  # fmt: skip
        if isinstance(exc, StatusError):
            return RemoteError(f"SMB could not {what} {where}: {exc.strerror}")
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
        try:
            self._smb.reset_connection_cache(connection_cache=self._cache)
        except Exception:  # noqa: BLE001 - it is being dropped anyway
            pass
        self._cache.clear()
        self._local.wire = None

    def _do(self, what: str, name: str, fn: Any, local: Any = None) -> Any:
        """`fn(wire)` on this thread's Wire, its failures classified."""
        try:
            return fn(self._wire(local or self._local))
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._error(what, name, exc) from None

    def _smbclient(self, what: str, name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """An smbclient call on this thread's connection (server copies only)."""
        try:
            self._wire(self._local)
            return fn(*args, port=self.port, connection_cache=self._cache, **self._login, **kw)
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._error(what, name, exc) from None

    # ---- BlobStore (base.py) ----------------------------------------------------------------

    def _makedirs_for(self, name: str) -> str:
        directory = name.rsplit("/", 1)[0] if "/" in name else ""
        if directory and directory not in self._dirs_made:
            self._do("create", directory, lambda w: w.mkdir(directory))
            self._dirs_made.add(directory)
        return directory

    def _put(self, name: str, data: Any, mtime_ns: int | None, exclusive: bool,
             meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        directory = self._makedirs_for(name)
        tmp = (f"{directory}/" if directory else "") + TMP_PREFIX + secrets.token_hex(6)
        btime_ns, dos_attrs, security = _dos(meta)

        def put(w: Wire) -> Attrs:
            return w.put(tmp, name, data, mtime_ns, not exclusive, btime_ns, dos_attrs,
                         security)  # fmt: skip

        try:
            attrs = self._do("write", name, put)
        except FileNotFoundError:  # the directory went away since we made it: once more
            self._dirs_made.discard(directory)
            self._makedirs_for(name)
            attrs = self._do("write", name, put)
        except TransientError:
            self._orphans.add(tmp)  # the connection broke mid-write: remove it when back
            raise
        for orphan in list(self._orphans):  # the server is back: clean up after the outage
            self._quiet_remove(orphan)
        return _info(name, attrs)

    def write(self, name: str, data: bytes | bytearray | memoryview, exclusive: bool = False,
              private: bool = False, mtime_ns: int | None = None) -> None:  # fmt: skip
        # `private`: files on a share have no mode of ours; the share's rules decide.
        self._put(name, data, mtime_ns, exclusive)

    def _quiet_remove(self, name: str) -> None:
        try:
            self._wire(self._local).delete(name)
            self._orphans.discard(name)
        except Exception as exc:  # noqa: BLE001 - the server is away: retry after a write
            if isinstance(exc, OSError) and exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self._orphans.discard(name)
            else:
                self._orphans.add(name)

    def read(self, name: str) -> bytes:
        return self.read_range(name, 0, self.size(name))

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        views = self._do("read", name, lambda w: w.read_views(name, offset, length))[0]
        got = sum(len(v) for v in views)
        if got != length:
            raise TransientError(f"{self.url}/{name}: short read at {offset} ({got} of {length})")
        return b"".join(views)

    def size(self, name: str) -> int:
        return self.stat_info(name).size

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for info in self.list_info(prefix):
            yield info.name, info.size

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None, on_dir: OnDir | None = None,
                  meta: bool = False) -> Iterator[ObjectInfo]:  # fmt: skip
        # Depth-first in name order, with the next directories on the stack listed ahead:
        # up to _LISTS_IN_FLIGHT compound requests wait on the connection at once.
        stack = [prefix.strip("/")]
        ahead: dict[str, Any] = {}
        while stack:
            rel = stack.pop()
            for nxt in reversed(stack[-_LISTS_IN_FLIGHT:]):
                if nxt not in ahead and len(ahead) < _LISTS_IN_FLIGHT:
                    try:
                        ahead[nxt] = self._wire(self._local).scan_start(nxt)
                    except Exception:  # noqa: BLE001 - listed in turn instead, errors and all
                        break
            started = ahead.pop(rel, None)
            try:
                if started is None:
                    entries = sorted(self._scandir(rel), key=lambda e: e.name)
                else:
                    entries = sorted(self._do("list", rel, lambda w, s=started: w.scan_finish(s)),
                                     key=lambda e: e.name)  # fmt: skip
            except FileNotFoundError:
                continue
            subdirs = []
            for e in entries:
                child = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir:
                    if descend is None or descend(child):
                        subdirs.append(child)
                        if on_dir is not None:  # for the directory times (engine.py)
                            on_dir(child, e.mtime_ns)
                elif is_temp(e.name):
                    if on_skip is not None:  # not a file of the tree, but users see it
                        on_skip(child, TEMP_NAME)
                elif listed_name(child, self.url, on_skip):
                    yield ObjectInfo(child, e.size, e.mtime_ns, meta=_meta(e) if meta else None)
            stack.extend(reversed(subdirs))

    def set_dir_mtime(self, name: str, mtime_ns: int) -> None:
        """Give the directory `name` the source's time (kept at the share's 100 ns)."""
        self._do("set the time of", name, lambda w: w.set_mtime(name, mtime_ns, True))

    def stat_info(self, name: str, meta: bool = False) -> ObjectInfo:
        # `meta`: the creation time and DOS attributes; no POSIX mode or owner over SMB2.
        attrs = self._do("stat", name, lambda w: w.stat(name))
        if attrs.is_dir:
            raise IsADirectoryError(errno.EISDIR, "a directory", f"{self.url}/{name}")
        return _info(name, attrs, meta)

    def read_info(self, name: str, expect: ObjectInfo | None = None,
                  meta: bool = False) -> tuple[bytes, ObjectInfo]:  # fmt: skip
        """The object and its info. With `expect` (from a listing moments ago) and a file
        below COMPOUND_READ, one compound request opens, reads (one byte more than expected,
        to see that the size still holds) and closes; the open's reply gives size and time."""
        if expect is not None and expect.size < COMPOUND_READ:
            data, attrs = self._do("read", name, lambda w: w.read(name, 0, expect.size + 1))
            if len(data) == attrs.size:
                return data, _info(name, attrs, meta)
        info = self.stat_info(name, meta)
        return self.read_range(name, 0, info.size), info

    def put_file(self, name: str, data: bytes, mtime_ns: int, durable: bool = True,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        # `meta`: its creation time and DOS attributes; a share has no POSIX mode or owner.
        return self._put(name, data, mtime_ns, exclusive=False, meta=meta)

    def set_meta(self, name: str, meta: FileMeta) -> ObjectInfo:
        """Give the file `name` the creation time, DOS attributes and security descriptor
        of `meta` that are known, alone (an attributes-only update: no data is written, the
        mtime stays): its info after."""
        btime_ns, dos_attrs, security = _dos(meta)
        attrs = self._do("set the attributes of", name,
                         lambda w: w.set_meta(name, btime_ns, dos_attrs, security))  # fmt: skip
        return _info(name, attrs)

    def security(self, name: str) -> tuple[bytes, ObjectInfo]:
        """The file's NT security descriptor (owner, group, DACL; self-relative, as the
        server gives it) and its info (--smb-security)."""
        sd, attrs = self._do("read the security descriptor of", name,
                             lambda w: w.security(name))  # fmt: skip
        return sd, _info(name, attrs)

    # ---- ServerCopier (base.py) -------------------------------------------------------------

    def server_copy_from(self, src: object) -> ServerCopy | None:
        """FSCTL_SRV_COPYCHUNK from `src` when it is on the same server, with the same login."""
        if not (isinstance(src, SMBStore) and (src.host, src.port) == (self.host, self.port)
                and src._login == self._login):  # fmt: skip
            return None

        def copy(name: str, size: int, mtime_ns: int | None,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
            return self.copy_from(src, name, size, mtime_ns, meta)

        return copy

    def copy_from(self, other: SMBStore, name: str, size: int, mtime_ns: int | None,
                  meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        """Server-side copy (FSCTL_SRV_COPYCHUNK, smbclient's): the data never leaves the
        server. The copy has the server's time of copying and its attributes of a new file,
        so it gets `mtime_ns` and the creation time and DOS attributes of `meta` (as listed),
        else the source's."""
        if mtime_ns is None or meta is None:
            now = other.stat_info(name, meta=True)
            mtime_ns = now.mtime_ns if mtime_ns is None else mtime_ns
            meta = now.meta if meta is None else meta
        self._makedirs_for(name)
        tmp = upload_temp_name(name)
        try:
            self._smbclient("copy", name, self._smb.copyfile, other._p(name), self._p(tmp))
            return self.commit(tmp, name, mtime_ns or 0, meta)
        except BaseException:
            self._quiet_remove(tmp)  # a one-off name: nothing would resume it
            raise

    def keep_from(self, src: object, name: str, target: str) -> None:
        """--backup-dir: `src`'s file `name` copied to `target` here on the server
        (FSCTL_SRV_COPYCHUNK) before it is overwritten or deleted, with its mtime, creation
        time and DOS attributes."""
        if not (isinstance(src, SMBStore) and (src.host, src.port) == (self.host, self.port)
                and src._login == self._login):  # fmt: skip
            raise CantCopy(f"{self._p(target)}: cannot keep {name} from another server")
        kept = src.stat_info(name, meta=True)
        self._makedirs_for(target)
        tmp = upload_temp_name(target)
        try:
            self._smbclient("keep a copy of", name, self._smb.copyfile, src._p(name),
                            self._p(tmp))  # fmt: skip
        except BaseException:
            self._quiet_remove(tmp)
            raise
        self.commit(tmp, target, kept.mtime_ns or 0, kept.meta)

    # FileOps for FileUpload (parts.py)

    def create_sized(self, tmp: str, size: int) -> None:
        self._makedirs_for(tmp)
        self._do("create", tmp, lambda w: w.create_sized(tmp, size))

    def pwrite(self, tmp: str, offset: int, data: bytes) -> None:
        self._do("write", tmp, lambda w: w.pwrite(tmp, offset, data))

    def commit(self, tmp: str, name: str, mtime_ns: int,
               meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        btime_ns, dos_attrs, security = _dos(meta)
        attrs = self._do("write", name, lambda w: w.commit(tmp, name, mtime_ns, btime_ns,
                                                           dos_attrs, security))  # fmt: skip
        return _info(name, attrs)

    def discard(self, tmp: str) -> None:
        self.delete(tmp)

    def _scandir(self, rel: str) -> Sequence[Entry]:
        entries: list[Entry] = self._do("list", rel, lambda w: w.scan(rel))
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
            self._wire(self._local).delete(name)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise FileNotFoundError(errno.ENOENT, "no such object", name) from None
            return False
        except Exception:  # noqa: BLE001 - the server is away: a later run tries again
            return False
        return True

    def delete(self, name: str) -> None:
        try:
            self._do("delete", name, lambda w: w.delete(name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Nothing to close: no handle stays open between calls (the connection stays
        cached for this store)."""

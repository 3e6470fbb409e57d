"""A Store on an SMB share through smbprotocol's smbclient: `smb://[user@]host[:port]/share/path`.

Credentials: the password from ORBIT_SMB_PASSWORD, else from a credentials file in the mount
format the deployment guide uses (`username=`, `password=`, `domain=`; ORBIT_SMB_CREDENTIALS,
default ~/.smbcredentials), else `user:password@` in the URL (warned against: it ends up in
shell history and job records). Signing is always on (Samba refuses unsigned SMB 3.1.1);
ORBIT_SMB_ENCRYPT=1 adds SMB 3 encryption. The ORBIT_SMB_* settings are read with
environment.getenv: the process environment, else the hub's env file.

Writes go to a temp name beside the object and are renamed into place (replace, or, for an
exclusive write, a rename that fails if the name exists), so readers never see part of an
object. Reads and writes use requests of at most IO_BYTES (1 MiB: the fastest size on loopback,
RECIPES.md 8). smbclient needs `port=` on every call (its session cache is keyed by
host:port), which `_kw` supplies.
"""

from __future__ import annotations

import errno
import os
import secrets
import struct
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from orbit_fast.backends.base import (
    TMP_PREFIX,
    Capabilities,
    Descend,
    ExistsBySize,
    ObjectInfo,
    OnSkip,
    TransientError,
    check_name,
    is_temp,
    upload_temp_name,
)
from orbit_fast.backends.parts import FileUploads
from orbit_fast.environment import getenv
from orbit_fast.errors import RemoteError, UsageError

IO_BYTES = 1 << 20
# Files below this are read with one compound request (open, reads of IO_BYTES, close).
COMPOUND_READ = 8 << 20
_OPEN_FILES = 8
_US = 1000  # smbprotocol turns times into datetimes: microseconds are what listings keep
_FILETIME_EPOCH = 116444736000000000  # 1970-01-01 in 100 ns units since 1601


def _filetime_ns(ft: int) -> int:
    """A FILETIME as nanoseconds since the epoch, kept to the microsecond (as smbprotocol's
    datetimes are, so that stat, listing and read agree)."""
    return (ft - _FILETIME_EPOCH) // 10 * _US


class _Entry(NamedTuple):
    name: str
    is_dir: bool
    size: int
    mtime_ns: int


_DIRECTORY, _REPARSE = 0x10, 0x400  # FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT
_LIST_REPLY = 64 << 10


def _scan(path: str, **kw: Any) -> list[_Entry]:
    """A directory's entries with only what a listing needs: open, query and close in one
    compound request (one round trip, and no second query only to hear "no more files")
    when the reply fills less than half of _LIST_REPLY; a bigger directory is opened again
    and paged. Replies are parsed with struct: smbprotocol's per-field parsing was most of
    a listing's CPU."""
    from smbclient._io import SMBDirectoryIO, SMBFileTransaction
    from smbprotocol.exceptions import NoMoreFiles, NoSuchFile
    from smbprotocol.file_info import FileInformationClass
    from smbprotocol.open import QueryDirectoryFlags

    def query(fd: Any, first: bool) -> tuple[Any, Any]:
        """A QUERY_DIRECTORY request on fd and the function that receives its raw reply."""
        msg, _ = fd.fd.query_directory(
            "*", FileInformationClass.FILE_ID_FULL_DIRECTORY_INFORMATION,
            flags=QueryDirectoryFlags.SMB2_RESTART_SCANS if first else 0,
            max_output=_LIST_REPLY, send=False)  # fmt: skip

        def receive(request: Any) -> bytes:
            return _query_buffer(bytes(fd.fd.connection.receive(request)["data"].get_value()))

        return msg, receive

    fd = SMBDirectoryIO(path, share_access="rwd", **kw)
    buf = _scan_compound(fd, query(fd, True)[0])
    if buf is None:  # smbclient's own transaction: DFS referrals, errors, few credits
        fd = SMBDirectoryIO(path, share_access="rwd", **kw)
        tx = SMBFileTransaction(fd)
        tx += query(fd, True)
        try:
            tx.commit()
            buf = tx.results[0]
        except (NoMoreFiles, NoSuchFile):
            buf = b""
    if len(buf) <= _LIST_REPLY // 2:
        return _parse_entries(buf)
    out: list[_Entry] = []
    with SMBDirectoryIO(path, share_access="rwd", **kw) as big:
        tree = big.fd.tree_connect
        first = True
        while True:
            msg, receive = query(big, first)
            request = big.fd.connection.send(msg, tree.session.session_id,
                                             tree.tree_connect_id)  # fmt: skip
            try:
                out += _parse_entries(receive(request))
            except (NoMoreFiles, NoSuchFile):
                return out
            first = False


def _scan_compound(fd: Any, query_msg: Any) -> bytes | None:
    """Send open + `query_msg` + close as one compound and parse the replies with struct
    (only the query's buffer is needed): the entries' raw records, or None when the open
    failed or credits are short (the caller then goes through smbclient, which handles DFS
    referrals and raises the right errors). Without smbprotocol's parsing of the open and
    close replies, listing 1,028 directories takes 1.05 s of CPU instead of 1.15 s; what is
    left is mostly smbprotocol building and signing the requests."""
    from smbclient._io import SMBFileTransaction
    from smbprotocol.exceptions import NoMoreFiles, NoSuchFile, SMBResponseException

    collect = SMBFileTransaction(fd)
    fd.open(transaction=collect)  # only builds the CREATE request, with smbclient's flags
    op = fd.fd
    conn = op.connection
    if conn.sequence_window["high"] - conn.sequence_window["low"] < 3:
        return None
    msgs = [collect._actions[0][0], query_msg, op.close(send=False)[0]]
    requests = conn.send_compound(msgs, op.tree_connect.session.session_id,
                                  op.tree_connect.tree_connect_id, related=True)  # fmt: skip
    replies: list[bytes | None] = []
    failures: list[BaseException] = []
    for request in requests:  # every reply must be received, failed or not
        try:
            replies.append(bytes(conn.receive(request)["data"].get_value()))
        except SMBResponseException as exc:
            replies.append(None)
            failures.append(exc)
    if replies[0] is None:
        return None
    if replies[1] is None:
        if isinstance(failures[0], NoMoreFiles | NoSuchFile):
            return b""  # an empty directory (or no match): [MS-SMB2] 3.3.5.18
        raise failures[0]
    return _query_buffer(replies[1])


def _query_buffer(body: bytes) -> bytes:
    """The output buffer of a QUERY_DIRECTORY reply ([MS-SMB2] 2.2.34): its offset (from the
    start of the SMB2 header, 64 bytes before `body`) at 2, its length at 4."""
    offset, length = struct.unpack_from("<HI", body, 2)
    return body[offset - 64 : offset - 64 + length]


def _parse_entries(buf: bytes) -> list[_Entry]:
    """FILE_ID_FULL_DIR_INFORMATION records ([MS-FSCC] 2.4.18): the next-entry offset at 0,
    last write time at 24, end of file at 40, attributes at 56, name length at 60, name at
    80 (UTF-16LE). Times are kept to the microsecond, as smbprotocol's datetimes are."""
    out, at = [], 0
    while at < len(buf):
        (nxt,) = struct.unpack_from("<I", buf, at)
        (write,) = struct.unpack_from("<Q", buf, at + 24)
        (eof,) = struct.unpack_from("<Q", buf, at + 40)
        attrs, name_len = struct.unpack_from("<II", buf, at + 56)
        name = buf[at + 80 : at + 80 + name_len].decode("utf-16-le")
        if name not in (".", "..") and not (attrs & _DIRECTORY and attrs & _REPARSE):
            out.append(_Entry(name, bool(attrs & _DIRECTORY), eof, _filetime_ns(write)))
        if not nxt:
            break
        at += nxt
    return out


def parse_url(url: str) -> tuple[str, int, str, str, str | None, str | None]:
    """(host, port, share, path below the share, user, password) of an smb:// URL."""
    u = urlsplit(url)
    parts = [p for p in unquote(u.path).split("/") if p]
    if not u.hostname or not parts:
        raise UsageError(f"{url}: an SMB URL is smb://[user@]host[:port]/share[/path]")
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password else None
    return u.hostname, u.port or 445, parts[0], "/".join(parts[1:]), user, password


def read_credentials(path: str) -> dict[str, str]:
    """username/password/domain from a mount-style credentials file."""
    out = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() in ("username", "password", "domain"):
            out[key.strip()] = value.strip()
    return out


class SMBStore(ExistsBySize, FileUploads):
    capabilities = Capabilities(ranged_reads=True, atomic_rename=True, server_side_copy=True,
                                exclusive_create=True, min_part_bytes=0,
                                max_part_bytes=0, mtime_ns_precision=_US)  # fmt: skip

    def __init__(self, url: str) -> None:
        import smbclient

        self._smb = smbclient
        self.url = url
        host, port, share, path, user, password = parse_url(url)
        if password is not None:
            warnings.warn(f"{host}: a password in the SMB URL is visible in process lists and "
                          "job records; use ORBIT_SMB_PASSWORD or a credentials file",
                          stacklevel=2)  # fmt: skip
        creds_file = getenv("ORBIT_SMB_CREDENTIALS") or os.path.expanduser("~/.smbcredentials")
        creds = read_credentials(creds_file) if os.path.isfile(creds_file) else {}
        user = user or getenv("ORBIT_SMB_USER") or creds.get("username")
        password = getenv("ORBIT_SMB_PASSWORD") or password or creds.get("password")
        domain = creds.get("domain")
        if user and domain and "\\" not in user:
            user = f"{domain}\\{user}"
        self.host, self.port = host, port
        self._root = f"\\\\{host}\\{share}" + (("\\" + path.replace("/", "\\")) if path else "")
        self._fds: OrderedDict[str, Any] = OrderedDict()
        self._dirs_made: set[str] = set()
        self._orphans: set[str] = set()  # our temp objects a failed cleanup left behind
        # A connection cache of our own: smbclient's global one would hand this store another
        # store's session (other credentials) for the same host:port.
        self._caches = threading.local()
        self._login = {"username": user, "password": password,
                       "encrypt": getenv("ORBIT_SMB_ENCRYPT") == "1"}  # fmt: skip
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

    # ---- the Store protocol ---------------------------------------------------------------

    def _makedirs_for(self, name: str) -> str:
        directory = name.rsplit("/", 1)[0] if "/" in name else ""
        if directory and directory not in self._dirs_made:
            self._do("create", directory, self._smb.makedirs, self._p(directory), exist_ok=True)
            self._dirs_made.add(directory)
        return directory

    def write(self, name: str, data: bytes | bytearray | memoryview,
              exclusive: bool = False, mtime_ns: int | None = None) -> None:  # fmt: skip
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
                elif not is_temp(e.name):
                    yield ObjectInfo(check_name(child, self.url), e.size, e.mtime_ns)
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
            got = self._do("read", name, self._read_compound, self._p(name), want=expect.size + 1)
            if got is not None and len(got[0]) == expect.size:
                return got[0], ObjectInfo(name, expect.size, got[1])
        info = self.stat_info(name)
        data = self.read_range(name, 0, info.size)
        self._close_handle(name)
        return data, info

    def _read_compound(self, path: str, want: int, **kw: Any) -> tuple[bytes, int] | None:
        """Open, read and close in one compound request (one round trip instead of 2 + reads):
        (data, mtime_ns from the open's reply), or None when the file is not `want - 1`
        bytes long or anything unusual happens (the caller then stats and reads). The
        replies are parsed with struct ([MS-SMB2] 2.2.14, 2.2.20): smbprotocol's parsing
        of the three replies was most of the CPU of reading a small file."""
        from smbclient._io import SMBFileTransaction, SMBRawIO
        from smbprotocol.exceptions import (
            EndOfFile,
            ObjectNameNotFound,
            ObjectPathNotFound,
            SMBResponseException,
        )

        raw = SMBRawIO(path, mode="r", share_access="rwd", **kw)
        collect = SMBFileTransaction(raw)
        raw.open(transaction=collect)  # only builds the CREATE request, with smbclient's flags
        op = raw.fd
        conn = op.connection
        # Reads of at most IO_BYTES each, all in the one compound: the server streams them.
        # An empty file answers a read with STATUS_END_OF_FILE: then open and close only.
        reads = [(at, min(IO_BYTES, want - at)) for at in range(0, want, IO_BYTES)] \
            if want > 1 else []  # fmt: skip
        charge = 2 + sum((n - 1) // (64 << 10) + 1 for _, n in reads)
        if conn.sequence_window["high"] - conn.sequence_window["low"] < charge:
            return None  # not enough credits for it all at once: the caller reads in turns
        msgs = [collect._actions[0][0]]
        msgs += [op.read(at, n, send=False)[0] for at, n in reads]
        msgs.append(op.close(send=False)[0])
        requests = conn.send_compound(msgs, op.tree_connect.session.session_id,
                                      op.tree_connect.tree_connect_id, related=True)  # fmt: skip
        replies: list[bytes | None] = []
        failure: BaseException | None = None
        for request in requests:  # every reply must be received, failed or not
            try:
                replies.append(bytes(conn.receive(request)["data"].get_value()))
            except SMBResponseException as exc:
                replies.append(None)
                failure = failure or exc
        if isinstance(failure, ObjectNameNotFound | ObjectPathNotFound):
            raise FileNotFoundError(errno.ENOENT, "no such object", path)
        create = replies[0]
        if create is None or (failure is not None and not isinstance(failure, EndOfFile)):
            return None
        write_time, = struct.unpack_from("<Q", create, 24)
        eof, = struct.unpack_from("<Q", create, 48)
        pieces = []
        for body in replies[1 : 1 + len(reads)]:
            if body is None:  # STATUS_END_OF_FILE: nothing at this offset
                break
            offset, length = body[2] - 64, struct.unpack_from("<I", body, 4)[0]
            pieces.append(body[offset : offset + length])
        data = b"".join(pieces)
        if eof != len(data):
            return None
        return data, _filetime_ns(write_time)

    def put_file(self, name: str, data: bytes, mtime_ns: int,
                 durable: bool = True) -> ObjectInfo:  # fmt: skip
        self.write(name, data, mtime_ns=mtime_ns)
        return ObjectInfo(name, len(data), mtime_ns // 100 * 100 // _US * _US)

    def same_server(self, other: Any) -> bool:
        """Whether copy_from(other) can copy on the server (same server, same login)."""
        return (isinstance(other, SMBStore) and (other.host, other.port) == (self.host, self.port)
                and other._login == self._login)  # fmt: skip

    def copy_from(self, other: SMBStore, name: str, size: int,
                  mtime_ns: int | None) -> ObjectInfo:  # fmt: skip
        """Server-side copy (FSCTL_SRV_COPYCHUNK): the data never leaves the server."""
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

    def _scandir(self, rel: str) -> list[_Entry]:
        return self._do("list", rel, _scan, self._p(rel))

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
                elif e.name.startswith(TMP_PREFIX):
                    self._quiet_remove(child)
                    n += 1
        return n

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

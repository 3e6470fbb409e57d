"""SMB2 on the wire, below smbclient: compound requests and hand-parsed replies for the two
hot paths, listing a directory and reading a small file.

smbprotocol builds and signs the requests; its per-field parsing of the replies was most of
the CPU of both paths, so the replies are read with struct ([MS-SMB2], [MS-FSCC] sections
named where used). Anything unusual (DFS referrals, short credits, errors other than "no
more files") goes back to smbclient, which handles it and raises the right errors. Nothing
here holds state: the store (store.py) passes smbclient's connection keywords in `kw`.
"""

from __future__ import annotations

import errno
import struct
from typing import Any, NamedTuple

IO_BYTES = 1 << 20  # the largest read or write request (the fastest on loopback, RECIPES.md 8)
MTIME_PRECISION_NS = 1000  # smbprotocol turns times into datetimes: microseconds are kept
_FILETIME_EPOCH = 116444736000000000  # 1970-01-01 in 100 ns units since 1601
_DIRECTORY, _REPARSE = 0x10, 0x400  # FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT
_LIST_REPLY = 64 << 10


def filetime_ns(ft: int) -> int:
    """A FILETIME as nanoseconds since the epoch, kept to the microsecond (as smbprotocol's
    datetimes are, so that stat, listing and read agree)."""
    return (ft - _FILETIME_EPOCH) // 10 * MTIME_PRECISION_NS


class Entry(NamedTuple):
    name: str
    is_dir: bool
    size: int
    mtime_ns: int


def scan(path: str, **kw: Any) -> list[Entry]:
    """A directory's entries with only what a listing needs: open, query and close in one
    compound request (one round trip, and no second query only to hear "no more files")
    when the reply fills less than half of _LIST_REPLY; a bigger directory is opened again
    and paged. Errors are smbclient's; the store classifies them."""
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
            return query_buffer(bytes(fd.fd.connection.receive(request)["data"].get_value()))

        return msg, receive

    fd = SMBDirectoryIO(path, share_access="rwd", **kw)
    buf = scan_compound(fd, query(fd, True)[0])
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
        return parse_entries(buf)
    out: list[Entry] = []
    with SMBDirectoryIO(path, share_access="rwd", **kw) as big:
        tree = big.fd.tree_connect
        first = True
        while True:
            msg, receive = query(big, first)
            request = big.fd.connection.send(msg, tree.session.session_id,
                                             tree.tree_connect_id)  # fmt: skip
            try:
                out += parse_entries(receive(request))
            except (NoMoreFiles, NoSuchFile):
                return out
            first = False


def scan_compound(fd: Any, query_msg: Any) -> bytes | None:
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
    return query_buffer(replies[1])


def query_buffer(body: bytes) -> bytes:
    """The output buffer of a QUERY_DIRECTORY reply ([MS-SMB2] 2.2.34): its offset (from the
    start of the SMB2 header, 64 bytes before `body`) at 2, its length at 4."""
    offset, length = struct.unpack_from("<HI", body, 2)
    return body[offset - 64 : offset - 64 + length]


def parse_entries(buf: bytes) -> list[Entry]:
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
            out.append(Entry(name, bool(attrs & _DIRECTORY), eof, filetime_ns(write)))
        if not nxt:
            break
        at += nxt
    return out


def read_compound(path: str, want: int, **kw: Any) -> tuple[bytes, int] | None:
    """Open, read and close in one compound request (one round trip instead of 2 + reads):
    (data, mtime_ns from the open's reply), or None when the file is not `want - 1` bytes
    long or anything unusual happens (the caller then stats and reads); FileNotFoundError if
    it is absent. The replies are parsed with struct ([MS-SMB2] 2.2.14, 2.2.20):
    smbprotocol's parsing of the three replies was most of the CPU of reading a small file."""
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
    return data, filetime_ns(write_time)

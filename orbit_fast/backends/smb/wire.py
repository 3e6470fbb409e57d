"""The store's operations as raw SMB2 requests (packets.py) on a Channel (channel.py): each
small-file operation is one related compound, one round trip.

- put: CREATE of a fresh temp name + WRITE + SET_INFO (times) + SET_INFO (rename into place)
  [+ SET_INFO (DOS attributes)] + CLOSE, which reports the final attributes; a file larger
  than one request has its first WRITE in the compound and the others pipelined on the
  handle. The attributes go after the rename: Samba sets ARCHIVE on a file it renames, and
  READONLY on the temp file would make a failed rename's cleanup fail. A security
  descriptor (--smb-security) is set and checked in a compound before the one that renames:
  a failed request does not stop the rest of a related compound (Samba renamed a file after
  refusing its descriptor), and the file must not appear under its name without it.
- read: CREATE + READs of IO_BYTES + CLOSE; the CREATE reply gives size and time, so no stat.
- stat, delete, mkdir: CREATE + CLOSE; set_meta: CREATE + SET_INFOs + CLOSE; security:
  CREATE + QUERY_INFO + CLOSE.
- scan: CREATE + QUERY_DIRECTORY + CLOSE; a directory whose reply fills more than half the
  buffer is opened again and paged.

Paths are relative to the share, with backslashes. Failures raise packets.StatusError (an
OSError with the errno the status means); the store classifies them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from orbit_fast.backends.smb import packets as p
from orbit_fast.backends.smb.channel import Channel, NoCredits, Reply

IO_BYTES = 1 << 20  # the largest read or write request (the fastest on loopback, RECIPES.md 8)
COMPOUND_READ = 8 << 20  # reads up to this size go in one compound with their open and close
_LIST_REPLY = 256 << 10
_IN_FLIGHT = 8
_WRITE_ACCESS = p.WRITE_DATA | p.READ_ATTRIBUTES | p.WRITE_ATTRIBUTES | p.DELETE | p.SYNCHRONIZE
_READ_ACCESS = p.READ_DATA | p.READ_ATTRIBUTES | p.SYNCHRONIZE
_SECURITY_WRITE = p.WRITE_DAC | p.WRITE_OWNER


class Wire:
    """One thread's raw operations on one share: the channel, session and tree are
    smbprotocol's (from smbclient's pool), `base` the URL's directory below the share."""

    def __init__(self, channel: Channel, session: Any, tree: Any, base: str) -> None:
        self.channel, self.session, self.tree = channel, session, tree
        self.base = base

    def path(self, rel: str) -> str:
        rel = rel.strip("/").replace("/", "\\")
        return f"{self.base}\\{rel}" if self.base and rel else self.base or rel

    def run(self, messages: list[tuple[int, bytes, Any]],
            related: bool = True) -> list[Reply]:  # fmt: skip
        return self.channel.exchange(self.session, self.tree, messages, related)

    def _first_failure(self, replies: list[Reply], path: str, what: str,
                       ok: tuple[int, ...] = ()) -> None:  # fmt: skip
        for r in replies:
            if r.status != p.STATUS_SUCCESS and r.status not in ok:
                raise p.StatusError(r.status, path, what)

    # ---- files ----------------------------------------------------------------------------

    def put(self, tmp: str, final: str, data: Any, mtime_ns: int | None, replace: bool,
            btime_ns: int | None = None, attributes: int = -1,
            security: bytes | None = None) -> p.Attrs:  # fmt: skip
        """Write `data` to the fresh temp name `tmp`, set its times (`btime_ns`: creation)
        and its `security` descriptor (self-relative: owner, group, DACL), rename it to
        `final` (over an existing file if `replace`), give it `attributes` (DOS attributes,
        -1: the server's) and close: the final file's attributes."""
        view = memoryview(data).cast("B")
        tmp_path, final_path = self.path(tmp), self.path(final)
        first = view[:IO_BYTES]
        access = _WRITE_ACCESS | (_SECURITY_WRITE if security is not None else 0)
        msgs: list[tuple[int, bytes, Any]] = [
            # Not shared: while we write, nobody else opens it, and a sweep of stale temps
            # (sync/object_copies.py) gets a sharing violation instead of deleting it.
            (p.CREATE, p.create(tmp_path, access, p.CREATE_NEW, p.NON_DIRECTORY_FILE,
                                p.ATTR_NORMAL, share=0), b""),  # fmt: skip
        ]
        if len(first):
            msgs.append((p.WRITE, p.write_head(0, len(first)), first))
        if len(view) > IO_BYTES:  # the rest goes on the handle once the CREATE has answered
            replies = self.run(msgs)
            self._first_failure(replies, tmp_path, "create")
            fid = p.create_reply(replies[0].body)[0]
            try:
                self._write_on(fid, IO_BYTES, view[IO_BYTES:], tmp_path)
            except BaseException:
                self._abandon(fid, tmp_path)
                raise
            msgs = []
        else:
            fid = p.RELATED_FID
        if security is not None:
            self._secure_written(msgs, fid, tmp_path, security)
            return self.commit(tmp, final, mtime_ns, btime_ns, attributes, replace=replace)
        renamed = self._finish(msgs, fid, final_path, replace, mtime_ns, btime_ns, attributes)
        replies = self.run(msgs, related=fid == p.RELATED_FID)
        if replies[0].status != p.STATUS_SUCCESS and fid == p.RELATED_FID:
            raise p.StatusError(replies[0].status, tmp_path, "create")
        failed = next((r for r in replies if r.status != p.STATUS_SUCCESS), None)
        if failed is not None:
            if replies[-1].status != p.STATUS_SUCCESS and fid != p.RELATED_FID:
                self._close_quietly(fid)
            if replies[renamed].status == p.STATUS_SUCCESS:  # in place; its attributes failed
                raise p.StatusError(failed.status, final_path, "set the attributes of")
            self.delete(tmp)  # the temp file is closed, under its own name: remove it
            raise p.StatusError(failed.status, final_path if failed.command == p.SET_INFO
                                else tmp_path, "write")  # fmt: skip
        return p.close_reply(replies[-1].body)

    def _secure_written(self, msgs: list[tuple[int, bytes, Any]], fid: bytes, tmp_path: str,
                        security: bytes) -> None:  # fmt: skip
        """Give the temp file open as `fid` (or by the CREATE in `msgs`) its `security`
        descriptor and close it; on any failure remove it and raise (SecurityRefused for
        the descriptor)."""
        msgs.append((p.SET_INFO, p.set_security(security, fid), b""))
        msgs.append((p.CLOSE, p.close(fid), b""))
        replies = self.run(msgs, related=fid == p.RELATED_FID)
        failed = next((r for r in replies if r.status != p.STATUS_SUCCESS), None)
        if failed is None:
            return
        if replies[0].status != p.STATUS_SUCCESS and fid == p.RELATED_FID:
            raise p.StatusError(replies[0].status, tmp_path, "create")
        if replies[-1].status != p.STATUS_SUCCESS and fid != p.RELATED_FID:
            self._close_quietly(fid)
        self.delete_path(tmp_path)
        if failed is replies[-2]:
            raise p.SecurityRefused(failed.status, tmp_path)
        raise p.StatusError(failed.status, tmp_path, "write")

    def secure(self, rel: str, security: bytes) -> None:
        """Give the existing file `rel` the `security` descriptor (owner, group, DACL)."""
        path = self.path(rel)
        replies = self.run([
            (p.CREATE, p.create(path, _SECURITY_WRITE | p.SYNCHRONIZE, p.OPEN,
                                p.NON_DIRECTORY_FILE), b""),
            (p.SET_INFO, p.set_security(security), b""),
            (p.CLOSE, p.close(), b"")])  # fmt: skip
        self._first_failure(replies[:1], path, "open")
        if replies[1].status != p.STATUS_SUCCESS:
            raise p.SecurityRefused(replies[1].status, path)

    @staticmethod
    def _finish(msgs: list[tuple[int, bytes, Any]], fid: bytes, final_path: str, replace: bool,
                mtime_ns: int | None, btime_ns: int | None, attributes: int) -> int:
        """Append to `msgs` what gives the open temp file its times, renames it to
        `final_path`, gives it its DOS attributes and closes it: the index of the rename."""
        if mtime_ns is not None or btime_ns is not None:
            msgs.append((p.SET_INFO, p.set_info(p.BASIC_INFO, p.basic_info(
                mtime_ns, btime_ns=btime_ns), fid), b""))  # fmt: skip
        msgs.append((p.SET_INFO, p.set_info(p.RENAME_INFO, p.rename_info(final_path, replace),
                                            fid), b""))  # fmt: skip
        if attributes >= 0:  # after the rename: Samba sets ARCHIVE on the file it renames
            msgs.append((p.SET_INFO, p.set_info(p.BASIC_INFO, p.basic_info(
                attributes=attributes or p.ATTR_NORMAL), fid), b""))  # fmt: skip
        msgs.append((p.CLOSE, p.close(fid, postquery=True), b""))
        return len(msgs) - 2 - (attributes >= 0)

    def _write_on(self, fid: bytes, offset: int, view: memoryview, path: str) -> None:
        """WRITEs of IO_BYTES on an open handle, _IN_FLIGHT at a time."""
        pending: deque[tuple[list[Reply], int]] = deque()
        at = 0
        while at < len(view) or pending:
            if at < len(view) and len(pending) < _IN_FLIGHT:
                piece = view[at : at + IO_BYTES]
                try:
                    sent = self.channel.send_raw(self.session, self.tree, [
                        (p.WRITE, p.write_head(offset + at, len(piece), fid), piece)])  # fmt: skip
                except NoCredits:
                    if not pending:
                        raise
                else:
                    pending.append((sent, len(piece)))
                    at += len(piece)
                    continue
            replies, length = pending.popleft()
            self.channel.wait(replies)
            self._first_failure(replies, path, "write")
            if p.write_reply(replies[0].body) != length:
                raise p.StatusError(p.STATUS_END_OF_FILE, path, "write (short)")

    def _abandon(self, fid: bytes, path: str) -> None:
        """Close a temp file a failed write left open and remove it."""
        try:
            self._close_quietly(fid)
            self.delete_path(path)
        except Exception:  # noqa: BLE001 - the failure being raised matters more
            pass

    def _close_quietly(self, fid: bytes) -> None:
        try:
            self.run([(p.CLOSE, p.close(fid), b"")])
        except Exception:  # noqa: BLE001 - a handle on a dead connection is gone anyway
            pass

    def read(self, rel: str, offset: int, length: int) -> tuple[bytes, p.Attrs]:
        """Up to `length` bytes at `offset` (fewer at the end of the file) and the file's
        attributes when it was opened."""
        views, attrs = self.read_views(rel, offset, length)
        return b"".join(views), attrs

    def read_views(self, rel: str, offset: int, length: int) -> tuple[list[memoryview], p.Attrs]:
        """Read `length` bytes from `offset` (fewer at the end of the file): views of the
        replies' data, and the file's attributes when it was opened. Up to IO_BYTES is one
        compound (open, read, close); beyond, the open and first READ are one compound and
        the other READs are pipelined on the handle, _IN_FLIGHT at a time, so the
        server reads and signs the next while this side receives one."""
        path = self.path(rel)
        end = offset + length
        first = min(IO_BYTES, length)
        msgs: list[tuple[int, bytes, Any]] = [
            (p.CREATE, p.create(path, _READ_ACCESS, p.OPEN, p.NON_DIRECTORY_FILE), b"")]
        if first:
            msgs.append((p.READ, p.read(offset, first), b""))
        if length <= IO_BYTES:
            msgs.append((p.CLOSE, p.close(), b""))
        replies = self.run(msgs)
        self._first_failure(replies[:1], path, "open")
        fid, attrs = p.create_reply(replies[0].body)
        views: list[memoryview] = []
        if first and not self._take(replies[1], views, first, path) or length <= IO_BYTES:
            if length > IO_BYTES:
                self._close_later(fid)
            return views, attrs
        try:
            pending: deque[tuple[Reply, int]] = deque()
            at = offset + first
            while at < end or pending:
                if at < end and len(pending) < _IN_FLIGHT:
                    n = min(IO_BYTES, end - at)
                    try:
                        read = [(p.READ, p.read(at, n, fid), b"")]
                        sent = self.channel.send_raw(self.session, self.tree, read)
                    except NoCredits:
                        if not pending:
                            raise
                    else:
                        pending.append((sent[0], n))
                        at += n
                        continue
                reply, n = pending.popleft()
                self.channel.wait([reply])
                if not self._take(reply, views, n, path):
                    for later, _ in pending:  # the end of the file: the rest answer EOF
                        self.channel.wait([later])
                    break
        finally:
            self._close_later(fid)
        return views, attrs

    def _take(self, reply: Reply, views: list[memoryview], asked: int, path: str) -> bool:
        """Keep a READ reply's data: whether the file goes on after it."""
        if reply.status == p.STATUS_END_OF_FILE:
            return False
        self._first_failure([reply], path, "read")
        data = p.read_reply(reply.body)
        views.append(data)
        return len(data) == asked

    def _close_later(self, fid: bytes) -> None:
        """CLOSE a handle without waiting for the reply (the receive thread drops it)."""
        try:
            self.channel.send_raw(self.session, self.tree, [(p.CLOSE, p.close(fid), b"")])
        except Exception:  # noqa: BLE001 - a handle on a dead connection is gone anyway
            pass

    def stat(self, rel: str) -> p.Attrs:
        path = self.path(rel)
        replies = self.run([(p.CREATE, p.create(path, p.READ_ATTRIBUTES, p.OPEN), b""),
                            (p.CLOSE, p.close(), b"")])  # fmt: skip
        self._first_failure(replies[:1], path, "stat")
        return p.create_reply(replies[0].body)[1]

    def create_sized(self, rel: str, size: int) -> None:
        path = self.path(rel)
        replies = self.run([
            (p.CREATE, p.create(path, _WRITE_ACCESS, p.OVERWRITE_IF, p.NON_DIRECTORY_FILE,
                                p.ATTR_NORMAL), b""),
            (p.SET_INFO, p.set_info(p.END_OF_FILE_INFO, p.end_of_file_info(size)), b""),
            (p.CLOSE, p.close(), b"")])  # fmt: skip
        self._first_failure(replies, path, "create")

    def pwrite(self, rel: str, offset: int, data: Any) -> None:
        """Write `data` at `offset` of an existing file: open and the first WRITE in one
        compound, the rest pipelined, then close."""
        path = self.path(rel)
        view = memoryview(data).cast("B")
        first = view[:IO_BYTES]
        msgs: list[tuple[int, bytes, Any]] = [
            (p.CREATE, p.create(path, p.WRITE_DATA | p.SYNCHRONIZE, p.OPEN,
                                p.NON_DIRECTORY_FILE), b""),  # fmt: skip
            (p.WRITE, p.write_head(offset, len(first)), first)]
        if len(view) <= IO_BYTES:
            msgs.append((p.CLOSE, p.close(), b""))
            replies = self.run(msgs)
            self._first_failure(replies, path, "write")
            if p.write_reply(replies[1].body) != len(first):
                raise p.StatusError(p.STATUS_END_OF_FILE, path, "write (short)")
            return
        replies = self.run(msgs)
        self._first_failure(replies, path, "write")
        fid = p.create_reply(replies[0].body)[0]
        try:
            self._write_on(fid, offset + IO_BYTES, view[IO_BYTES:], path)
        finally:
            self._close_quietly(fid)

    def commit(self, tmp: str, final: str, mtime_ns: int | None, btime_ns: int | None = None,
               attributes: int = -1, security: bytes | None = None,
               replace: bool = True) -> p.Attrs:  # fmt: skip
        """Set the temp file's times and `security` (first, alone: see put), rename it over
        `final` and give it `attributes` (as put): the final attributes."""
        if security is not None:
            self.secure(tmp, security)
        tmp_path, final_path = self.path(tmp), self.path(final)
        msgs: list[tuple[int, bytes, Any]] = [
            (p.CREATE, p.create(tmp_path, p.READ_ATTRIBUTES | p.WRITE_ATTRIBUTES | p.DELETE
                                | p.SYNCHRONIZE, p.OPEN, p.NON_DIRECTORY_FILE), b"")]  # fmt: skip
        self._finish(msgs, p.RELATED_FID, final_path, replace, mtime_ns, btime_ns, attributes)
        replies = self.run(msgs)
        self._first_failure(replies, final_path, "rename")
        return p.close_reply(replies[-1].body)

    def set_meta(self, rel: str, btime_ns: int | None, attributes: int,
                 security: bytes | None = None) -> p.Attrs:  # fmt: skip
        """Give the file `rel` the creation time `btime_ns` (None: leave it), the DOS
        attributes `attributes` (-1: leave them) and the `security` descriptor (None: leave
        it), nothing else: its attributes after."""
        path = self.path(rel)
        access = p.READ_ATTRIBUTES | p.SYNCHRONIZE
        msgs: list[tuple[int, bytes, Any]] = []
        if btime_ns is not None or attributes >= 0:
            access |= p.WRITE_ATTRIBUTES
            basic = p.basic_info(btime_ns=btime_ns, attributes=0 if attributes < 0
                                 else attributes or p.ATTR_NORMAL)  # fmt: skip
            msgs.append((p.SET_INFO, p.set_info(p.BASIC_INFO, basic), b""))
        if security is not None:
            access |= _SECURITY_WRITE
            msgs.append((p.SET_INFO, p.set_security(security), b""))
        replies = self.run([
            (p.CREATE, p.create(path, access, p.OPEN, p.NON_DIRECTORY_FILE), b""), *msgs,
            (p.CLOSE, p.close(postquery=True), b"")])  # fmt: skip
        self._first_failure(replies[:-2], path, "set the attributes of")
        if security is not None and replies[-2].status != p.STATUS_SUCCESS:
            raise p.SecurityRefused(replies[-2].status, path)
        self._first_failure(replies, path, "set the attributes of")
        return p.close_reply(replies[-1].body)

    def security(self, rel: str) -> tuple[bytes, p.Attrs]:
        """The file's security descriptor (owner, group, DACL; self-relative), and its
        attributes."""
        path = self.path(rel)
        replies = self.run([
            (p.CREATE, p.create(path, p.READ_CONTROL | p.READ_ATTRIBUTES | p.SYNCHRONIZE,
                                p.OPEN, p.NON_DIRECTORY_FILE), b""),
            (p.QUERY_INFO, p.query_security(), b""),
            (p.CLOSE, p.close(), b"")])  # fmt: skip
        self._first_failure(replies[:2], path, "read the security descriptor of")
        return p.query_info_reply(replies[1].body), p.create_reply(replies[0].body)[1]

    def delete(self, rel: str) -> None:
        self.delete_path(self.path(rel))

    def delete_path(self, path: str, readonly_cleared: bool = False) -> None:
        replies = self.run([
            (p.CREATE, p.create(path, p.DELETE | p.READ_ATTRIBUTES, p.OPEN,
                                p.NON_DIRECTORY_FILE | p.DELETE_ON_CLOSE), b""),
            (p.CLOSE, p.close(), b"")])  # fmt: skip
        if replies[0].status == p.STATUS_CANNOT_DELETE and not readonly_cleared:
            # READONLY (a copy kept the source's): a mirror still deletes it, as rsync
            # deletes a file whatever its mode. Cleared first, once; what else it has goes too.
            self.run([
                (p.CREATE, p.create(path, p.WRITE_ATTRIBUTES | p.SYNCHRONIZE, p.OPEN,
                                    p.NON_DIRECTORY_FILE), b""),
                (p.SET_INFO, p.set_info(p.BASIC_INFO, p.basic_info(attributes=p.ATTR_NORMAL)),
                 b""),
                (p.CLOSE, p.close(), b"")])  # fmt: skip
            self.delete_path(path, readonly_cleared=True)
            return
        self._first_failure(replies[:1], path, "delete")

    def set_mtime(self, rel: str, mtime_ns: int, directory: bool = False) -> None:
        """Give `rel` the time `mtime_ns` (100 ns on the wire): open, set, close in one
        compound; the file's other times are left alone (0 in FILE_BASIC_INFORMATION)."""
        path = self.path(rel)
        replies = self.run([
            (p.CREATE, p.create(path, p.WRITE_ATTRIBUTES | p.SYNCHRONIZE, p.OPEN,
                                p.DIRECTORY_FILE if directory else 0), b""),
            (p.SET_INFO, p.set_info(p.BASIC_INFO, p.basic_info(mtime_ns)), b""),
            (p.CLOSE, p.close(), b"")])  # fmt: skip
        self._first_failure(replies, path, "set the time of")

    # ---- directories ----------------------------------------------------------------------

    def mkdir(self, rel: str) -> bool:
        """Make the directory `rel` (and its parents, up to the share): whether it was made."""
        return self._mkdir_path(self.path(rel))

    def _mkdir_path(self, path: str) -> bool:
        replies = self.run([
            (p.CREATE, p.create(path, p.READ_ATTRIBUTES, p.OPEN_IF, p.DIRECTORY_FILE), b""),
            (p.CLOSE, p.close(), b"")])  # fmt: skip
        if replies[0].status == p.STATUS_OBJECT_PATH_NOT_FOUND and "\\" in path:
            self._mkdir_path(path.rsplit("\\", 1)[0])
            return self._mkdir_path(path)
        self._first_failure(replies[:1], path, "make the directory")
        # CreateAction ([MS-SMB2] 2.2.14) at 4: 2 is FILE_CREATED
        return int.from_bytes(replies[0].body[4:8], "little") == 2

    def scan(self, rel: str) -> list[p.Entry]:
        """The entries of the directory `rel`, in the server's order."""
        return self.scan_finish(self.scan_start(rel))

    def scan_start(self, rel: str) -> tuple[str, list[Reply]]:
        """Send the compound that lists `rel` without waiting: a listing keeps several
        directories in flight on one connection (the round trips were its time)."""
        path = self.path(rel)
        return path, self.channel.send_raw(self.session, self.tree, [
            (p.CREATE, p.create(path, _READ_ACCESS, p.OPEN, p.DIRECTORY_FILE), b""),
            (p.QUERY_DIRECTORY, p.query_directory(True, _LIST_REPLY), b""),
            (p.CLOSE, p.close(), b"")])  # fmt: skip

    def scan_finish(self, started: tuple[str, list[Reply]]) -> list[p.Entry]:
        path, replies = started
        self.channel.wait(replies)
        self._first_failure(replies[:1], path, "list")
        if replies[1].status == p.STATUS_NO_MORE_FILES:
            return []
        self._first_failure(replies[1:2], path, "list")
        buf = p.query_reply(replies[1].body)
        if len(buf) <= _LIST_REPLY // 2:
            return p.parse_entries(buf)
        open_dir = (p.CREATE, p.create(path, _READ_ACCESS, p.OPEN, p.DIRECTORY_FILE), b"")
        replies = self.run([open_dir])  # a big directory: page through it on one handle
        self._first_failure(replies, path, "list")
        fid = p.create_reply(replies[0].body)[0]
        out: list[p.Entry] = []
        try:
            first = True
            while True:
                r = self.run([(p.QUERY_DIRECTORY, p.query_directory(first, _LIST_REPLY, fid),
                               b"")])[0]  # fmt: skip
                if r.status == p.STATUS_NO_MORE_FILES:
                    return out
                self._first_failure([r], path, "list")
                out += p.parse_entries(p.query_reply(r.body))
                first = False
        finally:
            self._close_quietly(fid)

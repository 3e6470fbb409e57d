"""SMB2 request bodies and reply fields as `struct` templates ([MS-SMB2] 2.2, [MS-FSCC] 2.4),
for the requests of the data path: create, close, read, write, set-info, query-directory and
query-info (a file's security descriptor).

smbprotocol builds every message from per-field `Structure` objects, which cost about
0.25 ms of CPU per message; a small file's life is five messages. Here each body is one
`struct.pack`, checked byte for byte against smbprotocol's own builders in
tests/unit/test_smb_packets.py. Headers, signing and credits are channel.py's; which requests
a store operation sends is wire.py's. Nothing here holds state.
"""

from __future__ import annotations

import errno
import struct
from typing import NamedTuple

# Commands ([MS-SMB2] 2.2.1.2)
CREATE, CLOSE, READ, WRITE, QUERY_DIRECTORY, QUERY_INFO, SET_INFO = (
    0x05, 0x06, 0x08, 0x09, 0x0E, 0x10, 0x11)

# Header flags
FLAG_ASYNC, FLAG_RELATED, FLAG_SIGNED = 0x2, 0x4, 0x8

# Access masks ([MS-SMB2] 2.2.13.1)
READ_DATA, WRITE_DATA, READ_ATTRIBUTES, WRITE_ATTRIBUTES = 0x1, 0x2, 0x80, 0x100
DELETE, SYNCHRONIZE = 0x10000, 0x100000
READ_CONTROL, WRITE_DAC, WRITE_OWNER = 0x20000, 0x40000, 0x80000  # the security descriptor
# Share access: others may read, write and rename/delete beside us (as a POSIX open)
SHARE_ALL = 0x7
# Create dispositions
OPEN, CREATE_NEW, OPEN_IF, OVERWRITE_IF = 1, 2, 3, 5
# Create options
DIRECTORY_FILE, NON_DIRECTORY_FILE, DELETE_ON_CLOSE = 0x1, 0x40, 0x1000
ATTR_DIRECTORY, ATTR_NORMAL, ATTR_REPARSE = 0x10, 0x80, 0x400
ATTR_READONLY = 0x1  # a file with it cannot be written or deleted ([MS-FSA] 2.1.5.1.2.1)
_IMPERSONATION = 2  # SecurityImpersonation, as smbclient asks

# Info types of QUERY_INFO and SET_INFO ([MS-SMB2] 2.2.37): a file information class, or the
# security descriptor, of which SECURITY_PARTS: OWNER, GROUP and DACL (not the SACL, which
# needs SeSecurityPrivilege).
INFO_FILE, INFO_SECURITY = 1, 3
SECURITY_PARTS = 0x1 | 0x2 | 0x4
SECURITY_BYTES = 64 << 10  # a descriptor's largest size (its ACLs' sizes are 16-bit)
# File information classes ([MS-FSCC] 2.4)
BASIC_INFO, RENAME_INFO, END_OF_FILE_INFO, ID_FULL_DIRECTORY_INFO = 4, 10, 20, 38
RELATED_FID = b"\xff" * 16  # "the handle the previous request of this compound opened"
POSTQUERY_ATTRIB = 1  # CLOSE: return the file's attributes after closing
RESTART_SCANS = 1

# NTSTATUS values the data path tells apart
STATUS_SUCCESS = 0
STATUS_PENDING = 0x00000103
STATUS_NO_MORE_FILES = 0x80000006
STATUS_STOPPED_ON_SYMLINK = 0x8000002D
STATUS_END_OF_FILE = 0xC0000011
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_OBJECT_NAME_COLLISION = 0xC0000035
STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
STATUS_SHARING_VIOLATION = 0xC0000043
STATUS_DELETE_PENDING = 0xC0000056
STATUS_FILE_IS_A_DIRECTORY = 0xC00000BA
STATUS_NOT_A_DIRECTORY = 0xC0000103
STATUS_CANNOT_DELETE = 0xC0000121  # delete-on-close of a file with ATTR_READONLY
STATUS_INVALID_OWNER = 0xC000005A  # a descriptor's owner SID the server may not give a file
STATUS_DIRECTORY_NOT_EMPTY = 0xC0000101
STATUS_NOT_FOUND = 0xC0000225

FILETIME_EPOCH = 116444736000000000  # 1970-01-01 in 100 ns units since 1601
TIME_PRECISION_NS = 100  # a FILETIME's unit: shares keep times to 100 ns

_CREATE = struct.Struct("<HBBIQQIIIIIHHII")  # 56 bytes, name at 64 + 56
_WRITE = struct.Struct("<HHIQ16sIIHHI")  # 48 bytes, data at 64 + 48
_READ = struct.Struct("<HBBIQ16sIIIHHx")  # 49 bytes (one byte of buffer)
_SET_INFO = struct.Struct("<HBBIHHI16s")  # 32 bytes, buffer at 64 + 32
_QUERY_INFO = struct.Struct("<HBBIHHIII16s")  # 40 bytes, no input buffer
_CLOSE = struct.Struct("<HHI16s")
_QUERY_DIRECTORY = struct.Struct("<HBBI16sHHI")  # 32 bytes, pattern at 64 + 32
_BASIC = struct.Struct("<QQQQII")
_RENAME_HEAD = struct.Struct("<B7xQI")  # ReplaceIfExists, Reserved, RootDirectory, length
_STAR = "*".encode("utf-16-le")


def filetime(ns: int) -> int:
    return ns // TIME_PRECISION_NS + FILETIME_EPOCH


def filetime_ns(ft: int) -> int:
    return (ft - FILETIME_EPOCH) * TIME_PRECISION_NS


def create(path: str, access: int, disposition: int, options: int = 0,
           attributes: int = 0, share: int = SHARE_ALL) -> bytes:  # fmt: skip
    """CREATE ([MS-SMB2] 2.2.13) of `path` (backslashes, relative to the share), no oplock,
    no create contexts."""
    name = path.encode("utf-16-le")
    head = _CREATE.pack(57, 0, 0, _IMPERSONATION, 0, 0, access, attributes, share,
                        disposition, options, 120, len(name), 0, 0)  # fmt: skip
    return head + (name or b"\x00\x00")  # an empty name still sends a buffer, as smbprotocol


def write_head(offset: int, length: int, fid: bytes = RELATED_FID) -> bytes:
    """WRITE ([MS-SMB2] 2.2.21) without its data, which follows it on the wire."""
    return _WRITE.pack(49, 112, length, offset, fid, 0, 0, 0, 0, 0)


def read(offset: int, length: int, fid: bytes = RELATED_FID) -> bytes:
    """READ ([MS-SMB2] 2.2.19)."""
    return _READ.pack(49, 0x50, 0, length, offset, fid, 0, 0, 0, 0, 0)


def set_info(info_class: int, buffer: bytes, fid: bytes = RELATED_FID) -> bytes:
    """SET_INFO ([MS-SMB2] 2.2.39) of a file information class."""
    return _SET_INFO.pack(33, INFO_FILE, info_class, len(buffer), 96, 0, 0, fid) + buffer


def set_security(descriptor: bytes, fid: bytes = RELATED_FID) -> bytes:
    """SET_INFO of the owner, group and DACL of a self-relative security descriptor."""
    return _SET_INFO.pack(33, INFO_SECURITY, 0, len(descriptor), 96, 0, SECURITY_PARTS,
                          fid) + descriptor  # fmt: skip


def query_security(fid: bytes = RELATED_FID) -> bytes:
    """QUERY_INFO ([MS-SMB2] 2.2.37) of the owner, group and DACL, self-relative."""
    return _QUERY_INFO.pack(41, INFO_SECURITY, 0, SECURITY_BYTES, 0, 0, 0, SECURITY_PARTS, 0,
                            fid)  # fmt: skip


def query_info_reply(body: memoryview) -> bytes:
    """The output buffer of a QUERY_INFO reply ([MS-SMB2] 2.2.38): offset from the header at
    2, length at 4; a MalformedReply if it runs past the reply."""
    offset, length = struct.unpack_from("<HI", body, 2)
    if not length:
        return b""
    if offset < 64 + 8 or offset - 64 + length > len(body):
        raise MalformedReply(f"a QUERY_INFO reply's buffer ({length} bytes at {offset}) does "
                             f"not fit its {len(body) + 64}-byte reply")  # fmt: skip
    return bytes(body[offset - 64 : offset - 64 + length])


def close(fid: bytes = RELATED_FID, postquery: bool = False) -> bytes:
    return _CLOSE.pack(24, POSTQUERY_ATTRIB if postquery else 0, 0, fid)


def query_directory(first: bool, output: int, fid: bytes = RELATED_FID) -> bytes:
    """QUERY_DIRECTORY ([MS-SMB2] 2.2.33) for every name, FileIdFullDirectoryInformation."""
    return _QUERY_DIRECTORY.pack(33, ID_FULL_DIRECTORY_INFO, RESTART_SCANS if first else 0,
                                 0, fid, 96, len(_STAR), output) + _STAR  # fmt: skip


def basic_info(mtime_ns: int | None = None, atime_ns: int | None = None,
               btime_ns: int | None = None, attributes: int = 0) -> bytes:  # fmt: skip
    """FileBasicInformation ([MS-FSCC] 2.4.7): zero leaves a time and the attributes as
    they are (ATTR_NORMAL clears them all); a last-write time set on a handle also stops the
    server from moving it on the handle's later writes ([MS-FSA] 2.1.5.14.2). `btime_ns`:
    the creation time."""
    wt = filetime(mtime_ns) if mtime_ns is not None else 0
    at = filetime(atime_ns) if atime_ns is not None else 0
    ct = filetime(btime_ns) if btime_ns is not None else 0
    return _BASIC.pack(ct, at, wt, 0, attributes, 0)


def rename_info(target: str, replace: bool) -> bytes:
    """FileRenameInformation, SMB2 form ([MS-FSCC] 2.4.37.2): target relative to the share."""
    name = target.encode("utf-16-le")
    return _RENAME_HEAD.pack(1 if replace else 0, 0, len(name)) + name


def end_of_file_info(size: int) -> bytes:
    return struct.pack("<Q", size)


class Attrs(NamedTuple):
    """What a CREATE reply or a CLOSE reply with POSTQUERY_ATTRIB reports of a file."""

    mtime_ns: int
    size: int
    attributes: int
    btime_ns: int | None = None  # the creation time; None: the server has none (0)

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & ATTR_DIRECTORY)


def create_reply(body: memoryview) -> tuple[bytes, Attrs]:
    """The file id and attributes of a CREATE reply ([MS-SMB2] 2.2.14)."""
    return bytes(body[64:80]), close_reply(body)  # the same fields at the same offsets


def close_reply(body: memoryview) -> Attrs:
    """The attributes of a CLOSE reply with POSTQUERY_ATTRIB ([MS-SMB2] 2.2.16), or of a
    CREATE reply: creation time at 8, last write time at 24, end of file at 48, attributes at
    56 in both."""
    creation, = struct.unpack_from("<Q", body, 8)
    write_time, = struct.unpack_from("<Q", body, 24)
    eof, = struct.unpack_from("<Q", body, 48)
    attributes, = struct.unpack_from("<I", body, 56)
    return Attrs(filetime_ns(write_time), eof, attributes,
                 filetime_ns(creation) if creation else None)  # fmt: skip


def read_reply(body: memoryview) -> memoryview:
    """The data of a READ reply ([MS-SMB2] 2.2.20), a view: offset from the header at 2,
    length at 4."""
    offset, length = body[2] - 64, struct.unpack_from("<I", body, 4)[0]
    return body[offset : offset + length]


def write_reply(body: memoryview) -> int:
    """The count of bytes a WRITE reply ([MS-SMB2] 2.2.22) says were written."""
    return int(struct.unpack_from("<I", body, 4)[0])


def query_reply(body: memoryview) -> bytes:
    """The output buffer of a QUERY_DIRECTORY reply ([MS-SMB2] 2.2.34)."""
    offset, length = struct.unpack_from("<HI", body, 2)
    return bytes(body[offset - 64 : offset - 64 + length])


class Entry(NamedTuple):
    name: str
    is_dir: bool
    size: int
    mtime_ns: int
    btime_ns: int | None = None  # the creation time; None: the server has none (0)
    attributes: int = 0


def parse_entries(buf: bytes) -> list[Entry]:
    """FILE_ID_FULL_DIR_INFORMATION records ([MS-FSCC] 2.4.18): the next-entry offset at 0,
    creation time at 8, last write time at 24, end of file at 40, attributes at 56, name
    length at 60, name at 80 (UTF-16LE). Links to directories (reparse points) are left out:
    never followed.

    A record that runs past the buffer is a MalformedReply, whatever the server meant. A name
    with an unpaired UTF-16 surrogate (NTFS allows them) is kept as such (surrogatepass): the
    listing's name check (base.name_problem) then skips that one file with a warning instead
    of failing the whole listing."""
    out, at = [], 0
    while at < len(buf):
        if at + 80 > len(buf):
            raise MalformedReply(f"a directory record at {at} of {len(buf)} bytes is cut short")
        nxt, creation = struct.unpack_from("<I4xQ", buf, at)
        (write,) = struct.unpack_from("<Q", buf, at + 24)
        (eof,) = struct.unpack_from("<Q", buf, at + 40)
        attrs, name_len = struct.unpack_from("<II", buf, at + 56)
        if at + 80 + name_len > len(buf) or name_len % 2:
            raise MalformedReply(f"a directory record's name ({name_len} bytes at {at + 80}) "
                                 f"does not fit its {len(buf)}-byte reply")  # fmt: skip
        name = buf[at + 80 : at + 80 + name_len].decode("utf-16-le", "surrogatepass")
        if name not in (".", "..") and not (attrs & ATTR_DIRECTORY and attrs & ATTR_REPARSE):
            out.append(Entry(name, bool(attrs & ATTR_DIRECTORY), eof, filetime_ns(write),
                             filetime_ns(creation) if creation else None, attrs))  # fmt: skip
        if not nxt:
            break
        at += nxt
    return out


class SecurityRefused(OSError):
    """The server refused to give a file a security descriptor (--smb-security)."""

    def __init__(self, status: int, path: str) -> None:
        self.status = status
        name = _NAMES.get(status, "see [MS-ERREF]")
        super().__init__(_ERRNO.get(status, errno.EIO), "setting its security descriptor "
                         f"failed: NTSTATUS 0x{status:08X} ({name})", path)  # fmt: skip


class MalformedReply(ValueError):
    """A reply that does not hold what its own lengths and offsets say."""


class StatusError(OSError):
    """A request failed with an NTSTATUS the caller did not expect."""

    def __init__(self, status: int, path: str, what: str = "") -> None:
        self.status = status
        code = _ERRNO.get(status, errno.EIO)
        super().__init__(code, f"{what or 'request'} failed: NTSTATUS 0x{status:08X}"
                         f" ({_NAMES.get(status, 'see [MS-ERREF]')})", path)  # fmt: skip


_ERRNO = {
    STATUS_OBJECT_NAME_NOT_FOUND: errno.ENOENT, STATUS_OBJECT_PATH_NOT_FOUND: errno.ENOENT,
    STATUS_NOT_FOUND: errno.ENOENT, STATUS_DELETE_PENDING: errno.ENOENT,
    STATUS_OBJECT_NAME_COLLISION: errno.EEXIST, STATUS_ACCESS_DENIED: errno.EACCES,
    STATUS_FILE_IS_A_DIRECTORY: errno.EISDIR, STATUS_NOT_A_DIRECTORY: errno.ENOTDIR,
    STATUS_DIRECTORY_NOT_EMPTY: errno.ENOTEMPTY, STATUS_SHARING_VIOLATION: errno.EBUSY,
    STATUS_CANNOT_DELETE: errno.EACCES,
}  # fmt: skip
_NAMES = {
    STATUS_OBJECT_NAME_NOT_FOUND: "STATUS_OBJECT_NAME_NOT_FOUND",
    STATUS_OBJECT_PATH_NOT_FOUND: "STATUS_OBJECT_PATH_NOT_FOUND",
    STATUS_NOT_FOUND: "STATUS_NOT_FOUND", STATUS_DELETE_PENDING: "STATUS_DELETE_PENDING",
    STATUS_OBJECT_NAME_COLLISION: "STATUS_OBJECT_NAME_COLLISION",
    STATUS_ACCESS_DENIED: "STATUS_ACCESS_DENIED",
    STATUS_FILE_IS_A_DIRECTORY: "STATUS_FILE_IS_A_DIRECTORY",
    STATUS_NOT_A_DIRECTORY: "STATUS_NOT_A_DIRECTORY",
    STATUS_DIRECTORY_NOT_EMPTY: "STATUS_DIRECTORY_NOT_EMPTY",
    STATUS_SHARING_VIOLATION: "STATUS_SHARING_VIOLATION",
    STATUS_STOPPED_ON_SYMLINK: "STATUS_STOPPED_ON_SYMLINK",
    STATUS_END_OF_FILE: "STATUS_END_OF_FILE",
    STATUS_CANNOT_DELETE: "STATUS_CANNOT_DELETE",
    STATUS_INVALID_OWNER: "STATUS_INVALID_OWNER",
}  # fmt: skip

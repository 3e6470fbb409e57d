"""What the rest of orbit-fast needs from a place objects live, as two protocols and two
optional abilities; and what each backend declares about itself.

- `BlobStore`: what a repository needs (whole objects, ranged reads, listing, locks).
- `FileStore`: what a sync (and a backup's remote source) needs (files with their mtimes,
  listings that prune directories, batch deletes).
- `Store`: both; every backend is one, and `registry.open_store` returns one.
- Optional: `PartUploads` (large objects in resumable parts) and `ServerCopier` (copies that
  never leave the server). Ask once with `part_uploads(store)` / `server_copier(src, dst)`;
  None means "move the bytes through us", as rclone's `fs.Copier` and `fs.ErrorCantCopy`.

Names are "/"-separated relative paths ("packs/ab/ab12..."); the local store refuses any other
(empty, absolute, "." or ".." components, NUL) with confine.Escape, an OSError (EINVAL), before
any system call. Errors, for every method:
TransientError: the same call may succeed if retried (connection reset, throttling, 5xx);
RetryingStore (wrappers.py) retries those. RemoteError: it will not (credentials, missing
bucket or share, permission denied). Local OSErrors pass through with their errno.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from orbit_fast.errors import RemoteError
from orbit_fast.fsinfo import is_sync_temp, temp_name

TMP_PREFIX = ".tmp-"  # writers' temp objects; listings skip them, sweep_temp removes them
# Exactly the names writers make: ".tmp-" + 12 hex (whole writes) or ".tmp-up-" + 16 hex
# (uploads in parts), so that a user's ".tmp-notes.txt" is still synced.
_TEMP_RE = re.compile(r"\.tmp-(?:[0-9a-f]{12}|up-[0-9a-f]{16})\Z")
def is_temp(basename: str) -> bool:
    """A writer's temp object: a store's own (whole writes, repository uploads) or a sync's."""
    if basename.startswith(TMP_PREFIX):
        return _TEMP_RE.match(basename) is not None
    return is_sync_temp(basename)


Descend = Callable[[str], bool]  # list_info: whether to read a directory
OnSkip = Callable[[str, str], None]  # list_info: (name, why) of an entry that is not a file
OnDir = Callable[[str, int], None]  # list_info: (name, mtime_ns) of a directory it descends
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems (and Samba's)
MAX_PATH_BYTES = 4095  # PATH_MAX less the NUL
UNSAFE_NAME = "unsafe name"  # how a listing's on_skip reason starts for one (name_problem)
# A listing's on_skip reason for a writer's temp file (is_temp): never listed as a file, but
# reported, so that a sync can count it, remove it when stale, and say so in its summary.
TEMP_NAME = "a writer's temp file"


def name_problem(name: str) -> str | None:
    """Why the object name `name` cannot be mapped safely to a local relative path (absolute,
    an empty, "." or ".." component, backslash, NUL, a component over MAX_NAME_BYTES), or None.
    Nothing is rewritten: "a//b" is not taken for "a/b", which may be another object
    (docs/sync.md, "Object names")."""
    if not name:
        return "empty"
    if "\0" in name:
        return "holds NUL"
    if name.startswith("/"):
        return "absolute"
    if "\\" in name:
        return "holds a backslash (a path separator on SMB)"
    parts = name.split("/")
    for p in parts:
        if p in ("", ".", ".."):
            return f"has the component {p!r}" if p else "has an empty component ('//')"
    try:
        name.encode("utf-8", "surrogateescape")  # a local name's undecodable bytes pass
    except UnicodeEncodeError:
        return "not valid Unicode (an unpaired UTF-16 surrogate)"
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        return f"a component is longer than {MAX_NAME_BYTES} bytes"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    return None


def check_name(name: str, where: str) -> str:
    """`name` if it is a safe relative object name; RemoteError if it could escape a local
    directory when mirrored there (name_problem)."""
    if why := name_problem(name):
        raise RemoteError(
            f"refusing the object name {name!r} in {where}: it {why} and could escape the "
            "target directory; rename or remove it on the server"
        )
    return name


def listed_name(name: str, where: str, on_skip: OnSkip | None) -> bool:
    """A listing's check of one name: True if it is safe; else the name goes to `on_skip`
    (UNSAFE_NAME: ...) and False, or without `on_skip` RemoteError (check_name)."""
    why = name_problem(name)
    if why is None:
        return True
    if on_skip is None:
        check_name(name, where)
    else:
        on_skip(name, f"{UNSAFE_NAME} ({why}): not mapped to a local name")
    return False


def upload_temp_name(name: str, token: str = "") -> str:
    """The temp name beside `name` ("a/b") for an upload in parts: the job's (`token`), the
    same a sync between trees uses, else a fresh one."""
    head, _, base = name.rpartition("/")
    return (f"{head}/" if head else "") + temp_name(base, token or secrets.token_hex(4))




class TransientError(Exception):
    """A failure worth retrying (the backend classified it)."""


class CantCopy(RemoteError):
    """A ServerCopy cannot copy this object on the server: copy it through us instead."""


class Capabilities(NamedTuple):
    """What a store declares about itself; each field is read by the sync engine."""

    min_part_bytes: int  # part uploads: smallest part but the last (0: any size)
    max_part_bytes: int  # part uploads: largest part (0: no limit)
    mtime_ns_precision: int = 1  # what the store keeps of a file's mtime (SMB: 100 ns)
    max_copy_bytes: int = 0  # server-side copies: the largest object (0: no limit)
    # Part uploads keep a whole-file MD5 given to begin_upload (S3: rclone's "md5chksum"
    # metadata, which `rclone check` reads): only then does a sync compute it.
    whole_md5: bool = False
    # Directories of its own, with times: list_info reports them to `on_dir`, a copy may
    # create them, and set_dir_mtime(name, mtime_ns) sets one (local, SMB; S3 has none).
    dir_mtimes: bool = False
    # Keeps a file's FileMeta (mode, owner, atime) given to put_file, begin_upload or an
    # upload's complete: S3 in rclone's metadata keys, a local directory on the file itself.
    file_meta: bool = False
    # Keeps a file's creation time and DOS attributes (FileMeta.btime_ns, dos_attrs; SMB):
    # given to put_file, an upload's complete and a server copy, reported by list_info,
    # stat_info and read_info with meta=True, and set alone by set_meta(name, meta), which
    # returns the file's info (an attributes-only update: no data is written).
    dos_meta: bool = False
    # Keeps a file's NT security descriptor (FileMeta.security: owner, group, DACL) given as
    # dos_meta's are, and reads one with security(name) -> (bytes, ObjectInfo) (SMB).
    nt_security: bool = False


class FileMeta(NamedTuple):
    """A file's metadata beyond size and mtime, where a store has it (read_info and stat_info
    with `meta=True`): a local file's from its stat and fd, an S3 object's from rclone's
    user-metadata keys, an SMB file's from the server's reply (also in listings with
    `meta=True`). -1 / None: not known."""

    mode: int = -1  # st_mode: the permission bits, setuid/setgid/sticky, the file type
    uid: int = -1
    gid: int = -1
    atime_ns: int | None = None
    # What only a local file has, for the report of what an object cannot hold:
    nlink: int = 1
    xattrs: tuple[str, ...] = ()  # names (POSIX ACLs are the system.posix_acl_* ones)
    # What only an SMB file has (capabilities.dos_meta): its creation time, and of its DOS
    # attributes the ones a copy keeps, DOS_ATTRS_KEPT (0: none of them).
    btime_ns: int | None = None
    dos_attrs: int = -1
    # Its NT security descriptor, self-relative, as the server gave it (owner, group, DACL;
    # capabilities.nt_security), where a sync asks for it (--smb-security); None: left alone.
    security: bytes | None = None


# FILE_ATTRIBUTE_READONLY, _HIDDEN, _SYSTEM and _ARCHIVE ([MS-FSCC] 2.6): what a file's users
# set. The others are the server's (directory, sparse, reparse point, compressed, ...).
DOS_ATTRS_KEPT = 0x1 | 0x2 | 0x4 | 0x20


class ObjectInfo(NamedTuple):
    name: str
    size: int
    mtime_ns: int | None  # the file's mtime; None: not in this listing (S3: ask stat_info)
    etag: str = ""  # S3: the ETag without quotes (MD5, or multipart_etag of the parts' MD5s)
    part_bytes: int = 0  # S3 objects orbit-fast uploaded in parts: the part size (metadata)
    md5: str = ""  # S3: the whole-file MD5 (hex) of rclone's "md5chksum" metadata, if any
    storage_class: str = ""  # S3 listings: GLACIER and DEEP_ARCHIVE objects cannot be read
    meta: FileMeta | None = None  # read_info / stat_info with meta=True, where the store has it

    @property
    def whole_md5(self) -> str:
        """The MD5 (hex) of the object's data when the store knows it: an S3 ETag of a single
        PUT is one; a multipart ETag is not, but its "md5chksum" metadata may be. "": unknown
        (or not listed: a listing has no metadata, stat_info has)."""
        if self.etag and "-" not in self.etag:
            return self.etag
        return self.md5

    @property
    def sig(self) -> str:
        """What changes when the object changes: the ETag on S3, else size and mtime."""
        return self.etag or f"{self.size}:{self.mtime_ns}"


def multipart_etag(part_md5s: list[str]) -> str:
    """The ETag S3 gives an object assembled from parts with these MD5s (hex): the MD5 of
    their digests, then "-" and the number of parts."""
    joined = b"".join(bytes.fromhex(t) for t in part_md5s)
    return f"{hashlib.md5(joined).hexdigest()}-{len(part_md5s)}"  # noqa: S324 (as S3 does)


# ---- the two halves ------------------------------------------------------------------------


class BlobStore(Protocol):
    """Whole objects under a repository. The contract, errors included:

    - `write(name, data)` stores the object whole or not at all (a reader never sees part of
      it); with `exclusive=True` it raises FileExistsError if the name exists (repository
      locks); with `private=True` only the store's owner may read it where objects have
      owners of their own (local files: mode 0600; buckets and shares keep their own rules).
    - `read(name)` / `read_range(name, offset, length)` / `size(name)` raise
      FileNotFoundError if it is absent.
    - `list(prefix)` yields (name, size) of every object whose name starts with prefix + "/",
      never a temp object of a writer; a name that could escape a local directory ("..",
      absolute, backslash, NUL) raises RemoteError instead of being yielded.
    - `is_empty()`: nothing at all is at the store's location (a local directory: not even an
      empty directory or a temp file), so that a repository may be created there.
    - `delete(name)` is idempotent.
    - `sweep_temp(prefix)` deletes the temp objects crashed writers left below prefix and
      returns how many.
    """

    url: str

    def write(self, name: str, data: bytes | bytearray | memoryview, exclusive: bool = False,
              private: bool = False) -> None: ...  # fmt: skip

    def read(self, name: str) -> bytes: ...

    def read_range(self, name: str, offset: int, length: int) -> bytes: ...

    def size(self, name: str) -> int: ...

    def exists(self, name: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def is_empty(self) -> bool: ...

    def delete(self, name: str) -> None: ...

    def sweep_temp(self, prefix: str) -> int: ...

    def close(self) -> None: ...


class FileStore(Protocol):
    """Files with their modification times, for sync. The contract, errors included:

    - `list_info(prefix, descend, on_skip)` yields the ObjectInfo of every file below prefix
      as it finds them (never a temp object of a writer); a directory `descend` refuses is not
      read (S3 has no directories: it lists every name and the caller filters); on a local
      disk an entry that is not a file (symlink, device) and a directory that cannot be read
      go to `on_skip` (name, why) when given (else the latter raises); a directory that
      vanished is skipped; a writer's temp file (is_temp) goes to `on_skip` as (name,
      TEMP_NAME). Escaping names: as BlobStore.list. With `meta=True` a store whose listings
      carry a file's metadata (`capabilities.dos_meta`) gives each info's `meta`; else None.
    - `stat_info(name)` / `read_info(name, expect)` raise FileNotFoundError if it is absent;
      `read_info` returns the data and the info of what it read (`expect`, from a listing
      moments ago, may spare a stat; a file changed since is read as it is now). With
      `meta=True` the info's `meta` is the file's FileMeta where the store has one (a local
      file's xattr names through the fd it read, or holds for ranged reads), else None.
    - `read_range(name, offset, length)`: as BlobStore.read_range.
    - `put_file(name, data, mtime_ns, durable, meta)` stores the file whole or not at all, with
      its mtime (kept to `capabilities.mtime_ns_precision`) and, where the store keeps them
      (`capabilities.file_meta`), the mode, owner and atime of `meta` that are known, or
      (`capabilities.dos_meta`) its creation time and DOS attributes; it returns its info;
      `durable=False` may skip the fsync of a local file.
    - `delete_many(names)` deletes them all, absent ones included; RemoteError names what the
      server did not delete.
    """

    url: str

    @property
    def capabilities(self) -> Capabilities: ...

    def list_info(self, prefix: str, descend: Descend | None = None,
                  on_skip: OnSkip | None = None, on_dir: OnDir | None = None,
                  meta: bool = False) -> Iterator[ObjectInfo]: ...  # fmt: skip

    def stat_info(self, name: str, meta: bool = False) -> ObjectInfo: ...

    def read_info(self, name: str, expect: ObjectInfo | None = None,
                  meta: bool = False) -> tuple[bytes, ObjectInfo]: ...  # fmt: skip

    def read_range(self, name: str, offset: int, length: int) -> bytes: ...

    def put_file(self, name: str, data: bytes, mtime_ns: int, durable: bool = True,
                 meta: FileMeta | None = None) -> ObjectInfo: ...  # fmt: skip

    def delete_many(self, names: Sequence[str]) -> None: ...

    def keep_from(self, src: object, name: str, target: str) -> None:
        """--backup-dir: `src`'s file `name` as `target` here, copied on the server (or
        linked), before a sync overwrites or deletes it; CantCopy where the two stores are
        not one server's."""

    def close(self) -> None: ...


class Store(BlobStore, FileStore, Protocol):
    """Both halves: what every backend is and `registry.open_store` returns."""


# ---- optional abilities --------------------------------------------------------------------


class Upload(Protocol):
    """A large object arriving in parts; nothing is visible under its name until complete().
    Any process that has `state` may write parts of it at once."""

    state: str  # S3: the upload id; files: the temp name. Recorded to resume after a crash.
    part_bytes: int

    def write_part(self, number: int, offset: int, data: bytes) -> str:
        """Store part `number` (1-based) at `offset`; returns its token (S3 ETag, else xxh3)."""
        ...

    def confirmed(self, recorded: dict[int, str], lengths: dict[int, int]) -> set[int]:
        """Of the parts an earlier run recorded, those the server still has, same content;
        FileNotFoundError when the upload itself is gone (start a new one)."""
        ...

    def complete(self, tokens: dict[int, str], size: int,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        """Assemble the object, check its size (and ETag on S3), return its info; RemoteError
        (S3) or OSError (files) when what was assembled is not what was sent. A file store
        gives the file `meta` (as put_file) before its rename; S3 took it at the start."""
        ...

    def abort(self) -> None:
        """Drop the parts; idempotent, and an upload already gone is no error."""
        ...


@runtime_checkable
class PartUploads(Protocol):
    """Optional: large objects uploaded in parts, resumable after a crash (part sizes within
    `capabilities.min_part_bytes`..`max_part_bytes`, see upload_part_bytes)."""

    def begin_upload(self, name: str, size: int, part_bytes: int, mtime_ns: int,
                     token: str = "", md5: str = "",
                     meta: FileMeta | None = None) -> Upload:  # fmt: skip
        """A new upload of `size` bytes to `name`, with the file's mtime; a file store writes
        it under the sync's temp name for the job's `token` (upload_temp_name). `md5`: the
        whole file's MD5 (hex), kept by a store with `capabilities.whole_md5`, else ignored.
        `meta`: kept by S3 from here (its metadata is set when the upload starts); a file
        store takes it at complete()."""
        ...

    def resume_upload(self, name: str, state: str, size: int, part_bytes: int,
                      mtime_ns: int) -> Upload:  # fmt: skip
        """The upload begin_upload returned, from its recorded `state` (no request is made:
        a gone upload shows in confirmed() or complete())."""
        ...


class ServerCopy(Protocol):
    """Copies objects from one store into another on their server: no byte comes through
    us. Made by server_copier(src, dst)."""

    def __call__(self, name: str, size: int, mtime_ns: int | None,
                 meta: FileMeta | None = None) -> ObjectInfo:  # fmt: skip
        """Copy the source's `name` (`size` bytes, as listed) to the destination's `name`
        whole or not at all, with mtime `mtime_ns` (None: the source's own) and return its
        info. `meta`: the source's FileMeta as listed, for a destination that keeps what it
        can hold of it (`capabilities.dos_meta`; None: the source's own); S3 copies an
        object's metadata with it. CantCopy when the server cannot copy this object (above
        the destination's `capabilities.max_copy_bytes`); FileNotFoundError if the source is
        absent."""
        ...


@runtime_checkable
class ServerCopier(Protocol):
    """Optional: a store that can have its server copy objects into it from another store."""

    def server_copy_from(self, src: object) -> ServerCopy | None:
        """The copy from `src` into this store, or None when `src` is not on the same server
        under the same login."""
        ...


def part_uploads(store: object) -> PartUploads | None:
    """`store` if it uploads in parts, else None (then send every object whole)."""
    return store if isinstance(store, PartUploads) else None


def server_copier(src: object, dst: object) -> ServerCopy | None:
    """How to copy objects of `src` into `dst` on their server, or None when it cannot (then
    the bytes come through us). Ask once per pair of stores, not per object."""
    return dst.server_copy_from(src) if isinstance(dst, ServerCopier) else None


def upload_part_bytes(size: int, wanted: int, caps: Capabilities) -> int:
    """The part size for an object of `size`: `wanted` (chunk_size_mb), raised to the store's
    minimum and, for S3's 10,000-part limit, to what the object needs."""
    part = max(wanted, caps.min_part_bytes, -(-size // 10_000))
    return min(part, caps.max_part_bytes) if caps.max_part_bytes else part


# ---- shared implementations ----------------------------------------------------------------


class ProbesByListing:
    """`exists()` and `is_empty()` for remote stores, from a stat and a listing."""

    def size(self, name: str) -> int:
        raise NotImplementedError

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        try:
            self.size(name)  # FileNotFoundError: absent
            return True
        except FileNotFoundError:
            return False

    def is_empty(self) -> bool:
        return next(iter(self.list("")), None) is None

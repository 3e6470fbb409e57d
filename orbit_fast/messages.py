"""Control messages between the coordinator and its workers: tagged msgspec Structs.

Tasks flow coordinator -> worker, results worker -> coordinator, each over that worker's own
pipe as msgpack. They name ring slots by number; the bytes themselves stay in shared memory and
are never part of a message. Paths travel as bytes (os.fsencode) so that any file name
the OS accepts round-trips, valid UTF-8 or not. Local paths are relative to one of the trees the
run's AttachRing names (SRC, DST): a worker opens those roots once and reaches every file below
them without following a symlink (confine.py). One Encoder/Decoder per union per process, reused.
"""

from __future__ import annotations

import msgspec

# A task id is (ring << RING_SHIFT) | the coordinator's own id: the worker finds the ring of the
# task's slot by it, and the pool routes the result back to that coordinator.
RING_SHIFT = 40
TASK_ID_MASK = (1 << RING_SHIFT) - 1


# Subclasses repeat `frozen=True`: msgspec inherits it, but mypy reads each class statement
# alone (PEP 681) and would call an unmarked subclass non-frozen (msgspec issue 657).
class _Msg(msgspec.Struct, tag=True, array_like=True, frozen=True):
    pass


# Indexes into AttachRing.trees.
SRC, DST = 0, 1


class TreeRef(msgspec.Struct, array_like=True, frozen=True):
    """A tree root the coordinator opened: a worker opens `path` and checks it is the same
    directory (dev, ino) before it reads or writes anything below it."""

    path: bytes
    dev: int
    ino: int


class Ident(msgspec.Struct, array_like=True, frozen=True):
    """The regular file a listing saw: what is read is accepted only if the fstat of the fd it
    was read from still says this (confine.same_file)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


class Finalize(_Msg, frozen=True):
    """Turn a finished temp file into the destination file (worker side of the rename): both
    names in one directory of the destination tree."""

    tmp: bytes  # relative to the destination tree, like dst
    dst: bytes
    size: int
    mtime_ns: int
    atime_ns: int
    mode: int
    src: bytes  # relative to the source tree
    src_id: Ident  # the source file the scan saw: any other means "changed, again"
    fsync: bool  # fdatasync the file before the rename, fsync the directory after
    # What else of the source file the copy keeps (KEEP_* bits), from the source's own fd.
    keep: int = 0


# Finalize.keep, and the `lost` of a result: what a copy keeps of its source beyond data, mode
# and times (owner and group as root; xattrs in the namespaces the process may use; POSIX ACLs,
# the system.posix_acl_* xattrs).
KEEP_OWNER, KEEP_GROUP, KEEP_XATTRS, KEEP_ACLS = 1, 2, 4, 8


# ---- tasks ---------------------------------------------------------------------------------


class CopyBlock(_Msg, frozen=True):
    """Read [offset, offset+length) of src into ring slot `slot`, digest it, write it to tmp
    (a block of a file larger than one block; whole files go in CopyFiles)."""

    task_id: int
    slot: int
    src: bytes  # relative to the source tree
    src_id: Ident
    tmp: bytes  # relative to the destination tree
    offset: int
    length: int
    sparse: bool


class CopyFiles(_Msg, frozen=True):
    """Copy whole files of at most one block each, one after another through slot `slot`: for
    each, read it, check it is the file the listing saw, write a fresh temp file (created by
    the worker, O_EXCL, in the directory it is renamed in), seal it and rename it into place.
    Many small files share one round trip (#16)."""

    task_id: int
    slot: int
    files: list[Finalize]  # each file's size is its src_id.size
    sparse: bool


class VerifyBlock(_Msg, frozen=True):
    """Read a block of an existing temp file into a slot and return its digest (resume check)."""

    task_id: int
    slot: int
    path: bytes  # relative to the destination tree
    offset: int
    length: int


class DigestFile(_Msg, frozen=True):
    """Digest a whole file through one slot (for --checksum)."""

    task_id: int
    slot: int
    tree: int  # SRC or DST
    path: bytes


class FinalizeFile(_Msg, frozen=True):
    task_id: int
    finalize: Finalize


class RangePart(msgspec.Struct, array_like=True, frozen=True):
    path: bytes  # relative to the source tree (an object name for a remote source)
    offset: int  # a cut point of the file (0, or where the previous range's last chunk ended)
    length: int
    eof: bool  # the range reaches the end of the file: its tail is a chunk too
    ident: Ident | None = None  # a local file: the one the backup's scan saw


class ChunkRange(_Msg, frozen=True):
    """Read each part (a range of one file) into the slot's input half, back to back; cut each
    into chunks (a fresh chunker per part: its offset is a cut point), name each chunk with the
    keyed id, compress it, and write the blobs back to back into the slot's output half,
    starting at `out_at`. Several parts per task let small files share one round trip.

    Only complete chunks are emitted, and at `eof` the final one too; each part's result says
    where the file's next range starts (the last cut). A chunk the worker already sent in this
    run comes without a blob (blob_len 0).
    """

    task_id: int
    slot: int
    parts: list[RangePart]
    out_at: int  # where the output half of the slot begins
    min_size: int
    avg_size: int
    max_size: int
    codec: str
    key: bytes
    # A remote source (backup of s3:// or smb://): the parts' paths are object names there.
    src_url: str = ""
    # An encrypted repository: its encryption key and id; each blob is sealed (crypto.py)
    # under its chunk id after compression, in the worker, where the CPU is.
    seal_key: bytes = b""
    seal_repo: bytes = b""


# ---- sync between stores (coordinator/sync/object_copies.py, workers/objects.py) -----------------
# Objects go from store to store inside the worker: the bytes are read and written there and
# never cross a process boundary, so these tasks carry no slot.


class S3Settings(msgspec.Struct, array_like=True, frozen=True):
    """How a sync writes S3 objects (SyncOptions.s3_*): "" leaves each to the bucket."""

    storage_class: str = ""  # STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE, INTELLIGENT_TIERING, ...
    sse: str = ""  # AES256 or aws:kms
    sse_kms_key_id: str = ""
    region: str = ""  # when no endpoint says it (else AWS_REGION, else us-east-1)


# A file's metadata in a sync between stores (docs/sync.md, "Remote storage"). Ends.meta: what
# the run asks for; ObjectPut.left, UploadCompleted.left: what of it one copy left out.
# What no object holds, from a local source: reported when the file has it.
META_XATTRS, META_ACLS, META_LINKS = 1, 2, 4
# From a remote source's metadata onto a local file: owners (as root) and the setuid, setgid
# and sticky bits only with --trust-remote-metadata (META_TRUSTED); else left out, reported.
META_OWNER, META_GROUP, META_SETID, META_TRUSTED = 8, 16, 32, 64
# Between SMB ends: the destination did not keep the creation time or DOS attributes it was
# given (a share that stores no DOS attributes): reported, tried again on the next run.
META_DOS = 128
# --smb-security: between SMB ends each copy, and each attributes-only update, carries the NT
# security descriptor (owner, group, DACL); with --checksum every file's is compared.
META_SECURITY = 256


class Ends(msgspec.Struct, array_like=True, frozen=True):
    """The two stores of a run, as each worker thread opens them."""

    src: str
    dst: str
    s3_endpoint: str
    attempts: int
    s3: S3Settings = S3Settings()  # how S3 objects are written (storage class, SSE, region)
    meta: int = 0  # META_* bits: what of a file's metadata the run keeps or reports


class PutObject(_Msg, frozen=True):
    """Copy a whole object (read in one request, written in one) with its mtime; or, with
    `server_side`, have the server copy it (both ends on one server: S3 CopyObject, SMB
    FSCTL_SRV_COPYCHUNK), as `size` bytes with `mtime_ns` (-1: keep the source's) and, on
    SMB, the creation time and DOS attributes the listing showed (`dos_attrs` -1: the
    source's, asked)."""

    task_id: int
    ends: Ends
    name: str
    durable: bool
    server_side: bool = False
    size: int = 0
    mtime_ns: int = -1
    btime_ns: int | None = None
    dos_attrs: int = -1


class SetFileMeta(_Msg, frozen=True):
    """Give the destination's file `name`, whose data is the source's already, the source's
    creation time and DOS attributes (FileMeta.btime_ns, dos_attrs; None, -1: not known)
    and nothing else: an attributes-only update between SMB ends."""

    task_id: int
    ends: Ends
    name: str
    btime_ns: int | None
    dos_attrs: int


class BeginUpload(_Msg, frozen=True):
    """Start the upload in parts of the source object `name` (`size` bytes, mtime `mtime_ns`)
    under the job's `token`; with `md5`, first learn the source's whole-file MD5 for the
    destination to keep (S3's "md5chksum", for `rclone check`)."""

    task_id: int
    ends: Ends
    name: str
    size: int
    part_bytes: int
    mtime_ns: int
    token: str
    md5: bool


class PutPart(_Msg, frozen=True):
    """Read [offset, offset+length) of the source object and store it as part `part`."""

    task_id: int
    ends: Ends
    name: str
    upload: str
    size: int
    part_bytes: int
    mtime_ns: int
    part: int
    offset: int
    length: int


class CompleteUpload(_Msg, frozen=True):
    """Check the source still has `src_sig`, then assemble the parts under the name."""

    task_id: int
    ends: Ends
    name: str
    upload: str
    size: int
    part_bytes: int
    mtime_ns: int
    tokens: dict[int, str]
    src_sig: str


class DigestObject(_Msg, frozen=True):
    """Digest an object of one side (`side` "src" or "dst") for --checksum: style "xxh3",
    "md5" (an S3 ETag of a single PUT, or an "md5chksum") or "md5:<part bytes>[,<part bytes>
    ...]" (the ETag of a multipart upload of each part size; ObjectDigested has them all,
    joined by ",")."""

    task_id: int
    ends: Ends
    side: str
    name: str
    style: str


class Shutdown(_Msg, frozen=True):
    pass


class AttachRing(_Msg, frozen=True):
    """Map a coordinator's ring: tasks whose id carries `ring` in its high bits use its slots.

    One pool of workers serves every coordinator of a process (the hub runs several jobs at
    once): each coordinator lends slots of its own ring, and task ids say whose (pool.py).
    """

    ring: int
    name: str
    slot_size: int
    slots: int
    trees: list[TreeRef] = []  # by index SRC, DST: the roots the tasks' local paths are below
    # Bandwidth limits the tasks of this ring share (workers/throttle.py): the run's --bwlimit
    # and the hub's global one, by name.
    throttles: list[str] = []


class DetachRing(_Msg, frozen=True):
    """The coordinator of `ring` is done: unmap it once its last task here has finished."""

    ring: int


# The tasks of a coordinator's job: each carries a task_id naming that coordinator's ring. The
# rest of Task is the pool's control of the worker itself.
JobTask = (CopyBlock | CopyFiles | VerifyBlock | DigestFile | FinalizeFile | ChunkRange
           | PutObject | BeginUpload | PutPart | CompleteUpload | DigestObject
           | SetFileMeta)  # fmt: skip
Task = JobTask | Shutdown | AttachRing | DetachRing


# ---- results -------------------------------------------------------------------------------


class WorkerReady(_Msg, frozen=True):
    worker: int
    pid: int


class BlockCopied(_Msg, frozen=True):
    task_id: int
    length: int
    digest: bytes  # xxh3-128 of the block, 16 bytes


class FileFailed(msgspec.Struct, array_like=True, frozen=True):
    """A file of a CopyFiles task that did not arrive (nothing under its final name changed).
    side: "changed" (the source moved since the listing: SourceChanged), "source" or
    "destination" (an OSError there: TaskFailed)."""

    index: int  # in CopyFiles.files
    side: str
    errno: int
    message: str


class FilesCopied(_Msg, frozen=True):
    """The end of a CopyFiles task: every file not in `failed` is in place."""

    task_id: int
    failed: list[FileFailed]
    lost: int = 0  # KEEP_* bits the destination would not take (its filesystem, our rights)


class BlockVerified(_Msg, frozen=True):
    task_id: int
    length: int
    digest: bytes


class FileDigested(_Msg, frozen=True):
    task_id: int
    size: int
    digest: bytes


class FileFinalized(_Msg, frozen=True):
    task_id: int
    lost: int = 0  # as FilesCopied.lost


class SourceChanged(_Msg, frozen=True):
    """The source's size or mtime moved while it was copied; the copy was discarded."""

    task_id: int
    detail: str


class TaskFailed(_Msg, frozen=True):
    """An OSError in the task. side is "source" (a warning: skip the file) or "destination";
    "remote": storage that refused; "unavailable": storage that stayed unreachable after
    retries. The last three end the run."""

    task_id: int
    side: str
    errno: int
    message: str


class ChunkRecord(msgspec.Struct, array_like=True, frozen=True):
    offset: int  # in the file
    length: int  # raw bytes
    chunk_id: bytes  # keyed BLAKE3-256
    blob_at: int  # where its blob starts in the slot
    blob_len: int  # header included (compression.HEADER); 0: this worker sent it before


class PartChunked(msgspec.Struct, array_like=True, frozen=True):
    chunks: list[ChunkRecord]
    next_offset: int  # the file's next range starts here (== file size when done)
    error: str = ""  # the part could not be read (or the file shrank): no chunks


class RangeChunked(_Msg, frozen=True):
    task_id: int
    parts: list[PartChunked]  # in the order of the task's parts


class ObjectPut(_Msg, frozen=True):
    task_id: int
    length: int
    src_sig: str  # the source as read
    dst_sig: str  # the destination as written (what its next listing will show)
    left: int = 0  # META_* bits of the file's metadata this copy left out


class UploadBegun(_Msg, frozen=True):
    task_id: int
    state: str  # Upload.state: the upload id or temp name


class PartPut(_Msg, frozen=True):
    task_id: int
    length: int
    token: str


class UploadCompleted(_Msg, frozen=True):
    task_id: int
    dst_sig: str
    left: int = 0  # as ObjectPut.left


class ObjectDigested(_Msg, frozen=True):
    task_id: int
    digest: str


class FileMetaSet(_Msg, frozen=True):
    task_id: int
    dst_sig: str  # the destination after (its data and mtime are as they were)
    left: int = 0  # as ObjectPut.left


Result = (
    WorkerReady
    | ObjectPut
    | UploadBegun
    | PartPut
    | UploadCompleted
    | ObjectDigested
    | FileMetaSet
    | RangeChunked
    | BlockCopied
    | FilesCopied
    | BlockVerified
    | FileDigested
    | FileFinalized
    | SourceChanged
    | TaskFailed
)

task_encoder = msgspec.msgpack.Encoder()
task_decoder = msgspec.msgpack.Decoder(Task)
result_decoder = msgspec.msgpack.Decoder(Result)

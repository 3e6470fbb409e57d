"""A backup repository on a BlobStore: its config, lock, packs and snapshots.

Layout: `config` (JSON), `keys/<64 hex>`, `packs/<2 hex>/<64 hex>`, `snapshots/<64 hex>`,
`locks/exclusive`. Everything is write-once except the lock; the universe index is a cache of
the pack indexes (`sync_index` reconciles the two whenever a command opens the repository).

Encrypted (the default; repo/keys.py, crypto.py): `config` holds in plain text only the format
and the encryption's name, and the rest of the config sealed; the keys are in `keys/`, each
opening the master keys with one password; packs' blobs and indexes, snapshots and the lock's
content are sealed, each bound to its repository, kind and name. `--insecure-no-encryption`
makes a repository whose config holds everything, the chunk-id key included, in plain text.

The lock is one object created with an exclusive write, so two processes can never both hold
it. It names its holder (host, pid, process start time); a lock whose holder is a dead process
on this host is stale and is taken over, by renaming it away first so that two processes
recovering at once cannot both win. A holder on another host can only be cleared by
`orbit-fast unlock`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from base64 import b64decode, b64encode
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from orbit_fast import crypto
from orbit_fast.backends.base import BlobStore
from orbit_fast.backends.registry import open_store
from orbit_fast.chunking import ChunkerParams
from orbit_fast.compression import decompress, parse_codec
from orbit_fast.errors import (
    AuthenticationFailed,
    DestinationError,
    DiskFull,
    IntegrityError,
    OrbitError,
    RepositoryError,
    RepositoryLocked,
    UsageError,
)
from orbit_fast.hashing import new_repo_key
from orbit_fast.index.universe import Location, Universe
from orbit_fast.passwords import PasswordSource, read_password
from orbit_fast.repo import keys as keyfiles
from orbit_fast.repo import pack as packfmt
from orbit_fast.repo import snapshot as snapfmt

if TYPE_CHECKING:
    import numpy as np

# 4: tree entries keep xattrs and ACLs (shared MetaSet blobs), hard links, owner names and
# special files. 3: authenticated encryption (crypto.py, repo/keys.py). 2: directories as
# trees in packs, snapshots naming a root tree (repo/tree.py). Earlier formats are refused:
# no repository of them was deployed.
FORMAT = 4
ENCRYPTION = "aes-256-gcm"  # crypto.py; "none": --insecure-no-encryption
CONFIG_AD = b"config"
LOCK = "locks/exclusive"
# 32 MiB: see docs/backup.md (pack size): fewer files than restic's 16 MiB for the same tree,
# small enough that prune rewrites little and an S3 PUT stays one request.
DEFAULT_PACK_BYTES = 32 << 20


class RepoConfig(msgspec.Struct, kw_only=True, frozen=True):
    format: int
    id: str
    created_ns: int
    min_size: int
    avg_size: int
    max_size: int
    id_hash: str  # "blake3-keyed-256"
    codec: str
    key: str  # hex of the chunk-id key (encrypted: "" as stored; filled from the master key)
    pack_bytes: int
    encryption: str = "none"  # ENCRYPTION or "none"

    @property
    def params(self) -> ChunkerParams:
        return ChunkerParams(min_size=self.min_size, avg_size=self.avg_size, max_size=self.max_size)

    @property
    def key_bytes(self) -> bytes:
        return bytes.fromhex(self.key)


Warn = Callable[[str], None]


class Repository:
    def __init__(self, store: BlobStore, config: RepoConfig, sealer: crypto.Sealer | None = None,
                 master: keyfiles.MasterKey | None = None, key_name: str = "") -> None:  # fmt: skip
        self.store = store
        self.config = config
        self.locked = False
        self.sealer = sealer  # None: an unencrypted repository
        self._master = master
        self.key_name = key_name  # the key file the password opened

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def encrypted(self) -> bool:
        return self.sealer is not None

    # ---- init / open ----------------------------------------------------------------------

    @classmethod
    def init(cls, url: str, codec: str = "zstd:3", params: ChunkerParams | None = None,
             pack_bytes: int = DEFAULT_PACK_BYTES, s3_endpoint: str = "", *,
             password: PasswordSource | None = None, encrypt: bool = True,
             kdf: keyfiles.KdfParams | None = None,
             warn: Warn | None = None) -> Repository:  # fmt: skip
        """Create an empty repository at `url`: encrypted, with one key opened by the password
        from `password` (passwords.read_password), unless `encrypt` is False. `s3_endpoint`,
        for an s3:// URL, overrides ORBIT_S3_ENDPOINT (as for every method that opens one)."""
        parse_codec(codec)
        params = params or ChunkerParams()
        params.validate()
        store = open_store(url, s3_endpoint=s3_endpoint)
        if not store.is_empty():
            if store.exists("config"):
                raise UsageError(f"{url} is already a repository; back up into it directly")
            raise UsageError(
                f"{url} is not empty and not a repository; choose an empty or new location "
                "for `orbit-fast init`"
            )
        repo_id = secrets.token_hex(16)
        cfg = RepoConfig(
            format=FORMAT, id=repo_id, created_ns=time.time_ns(),
            min_size=params.min_size, avg_size=params.avg_size, max_size=params.max_size,
            id_hash="blake3-keyed-256", codec=codec, key=new_repo_key().hex(),
            pack_bytes=pack_bytes, encryption=ENCRYPTION if encrypt else "none",
        )  # fmt: skip
        sealer, master, key_name = None, None, ""
        if encrypt:
            pw = read_password(password, warn, confirm=True, prompt="new repository password: ")
            master = keyfiles.new_master(repo_id)
            cfg = msgspec.structs.replace(cfg, key=master.chunk_id.hex())
            sealer = crypto.Sealer(master.encryption, bytes.fromhex(repo_id))
            stored = msgspec.structs.replace(cfg, key="")  # the key lives in the key files
            body = sealer.seal(crypto.CONFIG, CONFIG_AD, msgspec.msgpack.encode(stored))
            doc = {"format": FORMAT, "encryption": ENCRYPTION,
                   "config": b64encode(body).decode()}  # fmt: skip
            config_bytes = msgspec.json.format(msgspec.json.encode(doc))
        else:
            config_bytes = msgspec.json.format(msgspec.json.encode(cfg))
        try:
            # The keys first: a config marks a whole repository (a crash before it leaves a
            # location that `init` calls not empty; its keys/ can be deleted).
            if master is not None:
                key_name = keyfiles.add_key(store, master, pw, kdf or keyfiles.kdf_from_env())
            # Private: unencrypted, it holds the chunk-id key.
            store.write("config", config_bytes, exclusive=True, private=True)
        except FileExistsError:
            if key_name:
                store.delete(f"{keyfiles.KEYS}/{key_name}")  # another init won the race
            raise UsageError(f"{url} is already a repository") from None
        except OSError as exc:
            raise _store_error(url, "create the repository", exc) from exc
        return cls(store, cfg, sealer, master, key_name)

    @classmethod
    def open(cls, url: str, s3_endpoint: str = "", *, password: PasswordSource | None = None,
             warn: Warn | None = None) -> Repository:  # fmt: skip
        """Open the repository at `url`; an encrypted one with the password from `password`
        (passwords.read_password: the run's file or command, the environment, a terminal)."""
        store = open_store(url, s3_endpoint=s3_endpoint)
        try:
            return cls._open(store, url, password, warn)
        except BaseException:
            store.close()
            raise

    @classmethod
    def _open(cls, store: BlobStore, url: str, password: PasswordSource | None,
              warn: Warn | None) -> Repository:  # fmt: skip
        try:
            raw = store.read("config")
        except (FileNotFoundError, NotADirectoryError):
            raise RepositoryError(
                f"{url} is not an orbit-fast repository (it has no config); check the path, "
                f"or create one with `orbit-fast init {url}`"
            ) from None
        except OSError as exc:
            raise RepositoryError(f"cannot read the config of {url}: {exc.strerror}") from exc
        try:
            fields: dict[str, Any] = json.loads(raw)
            if not isinstance(fields, dict):
                raise ValueError
        except ValueError:
            raise RepositoryError(f"{url}: the config is not valid JSON") from None
        version = fields.get("format")
        if isinstance(version, int) and version > FORMAT:
            raise RepositoryError(
                f"{url} is a format {version} repository; this orbit-fast reads format "
                f"{FORMAT}. Upgrade orbit-fast to use it (nothing was changed)"
            )
        if isinstance(version, int) and version < FORMAT:
            raise RepositoryError(
                f"{url} is a format {version} repository, which this orbit-fast does not read "
                f"(format {FORMAT} is encrypted, stores directories as trees and keeps xattrs, "
                "ACLs and hard links). Back up into "
                "a new repository with this version; the old one is left as it is"
            )
        encryption = fields.get("encryption", "none")
        sealer, master, key_name = None, None, ""
        if encryption == ENCRYPTION:
            body = fields.get("config")
            if not isinstance(body, str):
                raise RepositoryError(f"{url}: the config is damaged (no sealed config)")
            master, key_name = keyfiles.open_master(store, read_password(password, warn))
            sealer = crypto.Sealer(master.encryption, bytes.fromhex(master.repo_id))
            try:
                sealed = b64decode(body, validate=True)
            except ValueError:
                raise RepositoryError(f"{url}: the config is damaged (not base64)") from None
            plain = sealer.open(crypto.CONFIG, CONFIG_AD, sealed, f"the config of {url}")
            try:
                cfg = msgspec.msgpack.decode(plain, type=RepoConfig)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise RepositoryError(f"{url}: the config is damaged ({exc})") from None
            if cfg.id != master.repo_id or cfg.encryption != ENCRYPTION:
                raise AuthenticationFailed(f"the config of {url} belongs to another "
                                           "repository than its keys", "config")  # fmt: skip
            cfg = msgspec.structs.replace(cfg, key=master.chunk_id.hex())
        elif encryption == "none":
            try:
                cfg = msgspec.convert(fields, RepoConfig)
            except msgspec.ValidationError as exc:
                raise RepositoryError(f"{url}: the config is damaged ({exc})") from None
        else:
            raise RepositoryError(f"{url}: encryption {encryption!r} is not one this "
                                  "orbit-fast knows; upgrade it")  # fmt: skip
        try:  # max_size bounds every chunk read back (an output limit): it must be sane
            cfg.params.validate()
            if len(cfg.key_bytes) != 32:
                raise UsageError("its chunk-id key is not 32 bytes")
        except (UsageError, ValueError) as exc:
            raise RepositoryError(f"{url}: the config is damaged ({exc})") from None
        return cls(store, cfg, sealer, master, key_name)

    @classmethod
    def open_or_init(cls, url: str, codec: str, s3_endpoint: str = "", *,
                     password: PasswordSource | None = None, encrypt: bool = True,
                     warn: Warn | None = None) -> Repository:  # fmt: skip
        """Open the repository at url, or create it there if nothing is there yet."""
        store = open_store(url, s3_endpoint=s3_endpoint)
        try:
            fresh = store.is_empty()  # (a config would be something)
        finally:
            store.close()
        if fresh:
            return cls.init(url, codec, s3_endpoint=s3_endpoint, password=password,
                            encrypt=encrypt, warn=warn)  # fmt: skip
        return cls.open(url, s3_endpoint, password=password, warn=warn)

    # ---- keys -----------------------------------------------------------------------------

    def _need_keys(self) -> keyfiles.MasterKey:
        if self._master is None:
            raise UsageError(f"{self.store.url} is not encrypted (made with "
                             "--insecure-no-encryption): it has no keys")  # fmt: skip
        return self._master

    def add_key(self, password: bytes, kdf: keyfiles.KdfParams) -> str:
        return keyfiles.add_key(self.store, self._need_keys(), password, kdf)

    def list_keys(self) -> list[keyfiles.KeyInfo]:
        self._need_keys()
        return keyfiles.list_keys(self.store, self.key_name)

    def remove_key(self, name: str) -> None:
        self._need_keys()
        keyfiles.remove_key(self.store, name, self.key_name)

    def change_password(self, password: bytes, kdf: keyfiles.KdfParams) -> str:
        """A key for `password` replaces the one this process opened with: written first, so
        a crash between leaves both, and the repository opens with either password."""
        old = self.key_name
        new = self.add_key(password, kdf)
        self.key_name = new
        self.store.delete(f"{keyfiles.KEYS}/{old}")
        return new

    # ---- sealing --------------------------------------------------------------------------

    def seal_keys(self) -> tuple[bytes, bytes]:
        """(encryption key, repository id) for workers that seal blobs; empty if plain."""
        m = self._master
        return (m.encryption, bytes.fromhex(m.repo_id)) if m is not None else (b"", b"")

    def seal_blob(self, chunk_id: bytes, blob: bytes) -> bytes:
        return blob if self.sealer is None else self.sealer.seal(crypto.BLOB, chunk_id, blob)

    def open_blob(self, chunk_id: bytes, stored: bytes | memoryview, what: str = "",
                  into: bytearray | None = None) -> bytes | memoryview:  # fmt: skip
        """A blob as compression wrote it, from what a pack stores; AuthenticationFailed
        naming `what` (default: the blob's id) if it does not open under its id. With
        `into`, a view into that buffer (crypto.Sealer.open), valid until it is reused."""
        if self.sealer is None:
            return stored
        what = what or f"blob {chunk_id.hex()[:16]}"
        if into is None:
            return self.sealer.open(crypto.BLOB, chunk_id, stored, what)
        return self.sealer.open_into(crypto.BLOB, chunk_id, stored, what, into)

    # ---- lock -----------------------------------------------------------------------------

    def lock(self, operation: str) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
              "operation": operation, "time_ns": time.time_ns()}  # fmt: skip
        data = json.dumps(me).encode()
        if self.sealer is not None:
            data = self.sealer.seal(crypto.LOCK, LOCK.encode(), data)
        recovered = False
        for attempt in range(3):
            try:
                self.store.write(LOCK, data, exclusive=True)
                self.locked = True
                break
            except FileNotFoundError as exc:
                # The holder's sweep of locks/ (below) took our temp object between our write
                # and our link or rename: look at the lock again.
                if attempt == 2:
                    raise _store_error(self.store.url, "lock the repository", exc) from exc
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile
                if not _is_stale(holder):
                    since = time.strftime("%Y-%m-%d %H:%M:%S",
                                          time.localtime(holder.get("time_ns", 0) / 1e9))
                    raise RepositoryLocked(
                        f"repository {self.store.url} is locked by {holder.get('operation')} "
                        f"(pid {holder.get('pid')} on {holder.get('host')}, since {since}); "
                        "wait for it to finish, or if that process is gone run "
                        f"`orbit-fast unlock {self.store.url}`"
                    ) from None
                self._break_lock()
                recovered = True
            except OSError as exc:
                raise _store_error(self.store.url, "lock the repository", exc) from exc
        else:
            raise RepositoryLocked(f"could not lock {self.store.url}: the lock keeps changing")
        # A writer killed while it took the lock leaves its temp object in locks/ whether or
        # not it got the lock (one listing of a directory of one or two entries: every time).
        self.store.sweep_temp("locks")
        if recovered:
            self._sweep()

    def _sweep(self) -> None:
        """Delete temp objects of a crashed writer. Every writer holds the lock, so only a
        holder that died leaves them: this runs after taking over a stale lock (or `unlock`),
        not on every command (on SMB it walks every pack directory)."""
        self.store.sweep_temp("packs")
        self.store.sweep_temp("snapshots")

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = self.store.read(LOCK)
            if self.sealer is not None:
                data = self.sealer.open(crypto.LOCK, LOCK.encode(), data, "the lock")
            holder: dict[str, Any] = json.loads(data)  # lock() wrote an object
            return holder
        except FileNotFoundError:
            return None
        except (ValueError, AuthenticationFailed):
            # Torn by a crash in the middle of a write on a store without rename. (One that
            # fails authentication is treated the same: whoever can write it can delete it.)
            return {}

    def _break_lock(self) -> None:
        # One delete, on every store: of several recovering processes one removes the stale
        # lock and the others find it gone (delete is idempotent), then all race for the
        # exclusive write, which only one wins.
        self.store.delete(LOCK)

    def unlock(self) -> None:
        if self.locked:
            self.store.delete(LOCK)
            self.locked = False

    def force_unlock(self) -> dict[str, Any] | None:
        """Remove the lock whoever holds it, then sweep what a dead holder left, under a lock of
        our own. Returns the removed lock's holder (None if there was none)."""
        holder = self._holder()
        self.store.delete(LOCK)
        self.lock("unlock")
        self._sweep()
        self.unlock()
        return holder

    def close(self) -> None:
        self.unlock()
        self.store.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- packs ----------------------------------------------------------------------------

    @staticmethod
    def pack_path(name: bytes) -> str:
        h = name.hex()
        return f"packs/{h[:2]}/{h}"

    def pack_names(self) -> dict[bytes, int]:
        """Name -> size of every pack in the repository."""
        out = {}
        for path, size in self.store.list("packs"):
            h = path.rsplit("/", 1)[-1]
            if len(h) == 64:
                out[bytes.fromhex(h)] = size
        return out

    def write_pack(self, builder: packfmt.PackBuilder) -> tuple[bytes, np.ndarray]:
        name, data, entries = builder.finish()
        try:
            self.store.write(self.pack_path(name), data)
        except OSError as exc:
            raise _store_error(self.store.url, "write a pack", exc) from exc
        return name, entries

    def read_pack_index(self, name: bytes, size: int | None = None) -> np.ndarray:
        path = self.pack_path(name)
        size = self.store.size(path) if size is None else size
        label = name.hex()[:12]
        tail = self.store.read_range(path, size - packfmt.TRAILER.size, packfmt.TRAILER.size)
        t = packfmt.parse_trailer(label, tail, size, self.sealer is not None)
        idx = self.store.read_range(path, t.at, t.index_bytes)
        return packfmt.parse_index(label, idx, t, self.sealer)

    def read_index_from(self, name: bytes, data: bytes | memoryview) -> np.ndarray:
        """The index of a pack read whole."""
        return packfmt.read_index_from(name.hex()[:12], data, self.sealer)

    def new_builder(self, buf: bytearray) -> packfmt.PackBuilder:
        return packfmt.PackBuilder(buf, self.sealer)

    def read_blob(self, chunk_id: bytes, loc: Location, what: str = "",
                  into: bytearray | None = None) -> bytes | memoryview:  # fmt: skip
        """A blob as compression wrote it (opened, in an encrypted repository); `into` as for
        open_blob."""
        stored = self.store.read_range(self.pack_path(loc.pack), loc.offset, loc.stored)
        return self.open_blob(chunk_id, stored, what, into)

    def read_chunk(self, chunk_id: bytes, loc: Location) -> bytes:
        """A chunk's bytes; CorruptBlob if its blob is damaged or claims more than the
        repository's maximum chunk size."""
        return decompress(self.read_blob(chunk_id, loc), max_bytes=self.config.max_size)

    def delete_pack(self, name: bytes) -> None:
        self.store.delete(self.pack_path(name))

    def sync_index(self, universe: Universe) -> tuple[int, int]:
        """Make the universe agree with the packs in the repository: forget packs that are
        gone, index packs it does not know (written by a run that crashed before indexing
        them, or by another hub). Returns (added, dropped)."""
        present = self.pack_names()
        known = universe.packs_of(self.id)
        gone = [n for n in known if n not in present]
        if gone:
            universe.drop_packs(self.id, gone)
        added = 0
        for name, size in present.items():
            if name in known:
                continue
            try:
                entries = self.read_pack_index(name, size)
            except (RepositoryError, AuthenticationFailed):
                continue  # verify reports it; its chunks are stored again if needed
            universe.add_pack(self.id, name, _records(entries))
            added += 1
        return added, len(gone)

    # ---- snapshots ------------------------------------------------------------------------

    def _snapshot_sizes(self) -> dict[str, int]:
        out = {}
        for path, size in self.store.list("snapshots"):
            name = path.rsplit("/", 1)[-1]
            if len(name) == 64:
                out[name] = size
        return out

    def snapshot_names(self) -> list[str]:
        return list(self._snapshot_sizes())

    def load_snapshot(self, name: str) -> snapfmt.Snapshot:
        """A snapshot (its header: the file list is the tree its root names), checked."""
        return snapfmt.decode(name, self.store.read(f"snapshots/{name}"), self.sealer)

    def snapshots(self, bad: list[tuple[str, OrbitError]] | None = None
                  ) -> list[tuple[str, snapfmt.Snapshot]]:  # fmt: skip
        """Every snapshot, oldest first (one small read each). A damaged one raises, or with
        `bad` is left out and listed there."""
        snaps = []
        for n in self._snapshot_sizes():
            try:
                snaps.append((n, self.load_snapshot(n)))
            except (RepositoryError, IntegrityError, AuthenticationFailed) as exc:
                if bad is None:
                    raise
                bad.append((n, exc))
        return sorted(snaps, key=lambda s: (s[1].time_ns, s[0]))

    def resolve(self, ref: str) -> tuple[str, snapfmt.Snapshot]:
        """A snapshot by "latest" (the newest that is not damaged) or by a unique prefix of
        its id."""
        names = self.snapshot_names()
        if ref == "latest":
            snaps = self.snapshots(bad=[])
            if not snaps:
                raise UsageError(f"repository {self.store.url} has no snapshots yet")
            return snaps[-1]
        found = [n for n in names if n.startswith(ref.lower())]
        if len(found) != 1 or not ref:
            what = "no snapshot" if not found else f"{len(found)} snapshots"
            raise UsageError(
                f"{what} in {self.store.url} match {ref!r}; `orbit-fast snapshots -r "
                f"{self.store.url}` lists them"
            )
        return found[0], self.load_snapshot(found[0])

    def write_snapshot(self, snap: snapfmt.Snapshot) -> str:
        name, data = snapfmt.encode(snap, self.sealer, self.config.key_bytes)
        try:
            self.store.write(f"snapshots/{name}", data)
        except OSError as exc:
            raise _store_error(self.store.url, "write the snapshot", exc) from exc
        return name

    def delete_snapshot(self, name: str) -> None:
        self.store.delete(f"snapshots/{name}")


def _records(entries: np.ndarray) -> np.ndarray:
    import numpy as np

    from orbit_fast.index import universe

    rows = np.zeros(len(entries), universe.RECORD)
    for f in ("id", "offset", "stored", "raw"):
        rows[f] = entries[f]
    return rows


def _store_error(url: str, what: str, exc: OSError) -> Exception:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(
            f"no space left to {what} in {url}; free space and rerun (chunks already stored "
            "are kept and not sent again)"
        )
    return DestinationError(f"cannot {what} in {url}: {exc.strerror or exc}")


def _start_time(pid: int) -> int:
    """The process start time (clock ticks since boot), to tell a reused pid from its owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _is_stale(holder: dict[str, Any]) -> bool:
    if not holder:
        return True  # unreadable: a lock write torn by a crash
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return _start_time(pid) != holder.get("start")

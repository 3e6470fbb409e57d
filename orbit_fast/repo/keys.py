"""A repository's keys: random master keys, wrapped by one key file per password.

As restic does it. The master keys (the AES-256-GCM key that seals every object, the BLAKE3
key that names chunks and trees) are drawn once, at `init`, and never change. Each key file,
`keys/<64 hex>`, holds them sealed under a key derived from one password with argon2id; its
KDF parameters and salt are in plain text beside them (what must be read before any key
exists). Adding a password writes a key file; removing one deletes it; `passwd` is add, then
remove: a crash between the two leaves both, so the repository opens with the old password or
the new. The last key cannot be removed.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import time
from base64 import b64decode, b64encode
from typing import Any

import msgspec

from orbit_fast import crypto
from orbit_fast.backends.base import BlobStore
from orbit_fast.errors import KeyDamaged, OrbitError, UsageError, WrongPassword

KEYS = "keys"
SALT_BYTES = 16
# argon2id, RFC 9106's second recommended option (64 MiB, 3 passes) with 2 lanes: 0.1-0.2 s
# on one core of this machine. Stored with each key; tunable per key (--kdf-memory-mib,
# --kdf-time) and through ORBIT_KDF_MEMORY_MIB / ORBIT_KDF_TIME.
DEFAULT_MEMORY_KIB = 64 << 10
DEFAULT_TIME = 3
DEFAULT_LANES = 2
MIN_MEMORY_KIB = 8 << 10  # below this a key file is refused as damaged (or hostile: cheap)
MAX_MEMORY_KIB = 4 << 20  # above: a hostile key file would make every open take the machine
MAX_TIME = 64
MAX_KEY_FILE_BYTES = 64 << 10


class MasterKey(msgspec.Struct, array_like=True, frozen=True):
    repo_id: str  # 32 hex digits: the repository's id, bound into every object's AD
    encryption: bytes  # 32 bytes, AES-256-GCM (crypto.Sealer)
    chunk_id: bytes  # 32 bytes, keyed BLAKE3 of chunks and trees (hashing.chunk_id)


class KdfParams(msgspec.Struct, frozen=True):
    memory_kib: int = DEFAULT_MEMORY_KIB
    time: int = DEFAULT_TIME
    lanes: int = DEFAULT_LANES


class KeyInfo(msgspec.Struct, frozen=True):
    name: str
    created: str
    hostname: str
    username: str
    kdf: KdfParams
    current: bool  # the key this process opened the repository with


def kdf_from_env(memory_mib: int | None = None, time_cost: int | None = None) -> KdfParams:
    """Parameters for a new key: the arguments, else ORBIT_KDF_MEMORY_MIB / ORBIT_KDF_TIME,
    else the defaults."""
    from orbit_fast.environment import getenv

    mem = memory_mib if memory_mib is not None else int(getenv("ORBIT_KDF_MEMORY_MIB") or 0)
    tc = time_cost if time_cost is not None else int(getenv("ORBIT_KDF_TIME") or 0)
    p = KdfParams(memory_kib=mem * 1024 if mem else DEFAULT_MEMORY_KIB, time=tc or DEFAULT_TIME)
    if not MIN_MEMORY_KIB <= p.memory_kib <= MAX_MEMORY_KIB or not 1 <= p.time <= MAX_TIME:
        raise UsageError(f"key derivation memory must be {MIN_MEMORY_KIB >> 10}-"
                         f"{MAX_MEMORY_KIB >> 10} MiB and passes 1-{MAX_TIME}")  # fmt: skip
    return p


def _derive(password: bytes, salt: bytes, p: KdfParams) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    return hash_secret_raw(password, salt, time_cost=p.time, memory_cost=p.memory_kib,
                           parallelism=p.lanes, hash_len=32, type=Type.ID)  # fmt: skip


def _ad(name: str) -> bytes:
    return crypto.KEY + name.encode()


def new_master(repo_id: str) -> MasterKey:
    return MasterKey(repo_id, secrets.token_bytes(crypto.KEY_BYTES),
                     secrets.token_bytes(crypto.KEY_BYTES))  # fmt: skip


def add_key(store: BlobStore, master: MasterKey, password: bytes, kdf: KdfParams) -> str:
    """Write a key file that opens `master` with `password`; returns its name."""
    name = secrets.token_hex(32)
    salt = secrets.token_bytes(SALT_BYTES)
    sealed = crypto.wrap(_derive(password, salt, kdf), _ad(name), msgspec.msgpack.encode(master))
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hostname": socket.gethostname(), "username": _username(),
        "kdf": "argon2id", "memory_kib": kdf.memory_kib, "time": kdf.time, "lanes": kdf.lanes,
        "salt": b64encode(salt).decode(), "data": b64encode(sealed).decode(),
    }  # fmt: skip
    store.write(f"{KEYS}/{name}", json.dumps(doc, indent=1).encode(), exclusive=True,
                private=True)  # fmt: skip
    return name


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def key_names(store: BlobStore) -> list[str]:
    names = []
    for path, _size in store.list(KEYS):
        name = path.rsplit("/", 1)[-1]
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
            names.append(name)
    return sorted(names)


def _load(store: BlobStore, name: str) -> tuple[dict[str, Any], KdfParams, bytes, bytes]:
    where = f"key {name[:8]} ({store.url}/{KEYS}/{name})"
    try:
        raw = store.read(f"{KEYS}/{name}")
    except FileNotFoundError:
        raise KeyDamaged(f"{where} is gone (removed meanwhile?)") from None
    except OSError as exc:
        raise KeyDamaged(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        if len(raw) > MAX_KEY_FILE_BYTES:
            raise ValueError("too large")
        doc = json.loads(raw)
        if doc.get("kdf") != "argon2id":
            raise ValueError(f"unknown key derivation {doc.get('kdf')!r}")
        p = KdfParams(int(doc["memory_kib"]), int(doc["time"]), int(doc["lanes"]))
        if not (MIN_MEMORY_KIB <= p.memory_kib <= MAX_MEMORY_KIB and 1 <= p.time <= MAX_TIME
                and 1 <= p.lanes <= 16):  # fmt: skip
            raise ValueError(f"key derivation parameters out of range: {p}")
        salt, sealed = b64decode(doc["salt"], validate=True), b64decode(doc["data"], validate=True)
        if len(salt) != SALT_BYTES:
            raise ValueError("bad salt")
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyDamaged(f"{where} is damaged ({exc}); another key's password may still open "
                         "the repository") from None  # fmt: skip
    return doc, p, salt, sealed


def open_master(store: BlobStore, password: bytes) -> tuple[MasterKey, str]:
    """The master keys and the name of the key file that `password` opens. WrongPassword if
    none does; KeyDamaged if the only key files there are damaged."""
    names = key_names(store)
    if not names:
        raise KeyDamaged(f"{store.url} is encrypted but has no key files in {KEYS}/; it "
                         "cannot be opened (restore the keys/ directory from a copy)")  # fmt: skip
    damaged: list[OrbitError] = []
    for name in names:
        try:
            _doc, p, salt, sealed = _load(store, name)
        except KeyDamaged as exc:
            damaged.append(exc)
            continue
        plain = crypto.unwrap(_derive(password, salt, p), _ad(name), sealed)
        if plain is None:
            continue
        try:
            return msgspec.msgpack.decode(plain, type=MasterKey), name
        except msgspec.DecodeError as exc:  # authentic, yet not a master key: our own bug
            raise KeyDamaged(f"key {name[:8]} holds no master key ({exc})") from None
    if damaged and len(damaged) == len(names):
        raise damaged[0]
    raise WrongPassword(
        f"the password does not open any of the {len(names)} key(s) of {store.url}"
        + (f" ({len(damaged)} damaged)" if damaged else "")
        + "; check the password file, command or ORBIT_PASSWORD"
    )


def list_keys(store: BlobStore, current: str) -> list[KeyInfo]:
    out = []
    for name in key_names(store):
        try:
            doc, p, _salt, _sealed = _load(store, name)
        except KeyDamaged:
            out.append(KeyInfo(name, "?", "?", "damaged", KdfParams(), name == current))
            continue
        out.append(KeyInfo(name, str(doc.get("created", "")), str(doc.get("hostname", "")),
                           str(doc.get("username", "")), p, name == current))  # fmt: skip
    return out


def remove_key(store: BlobStore, name: str, current: str) -> None:
    names = key_names(store)
    found = [n for n in names if n.startswith(name.lower())] if name else []
    if len(found) != 1:
        raise UsageError(f"{'no key' if not found else f'{len(found)} keys'} of {store.url} "
                         f"match {name!r}; `orbit-fast key list` shows them")  # fmt: skip
    if found[0] == current:
        raise UsageError(
            f"key {found[0][:8]} is the one this password opened; open the repository with "
            "another key's password to remove it (or use `orbit-fast key passwd`)"
        )
    if len(names) == 1:
        raise UsageError("that is the repository's last key; it cannot be removed")
    store.delete(f"{KEYS}/{found[0]}")

"""Authenticated encryption of repository objects: AES-256-GCM under per-writer subkeys.

Every sealed object is `salt (12 bytes) | counter (4 bytes, big-endian) | ciphertext | tag (16)`:
32 bytes more than its plaintext, as restic's. The key that encrypts it is a subkey,
`BLAKE3-derive_key(CONTEXT, master encryption key | salt)`, and the GCM nonce is the counter.
A writer (a worker process, the coordinator) draws one random salt and counts its objects
under it, drawing a new salt after 2^32 objects or 64 GiB. A nonce can only repeat under one
subkey if two writers draw the same 96-bit salt: with S salts ever drawn the chance is about
S^2 / 2^97 (10^7 salts: 2^-50), however many objects they seal. docs/threat-model.md has the
argument and the measurements behind AES-GCM (AES-GCM-SIV, misuse-resistant, ran at 0.4 GB/s
in `cryptography` against 6.9 GB/s for AES-GCM on this machine's AES-NI).

What binds an object to its place is the associated data: the repository's id, the object's
kind and its name (a blob's id, a snapshot's name, a key file's name). A valid object copied to
another name, another kind or another repository fails authentication.

Only this module touches keys and nonces; the layers above say what to seal and under which
name.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import blake3

from orbit_fast.errors import AuthenticationFailed

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
SALT_BYTES = 12
HEADER_BYTES = 16  # salt, counter
TAG_BYTES = 16
OVERHEAD = HEADER_BYTES + TAG_BYTES
CONTEXT = "orbit-fast 2026-12 repository object subkey (AES-256-GCM)"
# A subkey seals at most this many objects, or bytes, before its writer draws a new salt:
# the counter's range, and a data volume far inside GCM's bounds for one key.
MAX_OBJECTS = (1 << 32) - 1
MAX_BYTES = 64 << 30
_CACHE = 256  # subkeys kept by an opener: a restore reads blobs of few writers at a time

# Kinds: one byte of the associated data.
BLOB, PACK_INDEX, SNAPSHOT, LOCK, CONFIG, KEY = b"B", b"I", b"S", b"L", b"C", b"K"


def _aead(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


class Sealer:
    """Seals and opens the objects of one repository with its master encryption key."""

    def __init__(self, key: bytes, repo_id: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"an encryption key is {KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self._repo = repo_id
        self._salt = b""
        self._aead: AESGCM | None = None
        self._count = 0
        self._bytes = 0
        self._open: dict[bytes, AESGCM] = {}

    def _subkey(self, salt: bytes) -> AESGCM:
        return _aead(blake3.blake3(self._key + salt, derive_key_context=CONTEXT).digest())

    def _next(self, size: int) -> tuple[AESGCM, bytes]:
        if self._aead is None or self._count >= MAX_OBJECTS or self._bytes + size > MAX_BYTES:
            self._salt = secrets.token_bytes(SALT_BYTES)
            self._aead, self._count, self._bytes = self._subkey(self._salt), 0, 0
        header = self._salt + self._count.to_bytes(4, "big")
        self._count += 1
        self._bytes += size
        return self._aead, header

    def _ad(self, kind: bytes, name: bytes) -> bytes:
        return self._repo + kind + name

    def seal(self, kind: bytes, name: bytes, data: bytes | bytearray | memoryview) -> bytes:
        aead, header = self._next(len(data))
        return header + aead.encrypt(b"\0" * 8 + header[SALT_BYTES:], data,
                                     self._ad(kind, name))  # fmt: skip

    def seal_into(self, kind: bytes, name: bytes, data: bytes | bytearray | memoryview,
                  out: memoryview) -> int:  # fmt: skip
        """Seal `data` into `out` (which may not overlap it); returns the bytes written."""
        n = len(data) + OVERHEAD
        if len(out) < n:
            raise ValueError(f"{n} bytes do not fit in {len(out)}")
        aead, header = self._next(len(data))
        out[:HEADER_BYTES] = header
        aead.encrypt_into(b"\0" * 8 + header[SALT_BYTES:], data, self._ad(kind, name),
                          out[HEADER_BYTES:n])  # fmt: skip
        return n

    def open(self, kind: bytes, name: bytes, sealed: bytes | bytearray | memoryview,
             what: str) -> bytes:  # fmt: skip
        """The plaintext; AuthenticationFailed naming `what` if the object is not one this
        repository sealed under this kind and name (tampered, truncated, moved, foreign)."""
        from cryptography.exceptions import InvalidTag  # 6 ms: loaded when first needed

        aead, nonce, body, ad = self._opening(kind, name, sealed, what)
        try:
            # A view, not a copy: copying a 1 MiB blob first made opening 10x slower.
            return aead.decrypt(nonce, body, ad)
        except InvalidTag:
            raise self._refused(what) from None

    def open_into(self, kind: bytes, name: bytes, sealed: bytes | bytearray | memoryview,
                  what: str, into: bytearray) -> memoryview:  # fmt: skip
        """As open(), the plaintext written into `into` (grown as needed) and a view of it
        returned: no allocation per object (a restore opens ~1 GB of blobs in a row)."""
        from cryptography.exceptions import InvalidTag

        aead, nonce, body, ad = self._opening(kind, name, sealed, what)
        n = len(body) - TAG_BYTES
        try:
            if len(into) < n:
                into.extend(bytes(n - len(into)))
        except BufferError:  # a view of it is still held: this one object gets its own
            return memoryview(self.open(kind, name, sealed, what))
        out = memoryview(into)[:n]
        try:
            aead.decrypt_into(nonce, body, ad, out)
        except InvalidTag:
            raise self._refused(what) from None
        return out

    def _opening(self, kind: bytes, name: bytes, sealed: bytes | bytearray | memoryview,
                 what: str) -> tuple[AESGCM, bytes, memoryview, bytes]:  # fmt: skip
        if len(sealed) < OVERHEAD:
            raise AuthenticationFailed(f"{what} is truncated ({len(sealed)} bytes)", what)
        view = memoryview(sealed)
        header = bytes(view[:HEADER_BYTES])
        salt = header[:SALT_BYTES]
        aead = self._open.get(salt)
        if aead is None:
            if len(self._open) >= _CACHE:
                self._open.pop(next(iter(self._open)))
            aead = self._open[salt] = self._subkey(salt)
        return aead, b"\0" * 8 + header[SALT_BYTES:], view[HEADER_BYTES:], self._ad(kind, name)

    @staticmethod
    def _refused(what: str) -> AuthenticationFailed:
        return AuthenticationFailed(
            f"{what} failed authentication: it was changed, damaged, or moved from another "
            "name or repository", what,
        )  # fmt: skip


def wrap(key: bytes, ad: bytes, data: bytes) -> bytes:
    """`data` sealed under a one-off key (a password-derived key wrapping the master keys):
    random 12-byte nonce | ciphertext | tag; the key is used once, so a random nonce is safe."""
    nonce = secrets.token_bytes(12)
    return nonce + _aead(key).encrypt(nonce, data, ad)


def unwrap(key: bytes, ad: bytes, data: bytes) -> bytes | None:
    """What wrap() sealed, or None if `key` (the password) is not the one."""
    from cryptography.exceptions import InvalidTag

    if len(data) < 12 + TAG_BYTES:
        return None
    try:
        return _aead(key).decrypt(data[:12], data[12:], ad)
    except InvalidTag:
        return None

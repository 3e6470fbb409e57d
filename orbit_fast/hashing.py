"""Digests and their jobs: keyed BLAKE3-256 chunk ids, xxh3-128 block checks.

Chunk ids name chunks in a deduplicating store, where whoever can write source files may try
to make two different chunks share an id (and so poison every backup that dedups against
it): they are keyed BLAKE3-256 with a random 32-byte key per repository, unknown to writers
of source data. xxh3-128 checks blocks in transit and detects change, where no adversary
chooses inputs to collide. docs/threat-model.md has the reasoning.
"""

from __future__ import annotations

import secrets

import blake3
import xxhash

CHUNK_ID_BYTES = 32
REPO_KEY_BYTES = 32


def new_repo_key() -> bytes:
    """A fresh random key for a repository's chunk ids (stored in its config)."""
    return secrets.token_bytes(REPO_KEY_BYTES)


def chunk_id(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """Keyed BLAKE3-256 of `data`: the chunk's name in the store."""
    if len(key) != REPO_KEY_BYTES:
        raise ValueError(f"a repository key is {REPO_KEY_BYTES} bytes, got {len(key)}")
    # Single-threaded (blake3's default): the worker processes are the parallelism.
    return blake3.blake3(data, key=key).digest()


def block_digest(data: bytes | bytearray | memoryview) -> bytes:
    """xxh3-128 of a block: integrity in transit and change detection (16 bytes)."""
    return xxhash.xxh3_128_digest(data)

from __future__ import annotations

import pytest

from orbit_fast.hashing import block_digest, chunk_id, new_repo_key

# Official BLAKE3 test vectors (test_vectors.json): key "whats the Elvish word for friend",
# input = bytes(i % 251 for i in range(n)).
VECTOR_KEY = b"whats the Elvish word for friend"
KEYED = {
    0: "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26",
    1: "6d7878dfff2f485635d39013278ae14f1454b8c0a3a2d34bc1ab38228a80c95b",
}


@pytest.mark.parametrize("n", sorted(KEYED))
def test_chunk_id_is_keyed_blake3(n: int) -> None:
    assert chunk_id(VECTOR_KEY, bytes(i % 251 for i in range(n))).hex() == KEYED[n]


def test_keys_are_random_and_change_ids() -> None:
    k1, k2 = new_repo_key(), new_repo_key()
    assert k1 != k2 and len(k1) == 32
    assert chunk_id(k1, b"same data") != chunk_id(k2, b"same data")
    assert len(chunk_id(k1, b"x")) == 32 and len(block_digest(b"x")) == 16
    with pytest.raises(ValueError, match="32 bytes"):
        chunk_id(b"short", b"x")

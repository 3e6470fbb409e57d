"""Sealing repository objects (crypto.py) and reading passwords (passwords.py)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from orbit_fast import crypto
from orbit_fast.crypto import BLOB, OVERHEAD, SNAPSHOT, Sealer
from orbit_fast.errors import AuthenticationFailed, PasswordMissing
from orbit_fast.passwords import PasswordSource, read_new_password, read_password

KEY, REPO = bytes(range(32)), b"r" * 16


def test_sealed_objects_open_only_under_their_kind_name_and_repository() -> None:
    s = Sealer(KEY, REPO)
    sealed = s.seal(BLOB, b"i" * 32, b"the blob")
    assert len(sealed) == len(b"the blob") + OVERHEAD
    assert b"the blob" not in sealed
    assert Sealer(KEY, REPO).open(BLOB, b"i" * 32, sealed, "x") == b"the blob"
    for kind, name, opener in ((SNAPSHOT, b"i" * 32, s), (BLOB, b"j" * 32, s),
                               (BLOB, b"i" * 32, Sealer(KEY, b"q" * 16)),
                               (BLOB, b"i" * 32, Sealer(bytes(32), REPO))):  # fmt: skip
        with pytest.raises(AuthenticationFailed, match="blob 7 failed authentication"):
            opener.open(kind, name, sealed, "blob 7")


def test_every_flipped_bit_and_every_truncation_fails() -> None:
    s = Sealer(KEY, REPO)
    sealed = s.seal(BLOB, b"n", b"0123456789")
    for i in range(len(sealed) * 8):
        bad = bytearray(sealed)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(AuthenticationFailed):
            s.open(BLOB, b"n", bytes(bad), "x")
    for n in range(len(sealed)):
        with pytest.raises(AuthenticationFailed):
            s.open(BLOB, b"n", sealed[:n], "x")


def test_one_writer_never_repeats_a_nonce_and_draws_a_new_salt_when_it_must(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(crypto, "MAX_OBJECTS", 5)
    s = Sealer(KEY, REPO)
    headers = [s.seal(BLOB, b"n", b"x")[: crypto.HEADER_BYTES] for _ in range(12)]
    assert len(set(headers)) == 12
    salts = [h[: crypto.SALT_BYTES] for h in headers]
    assert len(set(salts)) == 3  # 5 + 5 + 2
    assert [int.from_bytes(h[crypto.SALT_BYTES :], "big") for h in headers[:6]] == [
        0, 1, 2, 3, 4, 0]  # fmt: skip
    # Another writer (another worker) draws its own salt.
    assert Sealer(KEY, REPO).seal(BLOB, b"n", b"x")[: crypto.SALT_BYTES] not in salts


def test_seal_into_a_buffer_is_what_seal_gives() -> None:
    s = Sealer(KEY, REPO)
    out = bytearray(100)
    n = s.seal_into(BLOB, b"id", b"data in a ring slot", memoryview(out))
    assert n == len(b"data in a ring slot") + OVERHEAD
    assert s.open(BLOB, b"id", bytes(out[:n]), "x") == b"data in a ring slot"
    with pytest.raises(ValueError):
        s.seal_into(BLOB, b"id", b"x" * 80, memoryview(out))


def test_a_wrapped_key_opens_with_its_key_and_associated_data_only() -> None:
    sealed = crypto.wrap(KEY, b"K" + b"name", b"master keys")
    assert crypto.unwrap(KEY, b"K" + b"name", sealed) == b"master keys"
    assert crypto.unwrap(KEY, b"K" + b"other", sealed) is None
    assert crypto.unwrap(bytes(32), b"K" + b"name", sealed) is None
    assert crypto.unwrap(KEY, b"K" + b"name", sealed[:10]) is None


# ---- passwords ------------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in ("ORBIT_PASSWORD", "ORBIT_PASSWORD_FILE", "ORBIT_PASSWORD_COMMAND"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    return monkeypatch


def pw_file(tmp_path: Path, text: bytes, mode: int = 0o600) -> str:
    p = tmp_path / f"pw{len(list(tmp_path.iterdir()))}"
    p.write_bytes(text)
    p.chmod(mode)
    return str(p)


def test_sources_are_read_in_order(tmp_path: Path, no_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(PasswordMissing, match="--password-file F"):
        read_password(None)
    no_env.setenv("ORBIT_PASSWORD", "from-env")
    assert read_password(None) == b"from-env"
    no_env.setenv("ORBIT_PASSWORD_COMMAND", "echo from-env-command")
    assert read_password(None) == b"from-env-command"
    no_env.setenv("ORBIT_PASSWORD_FILE", pw_file(tmp_path, b"from-env-file\nignored\n"))
    assert read_password(None) == b"from-env-file"
    assert read_password(PasswordSource(command="printf 'given\\r\\n'")) == b"given"
    given = pw_file(tmp_path, b"given-file")
    assert read_password(PasswordSource(file=given, command="echo no")) == b"given-file"


def test_a_password_file_others_can_read_is_warned_about(tmp_path: Path, no_env) -> None:
    said: list[str] = []
    path = pw_file(tmp_path, b"pw\n", 0o644)
    assert read_password(PasswordSource(file=path), said.append) == b"pw"
    assert said and "chmod 600" in said[0] and path in said[0]
    os.chmod(path, stat.S_IRUSR)
    said.clear()
    read_password(PasswordSource(file=path), said.append)
    assert said == []


def test_bad_sources_say_what_is_wrong(tmp_path: Path, no_env) -> None:
    with pytest.raises(PasswordMissing, match="cannot read the password file"):
        read_password(PasswordSource(file=str(tmp_path / "missing")))
    with pytest.raises(PasswordMissing, match="is not a regular file"):
        read_password(PasswordSource(file=str(tmp_path)))
    with pytest.raises(PasswordMissing, match="failed with exit status 3"):
        read_password(PasswordSource(command="sh -c 'exit 3'"))
    with pytest.raises(PasswordMissing, match="could not run"):
        read_password(PasswordSource(command="/nonexistent/orbit-pw"))
    with pytest.raises(PasswordMissing, match="empty"):
        read_password(PasswordSource(file=pw_file(tmp_path, b"\nsecond line")))


def test_a_new_password_never_comes_from_the_environment(tmp_path: Path, no_env) -> None:
    no_env.setenv("ORBIT_PASSWORD", "the current one")
    with pytest.raises(PasswordMissing, match="no new password"):
        read_new_password(PasswordSource())
    assert read_new_password(PasswordSource(file=pw_file(tmp_path, b"new\n"))) == b"new"

"""The raw SMB2 requests (backends/smb/packets.py, channel.py) against the bytes smbprotocol's
own builders make for the same request: bodies, headers and signatures of all three signing
algorithms. The store's suites (tests/backends) run the same requests against Samba."""

from __future__ import annotations

import os
import struct
import uuid

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.connection import Connection, Dialects, SigningAlgorithms  # noqa: E402
from smbprotocol.file_info import (  # noqa: E402
    FileBasicInformation,
    FileEndOfFileInformation,
    FileInformationClass,
    FileRenameInformation,
)
from smbprotocol.header import SMB2HeaderRequest  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    SMB2CloseRequest,
    SMB2CreateRequest,
    SMB2QueryDirectoryRequest,
    SMB2QueryInfoRequest,
    SMB2ReadRequest,
    SMB2SetInfoRequest,
    SMB2WriteRequest,
)

from orbit_fast.backends.smb import packets as p  # noqa: E402
from orbit_fast.backends.smb.channel import _HEADER, Channel, credit_charge  # noqa: E402

FID = bytes(range(16))


@pytest.mark.parametrize("path", ["", "a", "dir\\sub\\ünïcødé name.txt"])
@pytest.mark.parametrize("access,disposition,options", [
    (p.READ_DATA | p.READ_ATTRIBUTES | p.SYNCHRONIZE, p.OPEN, p.NON_DIRECTORY_FILE),
    (p.WRITE_DATA | p.DELETE, p.CREATE_NEW, p.NON_DIRECTORY_FILE | p.DELETE_ON_CLOSE),
    (p.READ_ATTRIBUTES, p.OPEN_IF, p.DIRECTORY_FILE),
])  # fmt: skip
def test_create_matches_smbprotocol(path: str, access: int, disposition: int,
                                    options: int) -> None:  # fmt: skip
    ref = SMB2CreateRequest()
    ref["impersonation_level"] = 2
    ref["desired_access"] = access
    ref["file_attributes"] = p.ATTR_NORMAL
    ref["share_access"] = p.SHARE_ALL
    ref["create_disposition"] = disposition
    ref["create_options"] = options
    ref["buffer_path"] = path.encode("utf-16-le") or b"\x00\x00"
    got = p.create(path, access, disposition, options, p.ATTR_NORMAL)
    assert got == ref.pack()


@pytest.mark.parametrize("offset,length", [(0, 1), (5 << 20, 1 << 20), (2**40 + 3, 77)])
def test_read_and_write_match_smbprotocol(offset: int, length: int) -> None:
    ref = SMB2ReadRequest()
    ref["length"], ref["offset"], ref["file_id"] = length, offset, FID
    ref["padding"] = b"\x50"  # as smbprotocol's Open.read sets it
    assert p.read(offset, length, FID) == ref.pack()
    data = os.urandom(length)
    ref_w = SMB2WriteRequest()
    ref_w["offset"], ref_w["file_id"], ref_w["buffer"] = offset, FID, data
    assert p.write_head(offset, length, FID) + data == ref_w.pack()


def test_close_and_query_directory_match_smbprotocol() -> None:
    ref = SMB2CloseRequest()
    ref["file_id"] = FID
    assert p.close(FID) == ref.pack()
    ref["flags"] = 1  # SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB
    assert p.close(FID, postquery=True) == ref.pack()
    for first in (True, False):
        q = SMB2QueryDirectoryRequest()
        q["file_information_class"] = FileInformationClass.FILE_ID_FULL_DIRECTORY_INFORMATION
        q["flags"] = 1 if first else 0
        q["file_id"] = FID
        q["output_buffer_length"] = 256 << 10
        q["buffer"] = "*".encode("utf-16-le")
        assert p.query_directory(first, 256 << 10, FID) == q.pack()


def _set_info(info_class: int, info: object) -> bytes:
    ref = SMB2SetInfoRequest()
    ref["info_type"] = 1  # SMB2_0_INFO_FILE
    ref["file_info_class"] = info_class
    ref["file_id"] = FID
    ref["buffer"] = info
    return bytes(ref.pack())


def test_set_info_matches_smbprotocol() -> None:
    t = 1_600_000_000_123_456_789
    basic = FileBasicInformation()
    basic["last_write_time"] = p.filetime(t)
    ours = p.set_info(p.BASIC_INFO, p.basic_info(t), FID)
    theirs = _set_info(FileInformationClass.FILE_BASIC_INFORMATION, basic)
    # smbprotocol writes a FILETIME field from a datetime; compare the integer field apart
    assert ours[:32] == theirs[:32] and len(ours) == len(theirs) == 32 + 40
    assert struct.unpack_from("<Q", ours, 32 + 16)[0] == p.filetime(t)
    assert p.filetime_ns(p.filetime(t)) == t // 100 * 100
    # The creation time and DOS attributes a copy between SMB ends gives a file.
    basic = FileBasicInformation()
    basic["file_attributes"] = 0x23
    ours = p.set_info(p.BASIC_INFO, p.basic_info(btime_ns=t, attributes=0x23), FID)
    theirs = _set_info(FileInformationClass.FILE_BASIC_INFORMATION, basic)
    assert ours[:32] == theirs[:32] and ours[32 + 8 :] == theirs[32 + 8 :]
    assert struct.unpack_from("<Q", ours, 32)[0] == p.filetime(t)
    for replace in (True, False):
        rename = FileRenameInformation()
        rename["replace_if_exists"] = replace
        rename["file_name"] = "dir\\new name".encode("utf-16-le")
        assert p.set_info(p.RENAME_INFO, p.rename_info("dir\\new name", replace), FID) == \
            _set_info(FileInformationClass.FILE_RENAME_INFORMATION, rename)
    eof = FileEndOfFileInformation()
    eof["end_of_file"] = 12345
    assert p.set_info(p.END_OF_FILE_INFO, p.end_of_file_info(12345), FID) == \
        _set_info(FileInformationClass.FILE_END_OF_FILE_INFORMATION, eof)


def test_security_descriptor_requests_match_smbprotocol() -> None:
    """--smb-security: QUERY_INFO and SET_INFO of the owner, group and DACL."""
    ref = SMB2QueryInfoRequest()
    ref["info_type"], ref["file_info_class"] = 3, 0
    ref["output_buffer_length"] = 64 << 10
    ref["additional_information"] = 0x7
    ref["file_id"] = FID
    assert p.query_security(FID) == ref.pack()
    sd = bytes(range(1, 100))
    ref = SMB2SetInfoRequest()
    ref["info_type"], ref["file_info_class"], ref["additional_information"] = 3, 0, 0x7
    ref["file_id"] = FID
    ref["buffer"] = sd
    assert p.set_security(sd, FID) == ref.pack()
    # The reply: the buffer at its offset from the header; one past the reply is refused.
    reply = struct.pack("<HHI", 9, 64 + 8, len(sd)) + sd
    assert p.query_info_reply(memoryview(reply)) == sd
    assert p.query_info_reply(memoryview(struct.pack("<HHI", 9, 0, 0))) == b""
    with pytest.raises(p.MalformedReply, match="does not fit"):
        p.query_info_reply(memoryview(struct.pack("<HHI", 9, 64 + 8, 1000) + sd))


def test_header_matches_smbprotocol() -> None:
    body = p.close(FID)
    ref = SMB2HeaderRequest()
    ref["credit_charge"], ref["command"], ref["credit_request"] = 1, p.CLOSE, 9
    ref["flags"] = p.FLAG_SIGNED | p.FLAG_RELATED
    ref["message_id"], ref["tree_id"], ref["session_id"] = 77, 5, 2**40 + 1
    ref["next_command"] = 88
    ref["data"] = body
    ours = _HEADER.pack(b"\xfeSMB", 64, 1, 0, p.CLOSE, 9, p.FLAG_SIGNED | p.FLAG_RELATED,
                        88, 77, 0, 5, 2**40 + 1, b"\x00" * 16) + body  # fmt: skip
    assert ours == ref.pack()


@pytest.mark.parametrize("dialect,algo", [
    (Dialects.SMB_2_1_0, None), (Dialects.SMB_3_0_2, None),
    (Dialects.SMB_3_1_1, SigningAlgorithms.AES_CMAC),
    (Dialects.SMB_3_1_1, SigningAlgorithms.AES_GMAC),
])  # fmt: skip
@pytest.mark.parametrize("response", [False, True])
def test_signatures_match_smbprotocol(dialect: int, algo: int | None, response: bool) -> None:
    conn = Channel(uuid.uuid4(), "127.0.0.1", 445)  # not connected: only its signing
    conn.dialect, conn.signing_algorithm_id = dialect, algo
    key = os.urandom(16)
    header = _HEADER.pack(b"\xfeSMB", 64, 16, 0, p.WRITE, 16, p.FLAG_SIGNED, 0, 1234, 0, 1, 2,
                          b"\x00" * 16)  # fmt: skip
    body, payload = p.write_head(0, 1 << 20, FID), os.urandom(1 << 20)
    want = Connection._generate_signature(conn, header + body + payload, key, 1234, response,
                                          p.WRITE)  # fmt: skip
    sign = conn._signer(key)
    assert sign((header, body, payload), 1234, response) == want
    assert sign((memoryview(header + body + payload),), 1234, response) == want


def test_credit_charges() -> None:
    assert credit_charge(p.READ, p.read(0, 1), b"") == 1
    assert credit_charge(p.READ, p.read(0, 1 << 20), b"") == 16
    assert credit_charge(p.WRITE, p.write_head(0, 65537), b"x" * 65537) == 2
    assert credit_charge(p.QUERY_DIRECTORY, p.query_directory(True, 256 << 10), b"") == 4
    assert credit_charge(p.CREATE, p.create("a", 1, 1), b"") == 1


def record(name: str, attrs: int, size: int, ft: int, last: bool,
           created: int = p.filetime(1_600_000_000_000_000_000)) -> bytes:  # fmt: skip
    """One FILE_ID_FULL_DIR_INFORMATION record as a server sends it."""
    n = name.encode("utf-16-le", "surrogatepass")
    rec = struct.pack("<IIQQQQQQIIII8s", 0, 0, created, 0, ft, 0, size, 0, attrs, len(n), 0,
                      0, b"\x00" * 8) + n  # fmt: skip
    rec += b"\x00" * (-len(rec) % 8)
    return rec if last else struct.pack("<I", len(rec)) + rec[4:]


def test_entries_and_replies_parse() -> None:
    ft = p.filetime(1_700_000_000_000_000_100)
    buf = (record(".", p.ATTR_DIRECTORY, 0, ft, False) + record("f", 0x20, 5, ft, False)
           + record("link", p.ATTR_DIRECTORY | p.ATTR_REPARSE, 0, ft, False)
           + record("d", p.ATTR_DIRECTORY, 0, ft, True))  # fmt: skip
    assert p.parse_entries(buf) == [
        p.Entry("f", False, 5, 1_700_000_000_000_000_100, 1_600_000_000_000_000_000, 0x20),
        p.Entry("d", True, 0, 1_700_000_000_000_000_100, 1_600_000_000_000_000_000,
                p.ATTR_DIRECTORY)]  # fmt: skip
    # A server with no creation time for a file sends 0: none, not 1601.
    (e,) = p.parse_entries(record("g", 0x21, 1, ft, True, created=0))
    assert e.btime_ns is None and e.attributes == 0x21
    # A CREATE reply ([MS-SMB2] 2.2.14) and a CLOSE reply (2.2.16) put the times, the size
    # and the attributes at the same offsets.
    reply = struct.pack("<HBBIQQQQQQII", 89, 0, 0, 1, p.filetime(1_500_000_000_000_000_000),
                        0, ft, 0, 4096, 5, 0x23, 0) + FID + b"\x00" * 8  # fmt: skip
    attrs = p.close_reply(memoryview(reply))
    assert attrs == p.Attrs(1_700_000_000_000_000_100, 5, 0x23, 1_500_000_000_000_000_000)
    assert p.create_reply(memoryview(reply)) == (FID, attrs)
    err = p.StatusError(p.STATUS_OBJECT_NAME_NOT_FOUND, "a\\b", "open")
    assert err.errno == 2 and "STATUS_OBJECT_NAME_NOT_FOUND" in str(err)


def test_crafted_listings_fail_cleanly() -> None:
    """A server's (or a man in the middle's, without signing) listing is parsed without
    trusting its lengths: every mutation of a valid reply parses or is a MalformedReply, and
    never reads a name from past the record's buffer."""
    import random

    ft = p.filetime(1_700_000_000_000_000_100)
    good = b"".join(record(f"name{i}", 0x20, i, ft, i == 9) for i in range(10))
    rng = random.Random(7)
    for _ in range(3000):
        buf = bytearray(good[: rng.randrange(len(good) + 1)])
        for _ in range(rng.randrange(4)):
            if buf:
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        try:
            entries = p.parse_entries(bytes(buf))
        except p.MalformedReply:
            continue
        assert all(len(e.name) <= len(buf) for e in entries)
    with pytest.raises(p.MalformedReply, match="cut short"):
        p.parse_entries(good[:100])
    huge = bytearray(record("f", 0x20, 1, ft, True))
    struct.pack_into("<I", huge, 60, 1 << 30)  # a name length far past the reply
    with pytest.raises(p.MalformedReply, match="does not fit"):
        p.parse_entries(bytes(huge))


def test_an_unpaired_surrogate_skips_that_file_only() -> None:
    # NTFS names are UTF-16 without validation; one such name used to fail the whole listing.
    from orbit_fast.backends.base import UNSAFE_NAME, listed_name

    ft = p.filetime(1_700_000_000_000_000_100)
    buf = record("bad\ud800x", 0x20, 1, ft, False) + record("good", 0x20, 2, ft, True)
    entries = p.parse_entries(buf)
    assert [e.name for e in entries] == ["bad\ud800x", "good"]
    skipped: list[tuple[str, str]] = []
    kept = [e.name for e in entries
            if listed_name(e.name, "smb://h/s", lambda n, why: skipped.append((n, why)))]
    assert kept == ["good"]
    assert skipped[0][1].startswith(UNSAFE_NAME) and "surrogate" in skipped[0][1]

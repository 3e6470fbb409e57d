"""Trees and snapshots (repo/tree.py, repo/snapshot.py): a deterministic encoding (golden
vectors: a change of encoding is a change of format), paging of large directories, and decoding
that trusts nothing (tests/integration/test_crafted_repo.py drives the same through the CLI)."""

from __future__ import annotations

import blake3
import msgspec
import pytest

from orbit_fast.errors import IntegrityError, RepositoryError
from orbit_fast.hashing import chunk_id
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo import tree as treefmt
from orbit_fast.repo.snapshot import Snapshot
from orbit_fast.repo.tree import CHR, DIR, FIFO, FILE, LINK, Entry, Page, TreeBlob

T = 1_700_000_000_000_000_000
KEY = bytes(range(32))


def entry(name: bytes, kind: str = FILE, **kw: object) -> Entry:
    fields: dict = dict(name=name, kind=kind, mode=0o644, uid=1000, gid=100, mtime_ns=T,
                        atime_ns=T, ctime_ns=T, ino=7, size=0)  # fmt: skip
    if kind == DIR:
        fields["subtree"] = b"\x11" * 32
    if kind == LINK:
        fields["target"] = b"../x"
    fields.update(kw)
    return Entry(**fields)


ACL_SET = b"\x22" * 32
GOLDEN = [entry(b"a", chunks=b"\x01" * 32, size=5, meta=ACL_SET, links=2, dev=3, user="ann",
                group="staff"),
          entry(b"c", CHR, mode=0o666, rdev=(1 << 8) | 3), entry(b"d", DIR, mode=0o755,
                                                                 meta=ACL_SET),
          entry(b"l", LINK, mode=0o777), entry(b"p", FIFO), entry(b"\xff\xfe", size=0)]


def test_tree_encoding_is_golden() -> None:
    raw = treefmt.encode_entries(GOLDEN)
    assert blake3.blake3(raw).hexdigest()[:32] == "894249ddfffcea93de550beb66f5a2f0"
    assert chunk_id(KEY, raw).hex()[:32] == "c6250fd0d046a8a2e122be185fe0656d"
    # The entries keep their set ids; the tree lists the one set once and names it by index.
    assert [e.meta for e in GOLDEN] == [ACL_SET, b"", ACL_SET, b"", b"", b""]
    blob = treefmt.decode("tree", raw)
    assert blob.metas == [ACL_SET] and [e.meta for e in blob.entries] == [1, 0, 1, 0, 0, 0]
    for e in blob.entries:  # as TreeReader.load gives them
        e.meta = blob.metas[e.meta - 1] if e.meta else b""  # type: ignore[index,operator]
    assert blob.entries == GOLDEN


@pytest.mark.parametrize(("change", "why"), [
    (dict(meta=2), "xattr set its tree does not list"),  # one set listed
    (dict(meta=ACL_SET), "xattr set its tree does not list"),  # an id where an index goes
    (dict(rdev=5, meta=0), "not a device but has a device number"),
])
def test_an_entry_naming_what_its_tree_cannot_hold_is_refused(change: dict, why: str) -> None:
    e = entry(b"a", **change)
    raw = treefmt.encode(TreeBlob(entries=[e], metas=[ACL_SET]))
    with pytest.raises(IntegrityError, match=why):
        treefmt.decode("tree", raw)


def test_a_set_shared_by_a_whole_directory_costs_its_id_once() -> None:
    """2,000 files with one ACL: the stored tree grows by the set's id, nothing per entry."""
    import os

    from orbit_fast.compression import compress, parse_codec

    zstd = parse_codec("zstd:3")
    files = [entry(b"f%05d" % i, ino=1000 + i, ctime_ns=T + i * 1000) for i in range(2000)]
    plain = len(compress(zstd, treefmt.encode_entries(files)))
    mid = os.urandom(32)
    for e in files:
        e.meta = mid
    assert len(compress(zstd, treefmt.encode_entries(files))) - plain <= 40


def test_an_xattr_set_is_checked() -> None:
    raw = treefmt.encode_meta([(b"user.b", b"2"), (b"user.a", b"1")])
    assert treefmt.decode_meta("set", raw).xattrs == [(b"user.a", b"1"), (b"user.b", b"2")]
    twice = msgspec.msgpack.encode([[[b"user.a", b"1"], [b"user.a", b"2"]]])
    with pytest.raises(IntegrityError, match="out of order or twice"):
        treefmt.decode_meta("set", twice)


def test_snapshot_encoding_is_golden() -> None:
    root = entry(b"", DIR, mode=0o755)
    snap = Snapshot(time_ns=T, hostname="h", source="/s", root=root, files_total=3)
    name, data = snapfmt.encode(snap, None, KEY)  # unencrypted: named by its whole file
    assert data[:8] == b"ORBSNAP4" and name == blake3.blake3(data).hexdigest()
    assert name[:32] == "15eec499d5afcba256def7f102c91f97"
    assert snapfmt.decode(name, data, None) == snap


def test_a_sealed_snapshot_opens_under_its_name_only() -> None:
    from orbit_fast.crypto import Sealer
    from orbit_fast.errors import AuthenticationFailed

    sealer = Sealer(b"e" * 32, b"r" * 16)
    snap = Snapshot(time_ns=T, hostname="h", source="/s", root=entry(b"", DIR))
    name, data = snapfmt.encode(snap, sealer, KEY)
    assert name == blake3.blake3(msgspec.msgpack.encode(snap), key=KEY).hexdigest()
    assert snapfmt.decode(name, data, sealer) == snap
    other = blake3.blake3(b"another name").hexdigest()
    with pytest.raises(AuthenticationFailed, match=f"snapshot {other[:8]} failed auth"):
        snapfmt.decode(other, data, sealer)  # replayed under another name
    with pytest.raises(AuthenticationFailed):
        snapfmt.decode(name, data, Sealer(b"e" * 32, b"s" * 16))  # another repository's
    with pytest.raises(RepositoryError, match="damaged"):
        snapfmt.decode(name, data, None)  # a plain reader never takes a sealed one


@pytest.mark.parametrize("magic", [b"ORBSNAP1", b"ORBSNAP2", b"ORBSNAP3"])
def test_an_earlier_format_snapshot_is_refused_with_a_message(magic: bytes) -> None:
    data = magic + bytes(8)
    name = blake3.blake3(data).hexdigest()
    with pytest.raises(RepositoryError, match="earlier repository format, which this"):
        snapfmt.decode(name, data, None)


def big_dir(n: int, prefix: bytes = b"f") -> list[Entry]:
    return [entry(prefix + b"%07d" % i, chunks=b"\x02" * 32, size=1) for i in range(n)]


def test_small_directories_are_one_tree_and_large_ones_pages() -> None:
    assert treefmt.split(big_dir(1000)) is None
    pages, raws = treefmt.split(big_dir(100_000)) or ([], [])
    assert len(pages) > 10 and sum(len(p) for p in pages) == 100_000
    assert all(len(r) <= treefmt.DIRECT_BYTES for r in raws)
    assert [e for p in pages for e in p] == big_dir(100_000)


def test_pages_are_content_defined_one_insert_rewrites_one_page() -> None:
    base = big_dir(100_000)
    pages, raws = treefmt.split(base) or ([], [])
    more = sorted([*base, entry(b"f0050000x", size=1)], key=lambda e: e.name)
    pages2, raws2 = treefmt.split(more) or ([], [])
    assert len(set(raws2) - set(raws)) == 1
    assert treefmt.split(list(base)) == (pages, raws)  # deterministic


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ([entry(b"..")], "entry '..' is '..'"),
        ([entry(b".")], "entry '.' is '.'"),
        ([entry(b"")], "is empty"),
        ([entry(b"a/b")], "holds '/'"),
        ([entry(b"/etc")], "holds '/'"),
        ([entry(b"x\0y")], "holds NUL"),
        ([entry(b"x"), entry(b"x")], "listed twice"),
        ([entry(b"b"), entry(b"a")], "out of order"),
        ([entry(b"x", "s")], "unknown kind"),
        ([entry(b"x", FIFO, size=3)], "special file with a size"),
        ([entry(b"x", chunks=b"\1" * 31)], "chunk list"),
        ([entry(b"l", LINK, target=b"")], "empty target"),
        ([entry(b"l", LINK, target=b"a\0b")], "NUL"),
        ([entry(b"l", LINK, subtree=b"\1" * 32)], "names a tree"),
        ([entry(b"d", DIR, subtree=b"")], "without a tree id"),
        ([entry(b"d", DIR, chunks=b"\1" * 32)], "without a tree id"),
        ([entry(b"f", target=b"x")], "not a link but has a target"),
    ],
)  # fmt: skip
def test_unsafe_entries_are_refused_naming_the_tree_and_entry(entries: list[Entry],
                                                              why: str) -> None:  # fmt: skip
    raw = msgspec.msgpack.encode(TreeBlob(entries=entries))
    with pytest.raises(IntegrityError, match=why) as exc:
        treefmt.decode("tree 1234 of 'home'", raw)
    assert "tree 1234 of 'home' is damaged or hostile" in str(exc.value)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [("mode", 0o170644, "<= 4095"), ("uid", -1, ">= 0"), ("gid", 1 << 32, "<= 4294967294"),
     ("mtime_ns", 1 << 63, "<= 9223372036854775807"), ("size", -1, ">= 0")],
)  # fmt: skip
def test_modes_owners_sizes_and_times_out_of_range_are_refused(field: str, value: int,
                                                               why: str) -> None:  # fmt: skip
    raw = msgspec.msgpack.encode(TreeBlob(entries=[entry(b"x", **{field: value})]))
    with pytest.raises(IntegrityError, match=f"an entry's Expected `int` {why}"):
        treefmt.decode("tree", raw)


def test_an_index_with_entries_or_unordered_pages_is_refused() -> None:
    both = TreeBlob(entries=[entry(b"a")], pages=[Page(b"a", b"\1" * 32, 1)])
    with pytest.raises(IntegrityError, match="both entries and pages"):
        treefmt.decode("tree", msgspec.msgpack.encode(both))
    unordered = TreeBlob(pages=[Page(b"b", b"\1" * 32, 1), Page(b"a", b"\2" * 32, 1)])
    with pytest.raises(IntegrityError, match="page 'a' is not after the page before it"):
        treefmt.decode("tree", msgspec.msgpack.encode(unordered))
    with pytest.raises(IntegrityError, match="page 'x/y' holds '/'"):
        treefmt.decode("tree", msgspec.msgpack.encode(TreeBlob(pages=[Page(b"x/y", b"\1" * 32,
                                                                            1)])))


def test_a_tree_of_too_many_tiny_entries_is_refused_before_they_are_made() -> None:
    one = msgspec.msgpack.encode(entry(b"l", LINK, target=b"t"))
    count = treefmt.MAX_ENTRIES + 1
    raw = b"\x92\xdd" + count.to_bytes(4, "big") + one * count + b"\x90"
    with pytest.raises(IntegrityError, match=f"claims {count} entries"):
        treefmt.decode("tree", raw)


def test_a_snapshot_whose_root_is_not_a_directory_is_refused() -> None:
    for root, why in ((entry(b"", LINK), "root is not a directory"),
                      (entry(b"x", DIR), "root has a name"),
                      (entry(b"", DIR, subtree=b""), "without a tree id")):  # fmt: skip
        name, data = snapfmt.encode(Snapshot(time_ns=T, hostname="h", source="/s", root=root),
                                    None, KEY)  # fmt: skip
        with pytest.raises(IntegrityError, match=why):
            snapfmt.decode(name, data, None)


def test_a_damaged_snapshot_is_named() -> None:
    name, data = snapfmt.encode(Snapshot(time_ns=T, hostname="h", source="/s",
                                         root=entry(b"", DIR)), None, KEY)  # fmt: skip
    with pytest.raises(RepositoryError, match=f"snapshot {name[:8]} is damaged"):
        snapfmt.decode(name, data[:-1] + bytes([data[-1] ^ 1]), None)

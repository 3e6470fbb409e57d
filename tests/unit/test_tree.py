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
from orbit_fast.repo.tree import DIR, FILE, LINK, Entry, Page, TreeBlob

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


GOLDEN = [entry(b"a", chunks=b"\x01" * 32, size=5), entry(b"d", DIR, mode=0o755),
          entry(b"l", LINK, mode=0o777), entry(b"\xff\xfe", size=0)]  # fmt: skip


def test_tree_encoding_is_golden() -> None:
    raw = treefmt.encode(TreeBlob(entries=GOLDEN))
    assert blake3.blake3(raw).hexdigest()[:32] == "cf6e7be93b11e277b1b5efb9e937be08"
    assert chunk_id(KEY, raw).hex()[:32] == "226298da11e3e1f08e9168a89ec66194"
    # and decodes to what was encoded
    assert treefmt.decode("tree", raw).entries == GOLDEN


def test_snapshot_encoding_is_golden() -> None:
    root = entry(b"", DIR, mode=0o755)
    snap = Snapshot(time_ns=T, hostname="h", source="/s", root=root, files_total=3)
    name, data = snapfmt.encode(snap, None, KEY)  # unencrypted: named by its whole file
    assert data[:8] == b"ORBSNAP3" and name == blake3.blake3(data).hexdigest()
    assert name[:32] == "a15427ba270e98e48fe5c7ea3a21784c"
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


@pytest.mark.parametrize("magic", [b"ORBSNAP1", b"ORBSNAP2"])
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
        ([entry(b"x", "c")], "unknown kind"),
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

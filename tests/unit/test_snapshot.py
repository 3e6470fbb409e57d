"""Snapshot decoding trusts nothing: node paths, their order and the node list's size are
checked before any command sees the nodes (tests/integration/test_crafted_repo.py drives the
same through the CLI)."""

from __future__ import annotations

import blake3
import msgspec
import pytest
import zstandard

from orbit_fast.errors import IntegrityError
from orbit_fast.repo import snapshot as snapfmt
from orbit_fast.repo.snapshot import DIR, FILE, LINK, Node, Snapshot

T = 1_700_000_000_000_000_000


def node(path: bytes, kind: str = FILE, **kw: object) -> Node:
    fields: dict = dict(path=path, kind=kind, mode=0o644, uid=0, gid=0, mtime_ns=T,
                        atime_ns=T, ctime_ns=T, ino=0, size=0)  # fmt: skip
    fields.update(kw)
    return Node(**fields)


ROOT = node(b"", DIR, mode=0o755)


def roundtrip(nodes: list[Node]) -> Snapshot:
    name, data = snapfmt.encode(Snapshot(time_ns=T, hostname="h", source="/s", nodes=nodes))
    return snapfmt.decode(name, data)


def raw_snapshot(body: bytes, header: Snapshot | None = None) -> tuple[str, bytes]:
    h = msgspec.msgpack.encode(header or Snapshot(time_ns=T, hostname="h", source="/s"))
    data = snapfmt.HEADER.pack(snapfmt.MAGIC, 0, len(h)) + h + body
    return blake3.blake3(data).hexdigest(), data


def test_what_backup_writes_decodes() -> None:
    nodes = [ROOT, node(b"d", DIR), node(b"d/e", DIR), node(b"d/e/f"), node(b"d/l", LINK,
             target=b"../anywhere"), node(b"top\x1b[2J"), node(b"\xff\xfe"), node(b".git", DIR),
             node(b".git/..x"), node(b"d/..."), node(b"d/.e"),
             node(b"d/e/x.")]  # fmt: skip
    assert roundtrip(nodes).nodes == nodes
    assert roundtrip([node(b"x")]).nodes == [node(b"x")]  # no root node: the target is it


@pytest.mark.parametrize(
    ("nodes", "why"),
    [
        ([ROOT, node(b"../x")], "component '..'"),
        ([ROOT, node(b"d", DIR), node(b"d/..")], "component '..'"),
        ([ROOT, node(b"d", DIR), node(b"d/.")], "component '.'"),
        ([ROOT, node(b"..")], "component '..'"),
        ([ROOT, node(b"d", DIR), node(b"d/./x")], "component '.'"),
        ([ROOT, node(b"/etc/x")], "absolute"),
        ([ROOT, node(b"./x")], "component '.'"),
        ([ROOT, node(b"d", DIR), node(b"d//x")], "empty component"),
        ([ROOT, node(b"d", DIR), node(b"d/")], "empty component"),
        ([ROOT, node(b"x\0y")], "NUL"),
        ([node(b"")], "not a directory"),
        ([ROOT, ROOT], "listed twice"),
        ([ROOT, node(b"x"), node(b"x", DIR)], "listed twice"),
        ([ROOT, node(b"l", LINK, target=b"/"), node(b"l/x")], "which is not a directory"),
        ([ROOT, node(b"f"), node(b"f/x")], "which is not a directory"),
        ([ROOT, node(b"d/x"), node(b"d", DIR)], "not listed before it"),
        ([ROOT, node(b"x", "c")], "unknown kind"),
        ([ROOT, node(b"x"), ROOT], "listed twice"),
        ([ROOT, node(b"x"), node(b"")], "listed twice"),
        ([node(b"x"), node(b"", DIR)], "not listed first"),
        ([ROOT, node(b"x", chunks=b"\1" * 31)], "chunk list"),
        ([ROOT, node(b"l", LINK)], "empty target"),
        ([ROOT, node(b"l", LINK, target=b"a\0b")], "NUL"),
    ],
)  # fmt: skip
def test_unsafe_nodes_are_refused_naming_snapshot_and_path(nodes: list[Node], why: str) -> None:
    name, data = snapfmt.encode(Snapshot(time_ns=T, hostname="h", source="/s", nodes=nodes))
    with pytest.raises(IntegrityError, match=why) as exc:
        snapfmt.decode(name, data)
    assert f"snapshot {name[:8]} is damaged or hostile: node '" in str(exc.value)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [("mode", 0o170644, "<= 4095"), ("uid", -1, ">= 0"), ("gid", 1 << 32, "<= 4294967294"),
     ("mtime_ns", 1 << 63, "<= 9223372036854775807"), ("size", -1, ">= 0")],
)  # fmt: skip
def test_modes_owners_sizes_and_times_out_of_range_are_refused(field: str, value: int,
                                                               why: str) -> None:  # fmt: skip
    nodes = [ROOT, node(b"x", **{field: value})]
    name, data = snapfmt.encode(Snapshot(time_ns=T, hostname="h", source="/s", nodes=nodes))
    with pytest.raises(IntegrityError, match=f"snapshot {name[:8]} is damaged or hostile: "
                       f"a node's Expected `int` {why}"):  # fmt: skip
        snapfmt.decode(name, data)


def test_a_bomb_is_refused_from_its_declared_size() -> None:
    body = zstandard.ZstdCompressor(level=19).compress(bytes(200 << 20))
    name, data = raw_snapshot(body)
    with pytest.raises(IntegrityError, match="expands beyond the limit"):
        snapfmt.decode(name, data)


def test_a_bomb_without_a_declared_size_is_cut_at_the_limit() -> None:
    body = zstandard.ZstdCompressor(level=19, write_content_size=False).compress(
        bytes(64 << 20))  # fmt: skip
    name, data = raw_snapshot(body)
    with pytest.raises(IntegrityError, match="expands beyond the limit"):
        snapfmt.decode(name, data)


def test_a_list_of_too_many_tiny_nodes_is_refused_before_they_are_made() -> None:
    # Within the byte limit, but about 1.6 million nodes from some kilobytes: the Python
    # objects would take hundreds of MiB before the duplicate check saw the second one.
    one = msgspec.msgpack.encode(node(b"x"))
    count = (snapfmt.NODES_MIN_BYTES - 5) // len(one)
    raw = b"\xdd" + count.to_bytes(4, "big") + one * count
    body = zstandard.ZstdCompressor(level=19).compress(raw)
    assert len(raw) <= max(snapfmt.NODES_MIN_BYTES, snapfmt.NODES_RATIO * len(body))
    name, data = raw_snapshot(body)
    with pytest.raises(IntegrityError, match=f"{count} nodes in {len(body)} bytes"):
        snapfmt.decode(name, data)


def test_the_most_regular_real_trees_stay_within_the_limits() -> None:
    # Long paths (4 KB) under one directory, and many empty files with sequential names and
    # equal times: node lists compress 1121x and 0.71 nodes per byte (measured); the limits
    # are 4096x and 16 per byte.
    deep = b"/".join([b"d" * 200] * 20)
    parents = [node(b"/".join([b"d" * 200] * i), DIR) for i in range(1, 21)]
    nodes = [ROOT, *parents, *(node(deep + b"/f%07d" % i) for i in range(10_000))]
    assert len(roundtrip(nodes).nodes) == len(nodes)
    flat = [ROOT, node(b"a", DIR), *(node(b"a/f%07d" % i) for i in range(200_000))]
    assert len(roundtrip(flat).nodes) == len(flat)


def test_nodes_in_a_header_are_not_taken_for_the_snapshot_s() -> None:
    header = Snapshot(time_ns=T, hostname="h", source="/s", nodes=[node(b"../x")])
    body = zstandard.ZstdCompressor().compress(msgspec.msgpack.encode([ROOT]))
    name, data = raw_snapshot(body, header)
    assert snapfmt.decode(name, data).nodes == [ROOT]
    assert snapfmt.decode_info(name, data).nodes == []

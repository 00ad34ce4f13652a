"""The invariant checker: a clean tree passes; each kind of damage is found, named, repaired.

Volumes are built through ``Filesystem`` on a real store (512-byte blocks, so small files
cross block boundaries); damage is done with raw LMDB writes after a commit, as a crash,
a bug or a bad disk would leave it. Every test asserts the exact kinds found, then repairs
and asserts a clean second check and the file contents that must survive. The ``tree``
fixture checks the store once more at teardown: a test that leaves damage behind (what no
repair may touch, such as chunk bytes or a lost root, or what it only reports) names it
with ``damages_store``.
"""

from __future__ import annotations

import json
import random
import stat
import threading
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from cfs import check
from cfs.codec import (
    CHUNK_HEADER, Inode, VolumeState, decode_block, decode_chunkref, decode_dirent,
    encode_block, encode_chunkref, encode_order, ino_key, ino_name_key, ino_u64_key, pack_u64,
)
from cfs.errors import Corrupted, CorruptRecord, VolumeNotFound
from cfs.fs import Caller, Filesystem, SetAttr
from cfs.fs.core import FALLOC_FL_KEEP_SIZE
from cfs.hashing import chunk_id
from cfs.store import Store, Table, changelog
from cfs.types import InodeId, Slot, local_of, make_ino, volume_root

from unit_support import check_at_teardown, marked_replicated

BS = 512
ROOT = Caller()


# --- raw access, the way damage happens ---------------------------------------------

def raw_get(store: Store, table: Table, key: bytes) -> bytes | None:
    store.commit()
    with store.env.begin() as txn:
        value = txn.get(key, db=store.db(table))
        return None if value is None else bytes(value)


def raw_put(store: Store, table: Table, key: bytes, value: bytes) -> None:
    store.commit()
    with store.env.begin(write=True) as txn:
        txn.put(key, value, db=store.db(table))


def raw_delete(store: Store, table: Table, key: bytes) -> None:
    store.commit()
    with store.env.begin(write=True) as txn:
        assert txn.delete(key, db=store.db(table))


def raw_rows(store: Store, table: Table) -> list[tuple[bytes, bytes]]:
    store.commit()
    with store.env.begin() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.db(table))]


def edit_inode(store: Store, ino: InodeId, **fields: int) -> None:
    inode = Inode.decode(raw_get(store, Table.INODES, ino_key(ino)))
    for name, value in fields.items():
        setattr(inode, name, value)
    raw_put(store, Table.INODES, ino_key(ino), inode.encode())


def block_chunk(store: Store, ino: InodeId, n: int) -> bytes:
    raw = raw_get(store, Table.BLOCKS, ino_u64_key(ino, n))
    assert raw is not None
    return decode_block(raw)[0]


def refcount(store: Store, cid: bytes) -> int:
    raw = raw_get(store, Table.CHUNKREFS, cid)
    return 0 if raw is None else decode_chunkref(raw)[0]


def drop_entry(store: Store, parent: InodeId, name: bytes) -> None:
    """Remove a name from both directory tables, as a lost write would."""
    _child, cookie = decode_dirent(raw_get(store, Table.DIRENTS, ino_name_key(parent, name)))
    raw_delete(store, Table.DIRENTS, ino_name_key(parent, name))
    raw_delete(store, Table.DIRORDER, ino_u64_key(parent, cookie))


def assert_counts_match_block_maps(store: Store) -> None:
    refs: dict[bytes, int] = {}
    for _key, raw in raw_rows(store, Table.BLOCKS):
        for cid, _length in decode_block(raw).chunks():
            refs[cid] = refs.get(cid, 0) + 1
    assert {k: decode_chunkref(v)[0] for k, v in raw_rows(store, Table.CHUNKREFS)} == refs
    assert {k for k, _v in raw_rows(store, Table.CHUNKS)} == set(refs)


# --- a volume with a bit of everything ------------------------------------------------

@dataclass
class Tree:
    store: Store
    fs: Filesystem
    slot: Slot
    ino: dict[str, InodeId] = field(default_factory=dict)
    content: dict[str, bytes] = field(default_factory=dict)

    @property
    def root(self) -> InodeId:
        return volume_root(self.slot)

    def lookup(self, parent: InodeId, name: bytes) -> InodeId:
        ino = self.fs.lookup(parent, name).ino
        self.fs.forget(ino, 1)
        return ino

    def read(self, ino: InodeId) -> bytes:
        return self.fs.read(ino, 0, self.fs.getattr(ino).inode.size + 1)

    def names(self, directory: InodeId) -> list[bytes]:
        return [name for name, _attr, _cookie in self.fs.readdir(directory, 0)]

    def inode(self, ino: InodeId) -> Inode:
        return self.fs.getattr(ino).inode

    def assert_intact(self, *paths: str) -> None:
        for path in paths or tuple(self.content):
            assert self.read(self.ino[path]) == self.content[path], path


def build(store: Store, fs: Filesystem, name: str = "vol", seed: int = 1, replicated: bool = False) -> Tree:
    """/big (6 blocks), /dup (same bytes), /sparse (a hole), /dir/small, /dir/sub/hard
    (a second name of /big), /sym, an xattr; no kernel lookups left behind. A
    ``replicated`` volume keeps its change log (cfs.store.changelog.append)."""
    record = fs.create_volume(name, block_size=BS, replicated=replicated)
    tree = Tree(store, fs, record.slot)
    rng = random.Random(seed)
    big = rng.randbytes(5 * BS + 100)
    d = _mkdir(tree, tree.root, b"dir", "/dir")
    _mkdir(tree, d, b"sub", "/dir/sub")
    _file(tree, tree.root, b"big", "/big", big)
    _file(tree, tree.root, b"dup", "/dup", big)
    _file(tree, d, b"small", "/dir/small", rng.randbytes(700))
    sparse = _file(tree, tree.root, b"sparse", "/sparse", b"")
    fs.write(sparse, 3 * BS + 7, b"tail")
    tree.content["/sparse"] = bytes(3 * BS + 7) + b"tail"
    fs.forget(fs.link(tree.ino["/big"], tree.ino["/dir/sub"], b"hard").ino, 1)
    fs.forget(fs.symlink(tree.root, b"sym", b"big", ROOT).ino, 1)
    fs.setxattr(tree.ino["/big"], b"user.note", b"kept", 0)
    store.commit()
    return tree


def _mkdir(tree: Tree, parent: InodeId, name: bytes, path: str) -> InodeId:
    ino = tree.fs.mkdir(parent, name, 0o755, ROOT).ino
    tree.fs.forget(ino, 1)
    tree.ino[path] = ino
    return ino


def _file(tree: Tree, parent: InodeId, name: bytes, path: str, data: bytes) -> InodeId:
    ino = tree.fs.create(parent, name, 0o644, ROOT).ino
    tree.fs.forget(ino, 1)
    if data:
        tree.fs.write(ino, 0, data)
    tree.ino[path], tree.content[path] = ino, data
    return ino


@pytest.fixture
def tree(request: pytest.FixtureRequest, store: Store, fs: Filesystem) -> Iterator[Tree]:
    """The volume ``vol``; replicated (keeping its change log) if the test is marked so.

    At teardown the store is checked once more, as after every test on a volume
    (``unit_support.check_at_teardown``): a test that repairs must leave nothing behind,
    and one that leaves its damage says so with ``damages_store`` and what it leaves."""
    yield build(store, fs, replicated=marked_replicated(request))
    check_at_teardown(request, store)


def problems(report: check.Report, kind: str) -> list[check.Problem]:
    return [p for p in report.problems if p.kind == kind]


def repair_then_clean(store: Store, expect: set[str]) -> check.Report:
    """Repair: every problem found is ``expect``ed and marked repaired; then all is clean."""
    fixed = check.check(store, repair=True)
    assert fixed.kinds() == expect
    assert fixed.unrepaired == []
    again = check.check(store)
    assert again.clean, again.lines()
    assert_counts_match_block_maps(store)
    return fixed


# --- clean ------------------------------------------------------------------------

def test_a_tree_built_through_the_filesystem_is_clean(tree: Tree) -> None:
    report = check.check(tree.store)
    assert report.clean, report.lines()
    distinct = {block_chunk(tree.store, tree.ino["/big"], n) for n in range(6)}
    distinct.add(block_chunk(tree.store, tree.ino["/dir/small"], 0))
    distinct.add(block_chunk(tree.store, tree.ino["/dir/small"], 1))
    distinct.add(block_chunk(tree.store, tree.ino["/sparse"], 3))
    assert (report.volumes, report.directories, report.files, report.inodes) == (1, 3, 4, 8)
    assert report.blocks == 6 + 6 + 2 + 1
    assert report.chunks == len(distinct)
    assert report.bytes_verified == 5 * BS + 100 + 700 + 7 + 4
    assert report.to_json()["clean"] is True
    assert report.lines()[-1].endswith("no problems")


def test_every_reader_gives_the_same_answer(tree: Tree) -> None:
    """The batch view, any Reader (an Op), and a snapshot all see the committed tree."""
    via_store = check.check(tree.store)
    with tree.store.op(adds_data=False) as op:
        via_op = check.check_view(op)
    via_snapshot = check.check_snapshot(tree.store)
    for report in (via_op, via_snapshot):
        assert report.clean
        assert report.counts() == via_store.counts()


def test_open_unlinked_files_are_not_lost(tree: Tree) -> None:
    held = tree.fs.create(tree.root, b"open", 0o644, ROOT).ino  # the kernel holds a lookup
    tree.fs.write(held, 0, b"still open")
    tree.fs.unlink(tree.root, b"open")
    assert raw_get(tree.store, Table.ORPHANS, ino_key(held)) is not None
    assert check.check(tree.store).clean


def test_unknown_volume_is_a_user_error(tree: Tree) -> None:
    with pytest.raises(VolumeNotFound):
        check.check(tree.store, "nope")


# --- chunks -------------------------------------------------------------------------

@pytest.mark.damages_store("a chunk of /dir/small flipped, which no repair can restore", finds=("corrupt-chunk",))
def test_corrupt_chunk_is_reported_by_path_and_not_repaired(tree: Tree) -> None:
    cid = block_chunk(tree.store, tree.ino["/dir/small"], 1)
    raw = bytearray(raw_get(tree.store, Table.CHUNKS, cid))
    raw[5] ^= 0x40
    raw_put(tree.store, Table.CHUNKS, cid, bytes(raw))

    report = check.check(tree.store)
    assert report.kinds() == {"corrupt-chunk"}
    (problem,) = report.problems
    assert (problem.volume, problem.path) == ("vol", "/dir/small")
    assert "blocks 1 " in problem.message

    fixed = check.check(tree.store, repair=True)
    assert [p.repaired for p in fixed.problems] == [False]
    with pytest.raises(Corrupted):
        tree.read(tree.ino["/dir/small"])
    tree.assert_intact("/big", "/dup", "/sparse")


@pytest.mark.damages_store("a chunk of /dir/small deleted, whose bytes only a replica has", finds=("missing-chunk",))
def test_missing_chunk_is_reported_and_its_count_kept_for_a_replica(tree: Tree) -> None:
    cid = block_chunk(tree.store, tree.ino["/dir/small"], 0)
    raw_delete(tree.store, Table.CHUNKS, cid)

    report = check.check(tree.store, repair=True)
    assert report.kinds() == {"missing-chunk"}
    assert [(p.path, p.repaired) for p in report.problems] == [("/dir/small", False)]
    assert refcount(tree.store, cid) == 1


def test_chunk_gone_with_its_count_gets_the_count_back_and_heals_on_rewrite(tree: Tree) -> None:
    small = tree.ino["/dir/small"]
    cid = block_chunk(tree.store, small, 0)
    raw_delete(tree.store, Table.CHUNKS, cid)
    raw_delete(tree.store, Table.CHUNKREFS, cid)

    report = check.check(tree.store, repair=True)
    assert report.kinds() == {"missing-chunk", "refcount"}
    assert [(p.kind, p.repaired) for p in report.problems] == [("missing-chunk", False), ("refcount", True)]
    assert problems(report, "missing-chunk")[0].path == "/dir/small"
    assert decode_chunkref(raw_get(tree.store, Table.CHUNKREFS, cid)) == (1, BS)
    _file(tree, tree.root, b"copy", "/copy", tree.content["/dir/small"])  # same bytes: heals
    tree.store.commit()
    assert check.check(tree.store).clean
    assert refcount(tree.store, cid) == 2
    tree.assert_intact()


def test_refcount_is_recomputed(tree: Tree) -> None:
    shared = block_chunk(tree.store, tree.ino["/big"], 2)  # /big and /dup: 2 references
    raw_put(tree.store, Table.CHUNKREFS, shared, encode_chunkref(7, BS))
    single = block_chunk(tree.store, tree.ino["/dir/small"], 1)
    raw_delete(tree.store, Table.CHUNKREFS, single)

    report = check.check(tree.store)
    assert report.kinds() == {"refcount"}
    assert len(report.problems) == 2
    repair_then_clean(tree.store, {"refcount"})
    assert refcount(tree.store, shared) == 2
    assert refcount(tree.store, single) == 1
    tree.assert_intact()


def test_leaked_chunks_and_counts_without_data_are_dropped(tree: Tree) -> None:
    counted, uncounted, dataless = b"counted leak", b"uncounted leak", b"never stored"
    raw_put(tree.store, Table.CHUNKS, chunk_id(counted), CHUNK_HEADER + counted)
    raw_put(tree.store, Table.CHUNKREFS, chunk_id(counted), encode_chunkref(1, len(counted)))
    raw_put(tree.store, Table.CHUNKS, chunk_id(uncounted), CHUNK_HEADER + uncounted)
    raw_put(tree.store, Table.CHUNKREFS, chunk_id(dataless), encode_chunkref(3, len(dataless)))

    report = check.check(tree.store)
    assert sorted(p.kind for p in report.problems) == [
        "leaked-chunk", "leaked-chunk", "refcount-without-chunk"]
    repair_then_clean(tree.store, {"leaked-chunk", "refcount-without-chunk"})
    for data in (counted, uncounted, dataless):
        assert raw_get(tree.store, Table.CHUNKS, chunk_id(data)) is None
        assert raw_get(tree.store, Table.CHUNKREFS, chunk_id(data)) is None
    tree.assert_intact()


def test_wrong_chunk_length_in_count_row_and_block_map(tree: Tree) -> None:
    cid = block_chunk(tree.store, tree.ino["/dir/small"], 1)  # 700 - 512 = 188 bytes
    raw_put(tree.store, Table.CHUNKREFS, cid, encode_chunkref(1, 300))
    raw_put(tree.store, Table.BLOCKS, ino_u64_key(tree.ino["/dir/small"], 1), encode_block(cid, 400))

    report = check.check(tree.store)
    assert report.kinds() == {"chunk-length", "block-length"}
    assert problems(report, "block-length")[0].path == "/dir/small"
    repair_then_clean(tree.store, {"chunk-length", "block-length"})
    assert decode_block(raw_get(tree.store, Table.BLOCKS, ino_u64_key(tree.ino["/dir/small"], 1)))[1] == 188
    tree.assert_intact()


# --- patched blocks ------------------------------------------------------------------

def patch_file(tree: Tree, path: str, offset: int, data: bytes) -> None:
    """Write through the write-back cache, whose flush stores small writes as patches."""
    ino = tree.ino[path]
    tree.fs.dirty.limit_bytes = 1 << 20
    tree.fs.write(ino, offset, data)
    tree.fs.flush(ino)
    tree.fs.dirty.limit_bytes = 0
    content = bytearray(tree.content[path])
    content[offset:offset + len(data)] = data
    tree.content[path] = bytes(content)
    tree.store.commit()


@pytest.mark.damages_store("a patch chunk of /big flipped, to be found chunk by chunk", finds=("corrupt-chunk",))
def test_patched_blocks_are_checked_chunk_by_chunk(tree: Tree) -> None:
    patch_file(tree, "/big", BS + 10, b"a" * 20)
    patch_file(tree, "/big", BS + 100, b"b" * 30)
    row = decode_block(raw_get(tree.store, Table.BLOCKS, ino_u64_key(tree.ino["/big"], 1)))
    assert [(p.at, p.length) for p in row.patches] == [(10, 20), (100, 30)]
    report = check.check(tree.store)
    assert report.clean, report.lines()
    assert_counts_match_block_maps(tree.store)
    tree.assert_intact()

    raw = bytearray(raw_get(tree.store, Table.CHUNKS, row.patches[1].chunk))
    raw[-1] ^= 0x01
    raw_put(tree.store, Table.CHUNKS, row.patches[1].chunk, bytes(raw))
    report = check.check(tree.store)
    assert report.kinds() == {"corrupt-chunk"}
    assert report.problems[0].path == "/big" and row.patches[1].chunk.hex() in report.problems[0].message


def test_wrong_patch_length_is_fixed(tree: Tree) -> None:
    patch_file(tree, "/big", 2 * BS + 10, b"a" * 20)
    key = ino_u64_key(tree.ino["/big"], 2)
    row = decode_block(raw_get(tree.store, Table.BLOCKS, key))
    raw_put(tree.store, Table.BLOCKS, key, encode_block(row.chunk, row.length, [row.patches[0]._replace(length=25)]))

    report = check.check(tree.store)
    assert report.kinds() == {"block-length"}
    assert "patch 1 of block 2 is recorded as 25 bytes, its chunk holds 20" in report.problems[0].message
    repair_then_clean(tree.store, {"block-length"})
    assert decode_block(raw_get(tree.store, Table.BLOCKS, key)).patches[0].length == 20
    tree.assert_intact()


def test_a_patch_past_the_end_of_the_file_is_cut(tree: Tree) -> None:
    small = tree.ino["/dir/small"]                       # 700 bytes: block 1 holds 188
    patch_file(tree, "/dir/small", BS + 150, b"p" * 150)  # the file grows to BS + 300
    assert decode_block(raw_get(tree.store, Table.BLOCKS, ino_u64_key(small, 1))).patches
    edit_inode(tree.store, small, size=BS + 200)         # the base ends before, the patch 100 bytes past

    report = check.check(tree.store)
    assert report.kinds() == {"tail-beyond-eof"}
    assert "block 1 stores 100 bytes past the end" in report.problems[0].message
    repair_then_clean(tree.store, {"tail-beyond-eof"})
    assert decode_block(raw_get(tree.store, Table.BLOCKS, ino_u64_key(small, 1))).patches == ()
    tree.fs.setattr(small, SetAttr(size=2 * BS))        # growing must show zeros, not old bytes
    assert tree.read(small) == tree.content["/dir/small"][:BS + 200] + bytes(BS - 200)


# --- inodes and directories ----------------------------------------------------------

def test_deleted_inode_row_leaves_a_dangling_entry_and_blocks(tree: Tree) -> None:
    small = tree.ino["/dir/small"]
    own = {block_chunk(tree.store, small, 0), block_chunk(tree.store, small, 1)}
    raw_delete(tree.store, Table.INODES, ino_key(small))

    report = check.check(tree.store)
    # the volume's bytes in use counted the lost inode's st_blocks
    assert report.kinds() == {"dangling-entry", "dangling-block", "volume-state"}
    assert problems(report, "dangling-entry")[0].path == "/dir/small"
    repair_then_clean(tree.store, {"dangling-entry", "dangling-block", "volume-state"})
    assert tree.names(tree.ino["/dir"]) == [b"sub"]
    assert all(raw_get(tree.store, Table.CHUNKS, cid) is None for cid in own)
    tree.assert_intact("/big", "/dup", "/sparse")


def test_deleted_directory_row_sends_its_children_to_lost_found(tree: Tree) -> None:
    raw_delete(tree.store, Table.INODES, ino_key(tree.ino["/dir"]))

    report = check.check(tree.store)
    assert report.kinds() == {"dangling-entry", "stray-entry", "unreachable-inode", "nlink"}
    assert problems(report, "dangling-entry")[0].path == "/dir"
    lost = {p.ino for p in problems(report, "unreachable-inode")}
    assert lost == {local_of(tree.ino["/dir/small"]), local_of(tree.ino["/dir/sub"])}
    assert problems(report, "nlink")[0].path == "/"

    repair_then_clean(tree.store, {"dangling-entry", "stray-entry", "unreachable-inode", "nlink"})
    found = tree.lookup(tree.root, b"lost+found")
    small = tree.lookup(found, str(local_of(tree.ino["/dir/small"])).encode())
    assert tree.read(small) == tree.content["/dir/small"]
    sub = tree.lookup(found, str(local_of(tree.ino["/dir/sub"])).encode())
    assert tree.read(tree.lookup(sub, b"hard")) == tree.content["/big"]
    assert tree.inode(tree.root).nlink == 3  # . .. and lost+found
    assert tree.inode(found).nlink == 3


def test_unreachable_directory_is_linked_whole_into_lost_found(tree: Tree) -> None:
    drop_entry(tree.store, tree.root, b"dir")

    report = check.check(tree.store)
    assert report.kinds() == {"unreachable-inode", "nlink"}
    (lost,) = problems(report, "unreachable-inode")  # only the head of the lost subtree
    assert lost.ino == local_of(tree.ino["/dir"])
    assert lost.path == f"<inode {lost.ino}>"
    assert lost.message.startswith(f"volume vol: <inode {lost.ino}>: directory")

    repair_then_clean(tree.store, {"unreachable-inode", "nlink"})
    found = tree.lookup(tree.root, b"lost+found")
    moved = tree.lookup(found, str(lost.ino).encode())
    assert moved == tree.ino["/dir"]
    assert sorted(tree.names(moved)) == [b"small", b"sub"]
    tree.assert_intact()


def test_unreachable_file_gains_a_name_and_keeps_its_content(tree: Tree) -> None:
    drop_entry(tree.store, tree.root, b"sparse")

    report = check.check(tree.store)
    assert report.kinds() == {"unreachable-inode"}
    repair_then_clean(tree.store, {"unreachable-inode"})
    found = tree.lookup(tree.root, b"lost+found")
    assert tree.lookup(found, str(local_of(tree.ino["/sparse"])).encode()) == tree.ino["/sparse"]
    assert tree.inode(tree.ino["/sparse"]).nlink == 1
    tree.assert_intact()


def test_lost_subtree_is_headed_by_its_top_even_when_a_lower_inode_is_inside(tree: Tree) -> None:
    """/late/dir: /dir has the lower number, so the walk meets it first; /late must head."""
    late = _mkdir(tree, tree.root, b"late", "/late")
    tree.fs.rename(tree.root, b"dir", late, b"dir")
    drop_entry(tree.store, tree.root, b"late")

    report = check.check(tree.store)
    assert [p.ino for p in problems(report, "unreachable-inode")] == [local_of(late)]
    assert problems(report, "nlink")[0].path == "/"
    assert problems(report, "unreachable-inode")[0].path == f"<inode {local_of(late)}>"
    repair_then_clean(tree.store, {"unreachable-inode", "nlink"})
    found = tree.lookup(tree.root, b"lost+found")
    assert tree.names(found) == [str(local_of(late)).encode()]
    assert tree.lookup(tree.lookup(late, b"dir"), b"small") == tree.ino["/dir/small"]


def test_wrong_link_counts(tree: Tree) -> None:
    edit_inode(tree.store, tree.ino["/big"], nlink=5)
    edit_inode(tree.store, tree.ino["/dir"], nlink=2)

    report = check.check(tree.store)
    assert report.kinds() == {"nlink"}
    assert {p.path for p in report.problems} == {"/big", "/dir"}
    repair_then_clean(tree.store, {"nlink"})
    assert tree.inode(tree.ino["/big"]).nlink == 2  # /big and /dir/sub/hard
    assert tree.inode(tree.ino["/dir"]).nlink == 3  # . .. and sub


def test_readdir_order_rows_missing_and_stray(tree: Tree) -> None:
    d = tree.ino["/dir"]
    _child, cookie = decode_dirent(raw_get(tree.store, Table.DIRENTS, ino_name_key(d, b"small")))
    raw_delete(tree.store, Table.DIRORDER, ino_u64_key(d, cookie))
    raw_put(tree.store, Table.DIRORDER, ino_u64_key(d, 99), b"ghost")
    assert tree.names(d) == [b"sub"]

    report = check.check(tree.store)
    assert sorted(p.kind for p in report.problems) == ["dir-cookie", "dir-order", "dir-order"]
    assert {p.path for p in problems(report, "dir-order")} == {"/dir", "/dir/small"}
    repair_then_clean(tree.store, {"dir-cookie", "dir-order"})
    assert sorted(tree.names(d)) == [b"small", b"sub"]
    assert raw_get(tree.store, Table.DIRORDER, ino_u64_key(d, 99)) is None
    tree.fs.forget(tree.fs.create(d, b"later", 0o644, ROOT).ino, 1)  # takes a cookie above 99
    assert sorted(tree.names(d)) == [b"later", b"small", b"sub"]
    assert check.check(tree.store).clean


def test_readdir_order_row_describing_another_inode(tree: Tree) -> None:
    """A listing reads child and type from the order row alone: one naming the wrong
    inode is found and written again from the entry."""
    d = tree.ino["/dir"]
    small, cookie = decode_dirent(raw_get(tree.store, Table.DIRENTS, ino_name_key(d, b"small")))
    sub = local_of(tree.ino["/dir/sub"])
    raw_put(tree.store, Table.DIRORDER, ino_u64_key(d, cookie), encode_order(sub, stat.S_IFDIR, b"small"))
    listed = {name: (child, kind) for name, child, kind, _c in tree.fs.readdir_names(d, 0)}
    assert listed[b"small"] == (tree.ino["/dir/sub"], stat.S_IFDIR)

    report = check.check(tree.store)
    assert report.kinds() == {"dir-order"}
    assert {p.path for p in report.problems} == {"/dir/small"}
    repair_then_clean(tree.store, {"dir-order"})
    assert raw_get(tree.store, Table.DIRORDER, ino_u64_key(d, cookie)) == encode_order(
        small, stat.S_IFREG, b"small")


def test_damaged_readdir_order_row_is_replaced(tree: Tree) -> None:
    d = tree.ino["/dir"]
    _child, cookie = decode_dirent(raw_get(tree.store, Table.DIRENTS, ino_name_key(d, b"small")))
    raw_put(tree.store, Table.DIRORDER, ino_u64_key(d, cookie), b"\0\0\0")
    with pytest.raises(CorruptRecord):
        tree.names(d)

    report = check.check(tree.store)
    assert sorted(p.kind for p in report.problems) == ["corrupt-record", "dir-order"]
    repair_then_clean(tree.store, {"corrupt-record", "dir-order"})
    assert sorted(tree.names(d)) == [b"small", b"sub"]


def test_readdir_order_rows_of_schema_1_are_listed_and_clean(tree: Tree) -> None:
    """Rows written before the child and type were kept in them hold the name alone."""
    d = tree.ino["/dir"]
    for name in (b"small", b"sub"):
        _child, cookie = decode_dirent(raw_get(tree.store, Table.DIRENTS, ino_name_key(d, name)))
        raw_put(tree.store, Table.DIRORDER, ino_u64_key(d, cookie), name)
    listed = list(tree.fs.readdir_names(d, 0))
    assert [(name, child, kind) for name, child, kind, _c in listed] == [
        (b"sub", tree.ino["/dir/sub"], stat.S_IFDIR), (b"small", tree.ino["/dir/small"], stat.S_IFREG)]
    assert [name for name, _a, _c in tree.fs.readdir(d, 0)] == [b"sub", b"small"]
    assert check.check(tree.store).clean


def test_entry_sharing_a_cookie_gets_a_fresh_position(tree: Tree) -> None:
    d = tree.ino["/dir"]
    _child, sub_cookie = decode_dirent(raw_get(tree.store, Table.DIRENTS, ino_name_key(d, b"sub")))
    small_key = ino_name_key(d, b"small")
    child, cookie = decode_dirent(raw_get(tree.store, Table.DIRENTS, small_key))
    raw_delete(tree.store, Table.DIRORDER, ino_u64_key(d, cookie))
    raw_put(tree.store, Table.DIRENTS, small_key, raw_get(tree.store, Table.DIRENTS, small_key)[:8]
            + sub_cookie.to_bytes(8, "big"))

    assert check.check(tree.store).kinds() == {"dir-order"}
    repair_then_clean(tree.store, {"dir-order"})
    assert sorted(tree.names(d)) == [b"small", b"sub"]


# --- file contents --------------------------------------------------------------------

def test_stored_units_are_recomputed(tree: Tree) -> None:
    edit_inode(tree.store, tree.ino["/big"], stored_units=1)
    edit_inode(tree.store, tree.ino["/dir"], stored_units=8)

    report = check.check(tree.store)
    assert report.kinds() == {"stored-units", "volume-state"}  # bytes in use follow st_blocks
    assert {p.path for p in problems(report, "stored-units")} == {"/big", "/dir"}
    repair_then_clean(tree.store, {"stored-units", "volume-state"})
    assert tree.inode(tree.ino["/big"]).stored_units == 6
    assert tree.inode(tree.ino["/dir"]).stored_units == 0


def test_blocks_beyond_end_of_file_are_dropped(tree: Tree) -> None:
    big = tree.ino["/big"]
    edit_inode(tree.store, big, size=2 * BS)  # blocks 2..5 now lie past the end

    report = check.check(tree.store)
    assert report.kinds() == {"block-beyond-eof"}
    assert "blocks 2, 3, 4, 5 " in report.problems[0].message
    repair_then_clean(tree.store, {"block-beyond-eof"})
    assert tree.read(big) == tree.content["/big"][:2 * BS]
    assert tree.inode(big).stored_units == 2
    tree.assert_intact("/dup", "/dir/small", "/sparse")  # /dup shared those chunks


def test_bytes_past_the_end_in_the_last_block_are_cut(tree: Tree) -> None:
    big = tree.ino["/big"]
    edit_inode(tree.store, big, size=BS + 10)

    report = check.check(tree.store)
    assert report.kinds() == {"block-beyond-eof", "tail-beyond-eof"}
    repair_then_clean(tree.store, {"block-beyond-eof", "tail-beyond-eof"})
    tree.fs.setattr(big, SetAttr(size=2 * BS))  # growing must show zeros, not old bytes
    assert tree.read(big) == tree.content["/big"][:BS + 10] + bytes(BS - 10)
    tree.assert_intact("/dup")


def test_reserved_blocks_count_in_full_and_may_lie_past_the_end(tree: Tree) -> None:
    small = tree.ino["/dir/small"]                            # 700 bytes: blocks 0 and 1
    tree.fs.fallocate(small, FALLOC_FL_KEEP_SIZE, 0, 4 * BS)  # blocks 2 and 3 past the end
    tree.store.commit()
    assert check.check(tree.store).clean
    assert tree.inode(small).stored_units == 4

    edit_inode(tree.store, small, stored_units=3)             # as if one reservation were not counted
    report = check.check(tree.store)
    assert report.kinds() == {"stored-units", "volume-state"}
    repair_then_clean(tree.store, {"stored-units", "volume-state"})
    assert tree.inode(small).stored_units == 4

    edit_inode(tree.store, small, size=1)                     # block 1 stores bytes past the end now
    report = check.check(tree.store)
    assert report.kinds() == {"block-beyond-eof", "tail-beyond-eof"}
    assert "blocks 1 " in problems(report, "block-beyond-eof")[0].message  # not the reserved holes
    repair_then_clean(tree.store, {"block-beyond-eof", "tail-beyond-eof"})
    kept = sorted(int.from_bytes(k[8:16], "big") for k, _v in raw_rows(tree.store, Table.BLOCKS)
                  if k[:8] == ino_key(small))
    assert kept == [0, 2, 3]                                  # the reservations past the end stay
    assert tree.read(small) == tree.content["/dir/small"][:1]
    tree.assert_intact("/big", "/dup", "/sparse")


# --- rows without owners, counters, the catalog ----------------------------------------

def test_rows_of_a_slot_without_a_volume_are_dropped(tree: Tree) -> None:
    stray = make_ino(Slot(9), 1)
    shared = block_chunk(tree.store, tree.ino["/big"], 0)
    raw_put(tree.store, Table.INODES, ino_key(stray), raw_get(tree.store, Table.INODES, ino_key(tree.root)))
    raw_put(tree.store, Table.BLOCKS, ino_u64_key(stray, 0), encode_block(shared, BS))

    report = check.check(tree.store)
    assert report.kinds() == {"stray-rows", "refcount"}  # the stray row is a reference too
    assert check.check(tree.store, "vol").kinds() == {"refcount"}  # counted, never judged
    repair_then_clean(tree.store, {"stray-rows", "refcount"})
    assert refcount(tree.store, shared) == 2
    tree.assert_intact()


@pytest.mark.replicated
def test_change_log_and_counters_of_a_slot_without_a_volume_are_dropped(tree: Tree) -> None:
    raw_put(tree.store, Table.CHANGELOG, changelog.log_key(Slot(5), 1), b"anything")
    raw_put(tree.store, Table.VOLSTATE, pack_u64(5), VolumeState().encode())
    raw_put(tree.store, Table.META, b"next_slot", pack_u64(6))

    report = check.check(tree.store)
    assert report.kinds() == {"stray-rows"}
    assert sorted(p.message for p in report.problems) == [
        "1 row of table changelog belong to slot 5, which holds no volume",
        "1 row of table volstate belong to slot 5, which holds no volume"]
    repair_then_clean(tree.store, {"stray-rows"})
    assert raw_get(tree.store, Table.VOLSTATE, pack_u64(tree.slot)) is not None
    assert len(raw_rows(tree.store, Table.CHANGELOG)) > 0  # the volume's own log stays


@pytest.mark.damages_store("/sym's target row deleted, which repair cannot guess", finds=("symlink-target",))
def test_side_rows_of_missing_inodes_and_symlink_without_target(tree: Tree) -> None:
    ghost = make_ino(tree.slot, 4242)
    raw_put(tree.store, Table.XATTRS, ino_name_key(ghost, b"user.x"), b"1")
    sym = tree.lookup(tree.root, b"sym")
    raw_delete(tree.store, Table.SYMLINKS, ino_key(sym))

    report = check.check(tree.store, repair=True)
    assert report.kinds() == {"stray-row", "symlink-target"}
    assert [p.repaired for p in problems(report, "symlink-target")] == [False]
    assert problems(report, "symlink-target")[0].path == "/sym"
    assert raw_get(tree.store, Table.XATTRS, ino_name_key(ghost, b"user.x")) is None


def test_orphan_rows(tree: Tree) -> None:
    raw_put(tree.store, Table.ORPHANS, ino_key(make_ino(tree.slot, 4242)), b"")
    raw_put(tree.store, Table.ORPHANS, ino_key(tree.ino["/dir/small"]), b"")

    report = check.check(tree.store)
    assert report.kinds() == {"stray-orphan", "orphan-linked"}
    assert problems(report, "orphan-linked")[0].path == "/dir/small"
    repair_then_clean(tree.store, {"stray-orphan", "orphan-linked"})
    assert tree.fs.recover() == 0  # a restart destroys nothing
    tree.assert_intact()


@pytest.mark.replicated
def test_volume_counters_behind_what_is_used(tree: Tree) -> None:
    key = pack_u64(tree.slot)
    state = VolumeState.decode(raw_get(tree.store, Table.VOLSTATE, key))
    raw_put(tree.store, Table.VOLSTATE, key, VolumeState(2, 1, 0).encode())

    assert check.check(tree.store).kinds() == {"volume-state"}
    repair_then_clean(tree.store, {"volume-state"})
    repaired = VolumeState.decode(raw_get(tree.store, Table.VOLSTATE, key))
    assert repaired.next_local == state.next_local
    assert repaired.next_seq == state.next_seq  # one above the last change-log record
    fresh = tree.fs.create(tree.root, b"fresh", 0o644, ROOT).ino
    tree.fs.forget(fresh, 1)
    assert fresh not in tree.ino.values()
    tree.assert_intact()


@pytest.mark.damages_store("slot 7 names a volume whose record is lost; repair reports it, never guesses",
                           finds=("catalog",))
def test_catalog_slots_must_name_their_volumes_back(tree: Tree) -> None:
    raw_delete(tree.store, Table.VOLSLOTS, pack_u64(tree.slot))
    raw_put(tree.store, Table.VOLSLOTS, pack_u64(7), b"gone")
    raw_put(tree.store, Table.INODES, ino_key(make_ino(Slot(7), 1)),
            raw_get(tree.store, Table.INODES, ino_key(tree.root)))

    report = check.check(tree.store, repair=True)
    assert sorted((p.kind, p.repaired) for p in report.problems) == [
        ("catalog", False), ("catalog", True), ("catalog", True)]
    assert raw_get(tree.store, Table.VOLSLOTS, pack_u64(tree.slot)) == b"vol"
    assert raw_get(tree.store, Table.META, b"next_slot") == pack_u64(8)  # the next volume: no clash
    # slot 7's rows belong to a volume whose record is lost: reported, never deleted as strays
    assert raw_get(tree.store, Table.INODES, ino_key(make_ino(Slot(7), 1))) is not None


@pytest.mark.damages_store("/dir/small's inode record overwritten, reported and never guessed",
                           finds=("corrupt-record",))
def test_damaged_inode_record_is_reported_not_guessed(tree: Tree) -> None:
    raw_put(tree.store, Table.INODES, ino_key(tree.ino["/dir/small"]), b"\x09garbage")

    report = check.check(tree.store, repair=True)
    assert report.kinds() == {"corrupt-record", "volume-state"}  # a damaged inode holds no bytes
    assert report.problems[0].path == "/dir/small"
    assert not report.problems[0].repaired


@pytest.mark.replicated
def test_repairs_of_volume_tables_are_logged(tree: Tree) -> None:
    edit_inode(tree.store, tree.ino["/big"], nlink=9)
    with tree.store.op(adds_data=False) as op:
        before = max(seq for seq, _change in changelog.read(op, tree.slot))
    check.check(tree.store, repair=True)
    with tree.store.op(adds_data=False) as op:
        logged = [change for seq, change in changelog.read(op, tree.slot) if seq > before]
    assert len(logged) == 1
    rows = logged[0].rows
    assert [(table, key) for table, _kind, key, _value in rows] == [
        (Table.INODES, pack_u64(local_of(tree.ino["/big"])))]
    assert Inode.decode(rows[0][3]).nlink == 2


# --- several volumes, snapshots, reporting ---------------------------------------------

def test_one_volume_hashes_its_own_chunks_but_counts_all(store: Store, fs: Filesystem) -> None:
    a = build(store, fs, "a", seed=1)
    b = build(store, fs, "b", seed=1)  # same bytes: every chunk is shared by both volumes
    own = b"only in b" * 30
    fs.write(b.ino["/dir/small"], 0, own)
    store.commit()
    assert check.check(store).clean
    cid = block_chunk(store, b.ino["/dir/small"], 0)
    assert refcount(store, cid) == 1
    raw = bytearray(raw_get(store, Table.CHUNKS, cid))
    raw[-1] ^= 1
    raw_put(store, Table.CHUNKS, cid, bytes(raw))

    only_a = check.check(store, "a")
    assert only_a.clean, only_a.lines()  # shared counts are 4 (a and b), and right
    assert only_a.volumes == 1 and only_a.blocks == 15
    only_b = check.check(store, "b")
    assert only_b.kinds() == {"corrupt-chunk"}
    assert only_b.problems[0].volume == "b"
    assert check.check(store).kinds() == {"corrupt-chunk"}
    a.assert_intact()


def test_snapshot_check_runs_in_another_thread_while_the_store_writes(tree: Tree) -> None:
    result: list[check.Report] = []
    worker = threading.Thread(target=lambda: result.append(check.check_snapshot(tree.store)))
    tree.fs.forget(tree.fs.create(tree.root, b"uncommitted", 0o644, ROOT).ino, 1)
    worker.start()
    worker.join()
    (report,) = result
    assert report.clean
    assert report.files == 4  # the last commit, not the batch
    assert check.check(tree.store).files == 5


@pytest.mark.damages_store("/dir/small's st_blocks zeroed, for a read-only snapshot check to find",
                           finds=("stored-units", "volume-state"))
def test_snapshot_check_finds_damage(tree: Tree) -> None:
    edit_inode(tree.store, tree.ino["/dir/small"], stored_units=0)
    report = check.check_snapshot(tree.store, "vol")
    assert report.kinds() == {"stored-units", "volume-state"}
    assert not report.problems[0].repaired


@pytest.mark.damages_store("a wrong reference count, for the report to show unrepaired", finds=("refcount",))
def test_progress_and_json(tree: Tree) -> None:
    raw_put(tree.store, Table.CHUNKREFS, block_chunk(tree.store, tree.ino["/big"], 0), encode_chunkref(9, BS))
    seen: list[tuple[str, int, int]] = []
    report = check.check(tree.store, progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert ("volumes", 1, 1) in seen
    assert any(phase == "chunks" for phase, _d, _t in seen)
    out = json.loads(json.dumps(report.to_json()))
    assert out["clean"] is False and out["unrepaired"] == 1
    assert out["problems"][0]["kind"] == "refcount"
    assert out["counts"]["volumes"] == 1
    assert out["lines"][0].startswith("refcount: chunk ")
    assert out["lines"][-1] == ("checked 1 volume, 8 inodes (3 directories, 4 files), 15 blocks, "
                                f"9 chunks ({report.bytes_verified} bytes hashed): 1 problem, 0 repaired")


@pytest.mark.damages_store("the volume's root directory deleted, which repair cannot recreate", finds=("missing-root",))
def test_root_must_exist(tree: Tree) -> None:
    raw_delete(tree.store, Table.INODES, ino_key(tree.root))
    report = check.check(tree.store, repair=True)
    assert "missing-root" in report.kinds()
    assert not problems(report, "missing-root")[0].repaired
    assert stat.S_ISDIR(Inode.decode(raw_get(tree.store, Table.INODES, ino_key(tree.ino["/dir"]))).mode)


@pytest.mark.damages_store("a chunk of /dir/small cut short, its bytes left as they are", finds=("corrupt-chunk",))
def test_a_repair_after_a_snapshot_check_hashes_nothing_and_finds_the_same(tree: Tree) -> None:
    """The daemon's fsck --repair: a check of a snapshot hashes every chunk (in a worker
    thread), then, since there is something to repair, a pass on the store's thread takes
    its damaged chunks as damaged and hashes none. The second pass finds and fixes what a
    full check would, and does not mistake the cut-short chunk's length for the truth."""
    cid = block_chunk(tree.store, tree.ino["/dir/small"], 1)
    good_length = decode_chunkref(raw_get(tree.store, Table.CHUNKREFS, cid))[1]
    raw_put(tree.store, Table.CHUNKS, cid, raw_get(tree.store, Table.CHUNKS, cid)[:-7])
    edit_inode(tree.store, tree.ino["/big"], nlink=5)
    expected = {"corrupt-chunk", "nlink"}

    first = check.check_snapshot(tree.store)
    assert first.kinds() == expected and first.repairable
    assert first.damaged_chunks == {cid} and first.bytes_verified > 0
    second = check.check(tree.store, repair=True, damaged=first.damaged_chunks)
    assert second.kinds() == expected and second.bytes_verified == 0
    assert sorted((p.kind, p.repaired) for p in second.problems) == [("corrupt-chunk", False), ("nlink", True)]
    assert decode_chunkref(raw_get(tree.store, Table.CHUNKREFS, cid))[1] == good_length
    after = check.check(tree.store)
    assert after.kinds() == {"corrupt-chunk"} and not after.repairable
    tree.assert_intact("/dup", "/sparse")

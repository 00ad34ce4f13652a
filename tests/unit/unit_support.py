"""Helpers shared by the unit tests: a volume on a real store, and plain views of its tables.

The views read the store's tables straight through the current write batch, so they see
every operation so far (committed or not), never go through ``Store.op`` (which would
append nothing but could be refused on a full disk), and do not count kernel lookups.
``corrupt`` writes through the batch the same way, to damage a chunk behind the
filesystem's back.
"""

from __future__ import annotations

import collections
import stat
from dataclasses import dataclass

import pytest

from cfs import check
from cfs.codec import Change, Inode, VolumeRecord, decode_block, decode_chunkref
from cfs.fs import Attr, Caller, Filesystem, SetAttr
from cfs.store import Store, Table
from cfs.store.changelog import log_key
from cfs.types import ChunkId, InodeId, Slot, volume_root

BLOCK_SIZE = 4096
"""Tiny blocks, so that a few KiB of test data crosses block boundaries."""

ROOT = Caller()
OLD = 1_000_000_000
"""A time long past, set on inodes so that a test sees whether an operation moved it."""


def marked_replicated(request: pytest.FixtureRequest) -> bool:
    """Whether the test asking for a fixture is marked ``@pytest.mark.replicated``: its
    volume is then created replicated, and keeps its change log (conftest.py)."""
    return request.node.get_closest_marker("replicated") is not None


def assert_check_finds(store: Store, *kinds: str) -> None:
    """A full check of the store (``cfs.check``, no repair) finds exactly ``kinds``, one per
    problem: none, the store is clean."""
    _assert_finds(check.check(store), kinds)


def _assert_finds(report: check.Report, kinds: tuple[str, ...]) -> None:
    found = sorted(p.kind for p in report.problems)
    wanted = f"exactly {sorted(kinds)}" if kinds else "nothing"
    assert found == sorted(kinds), f"the check of the store was to find {wanted}:\n" + "\n".join(report.lines())


def check_at_teardown(request: pytest.FixtureRequest, store: Store) -> None:
    """The last step of a test on a volume (fixtures ``vol``, and ``tree`` in test_check):
    a full check of the store, which must find nothing.

    It runs in the fixture's teardown, while the store is still open, so that an operation
    that leaves the store inconsistent fails the test that ran it, whatever the test
    asserted. A test opts out only explicitly, and says why (conftest.py registers both):

    * ``@pytest.mark.damages_store(reason, finds=(kind, ...))``: the test damages the store
      on purpose and leaves it so; the check must then find exactly those problems (one
      kind per problem), no more, no fewer;
    * ``@pytest.mark.closes_store(reason)``: the test closes the store itself, so there is
      nothing open left to check (a test that opens it again checks that store itself).

    A test that closes the store without saying so fails here rather than going unchecked,
    and so does a marker that no longer holds (a store left open, damage no longer found).
    """
    closes = request.node.get_closest_marker("closes_store")
    damages = request.node.get_closest_marker("damages_store")
    for marker in (closes, damages):
        if marker is not None and not (marker.args and str(marker.args[0]).strip()):
            pytest.fail(f"@pytest.mark.{marker.name} needs a reason, its first argument")
    if damages is not None and not damages.kwargs.get("finds"):
        pytest.fail("@pytest.mark.damages_store needs finds=(kind, ...): what the check must find")
    kinds = () if damages is None else tuple(damages.kwargs["finds"])
    try:
        report = check.check(store)
    except Exception as exc:  # a closed store raises lmdb.Error, which no test imports
        if closes is not None:
            return
        pytest.fail(f"the teardown check of the store could not run ({exc!r}); if the test closes "
                    "the store itself, it says so with @pytest.mark.closes_store(reason)")
    if closes is not None:
        pytest.fail("the test is marked closes_store, but its store is still open: drop the marker")
    _assert_finds(report, kinds)


def rows(store: Store, table: Table, lo: bytes = b"", hi: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """Every row of ``table`` with lo <= key < hi (hi None: to the end), in key order."""
    cursor = store.batch.cursor(db=store.db(table))
    out: list[tuple[bytes, bytes]] = []
    if not cursor.set_range(lo):
        return out
    for key, value in cursor:
        if hi is not None and key >= hi:
            break
        out.append((bytes(key), bytes(value)))
    return out


def chunk_refs(store: Store) -> dict[ChunkId, int]:
    """Reference count of every chunk, as CHUNKREFS records it."""
    return {ChunkId(key): decode_chunkref(value)[0] for key, value in rows(store, Table.CHUNKREFS)}


def stored_chunks(store: Store) -> set[ChunkId]:
    return {ChunkId(key) for key, _value in rows(store, Table.CHUNKS)}


def block_refs(store: Store) -> collections.Counter[ChunkId]:
    """How many times block-map entries, over every volume, name each chunk (a base and
    each patch once)."""
    return collections.Counter(cid for _key, value in rows(store, Table.BLOCKS)
                               for cid, _length in decode_block(value).chunks())


def assert_chunks_consistent(store: Store) -> None:
    """Refcounts equal the block-map references, and exactly the referenced chunks are stored."""
    refs = chunk_refs(store)
    assert refs == dict(block_refs(store))
    assert stored_chunks(store) == set(refs)


def changes(store: Store, slot: Slot) -> list[tuple[int, Change]]:
    """(sequence, decoded change) of every retained change-log record of a volume."""
    out = []
    for key, value in rows(store, Table.CHANGELOG, log_key(slot, 0), log_key(Slot(slot + 1), 0)):
        out.append((int.from_bytes(key[8:16], "big"), Change.decode(value)))
    return out


def is_orphan(store: Store, ino: InodeId) -> bool:
    return store.batch.get(ino.to_bytes(8, "big"), db=store.db(Table.ORPHANS)) is not None


def has_inode(store: Store, ino: InodeId) -> bool:
    return store.batch.get(ino.to_bytes(8, "big"), db=store.db(Table.INODES)) is not None


@dataclass
class Vol:
    """One volume of a store, with shorthands for what most tests do to it.

    Every shorthand that creates an inode leaves the kernel lookup the core counted for
    it, as the kernel would hold it. ``create`` closes the file it opened unless asked to
    keep it open (an open handle is what keeps an unlinked file alive).
    """

    store: Store
    fs: Filesystem
    record: VolumeRecord

    @property
    def root(self) -> InodeId:
        return volume_root(self.record.slot)

    @property
    def slot(self) -> Slot:
        return self.record.slot

    @property
    def block_size(self) -> int:
        return self.record.block_size

    def create(self, name: bytes, content: bytes = b"", parent: InodeId | None = None,
               mode: int = 0o644, caller: Caller = ROOT, keep_open: bool = False) -> InodeId:
        attr = self.fs.create(self.root if parent is None else parent, name, mode, caller)
        if content:
            assert self.fs.write(attr.ino, 0, content) == len(content)
        if not keep_open:
            self.fs.release(attr.ino)
        return attr.ino

    def mkdir(self, name: bytes, parent: InodeId | None = None, mode: int = 0o755,
              caller: Caller = ROOT) -> InodeId:
        return self.fs.mkdir(self.root if parent is None else parent, name, mode, caller).ino

    def read_all(self, ino: InodeId) -> bytes:
        size = self.inode(ino).size
        data = self.fs.read(ino, 0, size + 1)
        assert len(data) == size
        return data

    def attr(self, ino: InodeId) -> Attr:
        return self.fs.getattr(ino)

    def inode(self, ino: InodeId) -> Inode:
        return self.fs.getattr(ino).inode

    def find(self, parent: InodeId, name: bytes) -> InodeId:
        """The inode ``name`` names, without leaving a kernel lookup behind."""
        ino = self.fs.lookup(parent, name).ino
        self.fs.forget(ino, 1)
        return ino

    def exists(self, parent: InodeId, name: bytes) -> bool:
        return name in self.names(parent)

    def names(self, directory: InodeId) -> list[bytes]:
        return [name for name, _attr, _cookie in self.fs.readdir(directory, 0)]

    def is_dir(self, ino: InodeId) -> bool:
        return stat.S_ISDIR(self.inode(ino).mode)


def units(content: bytes | bytearray, block_size: int = BLOCK_SIZE) -> int:
    """st_blocks of a file: 512-byte units of its blocks with trailing zeros cut off."""
    total = 0
    for start in range(0, len(content), block_size):
        total += (len(bytes(content[start:start + block_size]).rstrip(b"\0")) + 511) // 512
    return total


def age(vol: Vol, ino: InodeId) -> None:
    vol.fs.setattr(ino, SetAttr(atime_ns=OLD, mtime_ns=OLD, ctime_ns=OLD))


def page(fs: Filesystem, directory: InodeId, after: int, count: int) -> list[tuple[bytes, Attr, int]]:
    """One readdir call of the kernel: at most ``count`` entries."""
    return fs.readdir(directory, after, limit=count)


def corrupt(store: Store, cid: bytes, raw: bytes) -> None:
    """Overwrite a chunk's stored value behind the filesystem's back."""
    store.batch.put(cid, raw, db=store.db(Table.CHUNKS))


def chunk_of_block(store: Store, ino: InodeId, n: int) -> bytes:
    raw = store.batch.get(ino.to_bytes(8, "big") + n.to_bytes(8, "big"), db=store.db(Table.BLOCKS))
    assert raw is not None, f"block {n} is a hole"
    return bytes(raw[:16])

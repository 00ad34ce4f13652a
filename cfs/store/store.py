"""The LMDB environment of a node and its group-commit write batch.

Design (docs/DESIGN.md, "Write path" and "Crash safety"):

* One LMDB environment per node holds chunks and metadata, so a filesystem operation
  changes both in one transaction. The map is read with the kernel's read-ahead on: a
  chunk is a run of contiguous pages, and without read-ahead a cold read faults them
  in one 4 KiB page at a time.
* Writes go into one long-lived write transaction, the *batch*. Each filesystem
  operation runs in a nested transaction inside it (``Store.op``): it either merges into
  the batch whole or is rolled back whole, so an error halfway through an operation
  never leaves half of it behind.
* The batch is committed, durably (LMDB's default: data pages synced, then the meta
  page), when fsync/fsyncdir/syncfs asks, when it holds ``commit_bytes`` of new data, and
  by the daemon's timer. A crash (kill -9, power loss) therefore loses at most the
  operations since the last commit, never a part of one, and never anything fsync'd.
* Low space: before an operation that adds data, the free space of the disk plus the
  free pages inside LMDB is compared with what the batch may need. Near the limit the
  store commits after every operation, so a write that does not fit fails alone with
  ENOSPC; below the reserve, operations that add data are refused while deletes still
  run, so space can always be freed.

* Reads that change nothing (lookup, getattr, read, readdir, getxattr, ...) use ``view()``:
  the batch itself, read directly, so they see every uncommitted operation but pay for
  no nested transaction and no change-log record.
* Chunk bytes that were read and verified are kept in a bounded cache (``chunk_cache``,
  cfs.store.chunkcache): chunks are content-addressed, so an entry is never stale.

* The reserve is also held as a file (cfs.store.reserve), given up when something
  else fills the disk, so deletes and control operations still find room.

Thread rule: an LMDB write transaction belongs to the thread that opened it. Every
method here that writes, and ``view()``, must be called from the thread that created
the ``Store`` (the trio thread in the daemon). ``reading()`` is the one exception: a
read-only snapshot of the last commit for a block, which may await or run in any one
other thread (the environment is opened with MDB_NOTLS); the map is not grown
(remapped under it) until the block ends.

No module outside ``cfs.store`` touches an LMDB transaction or cursor: they read through
``View`` (``get``, ``range``, ``seek``, ``keys``, ``entries``) and write through ``Op``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import lmdb

from cfs.codec import ROW_DELETE, ROW_PUT, Change, ReplState, pack_u64, usage_delta
from cfs.store import changelog, residency
from cfs.store.chunkcache import ChunkCache
from cfs.store.reserve import ReserveFile
from cfs.errors import CorruptRecord, NoSpace, ReadOnly
from cfs.store.tables import PER_VOLUME, SCHEMA_VERSION, UPGRADABLE_SCHEMAS, Table
from cfs.types import LOCAL_MASK, Slot

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class StoreConfig:
    commit_bytes: int = 32 * MiB
    """Commit the batch once it holds this many bytes of new chunk data."""
    reserve_bytes: int | None = None
    """Space kept free for deletes and control operations; None: 1% of the disk, between
    8 MiB and 256 MiB."""
    hold_reserve: bool = False
    """Hold the reserve as a file too (cfs.store.reserve), so that other programs filling
    the disk cannot take it: the daemon does; tests and tools opening a store need not."""
    changelog_retain: int = 10_000
    """Change-log records kept per volume beyond what replicas have checkpointed."""
    min_map_size: int = 64 * GiB
    mapped_limit_bytes: int = 128 * MiB
    """Resident pages of the map above which they are unmapped (cfs.store.residency:
    they stay in the kernel's page cache); checked as operations work, and at each
    commit against twice this. 0: never."""
    chunk_cache_bytes: int = 64 * MiB
    """Verified chunk bytes kept in memory for reads (0: none)."""


class Store:
    """Owns the LMDB environment, its sub-databases and the current write batch."""

    def __init__(self, path: Path, config: StoreConfig = StoreConfig()) -> None:
        self.path = Path(path)
        self.config = config
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = lmdb.open(
            str(self.path), map_size=self._wanted_map_size(), max_dbs=len(Table) + 2,
            subdir=True, sync=True, metasync=True, readahead=True, meminit=False,
            lock=True,
        )
        with self.env.begin(write=True) as txn:
            self.dbs = {t: self.env.open_db(t.name.lower().encode(), txn=txn) for t in Table}
        self._batch: lmdb.Transaction[bytes] | None = None
        self._in_op = False
        self.pending_bytes = 0
        self.low_space = False
        self._last_space_check = 0.0
        self._bytes_since_check = 0
        self._headroom = 0
        self.commits = 0
        self.dedup_bytes = 0
        """Bytes not stored since the store was opened because their chunk was there
        already (``chunks.put``), counted as operations end (a rolled-back one does not count)."""
        self.frozen_slots: set[Slot] = set()
        """Volumes this node must not change: replicas of another node's writer, and
        volumes whose lease was lost. Any logged write to them raises ReadOnly (EROFS),
        so nothing but replayed records (cfs.store.replica) changes them."""
        self._replicated: dict[Slot, bool] = {}
        """Whether each volume keeps its change log, as its ``volrepl`` row said when last
        read (``replicated``). Every write of such a row through an ``Op`` drops the entry,
        and a failed commit, which rolls back the batch, drops them all."""
        self.logless: set[Slot] = set()
        """Volumes known to hold no change-log records: a trim found none (changelog.append).
        An ``Op`` that writes a record of one drops it; a failed commit drops them all."""
        self.chunk_cache = ChunkCache(config.chunk_cache_bytes)
        self.mapped = residency.MappedPages(self.path / "data.mdb", config.mapped_limit_bytes)
        self._readers: set[object] = set()
        """Tokens of the snapshots open in ``reading()``: the map is not grown meanwhile."""
        self._map_lock = threading.Lock()
        """Held while a reader registers and opens its snapshot, and while the map is
        checked and grown: the two never overlap."""
        self.reserve_file = ReserveFile(self.path / "reserve", self.reserve_bytes() if config.hold_reserve else 0)
        self.reserve_file.adjust(self._statvfs_free())
        self._check_schema()

    # --- lifetime ----------------------------------------------------------------

    def _wanted_map_size(self) -> int:
        """The map is address space, not disk: size it to the disk so it never fills first."""
        st = os.statvfs(self.path)
        disk = st.f_blocks * st.f_frsize
        return max(self.config.min_map_size, 2 * disk)

    def _check_schema(self) -> None:
        with self.op(adds_data=False) as op:  # a start on a full disk must get past this
            raw = op.get(Table.META, b"schema")
            schema = None if raw is None else int.from_bytes(raw, "big")
            if schema is None:
                op.put(Table.META, b"schema", pack_u64(SCHEMA_VERSION))
                op.put(Table.META, b"node_id", uuid.uuid4().bytes)
                op.put(Table.META, b"next_slot", pack_u64(1))
            elif schema in UPGRADABLE_SCHEMAS:
                log.info("store at %s: schema %d marked %d (its rows are read as they are)",
                         self.path, schema, SCHEMA_VERSION)
                op.put(Table.META, b"schema", pack_u64(SCHEMA_VERSION))
            elif schema != SCHEMA_VERSION:
                raise CorruptRecord(f"store at {self.path} has schema {schema}, this cfs reads schema {SCHEMA_VERSION}")
        self.commit()

    def close(self) -> None:
        if self._batch is not None:
            self.commit()
        self.env.close()
        self.mapped.close()

    # --- transactions ------------------------------------------------------------

    @property
    def batch(self) -> lmdb.Transaction[bytes]:
        """The current write batch; reads through it see every uncommitted operation."""
        if self._batch is None:
            self._batch = self.env.begin(write=True)
        return self._batch

    def db(self, table: Table) -> lmdb._Database:
        return self.dbs[table]

    def view(self) -> "View":
        """Read the batch as it is now, uncommitted operations included, writing nothing.

        For handlers that only read: no nested transaction, no admission check, no
        change-log record. Use it and drop it before the next operation or commit (the
        batch it reads ends with the commit); an operation that needs to write after
        reading opens ``op()`` and reads again there, or trusts what it read, as no
        other operation can run in between on this thread.
        """
        assert not self._in_op, "a view cannot be read while an operation is open"
        return View(self, self.batch)

    def op(self, *, adds_data: bool = True, expect_bytes: int = 0) -> "Op":
        """Run one filesystem operation atomically inside the batch: ``with store.op() as op:``.

        ``adds_data=False`` marks operations that free space (unlink, truncate down,
        rmdir): they run even below the reserve, so a full disk can be emptied.
        ``expect_bytes`` is data the caller holds that will reach the store soon (the
        write-back cache): it counts toward the low-space decision.

        The ``Op`` is its own context manager (``Op.__exit__`` commits it into the batch,
        or on any exception aborts it): every operation goes through here, and a
        generator-based one cost ~2 us of each.
        """
        assert not self._in_op, "operations do not nest"
        self._admit(adds_data, expect_bytes)
        op = Op(self, self.env.begin(write=True, parent=self.batch))
        self._in_op = True
        return op

    def _op_ended(self, op: "Op") -> None:
        """After an operation committed into the batch: count its data, commit when due."""
        self.pending_bytes += op.added_bytes
        self.dedup_bytes += op.deduped_bytes
        self._bytes_since_check += op.added_bytes
        if self.low_space or self.pending_bytes >= self.config.commit_bytes:
            self.commit()

    def commit(self) -> None:
        """Make every operation so far durable. A failure rolls the whole batch back."""
        # LMDB would commit an open operation's child transaction with the batch, half done.
        assert not self._in_op, "commit inside an operation"
        if self._batch is None:
            return
        batch, self._batch = self._batch, None
        self.pending_bytes = 0
        try:
            batch.commit()
        except lmdb.Error as exc:
            self._replicated.clear()  # the batch is gone: what was read from it with it
            self.logless.clear()
            # A write cut short by a full disk comes back from LMDB as EIO: judge by the disk.
            if _is_no_space(exc) or self._disk_free() < self.reserve_bytes():
                log.error("commit failed, disk full: the uncommitted operations were rolled back")
                self.low_space = True
                raise NoSpace("no space left on the store's disk") from None
            raise
        self.commits += 1
        self._grow_map_if_needed()
        # Commits also follow reads, which fault back in what is released: twice the room.
        self.mapped.check(2 * self.config.mapped_limit_bytes)

    def replicated(self, view: "View", slot: Slot) -> bool:
        """Whether the volume keeps its change log (``changelog.replicated``), read once and
        remembered: every operation that changes a volume asks, the answer rarely changes.
        An operation that wrote the row itself reads it but does not remember it, as it
        may still be rolled back."""
        known = self._replicated.get(slot)
        if known is None:
            known = changelog.replicated(view, slot)
            if not (isinstance(view, Op) and slot in view.replication_changed):
                self._replicated[slot] = known
        return known

    def forget_replicated(self, slot: Slot) -> None:
        self._replicated.pop(slot, None)

    @contextlib.contextmanager
    def reading(self) -> Iterator["View"]:
        """A read-only view of the last commit for the duration of the block, which may
        await or run in another thread (one thread at a time).

        LMDB may remap (grow) the map only while no transaction of the process is open,
        so growth waits for a commit after the last such snapshot is closed. The reader
        is registered before its snapshot opens, under the lock that growth takes too:
        registered after, a commit on the store's thread could grow the map between the
        two, under a snapshot it did not know about."""
        token = object()
        with self._map_lock:
            self._readers.add(token)
            try:
                txn = self.env.begin(write=False)
            except BaseException:
                self._readers.discard(token)
                raise
        try:
            yield View(self, txn)
        finally:
            txn.abort()
            with self._map_lock:
                self._readers.discard(token)

    # --- space -------------------------------------------------------------------

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(self.path)

    def reserve_bytes(self) -> int:
        if self.config.reserve_bytes is not None:
            return self.config.reserve_bytes
        st = os.statvfs(self.path)
        return min(256 * MiB, max(8 * MiB, st.f_blocks * st.f_frsize // 100))

    def free_bytes(self) -> int:
        """Space new data can take: free disk space plus free pages inside LMDB."""
        return self._disk_free() + self.free_pages() * self.page_size()

    def _disk_free(self) -> int:
        """Free space the store may use: the disk's, less what the reserve file lacks
        while it is given up (cfs.store.reserve)."""
        return self._statvfs_free() - self.reserve_file.missing

    def make_room(self) -> None:
        """Give up the reserve file now if the disk is full (cfs.store.reserve): before
        work that needs a few blocks outside the store, which no admission check precedes
        (the embedded coordinator's file, a lock file)."""
        self.reserve_file.adjust(self._statvfs_free())

    def _statvfs_free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def page_size(self) -> int:
        return int(self.env.stat()["psize"])

    def used_pages(self) -> int:
        txn = self.batch
        used = 0
        for table in Table:
            st = txn.stat(self.dbs[table])
            used += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        main = self.env.stat()
        return used + main["branch_pages"] + main["leaf_pages"] + main["overflow_pages"] + 2

    def free_pages(self) -> int:
        return max(0, int(self.env.info()["last_pgno"]) + 1 - self.used_pages())

    def admit(self, *, expect_bytes: int = 0) -> None:
        """The space check of an operation that adds data, for work that adds it without
        one: a write into the write-back cache, whose ``expect_bytes`` reach the store at
        the next flush. Raises NoSpace as ``op`` would; near a full disk it sets
        ``low_space``, and the caller then writes through."""
        self._admit(True, expect_bytes)

    def _admit(self, adds_data: bool, expect_bytes: int = 0) -> None:
        """Decide, cheaply most of the time, whether the next operation fits.

        The disk is asked again after 4 MiB of new data, after half a second, whenever
        space is low, and whenever data expected from a cache could use up half of the
        headroom seen last time.
        """
        now = time.monotonic()
        if (not self.low_space and self._bytes_since_check < 4 * MiB and now - self._last_space_check < 0.5
                and 2 * (self.pending_bytes + expect_bytes) < self._headroom):
            return
        self._last_space_check = now
        self._bytes_since_check = 0
        on_disk = self._statvfs_free()
        self.reserve_file.adjust(on_disk)
        disk_free = self._disk_free() - self.pending_bytes - expect_bytes
        in_map = self.free_pages() * self.page_size()
        reserve = self.reserve_bytes()
        self._headroom = disk_free + expect_bytes - reserve - self.config.commit_bytes
        was_low = self.low_space
        # LMDB reuses a freed page only once no snapshot can see it, two commits later at
        # the earliest, so a batch may have to grow the file however many pages are free:
        # whether a whole batch fits is a question for the disk alone.
        self.low_space = disk_free < reserve + self.config.commit_bytes + 8 * MiB
        if self.low_space and not was_low:
            log.warning("store disk nearly full (%d MiB free): committing every operation", disk_free // MiB)
            self.commit()
        # The reserve has to hold wherever the new data lands. LMDB grows the file when its
        # free pages are not reusable yet or not contiguous enough for a chunk, so counting
        # them with the disk's let a fill eat the disk's reserve and then a delete, whose
        # copied B-tree pages need room too, failed with ENOSPC. An operation that adds data
        # runs if the disk keeps the reserve even when all of it goes to the disk, or if the
        # map's free pages can take all of it and still hold the reserve.
        if adds_data and disk_free < reserve and in_map - self.pending_bytes - expect_bytes < reserve:
            raise NoSpace(f"store disk full: {max(disk_free, 0) // MiB} MiB free on the disk and "
                          f"{in_map // MiB} MiB inside the store, {reserve // MiB} MiB reserved for deletes")
        # Data that fits in the map's free pages can still grow the file (pages not reusable
        # yet, or too scattered for a chunk), and with the reserve file given up nothing else
        # keeps those blocks for deletes: a second fill after a delete ate them to the last
        # one, and then the next delete, whose freed-page list wants contiguous pages, failed
        # with ENOSPC. So data stops where the reserve file would give itself up.
        given_up = self.reserve_file.missing
        if adds_data and given_up and on_disk < given_up // 2:
            raise NoSpace(f"store disk full: {on_disk // MiB} MiB free on the disk, the "
                          f"{reserve // MiB} MiB reserve for deletes given up and half used")

    def _grow_map_if_needed(self) -> None:
        with self._map_lock:
            if self._readers:
                return  # a snapshot is open (``reading``): grown at a later commit
            info = self.env.info()
            used = (int(info["last_pgno"]) + 1) * self.page_size()
            if used > int(info["map_size"]) * 3 // 4:
                new = max(int(info["map_size"]) * 2, self._wanted_map_size())
                log.info("growing the LMDB map from %d to %d GiB", info["map_size"] // GiB, new // GiB)
                self.env.set_mapsize(new)

    # --- node metadata -----------------------------------------------------------

    def node_id(self) -> bytes:
        raw = self.view().get(Table.META, b"node_id")
        assert raw is not None
        return bytes(raw)


def key_range(cursor: lmdb.Cursor[bytes], lo: bytes, hi: bytes,
              mapped: residency.MappedPages | None = None) -> Iterator[tuple[bytes, bytes]]:
    """The rows of ``cursor``'s table with lo <= key < hi, in key order; every 64 rows
    (about a leaf page) are noted to ``mapped``, so a long scan cannot fill the RSS."""
    if not cursor.set_range(lo):
        return
    rows = 0
    for key, value in cursor:
        if key >= hi:
            return
        yield key, value
        rows += 1
        if mapped is not None and not rows & 63:
            mapped.note()


def _is_no_space(exc: lmdb.Error) -> bool:
    text = str(exc)
    return isinstance(exc, lmdb.MapFullError) or os.strerror(errno.ENOSPC) in text or "ENOSPC" in text


class View:
    """Reads of one transaction: the batch (``Store.view``), or an operation's (``Op``).

    Everything that only reads the store takes a ``View``; an ``Op`` is one too.
    """

    def __init__(self, store: Store, txn: lmdb.Transaction[bytes]) -> None:
        self.store = store
        self.txn = txn

    def get(self, table: Table, key: bytes) -> bytes | None:
        return self.txn.get(key, db=self.store.dbs[table])

    def range(self, table: Table, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Rows with lo <= key < hi, in key order. Do not write to ``table`` while iterating."""
        return key_range(self.txn.cursor(db=self.store.dbs[table]), lo, hi)

    def rows(self, table: Table) -> Iterator[tuple[bytes, bytes]]:
        """Every row of ``table``, in key order (the node tables, which are small)."""
        return iter(self.txn.cursor(db=self.store.dbs[table]))

    def seek(self, table: Table, lo: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Rows from the first key >= lo on, in key order, for the caller to stop: one
        call for a loop that ends on its own condition (a listing reads its rows through
        this, with no generator between it and the cursor)."""
        cursor = self.txn.cursor(db=self.store.dbs[table])
        return cursor.iternext() if cursor.set_range(lo) else iter(())

    def keys(self, table: Table, lo: bytes, hi: bytes) -> Iterator[bytes]:
        """Keys with lo <= key < hi: a sweep over CHUNKS never touches the chunks' pages."""
        cursor = self.txn.cursor(db=self.store.dbs[table])
        if not cursor.set_range(lo):
            return
        for key in cursor.iternext(keys=True, values=False):
            if key >= hi:
                return
            yield key

    def entries(self, table: Table) -> int:
        """How many rows ``table`` has (LMDB keeps the count: no scan)."""
        return int(self.txn.stat(self.store.dbs[table])["entries"])

    def usage_change(self, slot: Slot) -> int:
        """Bytes in use this transaction changed in the volume: none, for a view (see ``Op``)."""
        return 0


class Op(View):
    """One filesystem operation's view of the store: reads see the batch, writes are logged.

    Every put/delete on a per-volume table is recorded; when the operation finishes, the
    rows are appended as one ``Change`` to that volume's change log, in the same
    transaction, so the log and the tables never disagree.

    Every ``inodes`` row written, logged or not, also moves its volume's bytes in use by
    ``usage_delta`` of the old and new record; the sum per volume goes into its
    ``VolumeState.used_bytes`` when the operation finishes (``changelog.add_usage``).
    So whoever writes inode rows through an ``Op`` (the core, fsck, a replica's replay)
    keeps the counter right without doing anything, and must not add the delta again.
    """

    def __init__(self, store: Store, txn: lmdb.Transaction[bytes]) -> None:
        super().__init__(store, txn)
        self.added_bytes = 0
        self.deduped_bytes = 0
        self._rows: dict[int, list[tuple[int, int, bytes, bytes]] | None] = {}
        """Per volume changed: the rows to record, or None if it keeps no change log."""
        self.replication_changed: set[int] = set()
        """Volumes whose ``volrepl`` row this operation wrote."""
        self._usage: dict[int, int] = {}
        self.time_ns = time.time_ns()

    def __enter__(self) -> "Op":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        store = self.store
        try:
            if exc_type is None:
                try:
                    self.finish()
                except BaseException:
                    self.txn.abort()
                    raise
                try:
                    self.txn.commit()
                except lmdb.MapFullError:
                    raise NoSpace("the store map is full") from None
            else:
                self.txn.abort()
                return
        finally:
            store._in_op = False
            store.mapped.note()
        store._op_ended(self)

    def get(self, table: Table, key: bytes) -> bytes | None:
        if table is Table.CHUNKS:  # an operation's reads count toward the map's pages
            self.store.mapped.note()
        return super().get(table, key)

    def range(self, table: Table, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        """``View.range``, its rows noted to the map's page governor every 64."""
        return key_range(self.txn.cursor(db=self.store.dbs[table]), lo, hi, self.store.mapped)

    def put(self, table: Table, key: bytes, value: bytes, *, logged: bool = True) -> None:
        if table is Table.INODES:
            self._count_usage(key, self.txn.get(key, db=self.store.dbs[table]), value)
        elif table is Table.VOLREPL:
            self._replication_changes(key, ReplState.decode(value).replicated)
        elif table is Table.CHANGELOG:
            self.store.logless.discard(Slot(int.from_bytes(key[:8], "big")))
        try:
            self.txn.put(key, value, db=self.store.dbs[table])
        except lmdb.MapFullError:
            raise NoSpace("the store map is full") from None
        if table is Table.CHUNKS:
            self.added_bytes += len(value)
            self.store.mapped.note()
        else:
            self.added_bytes += 64
        if logged and table in PER_VOLUME:
            self._log(table, ROW_PUT, key, value)

    def delete(self, table: Table, key: bytes, *, logged: bool = True) -> bool:
        """Delete one row; ``logged=False`` for node-level housekeeping such as volume removal."""
        if table is Table.INODES:
            self._count_usage(key, self.txn.get(key, db=self.store.dbs[table]), None)
        elif table is Table.VOLREPL:
            self._replication_changes(key, False)
        if table is Table.CHUNKS:
            self.store.mapped.note()
        found = self.txn.delete(key, db=self.store.dbs[table])
        if found and logged and table in PER_VOLUME:
            self._log(table, ROW_DELETE, key, b"")
        return found

    def log_event(self, slot: Slot, event: int, key: bytes, value: bytes) -> None:
        """Append a row of no table to the volume's change record: an event that replicas
        replay by doing the same (a snapshot: cfs.store.snapshots). Refused, as any
        logged change, on a volume this node may not change."""
        if slot in self.store.frozen_slots:
            raise ReadOnly("this node does not hold the volume's write lease")
        if slot not in self._rows:
            self._rows[slot] = [] if self.store.replicated(self, slot) else None
        rows = self._rows[slot]
        if rows is not None:
            rows.append((event, ROW_PUT, key, value))

    def usage_change(self, slot: Slot) -> int:
        """Bytes in use this operation has added to the volume so far (negative: freed)."""
        return self._usage.get(slot, 0)

    def _count_usage(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        delta = usage_delta(old, new)
        if delta:
            slot = int.from_bytes(key[:8], "big") >> 40
            self._usage[slot] = self._usage.get(slot, 0) + delta

    def _replication_changes(self, key: bytes, replicated: bool) -> None:
        slot = int.from_bytes(key[:8], "big")
        # Rows already left uncollected cannot be recorded: whoever turns replication on
        # writes the row before the operation changes the volume (cfs.store.replica).
        assert not (replicated and slot in self._rows and self._rows[slot] is None), \
            "replication turned on after the operation changed the volume"
        self.replication_changed.add(slot)
        self.store.forget_replicated(Slot(slot))

    def _log(self, table: Table, kind: int, key: bytes, value: bytes) -> None:
        ino = int.from_bytes(key[:8], "big")
        slot = ino >> 40
        if slot in self.store.frozen_slots:
            raise ReadOnly("this node does not hold the volume's write lease")
        if slot in self._rows:
            rows = self._rows[slot]
        else:  # the operation's first row of the volume: a volume without replicas keeps none
            rows = self._rows[slot] = [] if self.store.replicated(self, Slot(slot)) else None
        if rows is not None:
            local_key = (ino & LOCAL_MASK).to_bytes(8, "big") + key[8:]
            rows.append((int(table), kind, local_key, value))

    def finish(self) -> None:
        for slot, rows in self._rows.items():
            change = None if rows is None else Change(self.time_ns, rows)
            changelog.append(self, Slot(slot), change, self.store.config.changelog_retain)
        for slot in [s for s in self._usage if s not in self._rows]:
            changelog.add_usage(self, Slot(slot))  # unlogged rows: volume removal, a replica's replay
        self._rows.clear()
        self._usage.clear()

"""The node's own records, and the one door the daemon goes through to read or change them.

The filesystem core (cfs.fs) changes volumes; everything else the node keeps in its
store is here: the volume catalog, the mounts it should have, the Docker plugin's
holders, the volumes it is removing, each volume's replication state and change log as
peers see them, the chunks peers push or fetch, and the store's space counters. The
daemon (mountd) calls ``NodeRecords`` and never opens a store operation itself, so the
rules below are kept in one place:

* **Reads never write.** They read the current batch through ``Store.view()``: no
  nested transaction and no space admission, so ``cfs status``, ``volume ls`` and the
  like answer on a full disk.
* **Writes say whether they add data.** Control writes (a mount record, a fence, a
  checkpoint, a removal) are small and run as ``adds_data=False``: below the reserve,
  so a full disk can still be unmounted and emptied. Writes that bring data (replayed
  records, copies, chunks) are admitted like the core's and fail with ``NoSpace``.
* **Durable where a promise is made.** A method that commits says so: what a peer is
  told it holds, and what the node must find again after a crash (mounts, holders,
  fences, removals) is on disk when it returns.

Thread rule: call it on the store's thread (the trio thread in the daemon), between
awaits, like ``Store`` itself. ``copy_source`` is the exception: its snapshot may be
read across awaits.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from cfs.codec import ROW_PUT, Change, VolumeRecord, decode_block, pack_u64, unpack_u64
from cfs.errors import ChunkNotHere, Corrupted, CorruptRecord, VolumeNotFound
from cfs.store import catalog, changelog, chunks, replica
from cfs.store.store import Store, View
from cfs.store.tables import Table
from cfs.types import ChunkId, Slot, VolumeId

MiB = 1 << 20


@dataclass(frozen=True)
class Removal:
    """A volume removal begun and not yet finished: what is still to go (cfs volume rm)."""

    name: str
    local_id: VolumeId | None
    """This node's copy, if it had one."""
    cluster_id: VolumeId | None
    """The cluster catalog's entry, if there was one."""


class CopySource:
    """One volume as of one commit, for a whole-volume copy to a peer (``copy_source``)."""

    def __init__(self, view: View, record: VolumeRecord) -> None:
        self._view = view
        self.seq, self.next_local = replica.copy_origin(view, record.slot)
        """The copy holds the volume after record ``seq``; ``next_local``: its next inode."""
        self.used_bytes = changelog.used_bytes(view, record.slot)
        """The volume's bytes in use as of the copy (a copy's progress is measured in them)."""
        self._slot = record.slot

    def rows(self) -> Iterator[tuple[int, bytes, bytes]]:
        """Every row of the volume: (table, volume-local key, value), table by table."""
        return replica.copy_rows(self._view, self._slot)

    def chunks(self, ids: Iterable[bytes]) -> tuple[list[tuple[ChunkId, bytes]], list[ChunkId]]:
        """The verified bytes of the chunks among ``ids`` this node holds, and the ids of
        those it holds damaged (left out: the receiver fetches them from another node)."""
        return _held(self._view, ids)


class NodeRecords:
    """The node daemon's door into the store (see the module doc)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- the node ---------------------------------------------------------------------

    def node_id(self) -> bytes:
        return self.store.node_id()

    def space(self) -> dict[str, Any]:
        """The store's disk and counters, for ``cfs status``."""
        st = self.store.statvfs()
        return {
            "path": str(self.store.path), "disk_bytes": st.f_blocks * st.f_frsize,
            "free_bytes": self.store.free_bytes(), "reserve_bytes": self.store.reserve_bytes(),
            "reserve_file_bytes": self.store.reserve_file.held, "commits": self.store.commits,
            "pending_bytes": self.store.pending_bytes, "low_space": self.store.low_space,
        }

    def metrics(self) -> dict[str, int]:
        """The store's numbers for the node's metrics (mountd.metrics): its disk, the LMDB
        map and pages in it, the chunk cache, the bytes deduplication kept from storing.
        Cheap enough for every scrape: a statvfs and a page count of each table."""
        store = self.store
        st = store.statvfs()
        page = store.page_size()
        cache = store.chunk_cache.statistics()
        return {
            "disk_bytes": st.f_blocks * st.f_frsize, "disk_free_bytes": st.f_bavail * st.f_frsize,
            "free_bytes": store.free_bytes(), "reserve_bytes": store.reserve_bytes(),
            "map_bytes": int(store.env.info()["map_size"]), "used_pages_bytes": store.used_pages() * page,
            "free_pages_bytes": store.free_pages() * page, "commits": store.commits,
            "dedup_bytes": store.dedup_bytes, "cache_hits": cache["hits"], "cache_misses": cache["misses"],
            "cache_bytes": cache["bytes"], "cache_limit_bytes": cache["limit_bytes"],
        }

    def capacity(self) -> int:
        """Bytes of the store's disk, as the node announces to the cluster."""
        st = self.store.statvfs()
        return st.f_blocks * st.f_frsize

    def chunk_count(self) -> int:
        return self.store.view().entries(Table.CHUNKREFS)

    def commit(self) -> None:
        """Make everything so far durable (before a reply that promises it)."""
        self.store.commit()

    def make_room(self) -> None:
        """On a full disk, give up the reserve file before a control operation writes
        outside the store (the embedded coordinator's state file)."""
        self.store.make_room()

    # --- the volume catalog -----------------------------------------------------------

    def volumes(self) -> list[VolumeRecord]:
        return list(catalog.all_volumes(self.store.view()))

    def volume(self, name: str) -> VolumeRecord:
        """The local volume ``name``; raises VolumeNotFound."""
        return catalog.get(self.store.view(), name)

    def find(self, name: str) -> VolumeRecord | None:
        try:
            return self.volume(name)
        except VolumeNotFound:
            return None

    def volume_by_id(self, volume_id: VolumeId) -> VolumeRecord | None:
        return catalog.by_id(self.store.view(), volume_id)

    def add_copy(self, name: str, block_size: int, options: dict[str, str], *,
                 volume_id: VolumeId, created_ns: int) -> VolumeRecord:
        """A catalog entry for this node's copy of a volume made elsewhere, frozen (only
        replayed records change it); durable. Its rows arrive by replay or copy."""
        with self.store.op(adds_data=False) as op:
            record = catalog.create(op, name, block_size, dict(options), volume_id=volume_id,
                                    created_ns=created_ns)
        self.store.frozen_slots.add(record.slot)
        self.store.commit()
        return record

    def freeze(self, slot: Slot) -> None:
        """Refuse changes to the volume (EROFS) but replayed records: not written here."""
        self.store.frozen_slots.add(slot)

    def thaw(self, slot: Slot) -> None:
        """This node writes the volume now."""
        self.store.frozen_slots.discard(slot)

    # --- mounts -----------------------------------------------------------------------

    def mounts(self) -> dict[str, tuple[str, bool]]:
        """mount point -> (volume name, read-only), as the node should have them."""
        return catalog.recorded_mounts(self.store.view())

    def record_mount(self, path: str, name: str, read_only: bool) -> None:
        """Remember a mount, durably: it is bound again after a restart."""
        with self.store.op(adds_data=False) as op:
            catalog.record_mount(op, path, name, read_only)
        self.store.commit()

    def drop_mount(self, path: str) -> None:
        """Forget a mount, durably."""
        with self.store.op(adds_data=False) as op:
            catalog.drop_mount(op, path)
        self.store.commit()

    # --- the Docker plugin's holders --------------------------------------------------

    def plugin_holders(self, name: str) -> set[str]:
        return catalog.plugin_holders(self.store.view(), name)

    def all_plugin_holders(self) -> dict[str, set[str]]:
        return catalog.all_plugin_holders(self.store.view())

    def set_plugin_holders(self, name: str, ids: set[str]) -> None:
        """Record who holds volume ``name`` (empty: nobody), durably."""
        with self.store.op(adds_data=False) as op:
            catalog.set_plugin_holders(op, name, ids)
        self.store.commit()

    # --- removals ---------------------------------------------------------------------

    def begin_removal(self, removal: Removal) -> None:
        """Remember, durably, that a volume is being removed: a crash before the removal
        ends leaves this record, and the next start finishes it (``removals``)."""
        value = json.dumps({"name": removal.name,
                            "local": removal.local_id.hex() if removal.local_id else None,
                            "cluster": removal.cluster_id.hex() if removal.cluster_id else None}).encode()
        with self.store.op(adds_data=False) as op:
            op.put(Table.REMOVALS, removal.name.encode("utf-8", "surrogateescape"), value)
        self.store.commit()

    def end_removal(self, name: str) -> None:
        with self.store.op(adds_data=False) as op:
            op.delete(Table.REMOVALS, name.encode("utf-8", "surrogateescape"))
        self.store.commit()

    def removals(self) -> list[Removal]:
        """Removals a crash cut short, to be finished."""
        out = []
        for key, raw in self.store.view().rows(Table.REMOVALS):
            try:
                data = json.loads(bytes(raw))
                local, cluster = data["local"], data["cluster"]
                out.append(Removal(str(data["name"]), VolumeId(bytes.fromhex(local)) if local else None,
                                   VolumeId(bytes.fromhex(cluster)) if cluster else None))
            except (ValueError, KeyError, TypeError) as exc:
                raise CorruptRecord(f"removal record {bytes(key)!r}: {exc}") from None
        return out

    # --- publications: snapshots and clones made here, to enter the catalog -------------

    def begin_publication(self, name: str, replicas: int) -> None:
        """Remember, durably, that a snapshot or clone ``name`` is being made here, to be
        entered in the catalog with ``replicas`` copies: a crash before that leaves this
        record, and the next start publishes what was made (``publications``)."""
        with self.store.op(adds_data=False) as op:
            op.put(Table.PUBLICATIONS, name.encode("utf-8", "surrogateescape"), pack_u64(replicas))
        self.store.commit()

    def end_publication(self, name: str) -> None:
        with self.store.op(adds_data=False) as op:
            op.delete(Table.PUBLICATIONS, name.encode("utf-8", "surrogateescape"))
        self.store.commit()

    def publications(self) -> dict[str, int]:
        """Name -> replicas of the snapshots and clones a crash kept out of the catalog."""
        return {bytes(key).decode("utf-8", "surrogateescape"): unpack_u64(value)
                for key, value in self.store.view().rows(Table.PUBLICATIONS)}

    # --- replication state ------------------------------------------------------------

    def epoch_seen(self, slot: Slot) -> int:
        """The newest lease epoch seen for the volume here; 0: never written under a lease."""
        return replica.state(self.store.view(), slot).epoch

    def applied_seq(self, slot: Slot) -> int:
        """The last change-log record this node holds for the volume (0: none)."""
        return replica.applied_seq(self.store.view(), slot)

    def incomplete(self, slot: Slot) -> bool:
        """Whether this node's copy is an interrupted whole-volume copy."""
        return replica.incomplete(self.store.view(), slot)

    def fence_of(self, volume_id: VolumeId) -> int:
        """The newest epoch a peer fenced a volume with that this node holds no copy of."""
        return replica.fence_of(self.store.view(), volume_id)

    def remember_fence(self, volume_id: VolumeId, epoch: int) -> None:
        """A fence for a volume without a copy here, durably."""
        with self.store.op(adds_data=False) as op:
            replica.remember_fence(op, volume_id, epoch)
        self.store.commit()

    def admit_epoch(self, record: VolumeRecord, epoch: int, *, durable: bool = False) -> None:
        """Refuse a stale epoch (StaleEpoch), remember a newer one; ``durable``: a fence
        that must hold across a crash of this node."""
        with self.store.op(adds_data=False) as op:
            replica.admit_epoch(op, record, epoch)
        if durable:
            self.store.commit()

    def start_writing(self, record: VolumeRecord, epoch: int, replicated: bool) -> None:
        """This node writes the volume under lease ``epoch``: remember the epoch and
        whether replicas hold its log, durably."""
        with self.store.op(adds_data=False) as op:
            replica.admit_epoch(op, record, epoch)
            replica.set_replicated(op, record.slot, replicated)
        self.store.commit()

    def acknowledge(self, slot: Slot, seq: int) -> None:
        """Every replica holds the volume's records up to ``seq``: move its checkpoint."""
        with self.store.op(adds_data=False) as op:
            replica.acknowledge(op, slot, seq, self.store.config.changelog_retain)

    # --- the change log, as peers see it ----------------------------------------------

    def records_after(self, slot: Slot, after: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Encoded records after ``after``; raises LogTrimmed if they are gone."""
        return replica.records_after(self.store.view(), slot, after, max_bytes)

    def chunks_named(self, records: list[tuple[int, bytes]]) -> list[tuple[ChunkId, bytes]]:
        """The bytes of the chunks the records' block rows name, that this node holds."""
        view = self.store.view()
        seen: set[bytes] = set()
        out = []
        for _seq, raw in records:
            for table, kind, _key, value in Change.decode(raw).rows:
                if table != Table.BLOCKS or kind != ROW_PUT:
                    continue
                for cid, _length in decode_block(value).chunks():
                    if cid not in seen:
                        seen.add(cid)
                        try:
                            out.append((cid, chunks.get(view, cid)))
                        except ChunkNotHere:
                            pass  # not here either (a moved volume): the replica marks it remote
        return out

    def apply_records(self, record: VolumeRecord, epoch: int, records: Iterable[tuple[int, bytes]], *,
                      durable: bool) -> int:
        """Replay a writer's records in one operation; the last sequence now held.
        ``durable``: committed before returning (a replica's promise to its writer)."""
        retain = self.store.config.changelog_retain
        with self.store.op() as op:
            for seq, raw in records:
                replica.apply(op, record, epoch, seq, bytes(raw), retain)
            applied = replica.applied_seq(op, record.slot)
        if durable:
            self.store.commit()
        return applied

    def receive_copy(self, record: VolumeRecord, epoch: int, copy_id: int, seq: int, *, first: bool,
                     last: bool, rows: list[tuple[int, bytes, bytes]], next_local: int) -> None:
        """One part of a whole-volume copy into this node's copy (cfs.store.replica);
        the last part is committed before returning."""
        args = (record, epoch, copy_id, seq)
        with self.store.op() as op:
            if first:
                replica.begin_copy(op, *args, time.time_ns())
            replica.add_copy_rows(op, *args, rows)
            if last:
                replica.finish_copy(op, *args, next_local)
        if last:
            self.store.commit()

    @contextlib.contextmanager
    def copy_source(self, record: VolumeRecord) -> Iterator[CopySource]:
        """The volume as of a commit made now, for a whole-volume copy: a snapshot that
        does not change while the parts go out across awaits. Raises ReplicationError if
        this copy is incomplete itself."""
        self.store.commit()
        with self.store.reading() as view:
            yield CopySource(view, record)

    # --- chunks for peers -------------------------------------------------------------

    def get_chunks(self, ids: Iterable[ChunkId], max_bytes: int
                   ) -> tuple[list[tuple[ChunkId, bytes]], list[ChunkId], list[ChunkId]]:
        """(found, missing, damaged) for a peer's GetChunks: verified bytes of the chunks
        held here, up to about ``max_bytes`` (ids past it are in no list: asked again);
        the ids not held (or held by replicas only); the ids held damaged."""
        view = self.store.view()
        found: list[tuple[ChunkId, bytes]] = []
        missing: list[ChunkId] = []
        damaged: list[ChunkId] = []
        size = 0
        for cid in ids:
            if size >= max_bytes:
                break
            try:
                data = chunks.get(view, cid)
            except ChunkNotHere:  # missing, or held by replicas only: the bytes are not here either
                missing.append(cid)
                continue
            except Corrupted:
                damaged.append(cid)
                continue
            found.append((cid, data))
            size += len(data)
        return found, missing, damaged

    def stage_chunks(self, pushed: list[tuple[ChunkId, bytes]]) -> None:
        """Keep chunks a writer pushed ahead of the records naming them (verified)."""
        now = time.time_ns()
        with self.store.op(expect_bytes=sum(len(d) for _c, d in pushed)) as op:
            for cid, data in pushed:
                chunks.stage(op, cid, bytes(data), now)

    def fill_chunks(self, fetched: list[tuple[ChunkId, bytes]], wanted: set[ChunkId], *,
                    repair: bool) -> list[ChunkId]:
        """Store the verified bytes of the wanted chunks that only replicas held, and with
        ``repair`` of those whose copy here is missing or damaged too (a read failed on
        them). Returns the ids repaired: referenced here but not marked remote."""
        repaired = []
        with self.store.op(expect_bytes=sum(len(d) for _c, d in fetched)) as op:
            for cid, data in fetched:
                if cid not in wanted or not chunks.is_referenced(op, cid):
                    continue
                if not chunks.is_remote(op, cid):
                    if not repair:
                        continue
                    repaired.append(cid)
                chunks.fill(op, cid, bytes(data))
        return repaired

    def remote_chunks(self, slot: Slot) -> list[ChunkId]:
        """The chunks the volume's blocks name that only replicas hold, each once."""
        view = self.store.view()
        found: dict[ChunkId, None] = {}
        for _key, value in view.range(Table.BLOCKS, *catalog.slot_range(slot)):
            for cid, _length in decode_block(value).chunks():
                if cid not in found and chunks.is_remote(view, cid):
                    found[cid] = None
        return list(found)

    def remote_chunk_count(self) -> int:
        return self.store.view().entries(Table.REMOTE)


def _held(view: View, ids: Iterable[bytes]) -> tuple[list[tuple[ChunkId, bytes]], list[ChunkId]]:
    found: list[tuple[ChunkId, bytes]] = []
    damaged: list[ChunkId] = []
    for raw_id in ids:
        cid = ChunkId(raw_id)
        try:
            found.append((cid, chunks.get(view, cid)))
        except ChunkNotHere:
            pass  # remote here too: the target marks it remote
        except Corrupted:
            damaged.append(cid)
    return found, damaged


"""This node's part in the cluster: registration, members, peers, and its volume writers.

``ClusterNode`` owns the node's coordination session, its member table (``Members``),
its peer connections (``PeerPool``, ``PeerServer``), the progress of its bulk transfers
(``Transfers``: copies, healing, catch-up; ``cfs status`` and metrics read it) and the
table of the volumes it writes: one ``VolumeWriter`` each (mountd.cluster.writer), which owns that volume's
lease, fencing, catch-up and shipping. The same object runs a single node (the embedded
``LocalCoordinator``: one node, every volume has one copy, no peers) and a cluster
member (``EtcdCoordinator``, a peer listener, replicators, the self-healer).

While not written here, a volume's slot stays frozen in a cluster, so nothing but
replayed records changes a replica.

Snapshots are taken where the volume is written (``create_snapshot``): by this node if it
writes the volume or may take it for the moment, otherwise by the live node that writes
it, asked with ``TakeSnapshot``. A volume attached to this node (CSI's
ControllerPublishVolume) and held by a node it is not attached to is taken over when
mounted here (``open_volume``). The size limit is the catalog's: raised there
(``expand_volume``), taken by the node that writes the volume at each open and when asked
(``take_size_limit``).

Removing a volume (``remove_volume``) is two changes, in the coordinator's catalog and in
the local store, that a crash could separate; the next start would then bring the
volume back from its local copy. So the removal is recorded in the store first
(``NodeRecords.begin_removal``), and a start finishes any it finds before anything else.

Concurrency: runs on the trio thread. A per-name lock serialises opening, closing,
removing and dropping a volume; store access happens between awaits.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import trio

from cfs.codec import VolumeRecord
from cfs.coord.api import Coordinator, NodeInfo, NodeSession, VolumeSpec
from cfs.errors import (
    CfsError, LeaseHeld, ReplicationError, Unavailable, UserError, VolumeBusy, VolumeExists, VolumeNotFound,
)
from cfs.faults import crash_point
from cfs.fs import Filesystem, quota
from cfs.names import is_snapshot_name, snapshot_name, split_snapshot_name
from cfs.repl.wire import ErrorCode, SnapshotTaken, TakeSnapshot, VolumeInfo, VolumeInfoReply
from cfs.store import NodeRecords, Removal
from cfs.types import ChunkId, NodeId, Slot, VolumeId
from mountd.cluster.fetch import ChunkFetcher
from mountd.cluster.handler import PeerHandler
from mountd.cluster.healer import Healer
from mountd.cluster.links import LinkCounters, PeerError, PeerPool, PeerServer, PeerUnavailable
from mountd.cluster.members import Members
from mountd.cluster.progress import TransferKind, Transfers
from mountd.cluster.replicator import send_copy
from mountd.cluster.stopping import Stopping
from mountd.cluster.writer import (
    RELEASE_TIMEOUT, Eviction, VolumeWriter, WriterContext, WriterState, open_read_only,
)

log = logging.getLogger(__name__)

STATS_EVERY = 5
"""Seconds between publications of the node's capacity and chunk count."""
CLONE_SNAPSHOT_PREFIX = "clone-"
"""Snapshots a node takes to clone a volume another node writes: ``clone-<hash of the clone's name>``."""
SNAPSHOT_TIMEOUT = 600.0
"""Seconds a node waits for the writer it asked to take a snapshot (a snapshot costs a walk
of the volume's metadata: a volume of millions of files takes a while)."""
CONDITION_TIMEOUT = 5.0
"""Seconds a peer has to say whether it holds a copy, when a volume's condition is asked."""
SNAPSHOT_GRACE_NS = 300 * 10**9
"""A replica takes a snapshot as it replays its writer's log, before the writer enters it
in the catalog: its copy is not dropped as removed before this much time has passed."""

@dataclass(frozen=True)
class ClusterConfig:
    """How the node takes part in a cluster (``--etcd`` and friends)."""

    etcd: str | None = None
    """etcd endpoint (``http://host:port``); None runs the embedded single node."""
    listen: tuple[str, int] | None = None
    advertise: str | None = None
    secret: bytes | None = None
    name: str = "cfs"
    replication_timeout: float = 10.0
    """Seconds fsync waits for a replica before the volume is marked degraded."""
    lease_ttl: float = 10.0

    @property
    def clustered(self) -> bool:
        return self.etcd is not None


class ClusterNode:
    def __init__(self, fs: Filesystem, records: NodeRecords, coord: Coordinator, config: ClusterConfig,
                 evictions: trio.MemorySendChannel[Eviction], stopping: Stopping | None = None) -> None:
        self.fs = fs
        self.stopping = stopping or Stopping()
        """The node's stop, which bounds every wait of ``stop`` and of the writers' closes."""
        self.records = records
        self.coord = coord
        self.config = config
        self.node_id = NodeId(records.node_id())
        self.members = Members(self.node_id, coord)
        self.links = LinkCounters()
        """Traffic of every peer connection, inbound and outbound (for the node's metrics)."""
        self.pool = PeerPool(self.node_id, config.secret or b"", config.name, self.members.address,
                             counters=self.links)
        self.fetcher = ChunkFetcher(records, self.pool, self.members)
        self.transfers = Transfers()
        """Copies, heal rounds and catch-ups in flight here (and the last few that ended)."""
        self._context = WriterContext(records, fs, self.pool, self.members, self.fetcher, evictions,
                                      config.clustered, config.replication_timeout, self.transfers,
                                      self.stopping)
        self.session: NodeSession | None = None
        self._writers: dict[VolumeId, VolumeWriter] = {}
        """The volumes this node writes (open, fenced or closing)."""
        self._readers: dict[str, int] = {}
        """Snapshots mounted here (or being mounted), by name: their users. A snapshot has
        no writer, so this is what keeps the healer from dropping a copy being read
        (``drop_copy``)."""
        self._by_slot: dict[Slot, VolumeWriter] = {}
        """The last writer of each slot. In a cluster a closed one stays, so that a late
        fsync of a file opened under it fails (``replicated``)."""
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self._leaving = False
        """``stop`` unregisters: the registration's end is no loss then."""
        self.healer = Healer(records, self.members, self.pool, coord, writes=self.writes,
                             drop_copy=self.drop_copy, interval=max(2.0, config.lease_ttl / 2),
                             replication_timeout=config.replication_timeout, transfers=self.transfers)
        self.handler = PeerHandler(records, adopt=self._adopt, writing_epoch=self._writing_epoch,
                                   on_fenced=self._fenced, release=self._release, push_copy=self._push_copy,
                                   take_snapshot=self._take_snapshot, transfers=self.transfers)

    # --- lifetime ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.config.clustered:
            for record in self.records.volumes():
                self.records.freeze(record.slot)
        info = NodeInfo(self.node_id, self.config.advertise or "", capacity=self.records.capacity())
        async with self.coord.session(info) as session:
            self.session = session
            try:
                await self._finish_removals()
                await self._finish_publications()
                await self._publish_local_volumes()
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self.config.clustered:
                        await nursery.start(self.pool.run)
                        if self.config.listen is not None:
                            host, port = self.config.listen
                            server = PeerServer(host, port, self.node_id, self.config.secret or b"",
                                                self.config.name, self.handler, counters=self.links)
                            await nursery.start(server.serve)
                        await self.members.refresh()
                        nursery.start_soon(self._watch_members)
                        nursery.start_soon(self.healer.run)
                    nursery.start_soon(self._watch_registration, session)
                    task_status.started()
                    await trio.sleep(math.inf)
            finally:
                if self.stopping.stopping:
                    await self._leave()  # a stop cut the start short: bounded, unlike the session's own

    async def _finish_publications(self) -> None:
        """At start: enter in the catalog the snapshots and clones made here that a crash
        kept out of it (``clone_volume``, ``create_snapshot``)."""
        known = await self.coord.list_volumes()
        for name, replicas in self.records.publications().items():
            record = self.records.find(name)
            if record is not None and name not in known:
                log.info("%s: entering it in the catalog, which the last stop cut short", name)
                await self.coord.create_volume(name, _spec_of(record, replicas))
            self.records.end_publication(name)

    async def _publish_local_volumes(self) -> None:
        """Volumes made before this node used a coordinator join its catalog (one copy each)."""
        known = await self.coord.list_volumes()
        for record in self.records.volumes():
            spec = known.get(record.name)
            if spec is None and (self.records.epoch_seen(record.slot) > 0 or is_snapshot_name(record.name)):
                continue  # a copy of a cluster volume or snapshot that was removed: the healer drops it
            if spec is None:
                await self.coord.create_volume(record.name, _spec_of(record, 1))
            elif spec.volume_id != record.volume_id:
                log.error("local volume %s (id %s) is not the cluster's volume of that name (id %s); "
                          "it stays unmounted", record.name, record.volume_id.hex(), spec.volume_id.hex())

    async def _watch_members(self) -> None:
        """Refresh the member list every second, and publish our stats every few."""
        for tick in itertools.count(1):
            await trio.sleep(1.0)
            try:
                await self.members.refresh()
                if self.session is not None and tick % STATS_EVERY == 0:
                    await self.session.update_stats(capacity=self.records.capacity(),
                                                    chunks=self.records.chunk_count())
            except CfsError as exc:
                log.warning("cluster membership refresh failed: %s", exc)

    async def _watch_registration(self, session: NodeSession) -> None:
        await session.lost.wait()
        if self._leaving:
            return  # our own unregister (``stop``): every writer is closed already
        log.error("this node lost its cluster registration: every volume stops taking writes")
        for writer in list(self._writers.values()):
            writer.fence(writer.epoch + 1)

    # --- the catalog ---------------------------------------------------------------

    def _replicas(self, replicas: int | None) -> int:
        if replicas is None:
            return 2 if self.config.clustered and len(self.members.live_peers()) >= 1 else 1
        if replicas > 1 and not self.config.clustered:
            raise UserError("replicas above 1 need a cluster (start the node with --etcd)")
        return replicas

    async def create_volume(self, name: str, *, block_size: int, options: dict[str, str],
                            replicas: int | None, uid: int, gid: int, mode: int) -> VolumeRecord:
        """A new, empty volume: in the catalog, then here. Under the name's lock, as a clone
        is made: a second create of the name waits, then finds it."""
        replicas = self._replicas(replicas)
        volume_id = VolumeId(os.urandom(16))
        spec = VolumeSpec(volume_id, block_size, replicas, dict(options), time.time_ns())
        async with self._lock(name):
            self.records.make_room()
            await self.coord.create_volume(name, spec)
            try:
                record = self.fs.create_volume(name, block_size=block_size, options=dict(options), uid=uid,
                                               gid=gid, mode=mode, volume_id=volume_id,
                                               created_ns=spec.created_ns, replicated=replicas > 1)
            except BaseException:
                with self.stopping.bounded(shield=True):
                    await self.coord.delete_volume(name)
                raise
            if self.config.clustered:
                self.records.freeze(record.slot)
            return record

    async def clone_volume(self, name: str, source: str, *, options: dict[str, str],
                           replicas: int | None) -> VolumeRecord:
        """A new volume ``name`` holding what ``source`` holds now: a snapshot (``V@S``,
        copied here first if need be) or a volume, which this node then writes for the
        moment of the copy (the lease, as a mount takes it); a volume another live node
        writes is cloned from a snapshot that node takes (``_clone_through_snapshot``).

        Crash safety: the clone is made here first, durably, then entered in the catalog;
        a record of the publication (``NodeRecords.begin_publication``) lets the next
        start enter a clone that a crash kept out."""
        replicas = self._replicas(replicas)
        async with self._lock(name):
            if await self.coord.get_volume(name) is not None or self.records.find(name) is not None:
                raise VolumeExists(f"volume {name!r} already exists")
            self.records.make_room()
            self.records.begin_publication(name, replicas)
            try:
                if is_snapshot_name(source):
                    spec = await self.coord.get_volume(source)
                    if spec is None:
                        raise VolumeNotFound(f"no snapshot named {source!r}")
                    copied = await open_read_only(self._context, source, spec)
                    record = self.fs.clone(copied.name, name, options=options, replicated=replicas > 1)
                else:
                    record = await self._clone_of_volume(name, source, options, replicas)
                crash_point("clone-made")
                await self._publish(name, record, replicas)
            finally:
                self.records.end_publication(name)
            if self.config.clustered:
                self.records.freeze(record.slot)
            return record

    async def _clone_of_volume(self, name: str, source: str, options: dict[str, str], replicas: int) -> VolumeRecord:
        try:
            await self.open_volume(source)
        except LeaseHeld as held:
            return await self._clone_through_snapshot(name, source, options, replicas, NodeId(held.node_id))
        try:
            return self.fs.clone(source, name, options=options, replicated=replicas > 1)
        finally:
            await self.close_volume(source)

    async def _clone_through_snapshot(self, name: str, source: str, options: dict[str, str], replicas: int,
                                      writer: NodeId) -> VolumeRecord:
        """A clone of a volume that another live node writes: that node takes a snapshot
        (``TakeSnapshot``), this node copies it and clones it, and the snapshot goes.

        The snapshot's name follows from the clone's (``clone-<hash>``), so a retry after
        a crash in between finds it and clones it (the volume as it was at the first
        attempt, which is when it was asked for) instead of leaving it behind."""
        spec = await self.coord.get_volume(source)
        if spec is None:
            raise VolumeNotFound(f"no volume named {source!r}")
        full = snapshot_name(source, CLONE_SNAPSHOT_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:20])
        log.info("volume %s: node %s writes it; cloning %s from its snapshot %s", source, writer.hex()[:8], name,
                 full)
        snap = await self.coord.get_volume(full)
        if snap is None:
            await self._snapshot_on(writer, source, split_snapshot_name(full)[1], spec)
            snap = await self.coord.get_volume(full)
            if snap is None:
                raise VolumeNotFound(f"snapshot {full!r}, taken for the clone {name!r}, was removed meanwhile")
        try:
            copied = await open_read_only(self._context, full, snap)
            return self.fs.clone(copied.name, name, options=options, replicated=replicas > 1)
        finally:
            with self.stopping.bounded(shield=True):  # cut short, the next start finishes the removal
                try:
                    await self.remove_volume(full)
                except CfsError as exc:
                    log.warning("%s, taken for the clone %s, could not be removed: %s", full, name, exc)

    async def create_snapshot(self, volume: str, name: str, *, forward: bool = True) -> str:
        """Snapshot ``volume`` as ``volume@name``; its catalog name. Taken on this node if it
        writes the volume or may take it for the moment (the lease, as a mount takes it);
        while another live node writes it, that node is asked to (``TakeSnapshot``),
        unless ``forward`` is False (a peer's own request: it found this node the writer).

        Taken here, the snapshot is made first, durably, as an event of the volume's log
        (its replicas take it too), then entered in the catalog; as for a clone, a crash in
        between leaves a snapshot the next start enters."""
        full = snapshot_name(volume, name)
        async with self._lock(full):
            if await self.coord.get_volume(full) is not None or self.records.find(full) is not None:
                raise VolumeExists(f"snapshot {full!r} already exists")
            spec = await self.coord.get_volume(volume)
            if spec is None or is_snapshot_name(volume):
                raise VolumeNotFound(f"no volume named {volume!r}")
            try:
                await self._snapshot_here(volume, name, spec)
                return full
            except LeaseHeld as held:
                if not forward:
                    raise VolumeBusy(f"{held}: this node does not write it (any more)") from None
                writer = held
            await self._snapshot_on(NodeId(writer.node_id), volume, name, spec)
            return full

    async def _snapshot_here(self, volume: str, name: str, spec: VolumeSpec) -> None:
        full = snapshot_name(volume, name)
        self.records.make_room()
        self.records.begin_publication(full, spec.replicas)
        try:
            await self.open_volume(volume)
            try:
                record = self.fs.snapshot(volume, name)
                writer = self._writers.get(spec.volume_id)
                if writer is not None and writer.replicator is not None:
                    writer.replicator.notify()
            finally:
                await self.close_volume(volume)
            crash_point("snapshot-taken")
            await self._publish(full, record, spec.replicas)
        finally:
            self.records.end_publication(full)

    async def _snapshot_on(self, writer: NodeId, volume: str, name: str, spec: VolumeSpec) -> None:
        """Have ``writer``, the live node that writes ``volume``, take the snapshot."""
        log.info("volume %s: node %s writes it: asking it to take snapshot %s", volume, writer.hex()[:8], name)
        try:
            reply = await self.pool.request(writer, TakeSnapshot(spec.volume_id, name), timeout=SNAPSHOT_TIMEOUT)
        except PeerUnavailable as exc:
            raise Unavailable(f"volume {volume!r} is written by node {writer.hex()}, which did not take the "
                              f"snapshot: {exc}") from None
        except PeerError as exc:
            kinds: dict[int, type[UserError]] = {ErrorCode.EXISTS: VolumeExists, ErrorCode.NOT_FOUND: VolumeNotFound,
                                                 ErrorCode.BUSY: VolumeBusy}
            kind = kinds.get(exc.code)
            if kind is None:
                raise ReplicationError(f"node {writer.hex()} could not snapshot volume {volume!r}: {exc}") from None
            raise kind(f"node {writer.hex()}, which writes volume {volume!r}: {exc}") from None
        assert isinstance(reply, SnapshotTaken)

    async def _take_snapshot(self, volume_id: VolumeId, name: str) -> VolumeId:
        """The peer handler's ``TakeSnapshot``: snapshot a volume this node writes."""
        record = self.records.volume_by_id(volume_id)
        if record is None or not self.writes(volume_id):
            raise VolumeBusy(f"this node does not write volume {volume_id.hex()}")
        full = await self.create_snapshot(record.name, name, forward=False)
        snapshot = self.records.find(full)
        if snapshot is None:
            raise VolumeNotFound(f"snapshot {full!r} was removed as soon as it was taken")
        return snapshot.volume_id

    async def _publish(self, name: str, record: VolumeRecord, replicas: int) -> None:
        """Enter a snapshot or clone made here in the catalog; if that fails (the name was
        taken meanwhile), it goes here too."""
        try:
            await self.coord.create_volume(name, _spec_of(record, replicas))
        except BaseException:
            with trio.CancelScope(shield=True):
                self.fs.remove_volume(name, force=True)
            raise

    async def remove_volume(self, name: str) -> None:
        """Remove the volume from the cluster and its copy from this node, crash-safely
        (see the module doc). Refused while this node writes it or files of it are open."""
        async with self._lock(name):
            self.records.make_room()
            record = self.records.find(name)
            spec = await self.coord.get_volume(name)
            if record is None and spec is None:
                raise VolumeNotFound(f"no volume named {name!r}")
            if record is not None and (record.volume_id in self._writers or self.fs.volume_in_use(record.slot)):
                raise VolumeBusy(f"volume {name!r} is in use on this node (mounted, or files of it are open)")
            removal = Removal(name, record.volume_id if record else None, spec.volume_id if spec else None)
            self.records.begin_removal(removal)
            crash_point("volume-rm-recorded")
            await self._finish_removal(removal)

    async def _finish_removal(self, removal: Removal) -> None:
        """The steps of a removal, each one skipped when a crash left it done already."""
        if removal.cluster_id is not None:
            spec = await self.coord.get_volume(removal.name)
            if spec is not None and spec.volume_id == removal.cluster_id:
                await self.coord.delete_volume(removal.name)
        crash_point("volume-rm-uncataloged")
        if removal.local_id is not None:
            record = self.records.volume_by_id(removal.local_id)
            if record is not None:
                self.fs.remove_volume(record.name, force=True)
        self.records.end_removal(removal.name)

    async def _finish_removals(self) -> None:
        """At start: finish the removals a crash cut short, before the catalog is published
        (which would bring such a volume back)."""
        for removal in self.records.removals():
            log.info("volume %s: finishing its removal, cut short by the last stop", removal.name)
            await self._finish_removal(removal)

    async def spec(self, name: str) -> VolumeSpec | None:
        return await self.coord.get_volume(name)

    async def list_specs(self) -> dict[str, VolumeSpec]:
        return await self.coord.list_volumes()

    def _lock(self, name: str) -> trio.Lock:
        return self._locks.setdefault(name, trio.Lock())

    # --- writers -------------------------------------------------------------------

    async def open_volume(self, name: str, *, takeover: bool = False) -> VolumeRecord:
        """Make this node the volume's writer (mountd.cluster.writer); counted per user."""
        async with self._lock(name):
            if self.stopping.asked.is_set():
                raise Unavailable(f"volume {name!r} is not opened: this node is stopping")
            spec = await self.coord.get_volume(name)
            if spec is None:
                raise VolumeNotFound(f"no volume named {name!r}")
            if is_snapshot_name(name):
                self.records.make_room()
                record = await open_read_only(self._context, name, spec)
                self._readers[name] = self._readers.get(name, 0) + 1
                return record
            writer = self._writers.get(spec.volume_id)
            if writer is not None:
                if writer.state is not WriterState.WRITING:
                    raise VolumeBusy(f"volume {name!r} is {writer.state.value} on this node "
                                     "(another node took it over); try again once it is unmounted here")
                writer.users += 1
                return writer.record
            assert self.session is not None and self._nursery is not None
            self.records.make_room()
            writer = await self._open_writer(name, spec, takeover)
            self._writers[spec.volume_id] = self._by_slot[writer.record.slot] = writer
            await self._nursery.start(writer.run)
            return writer.record

    async def _open_writer(self, name: str, spec: VolumeSpec, takeover: bool) -> VolumeWriter:
        """A writer of the volume here; a volume attached to this node and held by a live
        node it is not attached to is taken over (the orchestrator moved it here, and the
        other node has not let go yet)."""
        assert self.session is not None
        try:
            return await VolumeWriter.open(self._context, self.session, name, spec, takeover=takeover)
        except LeaseHeld as held:
            if takeover or not await self._attached_here_not_to(name, NodeId(held.node_id)):
                raise
            log.info("volume %s: attached to this node, not to node %s that holds it: taking it over",
                     name, held.node_id.hex()[:8])
        return await VolumeWriter.open(self._context, self.session, name, spec, takeover=True)

    async def _attached_here_not_to(self, name: str, holder: NodeId) -> bool:
        attached = {attachment.node_id for attachment in await self.coord.attachments(name)}
        return self.node_id in attached and holder not in attached

    async def close_volume(self, name: str) -> None:
        """One user is done; the last one (or any, after a fence) closes the writer. A
        snapshot has no writer: one user fewer reads it."""
        if is_snapshot_name(name):
            users = self._readers.pop(name, 0) - 1
            if users > 0:
                self._readers[name] = users
            return
        async with self._lock(name):
            writer = next((w for w in self._writers.values() if w.name == name), None)
            if writer is None:
                return
            writer.users -= 1
            if writer.users > 0 and not writer.fenced:
                return
            await self._close_writer(writer)

    async def _close_writer(self, writer: VolumeWriter) -> None:
        """Close ``writer`` and take it out of the table; under its name's lock."""
        self.records.make_room()
        try:
            await writer.close()
        finally:
            del self._writers[writer.record.volume_id]
            if not self.config.clustered:
                self._by_slot.pop(writer.record.slot, None)  # one copy: the store is the truth

    async def stop(self) -> None:
        """The node's part of a stop (mountd.cluster.stopping), after the host mounts are
        detached and the store committed: close every writer at once, whoever uses it
        (each flushes, waits for its replicas and releases its lease, bounded by the
        stop), then unregister if etcd answers in time. Peers are served until the
        daemon's nursery ends, so peers that stop at the same moment still get answers."""
        try:
            with self.stopping.bounded() as closing:
                async with trio.open_nursery() as nursery:
                    for writer in list(self._writers.values()):
                        nursery.start_soon(self._close_at_stop, writer)
            if closing.cancelled_caught:
                for writer in self._writers.values():
                    log.warning("volume %s: still %s at the stop's deadline; given up (its lease lapses with "
                                "this node's registration)", writer.name, writer.state.value)
        finally:
            await self._leave()

    async def _leave(self) -> None:
        """Unregister, once, bounded by the stop."""
        if self.session is None or self._leaving:
            return
        self._leaving = True
        with self.stopping.bounded(shield=True) as leaving:
            await self.session.unregister()
        if leaving.cancelled_caught:
            log.warning("node %s: not unregistered before the stop's deadline; its registration lapses "
                        "in %g s", self.node_id.hex()[:8], self.config.lease_ttl)

    async def _close_at_stop(self, writer: VolumeWriter) -> None:
        async with self._lock(writer.name):
            if self._writers.get(writer.record.volume_id) is writer:
                try:
                    await self._close_writer(writer)
                except CfsError as exc:
                    log.error("volume %s: could not close it: %s", writer.name, exc)

    async def drop_copy(self, record: VolumeRecord, seq: int, *, removed: bool = False, seen: bool = False) -> bool:
        """Drop this node's copy of a volume (up to ``seq``: unchanged since the healer saw
        it), the healer's call; not while it is mounted or being mounted (a volume has a
        writer then, a snapshot readers: no file of it need be open). ``removed``: the
        cluster no longer has the volume, asked again here, under the volume's lock (a
        snapshot or clone being entered in the catalog holds it); a snapshot never
        ``seen`` in the catalog is kept for a grace period after it was taken (a replica
        takes it from its writer's log before the writer enters it). True if it went."""
        async with self._lock(record.name):
            if self.writes(record.volume_id) or self.records.applied_seq(record.slot) != seq:
                return False
            if removed:
                spec = await self.coord.get_volume(record.name)
                if spec is not None and spec.volume_id == record.volume_id:
                    return False
                young = time.time_ns() - record.created_ns < SNAPSHOT_GRACE_NS
                if is_snapshot_name(record.name) and not seen and young:
                    return False
            if record.volume_id in self._writers or self._readers.get(record.name) \
                    or self.fs.volume_in_use(record.slot):
                return False
            self.fs.remove_volume(record.name, force=True)
            return True

    # --- health -------------------------------------------------------------------------

    async def condition(self, name: str) -> tuple[bool, str]:
        """(abnormal, why) of a volume as this node sees it (CSI's volume condition):
        abnormal while this node writes it fenced or degraded (a replica did not answer in
        time), or while fewer live nodes than its ``replicas`` hold a complete copy."""
        spec = await self.coord.get_volume(name)
        if spec is None:
            raise VolumeNotFound(f"no volume named {name!r}")
        writer = self._writers.get(spec.volume_id)
        if writer is not None and writer.fenced:
            return True, f"this node was fenced from writing it (epoch {writer.fenced_by})"
        if writer is not None and writer.replicator is not None and writer.replicator.degraded:
            return True, f"replication degraded: {writer.replicator.degraded}"
        copies = await self._live_copies(spec.volume_id)
        if copies < spec.replicas:
            return True, f"complete copies on live nodes that answer: {copies} of the {spec.replicas} wanted"
        return False, f"complete copies on live nodes: {copies} ({spec.replicas} wanted)"

    async def _live_copies(self, volume_id: VolumeId) -> int:
        """Complete copies of the volume here and on the live peers that answer."""
        local = self.records.volume_by_id(volume_id)
        found = int(local is not None and not self.records.incomplete(local.slot))

        async def ask(peer: NodeId) -> None:
            nonlocal found
            try:
                info = await self.pool.request(peer, VolumeInfo(volume_id), timeout=CONDITION_TIMEOUT)
            except (PeerUnavailable, PeerError):
                return
            if isinstance(info, VolumeInfoReply) and info.known:
                found += 1
        async with trio.open_nursery() as nursery:
            for peer in self.members.live_peers():
                nursery.start_soon(ask, peer)
        return found

    # --- size limits -------------------------------------------------------------------

    async def expand_volume(self, name: str, size: int) -> VolumeSpec:
        """Raise the volume's size limit in the catalog to ``size`` bytes (never lowered:
        a limit at least as large, or none, stays as it is) and take it here if this node
        writes the volume; the catalog entry after."""
        if size <= 0:
            raise UserError(f"a volume is expanded to a positive size, not {size}")
        async with self._lock(name):
            while True:
                spec = await self.coord.get_volume(name)
                if spec is None or is_snapshot_name(name):
                    raise VolumeNotFound(f"no volume named {name!r}")
                limit = quota.limit_of(spec.options)
                if limit == 0 or limit >= size:
                    break
                bigger = VolumeSpec(spec.volume_id, spec.block_size, spec.replicas,
                                    {**spec.options, "size": str(size)}, spec.created_ns)
                if await self.coord.update_volume(name, bigger, expected=spec):
                    log.info("volume %s: size limit raised from %d to %d bytes", name, limit, size)
                    spec = bigger
                    break
            self._take_limit(name, spec)
            return spec

    async def take_size_limit(self, name: str) -> int:
        """Take the catalog's size limit for the volume here, if this node writes it (CSI's
        NodeExpandVolume); the limit in force here, or the catalog's where nobody does."""
        async with self._lock(name):
            spec = await self.coord.get_volume(name)
            if spec is None or is_snapshot_name(name):
                raise VolumeNotFound(f"no volume named {name!r}")
            self._take_limit(name, spec)
            return quota.limit_of(spec.options)

    def _take_limit(self, name: str, spec: VolumeSpec) -> None:
        writer = self._writers.get(spec.volume_id)
        if writer is not None and not writer.fenced:
            writer.record = self.fs.set_size_limit(name, quota.limit_of(spec.options))

    def writes(self, volume_id: VolumeId) -> bool:
        return self._writing_epoch(volume_id) is not None

    def _writing_epoch(self, volume_id: VolumeId) -> int | None:
        writer = self._writers.get(volume_id)
        return None if writer is None or writer.fenced else writer.epoch

    # --- callbacks of the peer handler -----------------------------------------------

    async def _adopt(self, volume_id: VolumeId) -> VolumeRecord | None:
        record = self.records.volume_by_id(volume_id)
        if record is not None:
            return record
        for name, spec in (await self.coord.list_volumes()).items():
            if spec.volume_id == volume_id:
                log.info("volume %s: this node becomes a replica", name)
                return self.records.add_copy(name, spec.block_size, dict(spec.options),
                                             volume_id=spec.volume_id, created_ns=spec.created_ns)
        return None

    def _fenced(self, volume_id: VolumeId, epoch: int) -> None:
        writer = self._writers.get(volume_id)
        if writer is not None:
            writer.fence(epoch)

    async def _release(self, volume_id: VolumeId, epoch: int) -> None:
        """A peer takes the volume over: hand it over cleanly, then let it in."""
        writer = self._writers.get(volume_id)
        if writer is None:
            return
        log.info("volume %s: releasing it to another node", writer.name)
        self._context.evictions.send_nowait(Eviction(writer.name, "taken over by another node"))
        with trio.move_on_after(RELEASE_TIMEOUT):
            await writer.closed.wait()

    async def _push_copy(self, peer: NodeId, record: VolumeRecord, epoch: int) -> int:
        """The peer handler's ``PushCopy``: copy the volume whole to ``peer``."""
        try:
            kind = TransferKind.SNAPSHOT if is_snapshot_name(record.name) else TransferKind.CATCH_UP
            return await send_copy(self.records, self.pool, record, epoch, peer, transfers=self.transfers,
                                   kind=kind)
        except (PeerUnavailable, PeerError) as exc:
            raise ReplicationError(
                f"volume {record.name!r}: the copy to node {peer.hex()[:8]} failed: {exc}") from None

    # --- hooks of the FUSE adapter -----------------------------------------------------

    async def fetch_chunk(self, chunk: bytes) -> None:
        """Get a chunk this node references but does not hold (or holds damaged) from a
        peer, and keep it."""
        await self.fetcher.fetch_one(ChunkId(chunk))

    def check_writer(self, slot: Slot) -> None:
        """Raise VolumeLost if the writer the volume was last written under here is fenced
        or, in a cluster, closed (mountd.cluster.writer)."""
        writer = self._by_slot.get(slot)
        if writer is not None:
            writer.check_alive()

    async def replicated(self, slot: Slot) -> None:
        """fsync's second half: what was written to the volume is on its replicas (or it
        is degraded); VolumeLost (EIO) if the writer it was written under is fenced or,
        in a cluster, closed."""
        writer = self._by_slot.get(slot)
        if writer is not None:
            await writer.replicated()

    # --- reports --------------------------------------------------------------------

    def volume_status(self, volume_id: VolumeId) -> dict[str, Any] | None:
        writer = self._writers.get(volume_id)
        return None if writer is None else writer.status()

    def writing(self) -> dict[str, int]:
        """Volumes this node writes, with their lease epochs."""
        return {w.name: w.epoch for w in self._writers.values() if not w.fenced}

    def writers(self) -> list[VolumeWriter]:
        """The volumes this node writes (open, fenced or closing), for its metrics."""
        return list(self._writers.values())

    def degraded(self) -> dict[str, str]:
        return {w.name: w.replicator.degraded for w in self._writers.values()
                if w.replicator is not None and w.replicator.degraded}


def _spec_of(record: VolumeRecord, replicas: int) -> VolumeSpec:
    return VolumeSpec(record.volume_id, record.block_size, replicas, dict(record.options), record.created_ns)

"""This node's part in the cluster: registration, peers, volume leases and replication.

``ClusterNode`` owns the node's coordination session, its peer connections and, for
each volume this node writes, the lease and the replicator. The same object runs a
single node (the embedded ``LocalCoordinator``: one node, every volume has one copy, no
peers) and a cluster member (``EtcdCoordinator``, a peer listener, replicators).

Opening a volume for writing (``open_volume``, on mount):

1. take the volume's lease in the coordinator, which bumps its epoch; if a live node
   holds it, fail naming that node, or with ``takeover`` ask it to release first
   (``Release``) and take the lease anyway;
2. fence: tell every reachable node the new epoch, so an old writer's records are
   refused from now on;
3. catch up: fetch the records this node lacks from the node that has the most, and
   replay them; chunks it lacks stay remote and are fetched when read. If that node's
   log no longer reaches back to this node's copy (TRIMMED), or this node's copy is an
   interrupted whole-volume copy, ask it to push a whole copy first (``PushCopy``: it
   sends ``VolumeCopy`` parts here, then answers), and fetch the rest after it;
4. start shipping new records to the volume's replicas.

A node that is fenced (a peer has seen a newer epoch for a volume it writes) stops
writing it at once (the slot is frozen: EROFS), asks the service to unmount it, and
discards its local copy, which may hold records nobody else has: the new writer's
history wins. While not written here, a volume's slot stays frozen, so nothing but
replayed records changes a replica.

Concurrency: runs on the trio thread. ``_opening`` serialises open/close per volume;
store access happens between awaits.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from cfs.codec import VolumeRecord, decode_block
from cfs.coord.api import Coordinator, Lease, NodeInfo, NodeSession, NodeStatus, VolumeSpec
from cfs.errors import (
    CfsError, LeaseHeld, LogTrimmed, MissingChunk, ReadOnly, ReplicationError, UserError, VolumeExists,
    VolumeNotFound,
)
from cfs.fs import Filesystem
from cfs.repl import placement
from cfs.repl.wire import (
    Chunks, ErrorCode, Fence, FetchLog, GetChunks, LogAck, LogRecords, PushCopy, Release, VolumeInfo,
    VolumeInfoReply,
)
from cfs.store import Table, catalog, chunks, replica
from cfs.types import ChunkId, NodeId, Slot, VolumeId
from mountd.cluster.handler import PeerHandler
from mountd.cluster.healer import Healer
from mountd.cluster.links import PeerError, PeerPool, PeerServer, PeerUnavailable
from mountd.cluster.replicator import VolumeReplicator, send_copy

log = logging.getLogger(__name__)

FETCH_BYTES = 3 << 20
CONTROL_TIMEOUT = 5.0
RELEASE_TIMEOUT = 20.0
PREFETCH_BATCH = 32
"""Chunks asked for per GetChunks in the background fetch (up to 2 MiB of 64 KiB blocks)."""
PUSH_COPY_TIMEOUT = 3600.0
"""Seconds a mount waits for a whole-volume copy it asked for (each part has its own timeout)."""
MAX_COPY_PULLS = 3
STATS_EVERY = 5
"""Seconds between publications of the node's capacity and chunk count."""


@dataclass(frozen=True)
class ClusterConfig:
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


@dataclass(frozen=True)
class Eviction:
    """The service must unmount ``volume`` everywhere on this node (fenced or released)."""

    volume: str
    reason: str


@dataclass
class _Open:
    record: VolumeRecord
    spec: VolumeSpec
    lease: Lease
    users: int = 1
    replicator: VolumeReplicator | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    """The replicator's task."""
    prefetch: trio.CancelScope = field(default_factory=trio.CancelScope)
    """The background fetch of the chunks this node lacks."""
    prefetched: int = 0
    fenced: bool = False
    closed: trio.Event = field(default_factory=trio.Event)


class ClusterNode:
    def __init__(self, fs: Filesystem, coord: Coordinator, config: ClusterConfig,
                 evictions: trio.MemorySendChannel[Eviction]) -> None:
        self.fs = fs
        self.store = fs.store
        self.coord = coord
        self.config = config
        self.evictions = evictions
        self.node_id = NodeId(self.store.node_id())
        self.session: NodeSession | None = None
        self.members: dict[NodeId, NodeStatus] = {}
        self._open: dict[VolumeId, _Open] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self.pool = PeerPool(self.node_id, config.secret or b"", config.name, self._address)
        self.healer = Healer(self, interval=max(2.0, config.lease_ttl / 2))
        self.handler = PeerHandler(self.store, adopt=self._adopt, writing_epoch=self._writing_epoch,
                                   on_fenced=self._fenced, release=self._release, push_copy=self._push_copy)

    # --- lifetime ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.config.clustered:
            self.store.frozen_slots.update(r.slot for r in self.fs.volumes())
        info = NodeInfo(self.node_id, self.config.advertise or "", capacity=self._capacity())
        async with self.coord.session(info) as session:
            self.session = session
            await self._publish_local_volumes()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.config.clustered:
                    await nursery.start(self.pool.run)
                    if self.config.listen is not None:
                        host, port = self.config.listen
                        server = PeerServer(host, port, self.node_id, self.config.secret or b"",
                                            self.config.name, self.handler)
                        await nursery.start(server.serve)
                    await self._refresh_members()
                    nursery.start_soon(self._watch_members)
                    nursery.start_soon(self.healer.run)
                nursery.start_soon(self._watch_registration, session)
                task_status.started()
                await trio.sleep(math.inf)

    def _capacity(self) -> int:
        st = self.store.statvfs()
        return st.f_blocks * st.f_frsize

    async def _publish_local_volumes(self) -> None:
        """Volumes made before this node used a coordinator join its catalog (one copy each)."""
        known = await self.coord.list_volumes()
        for record in self.fs.volumes():
            spec = known.get(record.name)
            if spec is None and self.epoch_seen(record) > 0:
                continue  # a copy of a cluster volume that was removed: the healer drops it
            if spec is None:
                await self.coord.create_volume(record.name, _spec_of(record, 1))
            elif spec.volume_id != record.volume_id:
                log.error("local volume %s (id %s) is not the cluster's volume of that name (id %s); "
                          "it stays unmounted", record.name, record.volume_id.hex(), spec.volume_id.hex())

    def epoch_seen(self, record: VolumeRecord) -> int:
        """The newest lease epoch seen for the volume here; 0: never written under a lease."""
        with self.store.op(adds_data=False) as op:
            return replica.state(op, record.slot).epoch

    async def _watch_members(self) -> None:
        """Refresh the member list every second, and publish our stats every few."""
        for tick in itertools.count(1):
            await trio.sleep(1.0)
            try:
                await self._refresh_members()
                if self.session is not None and tick % STATS_EVERY == 0:
                    with self.store.op(adds_data=False) as op:
                        count = op.txn.stat(self.store.db(Table.CHUNKREFS))["entries"]
                    await self.session.update_stats(capacity=self._capacity(), chunks=count)
            except CfsError as exc:
                log.warning("cluster membership refresh failed: %s", exc)

    async def _refresh_members(self) -> None:
        self.members = {n.node_id: n for n in await self.coord.nodes()}

    async def _watch_registration(self, session: NodeSession) -> None:
        await session.lost.wait()
        log.error("this node lost its cluster registration: every volume stops taking writes")
        for opened in list(self._open.values()):
            self._fenced(opened.record.volume_id, opened.lease.epoch + 1)

    def _address(self, node: NodeId) -> str | None:
        status = self.members.get(node)
        return status.address if status is not None and status.address else None

    def draining(self) -> bool:
        status = self.members.get(self.node_id)
        return status is not None and status.draining

    def live_peers(self) -> list[NodeId]:
        return [n for n, s in self.members.items() if s.alive and not s.draining and n != self.node_id]

    # --- volumes -------------------------------------------------------------------

    async def create_volume(self, name: str, *, block_size: int, options: dict[str, str],
                            replicas: int | None, uid: int, gid: int, mode: int) -> VolumeRecord:
        if replicas is None:
            replicas = 2 if self.config.clustered and len(self.live_peers()) >= 1 else 1
        if replicas > 1 and not self.config.clustered:
            raise UserError("replicas above 1 need a cluster (start the node with --etcd)")
        volume_id = VolumeId(os.urandom(16))
        spec = VolumeSpec(volume_id, block_size, replicas, dict(options), time.time_ns())
        await self.coord.create_volume(name, spec)
        try:
            record = self.fs.create_volume(name, block_size=block_size, options=dict(options), uid=uid,
                                           gid=gid, mode=mode, volume_id=volume_id, created_ns=spec.created_ns,
                                           replicated=replicas > 1)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.coord.delete_volume(name)
            raise
        if self.config.clustered:
            self.store.frozen_slots.add(record.slot)
        return record

    async def remove_volume(self, name: str) -> None:
        spec = await self.coord.get_volume(name)
        if spec is not None:
            await self.coord.delete_volume(name)
        try:
            self.fs.remove_volume(name)
        except VolumeNotFound:
            if spec is None:
                raise

    async def spec(self, name: str) -> VolumeSpec | None:
        return await self.coord.get_volume(name)

    async def list_specs(self) -> dict[str, VolumeSpec]:
        return await self.coord.list_volumes()

    def _lock(self, name: str) -> trio.Lock:
        return self._locks.setdefault(name, trio.Lock())

    async def open_volume(self, name: str, *, takeover: bool = False) -> VolumeRecord:
        """Make this node the volume's writer (see the module doc); counted per user."""
        async with self._lock(name):
            spec = await self.coord.get_volume(name)
            if spec is None:
                raise VolumeNotFound(f"no volume named {name!r}")
            opened = self._open.get(spec.volume_id)
            if opened is not None:
                opened.users += 1
                return opened.record
            lease = await self._acquire(name, spec, takeover)
            try:
                record = self._local_record(name, spec)
                await self._fence_peers(record, lease.epoch)
                await self._catch_up(record, lease.epoch)
                with self.store.op(adds_data=False) as op:
                    replica.admit_epoch(op, record, lease.epoch)
                    replica.set_replicated(op, record.slot, spec.replicas > 1)
                self.store.commit()
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self._release_lease(lease)
                raise
            opened = self._open[spec.volume_id] = _Open(record, spec, lease)
            self.store.frozen_slots.discard(record.slot)
            if self.config.clustered and spec.replicas > 1:
                await self._start_replicator(opened)
            if self.config.clustered:
                assert self._nursery is not None
                self._nursery.start_soon(self._watch_lease, opened)
                self._nursery.start_soon(self._prefetch, opened)
            log.info("volume %s: writing here with epoch %d", name, lease.epoch)
            return record

    async def _acquire(self, name: str, spec: VolumeSpec, takeover: bool) -> Lease:
        assert self.session is not None
        try:
            return await self.session.acquire(name, takeover=False)
        except LeaseHeld as held:
            if not takeover:
                raise
            log.info("volume %s: taking over from node %s", name, held.node_id.hex()[:8])
            try:
                await self.pool.request(NodeId(held.node_id), Release(spec.volume_id, held.epoch),
                                        timeout=RELEASE_TIMEOUT)
            except (PeerUnavailable, PeerError) as exc:
                log.warning("volume %s: the holder did not release it (%s); taking it over anyway", name, exc)
            return await self.session.acquire(name, takeover=True)

    def _local_record(self, name: str, spec: VolumeSpec) -> VolumeRecord:
        with self.store.op(adds_data=False) as op:
            record = catalog.by_id(op, spec.volume_id)
        if record is not None:
            return record
        record = self._create_replica(name, spec)
        return record

    def _create_replica(self, name: str, spec: VolumeSpec) -> VolumeRecord:
        """This node's copy of a volume made elsewhere: rows arrive by replay."""
        with self.store.op() as op:
            try:
                record = catalog.create(op, name, spec.block_size, dict(spec.options),
                                        volume_id=spec.volume_id, created_ns=spec.created_ns)
            except VolumeExists:
                raise VolumeExists(f"this node has another volume named {name!r}") from None
        self.store.frozen_slots.add(record.slot)
        self.store.commit()
        return record

    async def _fence_peers(self, record: VolumeRecord, epoch: int) -> None:
        """Tell every reachable node the new epoch; an old writer is refused from now on."""
        async def fence(peer: NodeId) -> None:
            try:
                await self.pool.request(peer, Fence(record.volume_id, epoch), timeout=CONTROL_TIMEOUT)
            except (PeerUnavailable, PeerError) as exc:
                log.info("volume %s: could not fence node %s: %s", record.name, peer.hex()[:8], exc)
        async with trio.open_nursery() as nursery:
            for peer in self._all_peers():
                nursery.start_soon(fence, peer)

    def _all_peers(self) -> list[NodeId]:
        return [n for n, s in self.members.items() if s.alive and n != self.node_id]

    async def _catch_up(self, record: VolumeRecord, epoch: int) -> None:
        """Replay what the most advanced reachable copy has and this one lacks."""
        applied: dict[NodeId, int] = {}

        async def ask(peer: NodeId) -> None:
            try:
                info = await self.pool.request(peer, VolumeInfo(record.volume_id), timeout=CONTROL_TIMEOUT)
            except (PeerUnavailable, PeerError):
                return
            if isinstance(info, VolumeInfoReply) and info.known:
                applied[peer] = info.applied_seq
        async with trio.open_nursery() as nursery:
            for peer in self._all_peers():
                nursery.start_soon(ask, peer)
        mine = self._applied(record)
        with self.store.op(adds_data=False) as op:
            incomplete = replica.incomplete(op, record.slot)
        if not applied or max(applied.values()) <= mine:
            if incomplete:
                raise ReplicationError(
                    f"volume {record.name!r}: this node's copy is incomplete (a whole-volume copy was "
                    "interrupted) and no reachable node has a complete one")
            return
        source = max(applied, key=lambda p: applied[p])
        log.info("volume %s: catching up from record %d to %d (node %s)", record.name, mine,
                 applied[source], source.hex()[:8])
        retain = self.store.config.changelog_retain
        pulls = 0
        if incomplete:
            await self._pull_copy(record, epoch, source)
            pulls += 1
        mine = self._applied(record)
        while mine < applied[source]:
            try:
                reply = await self.pool.request(source, FetchLog(record.volume_id, epoch, mine, FETCH_BYTES))
                assert isinstance(reply, LogRecords)
                if not reply.records:
                    break
                with self.store.op() as op:
                    for seq, raw in reply.records:
                        replica.apply(op, record, epoch, seq, bytes(raw), retain)
            except (PeerError, LogTrimmed) as exc:
                if (isinstance(exc, PeerError) and exc.code != ErrorCode.TRIMMED) or pulls >= MAX_COPY_PULLS:
                    raise
                pulls += 1
                await self._pull_copy(record, epoch, source)
            mine = self._applied(record)

    async def _pull_copy(self, record: VolumeRecord, epoch: int, source: NodeId) -> None:
        """Have ``source`` copy the volume whole to this node (see the module doc)."""
        log.info("volume %s: node %s's log does not reach back to this node's copy: copying the "
                 "volume whole from it", record.name, source.hex()[:8])
        reply = await self.pool.request(source, PushCopy(record.volume_id, epoch), timeout=PUSH_COPY_TIMEOUT)
        assert isinstance(reply, LogAck)
        log.info("volume %s: copied whole from node %s up to record %d", record.name, source.hex()[:8],
                 reply.applied_seq)

    async def _push_copy(self, peer: NodeId, record: VolumeRecord, epoch: int) -> int:
        """The peer handler's ``PushCopy``: copy the volume whole to ``peer``."""
        try:
            return await send_copy(self.store, self.pool, record, epoch, peer)
        except (PeerUnavailable, PeerError) as exc:
            raise ReplicationError(
                f"volume {record.name!r}: the copy to node {peer.hex()[:8]} failed: {exc}") from None

    def _applied(self, record: VolumeRecord) -> int:
        with self.store.op(adds_data=False) as op:
            return replica.applied_seq(op, record.slot)

    async def _start_replicator(self, opened: _Open) -> None:
        assert self._nursery is not None
        spec = opened.spec
        rep = VolumeReplicator(
            self.store, self.pool, opened.record, opened.lease.epoch,
            targets=lambda: placement.choose(spec.volume_id, self.live_peers(), spec.replicas - 1),
            on_fenced=lambda epoch: self._fenced(spec.volume_id, epoch),
            timeout=self.config.replication_timeout)
        opened.replicator = rep

        async def run() -> None:
            with opened.scope:
                await rep.run()
        self._nursery.start_soon(run)

    async def _watch_lease(self, opened: _Open) -> None:
        """Fence ``opened`` when etcd says its lease is gone. A writer cut off from its peers
        still reaches etcd: no replica can tell it that another node took the volume over
        (``--takeover`` could not ask it to release), but the coordinator can."""
        assert self.session is not None
        session = self.session
        async with trio.open_nursery() as nursery:
            async def until_closed() -> None:
                await opened.closed.wait()
                nursery.cancel_scope.cancel()
            nursery.start_soon(until_closed)
            while True:
                try:
                    await session.wait_lease_lost(opened.lease)
                    break
                except CfsError as exc:  # an answer that makes no sense: ask again
                    log.warning("volume %s: could not check its lease: %s", opened.record.name, exc)
                    await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
        if self._open.get(opened.record.volume_id) is opened and not opened.fenced:
            log.error("volume %s: its lease (epoch %d) is no longer this node's in the cluster",
                      opened.record.name, opened.lease.epoch)
            self._fenced(opened.record.volume_id, opened.lease.epoch + 1)

    async def close_volume(self, name: str) -> None:
        """One user is done; the last one flushes, waits for the replicas, releases the lease."""
        async with self._lock(name):
            opened = next((o for o in self._open.values() if o.record.name == name), None)
            if opened is None:
                return
            opened.users -= 1
            if opened.users > 0 and not opened.fenced:
                return
            del self._open[opened.record.volume_id]
            if self.config.clustered:
                self.store.frozen_slots.add(opened.record.slot)
            try:
                if not opened.fenced:
                    self.fs.sync()
                    if opened.replicator is not None:
                        await opened.replicator.wait_replicated()
            finally:
                opened.scope.cancel()
                opened.prefetch.cancel()
                await self._release_lease(opened.lease)
                if opened.fenced:
                    self._discard(opened.record)
                opened.closed.set()
            log.info("volume %s: no longer written here", name)

    async def _release_lease(self, lease: Lease) -> None:
        if self.session is None:
            return
        try:
            await self.session.release(lease)
        except CfsError as exc:
            log.warning("volume %s: could not release the lease: %s", lease.volume, exc)

    def _discard(self, record: VolumeRecord) -> None:
        """Drop a fenced writer's copy: it may hold records the new writer never saw."""
        try:
            self.fs.remove_volume(record.name, force=True)
            log.warning("volume %s: local copy discarded after fencing; it will be copied again", record.name)
        except CfsError as exc:
            log.error("volume %s: could not discard the fenced copy: %s", record.name, exc)

    async def _prefetch(self, opened: _Open) -> None:
        """Fetch, in the background, the chunks of a volume that moved here and that this
        node lacks, so reads soon stop waiting for peers. Reads fetch what they need
        meanwhile; whatever fails here is left to them."""
        with opened.prefetch:
            missing = self._remote_chunks(opened.record)
            if not missing:
                return
            log.info("volume %s: fetching %d chunks held by peers in the background",
                     opened.record.name, len(missing))
            for start in range(0, len(missing), PREFETCH_BATCH):
                batch = missing[start:start + PREFETCH_BATCH]
                if not await self._fetch_batch(batch):
                    log.warning("volume %s: background fetch stopped; reads fetch what they need",
                                opened.record.name)
                    return
                opened.prefetched += len(batch)
            log.info("volume %s: every chunk is here now", opened.record.name)

    def _remote_chunks(self, record: VolumeRecord) -> list[ChunkId]:
        lo, hi = catalog.slot_range(record.slot)
        found: dict[ChunkId, None] = {}
        with self.store.op(adds_data=False) as op:
            for _key, value in op.range(Table.BLOCKS, lo, hi):
                for cid, _length in decode_block(value).chunks():
                    if cid not in found and chunks.is_remote(op, cid):
                        found[cid] = None
        return list(found)

    async def _fetch_batch(self, batch: list[ChunkId]) -> bool:
        """Ask peers for ``batch`` until each chunk came or no peer has it; False if no
        peer could be asked at all."""
        wanted = set(batch)
        asked_any = False
        for peer in self._all_peers():
            if not wanted:
                break
            try:
                reply = await self.pool.request(peer, GetChunks(sorted(wanted)), timeout=CONTROL_TIMEOUT)
            except (PeerUnavailable, PeerError):
                continue
            asked_any = True
            assert isinstance(reply, Chunks)
            with self.store.op(expect_bytes=sum(len(d) for _c, d in reply.found)) as op:
                for cid, data in reply.found:  # verified against their ids by the session
                    if cid in wanted and chunks.is_remote(op, cid):
                        chunks.fill(op, cid, bytes(data))
                    wanted.discard(cid)
        return asked_any

    async def drop_copy(self, record: VolumeRecord, seq: int) -> None:
        """Drop this node's copy of a volume (up to ``seq``: unchanged since the healer saw
        it) that enough other nodes hold whole; not while it is mounted or being mounted."""
        async with self._lock(record.name):
            if self.writes(record.volume_id) or self._applied(record) != seq:
                return
            self.fs.remove_volume(record.name, force=True)
            log.info("volume %s: its placed copies are complete; dropped this node's copy", record.name)

    # --- callbacks of the peer handler and the replicators ----------------------------

    async def _adopt(self, volume_id: VolumeId) -> VolumeRecord | None:
        with self.store.op(adds_data=False) as op:
            record = catalog.by_id(op, volume_id)
        if record is not None:
            return record
        specs = await self.coord.list_volumes()
        for name, spec in specs.items():
            if spec.volume_id == volume_id:
                log.info("volume %s: this node becomes a replica", name)
                return self._create_replica(name, spec)
        return None

    def writes(self, volume_id: VolumeId) -> bool:
        return self._writing_epoch(volume_id) is not None

    def _writing_epoch(self, volume_id: VolumeId) -> int | None:
        opened = self._open.get(volume_id)
        return None if opened is None or opened.fenced else opened.lease.epoch

    def _fenced(self, volume_id: VolumeId, epoch: int) -> None:
        opened = self._open.get(volume_id)
        if opened is None or opened.fenced:
            return
        opened.fenced = True
        self.store.frozen_slots.add(opened.record.slot)
        if opened.replicator is not None:
            opened.replicator.fence(epoch)
        opened.scope.cancel()
        opened.prefetch.cancel()
        name = opened.record.name
        log.error("volume %s: fenced: another node writes it with epoch %d (ours %d); "
                  "refusing writes and unmounting", name, epoch, opened.lease.epoch)
        self.evictions.send_nowait(Eviction(name, f"fenced by epoch {epoch}"))

    async def _release(self, volume_id: VolumeId, epoch: int) -> None:
        """A peer takes the volume over: hand it over cleanly, then let it in."""
        opened = self._open.get(volume_id)
        if opened is None:
            return
        log.info("volume %s: releasing it to another node", opened.record.name)
        self.evictions.send_nowait(Eviction(opened.record.name, "taken over by another node"))
        with trio.move_on_after(RELEASE_TIMEOUT):
            await opened.closed.wait()

    # --- hooks of the FUSE adapter ----------------------------------------------------

    async def fetch_chunk(self, chunk: bytes) -> None:
        """Get a chunk this node references but does not hold (or holds damaged) from a
        peer, and keep it."""
        cid = ChunkId(chunk)
        for peer in self._all_peers():
            try:
                reply = await self.pool.request(peer, GetChunks([cid]), timeout=CONTROL_TIMEOUT)
            except (PeerUnavailable, PeerError):
                continue
            assert isinstance(reply, Chunks)
            for found, data in reply.found:
                if found == cid:  # verified against its id by the session
                    with self.store.op(expect_bytes=len(data)) as op:
                        repair = not chunks.is_remote(op, cid)
                        if chunks.is_referenced(op, cid):
                            chunks.fill(op, cid, bytes(data))
                    if repair:
                        log.warning("chunk %s was missing or damaged here; repaired from node %s",
                                    cid.hex(), peer.hex()[:8])
                    return
        raise MissingChunk(f"chunk {cid.hex()} is held by no reachable node")

    async def replicated(self, slot: Slot) -> None:
        """fsync's second half: the volume's records are on its replicas (or it is degraded)."""
        for opened in self._open.values():
            if opened.record.slot == slot:
                if opened.fenced:
                    raise ReadOnly("the volume was taken over by another node")
                if opened.replicator is not None and not await opened.replicator.wait_replicated():
                    await self._confirm_lease(opened)
                if opened.fenced:  # fenced while waiting: the replicas refused these records
                    raise ReadOnly("the volume was taken over by another node")
                return

    async def _confirm_lease(self, opened: _Open) -> None:
        """Before a degraded fsync succeeds, make sure no other node took the volume over
        (a writer cut off from its peers could not hear about it from them)."""
        if self.session is None:
            return
        try:
            lost = await self.session.lease_lost(opened.lease)
        except CfsError as exc:
            raise ReadOnly(f"cannot confirm the volume's lease: {exc}") from None
        if lost:
            self._fenced(opened.record.volume_id, opened.lease.epoch + 1)

    # --- reports --------------------------------------------------------------------

    def volume_status(self, volume_id: VolumeId) -> dict[str, Any] | None:
        opened = self._open.get(volume_id)
        if opened is None:
            return None
        out: dict[str, Any] = {"epoch": opened.lease.epoch, "replicas": opened.spec.replicas,
                               "fenced": opened.fenced, "degraded": None, "prefetched_chunks": opened.prefetched}
        if opened.replicator is not None:
            out.update(opened.replicator.status())
        return out

    def writing(self) -> dict[str, int]:
        """Volumes this node writes, with their lease epochs."""
        return {o.record.name: o.lease.epoch for o in self._open.values() if not o.fenced}

    def degraded(self) -> dict[str, str]:
        return {o.record.name: o.replicator.degraded for o in self._open.values()
                if o.replicator is not None and o.replicator.degraded}


def _spec_of(record: VolumeRecord, replicas: int) -> VolumeSpec:
    return VolumeSpec(record.volume_id, record.block_size, replicas, dict(record.options), record.created_ns)

"""One volume's life on this node while this node writes it.

A ``VolumeWriter`` goes through these states (``WriterState``); every new state of a
volume's life on a node (snapshots, CSI's publish and stage) belongs here:

* OPENING (``open``): take the volume's lease in the coordinator, which bumps its epoch
  (a live holder makes it fail naming that node, or with ``takeover`` it is asked to
  release first, ``Release``); fence: tell every reachable node the new epoch, so an
  old writer's records are refused from now on; catch up: replay the records this node
  lacks from the node that has the most (chunks it lacks stay remote, fetched when read
  and in the background); if that node's log no longer reaches back to this node's
  copy, or this copy is an interrupted whole-volume copy, have it push a whole copy
  first (``PushCopy``); the records replayed show as a catch-up in the node's
  ``Transfers``; take the size limit the catalog gives the volume (it may have been
  raised while another node wrote it). A failure on the way releases the lease.
* WRITING: the volume takes writes here. Background work runs in the writer's own
  nursery (``run``): the replicator ships records to the replicas, the lease is watched
  in the coordinator, chunks held only by peers are fetched.
* FENCED (``fence``): another node writes the volume now (a peer saw a newer epoch, the
  lease was lost, the registration expired). Writes are refused at once (the slot is
  frozen: EROFS), every fsync fails, and the service is asked to unmount the volume.
* CLOSING (``close``, when the last user is done or after a fence): flush and wait for
  the replicas (unless fenced), stop the background work, release the lease, and drop a
  fenced copy: it may hold records the new writer never saw, whose history wins.
* CLOSED: nothing of it runs. In a cluster the node keeps it for its slot, so that an
  fsync or close of a file opened under it, arriving late, fails (``replicated``).

Durability promise (``replicated``, fsync's second half): an fsync, fdatasync, fsyncdir or
close-after-write succeeds only while the writer is WRITING or CLOSING unfenced, and
once the replicas acknowledged what was written, or, if they did not within the
replication timeout, the volume is marked degraded, its lease confirmed, and its
durability is ``available`` (cfs.durability). A ``strict`` volume fails them with EIO
then (``NotReplicated``): the data stays here, shipped when the replicas answer. A
fenced or closed writer fails them with EIO (``VolumeLost``): what they would vouch for
may have been thrown away.

Concurrency: runs on the trio thread; the node serialises open and close per volume
(its per-name lock). ``fence`` may be called from any task at any time, and is final.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

import trio

from cfs.codec import VolumeRecord
from cfs.coord.api import Lease, NodeSession, VolumeSpec
from cfs.durability import Durability, durability_of
from cfs.errors import (
    CfsError, LeaseHeld, LogTrimmed, NotReplicated, ReplicationError, Unavailable, VolumeExists, VolumeLost,
)
from cfs.fs import Filesystem, quota
from cfs.repl import placement
from cfs.repl.wire import ErrorCode, Fence, FetchLog, LogAck, LogRecords, PushCopy, Release, VolumeInfo, VolumeInfoReply
from cfs.store import NodeRecords
from cfs.types import NodeId, VolumeId
from mountd.cluster.fetch import ChunkFetcher
from mountd.cluster.links import PeerError, PeerPool, PeerUnavailable
from mountd.cluster.members import Members
from mountd.cluster.progress import Direction, Transfer, TransferKind, Transfers
from mountd.cluster.replicator import VolumeReplicator
from mountd.cluster.stopping import REPLICAS_SHARE, Stopping

log = logging.getLogger(__name__)

FETCH_BYTES = 3 << 20
CONTROL_TIMEOUT = 5.0
RELEASE_TIMEOUT = 20.0
PREFETCH_BATCH = 32
"""Chunks asked for per GetChunks in the background fetch (up to 2 MiB of 64 KiB blocks)."""
PUSH_COPY_TIMEOUT = 3600.0
"""Seconds a mount waits for a whole-volume copy it asked for (each part has its own timeout)."""
MAX_COPY_PULLS = 3


@dataclass(frozen=True)
class Eviction:
    """The service must unmount ``volume`` everywhere on this node (fenced or released)."""

    volume: str
    reason: str


@dataclass(frozen=True)
class WriterContext:
    """What every writer of the node shares, handed in by the node."""

    records: NodeRecords
    fs: Filesystem
    pool: PeerPool
    members: Members
    fetcher: ChunkFetcher
    evictions: trio.MemorySendChannel[Eviction]
    clustered: bool
    replication_timeout: float
    transfers: Transfers | None = None
    """Where catch-ups and the replicator's whole copies show their progress."""
    stopping: Stopping = field(default_factory=Stopping)
    """The node's stop: what a writer waits for while the node stops is bounded by it."""


class WriterState(enum.Enum):
    OPENING = "opening"
    WRITING = "writing"
    FENCED = "fenced"
    CLOSING = "closing"
    CLOSED = "closed"


class VolumeWriter:
    """This node's writing of one volume, from its lease to its release (see the module doc)."""

    def __init__(self, ctx: WriterContext, session: NodeSession, record: VolumeRecord, spec: VolumeSpec,
                 lease: Lease) -> None:
        self.ctx = ctx
        self.session = session
        self.record = record
        self.spec = spec
        self.lease = lease
        self.durability = durability_of(spec.options)
        self.state = WriterState.OPENING
        self.users = 1
        self.fenced_by: int | None = None
        """The newer epoch that fenced this writer (or its own + 1 when the lease was lost)."""
        self.prefetched = 0
        self.replicator: VolumeReplicator | None = None
        self.closed = trio.Event()
        self._scope = trio.CancelScope()
        """The background work (``run``): cancelled by a fence and by ``close``."""

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def fenced(self) -> bool:
        return self.fenced_by is not None

    @property
    def epoch(self) -> int:
        return self.lease.epoch

    # --- opening ------------------------------------------------------------------------

    @classmethod
    async def open(cls, ctx: WriterContext, session: NodeSession, name: str, spec: VolumeSpec, *,
                   takeover: bool) -> "VolumeWriter":
        """Take the lease, fence the peers, catch up: a writer in state WRITING (its
        background work is started by the caller's nursery, ``run``).

        Refused before the lease is touched when neither this node nor any node that
        answers holds a copy: taking the lease would fence the node that holds the only
        one (a frozen or cut-off writer), which then drops it, and this node would serve
        an empty volume."""
        await _check_reachable(ctx, name, spec)
        lease = await _acquire(ctx, session, name, spec, takeover)
        try:
            record = ctx.records.volume_by_id(spec.volume_id) or _add_copy(ctx, name, spec)
            writer = cls(ctx, session, record, spec, lease)
            await writer._fence_peers()
            await writer._catch_up()
            ctx.records.start_writing(record, lease.epoch, spec.replicas > 1)
            writer.record = ctx.fs.set_size_limit(record.name, quota.limit_of(spec.options))
        except BaseException:
            with ctx.stopping.bounded(shield=True):
                await _release_lease(session, lease)
            raise
        ctx.records.thaw(record.slot)
        if ctx.clustered and spec.replicas > 1:
            writer.replicator = VolumeReplicator(
                ctx.records, ctx.pool, record, lease.epoch,
                targets=lambda: placement.choose(spec.volume_id, ctx.members.live_peers(), spec.replicas - 1),
                on_fenced=writer.fence, timeout=ctx.replication_timeout, wanted=spec.replicas - 1,
                strict=writer.durability is Durability.STRICT, transfers=ctx.transfers)
        writer.state = WriterState.WRITING
        log.info("volume %s: writing here with epoch %d", name, lease.epoch)
        return writer

    async def _fence_peers(self) -> None:
        """Tell every reachable node the new epoch; an old writer is refused from now on."""
        async def fence(peer: NodeId) -> None:
            try:
                await self.ctx.pool.request(peer, Fence(self.record.volume_id, self.epoch), timeout=CONTROL_TIMEOUT)
            except (PeerUnavailable, PeerError) as exc:
                log.info("volume %s: could not fence node %s: %s", self.name, peer.hex()[:8], exc)
        async with trio.open_nursery() as nursery:
            for peer in self.ctx.members.all_peers():
                nursery.start_soon(fence, peer)

    async def _catch_up(self) -> None:
        """Replay what the most advanced reachable copy has and this one lacks."""
        records, slot = self.ctx.records, self.record.slot
        applied = await self._copies()
        mine = records.applied_seq(slot)
        incomplete = records.incomplete(slot)
        if not applied or max(applied.values()) <= mine:
            if incomplete:
                raise ReplicationError(
                    f"volume {self.name!r}: this node's copy is incomplete (a whole-volume copy was "
                    "interrupted) and no reachable node has a complete one")
            return
        source = max(applied, key=lambda p: applied[p])
        log.info("volume %s: catching up from record %d to %d (node %s)", self.name, mine,
                 applied[source], source.hex()[:8])
        pulls = 0
        if incomplete:
            await self._pull_copy(source)
            pulls += 1
        mine = records.applied_seq(slot)
        if mine >= applied[source]:
            return
        if self.ctx.transfers is None:
            await self._replay(source, applied[source], pulls, None)
            return
        with self.ctx.transfers.start(self.name, TransferKind.CATCH_UP, Direction.IN, source, whole=False,
                                      records_total=applied[source] - mine) as transfer:
            await self._replay(source, applied[source], pulls, transfer)

    async def _replay(self, source: NodeId, last: int, pulls: int, transfer: Transfer | None) -> None:
        """Fetch and replay ``source``'s records up to ``last`` (a whole copy first if its
        log does not reach back), counted in ``transfer``."""
        records, slot = self.ctx.records, self.record.slot
        mine = records.applied_seq(slot)
        while mine < last:
            try:
                reply = await self.ctx.pool.request(
                    source, FetchLog(self.record.volume_id, self.epoch, mine, FETCH_BYTES))
                assert isinstance(reply, LogRecords)
                if not reply.records:
                    break
                records.apply_records(self.record, self.epoch, reply.records, durable=False)
                if transfer is not None:
                    transfer.advance(sum(len(raw) for _seq, raw in reply.records), len(reply.records))
            except (PeerError, LogTrimmed) as exc:
                if (isinstance(exc, PeerError) and exc.code != ErrorCode.TRIMMED) or pulls >= MAX_COPY_PULLS:
                    raise
                pulls += 1
                await self._pull_copy(source)
            mine = records.applied_seq(slot)

    async def _copies(self) -> dict[NodeId, int]:
        return await _copies(self.ctx, self.record.volume_id)

    async def _pull_copy(self, source: NodeId) -> None:
        """Have ``source`` copy the volume whole to this node."""
        log.info("volume %s: node %s's log does not reach back to this node's copy: copying the "
                 "volume whole from it", self.name, source.hex()[:8])
        reply = await self.ctx.pool.request(source, PushCopy(self.record.volume_id, self.epoch),
                                            timeout=PUSH_COPY_TIMEOUT)
        assert isinstance(reply, LogAck)
        log.info("volume %s: copied whole from node %s up to record %d", self.name, source.hex()[:8],
                 reply.applied_seq)

    # --- writing ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer's background work, until it is fenced or closed."""
        with self._scope:
            async with trio.open_nursery() as nursery:
                if self.replicator is not None:
                    nursery.start_soon(self.replicator.run)
                if self.ctx.clustered:
                    nursery.start_soon(self._watch_lease)
                    nursery.start_soon(self._prefetch)
                task_status.started()

    async def _watch_lease(self) -> None:
        """Fence the writer when the coordinator says its lease is gone. A writer cut off
        from its peers still reaches etcd: no replica can tell it that another node took
        the volume over (``--takeover`` could not ask it to release), but etcd can."""
        while True:
            try:
                await self.session.wait_lease_lost(self.lease)
                break
            except CfsError as exc:  # an answer that makes no sense: ask again
                log.warning("volume %s: could not check its lease: %s", self.name, exc)
                await trio.sleep(1.0)
        log.error("volume %s: its lease (epoch %d) is no longer this node's in the cluster", self.name, self.epoch)
        self.fence(self.epoch + 1)

    async def _prefetch(self) -> None:
        """Fetch the chunks of a volume that moved here and that this node lacks, so reads
        soon stop waiting for peers. Reads fetch what they need meanwhile; whatever fails
        here is left to them."""
        missing = self.ctx.records.remote_chunks(self.record.slot)
        if not missing:
            return
        log.info("volume %s: fetching %d chunks held by peers in the background", self.name, len(missing))
        for start in range(0, len(missing), PREFETCH_BATCH):
            batch = missing[start:start + PREFETCH_BATCH]
            if await self.ctx.fetcher.fetch(set(batch), repair=False) is None:
                log.warning("volume %s: background fetch stopped; reads fetch what they need", self.name)
                return
            self.prefetched += len(batch)
        log.info("volume %s: every chunk is here now", self.name)

    def fence(self, epoch: int) -> None:
        """Another node writes the volume now: refuse writes at once, fail fsyncs, and ask
        the service to unmount it. Final; a writer already closed ignores it."""
        if self.fenced or self.state is WriterState.CLOSED:
            return
        self.fenced_by = epoch
        self.state = WriterState.FENCED if self.state is not WriterState.CLOSING else self.state
        self.ctx.records.freeze(self.record.slot)
        if self.replicator is not None:
            self.replicator.fence(epoch)
        self._scope.cancel()
        log.error("volume %s: fenced: another node writes it with epoch %d (ours %d); "
                  "refusing writes and unmounting", self.name, epoch, self.epoch)
        self.ctx.evictions.send_nowait(Eviction(self.name, f"fenced by epoch {epoch}"))

    async def replicated(self) -> None:
        """fsync's second half: return once what was written is on the replicas (or the
        volume is degraded with its lease confirmed, and its durability is available);
        NotReplicated (EIO) if it is strict and they did not acknowledge in time;
        VolumeLost (EIO) if this writer was fenced or has closed (see the module doc)."""
        self.check_alive()
        if self.replicator is not None and not await self.replicator.wait_replicated():
            await self._confirm_lease()
            self.check_alive()
            if self.durability is Durability.STRICT:
                raise NotReplicated(f"volume {self.name!r} (durability=strict): not on {self.spec.replicas} "
                                    f"nodes within the replication timeout ({self.replicator.degraded or 'degraded'})")
        self.check_alive()  # fenced while waiting: the replicas refused these records

    def check_alive(self) -> None:
        if self.fenced:
            raise VolumeLost(f"volume {self.name!r} is written by another node now (epoch {self.fenced_by}); "
                             "what was written here since its last fsync is not kept")
        if self.state is WriterState.CLOSED:
            raise VolumeLost(f"volume {self.name!r} is no longer written by this node")

    async def _confirm_lease(self) -> None:
        """Before a degraded fsync succeeds, make sure no other node took the volume over
        (a writer cut off from its peers could not hear about it from them)."""
        try:
            lost = await self.session.lease_lost(self.lease)
        except CfsError as exc:
            raise VolumeLost(f"volume {self.name!r}: cannot confirm its lease: {exc}") from None
        if lost:
            self.fence(self.epoch + 1)

    # --- closing ------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush, wait for the replicas, stop, release the lease; drop a fenced copy. A
        fence while waiting is no error of the close: the copy goes, as after any fence.

        While the node stops, the wait for the replicas and the release are bounded by
        the stop (mountd.cluster.stopping); what a replica did not acknowledge stays in
        the log for it, and is logged."""
        self.state = WriterState.CLOSING
        try:
            if not self.fenced:
                self.ctx.fs.sync()
                if self.replicator is not None:
                    with self.ctx.stopping.bounded(share=REPLICAS_SHARE):
                        await self.replicator.wait_replicated()
                    self._log_unacknowledged()
        except VolumeLost:
            pass  # fenced meanwhile (logged by fence): discarded below
        finally:
            self._scope.cancel()
            if self.ctx.clustered:
                self.ctx.records.freeze(self.record.slot)
            with self.ctx.stopping.bounded(shield=True) as release:
                await _release_lease(self.session, self.lease)
            if release.cancelled_caught:
                log.warning("volume %s: lease (epoch %d) not released: etcd did not answer before the stop's "
                            "deadline; it lapses with this node's registration", self.name, self.epoch)
            if self.fenced:
                self._discard()
            self.state = WriterState.CLOSED
            self.closed.set()
        log.info("volume %s: no longer written here", self.name)

    def _log_unacknowledged(self) -> None:
        """Name the records each replica lacks: they stay in the log, shipped when the
        volume is next written (here or elsewhere, after a catch-up) or healed."""
        assert self.replicator is not None
        for target, missing in self.replicator.unacknowledged().items():
            if missing is None:
                log.warning("volume %s: node %s never answered; records up to %d left for catch-up",
                            self.name, target.hex()[:8], self.replicator.head())
            else:
                log.warning("volume %s: %d records not acknowledged by node %s, left for catch-up",
                            self.name, missing, target.hex()[:8])

    def _discard(self) -> None:
        """Drop a fenced writer's copy: it may hold records the new writer never saw."""
        try:
            self.ctx.fs.remove_volume(self.name, force=True)
            log.warning("volume %s: local copy discarded after fencing; it will be copied again", self.name)
        except CfsError as exc:
            log.error("volume %s: could not discard the fenced copy: %s", self.name, exc)

    # --- reports ------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"epoch": self.epoch, "replicas": self.spec.replicas, "state": self.state.value,
                                  "fenced": self.fenced, "degraded": None, "prefetched_chunks": self.prefetched}
        if self.replicator is not None:
            out.update(self.replicator.status())
        return out


async def _copies(ctx: WriterContext, volume_id: VolumeId) -> dict[NodeId, int]:
    """How far each reachable peer's copy goes (peers without a usable copy are absent)."""
    applied: dict[NodeId, int] = {}

    async def ask(peer: NodeId) -> None:
        try:
            info = await ctx.pool.request(peer, VolumeInfo(volume_id), timeout=CONTROL_TIMEOUT)
        except (PeerUnavailable, PeerError):
            return
        if isinstance(info, VolumeInfoReply) and info.known:
            applied[peer] = info.applied_seq
    async with trio.open_nursery() as nursery:
        for peer in ctx.members.all_peers():
            nursery.start_soon(ask, peer)
    return applied


async def open_read_only(ctx: WriterContext, name: str, spec: VolumeSpec) -> VolumeRecord:
    """A snapshot's copy here, complete, copied whole from a node that has one if needed.

    A snapshot never changes, so it is opened without a lease, fence or catch-up, and as
    many nodes as like may read it at once."""
    record = ctx.records.volume_by_id(spec.volume_id)
    if record is not None and not ctx.records.incomplete(record.slot) and ctx.records.applied_seq(record.slot) > 0:
        return record
    copies = await _copies(ctx, spec.volume_id)
    for source in sorted(copies, key=lambda peer: -copies[peer]):
        if copies[source] <= 0:
            break
        try:
            await ctx.pool.request(source, PushCopy(spec.volume_id, 0), timeout=PUSH_COPY_TIMEOUT)
        except (PeerUnavailable, PeerError) as exc:
            log.warning("snapshot %s: node %s could not copy it here: %s", name, source.hex()[:8], exc)
            continue
        record = ctx.records.volume_by_id(spec.volume_id)
        if record is not None and not ctx.records.incomplete(record.slot):
            log.info("snapshot %s: copied here whole from node %s", name, source.hex()[:8])
            return record
    raise Unavailable(f"snapshot {name!r} has no complete copy on this node nor on any node that answers")


async def _check_reachable(ctx: WriterContext, name: str, spec: VolumeSpec) -> None:
    """Unavailable if no copy of the volume is here or on a node that answers. Every copy
    holds record 1 (the root directory) at least; a fresh replica's empty entry holds 0."""
    local = ctx.records.volume_by_id(spec.volume_id)
    if local is not None and not ctx.records.incomplete(local.slot) and ctx.records.applied_seq(local.slot) > 0:
        return
    copies = await _copies(ctx, spec.volume_id)
    if not any(seq > 0 for seq in copies.values()):
        raise Unavailable(f"volume {name!r} has no copy on this node nor on any node that answers; it is not "
                          "taken over, so that the node holding it keeps it (start that node, or reach it)")


async def _acquire(ctx: WriterContext, session: NodeSession, name: str, spec: VolumeSpec, takeover: bool) -> Lease:
    try:
        return await session.acquire(name, takeover=False)
    except LeaseHeld as held:
        if not takeover:
            raise
        log.info("volume %s: taking over from node %s", name, held.node_id.hex()[:8])
        try:
            await ctx.pool.request(NodeId(held.node_id), Release(spec.volume_id, held.epoch), timeout=RELEASE_TIMEOUT)
        except (PeerUnavailable, PeerError) as exc:
            log.warning("volume %s: the holder did not release it (%s); taking it over anyway", name, exc)
        return await session.acquire(name, takeover=True)


async def _release_lease(session: NodeSession, lease: Lease) -> None:
    try:
        await session.release(lease)
    except CfsError as exc:
        log.warning("volume %s: could not release the lease: %s", lease.volume, exc)


def _add_copy(ctx: WriterContext, name: str, spec: VolumeSpec) -> VolumeRecord:
    """This node's copy of a volume made elsewhere: rows arrive by replay."""
    try:
        return ctx.records.add_copy(name, spec.block_size, dict(spec.options), volume_id=spec.volume_id,
                                    created_ns=spec.created_ns)
    except VolumeExists:
        raise VolumeExists(f"this node has another volume named {name!r}") from None

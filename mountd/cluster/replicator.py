"""Ships the change log and chunks of one volume this node writes to its replica nodes.

Order per replica: the chunks the next records name are pushed first (``PutChunks``;
the replica stages them), then the records (``AppendLog``); the replica replays them,
commits durably and answers with the last sequence it holds (``LogAck``). Records are
read from the store's current batch, so they may leave before this node commits them:
a record is durable once either side has it on disk.

``wait_replicated`` is what fsync waits on: every replica has acknowledged the volume's
last record. If a replica cannot be reached, the wait ends after ``timeout`` seconds and
the volume is marked *degraded* (shown by ``cfs volume inspect`` and ``cfs status``)
instead of failing the fsync: the data is durable on the nodes that answered.

The checkpoint of the volume's log moves to the lowest acknowledged sequence, so
records a replica has not acknowledged are kept for it.

Concurrency: one task (``run``) ships; fsync callers only wait on ``_progress``. Reads
of the store happen between awaits, in operations of their own.
"""

from __future__ import annotations

import logging
from typing import Callable

import trio

from cfs.codec import ROW_PUT, Change, VolumeRecord, decode_block
from cfs.errors import MissingChunk, ReadOnly
from cfs.repl.wire import (
    CHUNK_ENTRY_OVERHEAD, AppendLog, ErrorCode, LogAck, PutChunks, VolumeInfo, VolumeInfoReply,
)
from cfs.store import Store, Table, chunks, replica
from cfs.types import ChunkId, NodeId
from mountd.cluster.links import PeerError, PeerPool, PeerUnavailable

log = logging.getLogger(__name__)

BATCH_BYTES = 1 << 20
"""Records per AppendLog, and chunk bytes per PutChunks (well under the frame limit)."""
RETRY_SECONDS = 2.0


class VolumeReplicator:
    """Keeps ``record``'s replicas up to date while this node writes it under ``epoch``."""

    def __init__(self, store: Store, pool: PeerPool, record: VolumeRecord, epoch: int, *,
                 targets: Callable[[], list[NodeId]], on_fenced: Callable[[int], None],
                 timeout: float) -> None:
        self.store = store
        self.pool = pool
        self.record = record
        self.epoch = epoch
        self.targets = targets
        self.on_fenced = on_fenced
        self.timeout = timeout
        self.acked: dict[NodeId, int] = {}
        self.failing: dict[NodeId, str] = {}
        self.degraded: str | None = None
        self.fenced_by: int | None = None
        """The newer epoch a replica reported: this node may not write the volume any more."""
        self._wake = trio.Event()
        self._progress = trio.Event()

    # --- for the rest of the node ------------------------------------------------

    def fence(self, epoch: int) -> None:
        """Another node writes the volume now: wake every fsync waiting here, to fail."""
        self.fenced_by = epoch
        self._signal_progress()

    def notify(self) -> None:
        """New records may be there: ship them now rather than at the next tick."""
        self._wake.set()

    def head(self) -> int:
        with self.store.op(adds_data=False) as op:
            return replica.applied_seq(op, self.record.slot)

    def caught_up(self, seq: int) -> bool:
        targets = self.targets()
        return all(self.acked.get(t, -1) >= seq for t in targets)

    async def wait_replicated(self) -> None:
        """Return when every replica holds the volume's records so far, or after ``timeout``
        (then the volume is degraded: durable on this node and the replicas that answered)."""
        seq = self.head()
        self._check_fenced()
        if self.caught_up(seq):
            return
        self.notify()
        with trio.move_on_after(self.timeout):
            while not self.caught_up(seq):
                progress = self._progress
                await progress.wait()
                self._check_fenced()
            return
        lagging = [t.hex()[:8] for t in self.targets() if self.acked.get(t, -1) < seq]
        self._degrade(f"replicas {', '.join(lagging)} did not acknowledge within {self.timeout:g} s")

    def _check_fenced(self) -> None:
        if self.fenced_by is not None:
            raise ReadOnly(f"volume {self.record.name!r} is written by another node now "
                           f"(epoch {self.fenced_by}); this node's changes are refused")

    def status(self) -> dict[str, object]:
        return {
            "epoch": self.epoch, "head": self.head(),
            "replicas": {t.hex(): self.acked.get(t) for t in self.targets()},
            "degraded": self.degraded, "failing": {k.hex(): v for k, v in self.failing.items()},
        }

    # --- the shipping task ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(0.5):
                await self._wake.wait()
            self._wake = trio.Event()
            async with trio.open_nursery() as nursery:
                for target in self.targets():
                    nursery.start_soon(self._ship_to, target)
            if self.fenced_by is not None:
                self.on_fenced(self.fenced_by)
                return
            self._checkpoint()
            self._signal_progress()

    async def ship_once(self) -> None:
        """One round to every target (the healer's use: a volume nobody writes)."""
        async with trio.open_nursery() as nursery:
            for target in self.targets():
                nursery.start_soon(self._ship_to, target)

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _ship_to(self, target: NodeId) -> None:
        try:
            while await self._ship_batch(target):
                self._signal_progress()
            self.failing.pop(target, None)
            if self.degraded and not self.failing and self.caught_up(self.head()):
                log.info("volume %s: every replica caught up; no longer degraded", self.record.name)
                self.degraded = None
        except PeerUnavailable as exc:
            self._failed(target, str(exc))
        except PeerError as exc:
            if exc.code == ErrorCode.STALE_EPOCH:
                self.fence(exc.value)
                return
            if exc.code == ErrorCode.GAP:
                self.acked[target] = exc.value - 1
                self._wake.set()
                return
            self._failed(target, str(exc))

    def _failed(self, target: NodeId, reason: str) -> None:
        if self.failing.get(target) != reason:
            log.warning("volume %s: replica %s: %s", self.record.name, target.hex()[:8], reason)
        self.failing[target] = reason

    def _degrade(self, reason: str) -> None:
        if self.degraded is None:
            log.warning("volume %s is degraded: %s", self.record.name, reason)
        self.degraded = reason

    async def _ship_batch(self, target: NodeId) -> bool:
        """Send the next records ``target`` lacks; False when it has everything."""
        if target not in self.acked:
            info = await self.pool.request(target, VolumeInfo(self.record.volume_id))
            assert isinstance(info, VolumeInfoReply)
            self.acked[target] = info.applied_seq
        with self.store.op(adds_data=False) as op:
            records = replica.records_after(op, self.record.slot, self.acked[target], BATCH_BYTES)
            pushes = _chunks_named(op, records)
        if not records:
            return False
        for batch in _batches(pushes):
            await self.pool.request(target, PutChunks(batch))
        reply = await self.pool.request(target, AppendLog(self.record.volume_id, self.epoch, records))
        assert isinstance(reply, LogAck)
        self.acked[target] = reply.applied_seq
        return True

    def _checkpoint(self) -> None:
        targets = self.targets()
        if not targets or any(t not in self.acked for t in targets):
            return
        with self.store.op(adds_data=False) as op:
            replica.acknowledge(op, self.record.slot, min(self.acked[t] for t in targets),
                                self.store.config.changelog_retain)


def _chunks_named(op: object, records: list[tuple[int, bytes]]) -> list[tuple[ChunkId, bytes]]:
    """The bytes of the chunks the records' block rows name, that this node holds."""
    seen: set[bytes] = set()
    out = []
    for _seq, raw in records:
        for table, kind, _key, value in Change.decode(raw).rows:
            if table != Table.BLOCKS or kind != ROW_PUT:
                continue
            cid = decode_block(value)[0]
            if cid in seen:
                continue
            seen.add(cid)
            try:
                out.append((cid, chunks.get(op, cid)))  # type: ignore[arg-type]
            except MissingChunk:
                pass  # not here either (a moved volume): the replica marks it remote
    return out


def _batches(entries: list[tuple[ChunkId, bytes]]) -> list[list[tuple[ChunkId, bytes]]]:
    """Chunks grouped into PutChunks messages of at most about 3 x BATCH_BYTES."""
    batches: list[list[tuple[ChunkId, bytes]]] = []
    current: list[tuple[ChunkId, bytes]] = []
    size = 0
    for entry in entries:
        cost = len(entry[1]) + CHUNK_ENTRY_OVERHEAD
        if current and size + cost > 3 * BATCH_BYTES:
            batches.append(current)
            current, size = [], 0
        current.append(entry)
        size += cost
    if current:
        batches.append(current)
    return batches

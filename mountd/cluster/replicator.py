"""Ships the change log and chunks of one volume this node writes to its replica nodes.

Order per replica: the chunks the next records name are pushed first (``PutChunks``;
the replica stages them), then the records (``AppendLog``); the replica replays them,
commits durably and answers with the last sequence it holds (``LogAck``). Records are
read from the store's current batch, so they may leave before this node commits them:
a record is durable once either side has it on disk.

``wait_replicated`` is what fsync waits on: every replica has acknowledged the volume's
last record, and there are as many replicas as the volume wants (``wanted``: fewer live
nodes than that, and placement finds fewer targets). If not within ``timeout`` seconds,
the wait ends False and the volume is marked *degraded* (shown by ``cfs volume inspect``
and ``cfs status``): the data is durable on the nodes that answered. What the fsync
then answers is the volume's durability (cfs.durability, decided by the writer): it
succeeds (``available``) or fails with EIO (``strict``). A strict volume's wait also
gives a replica already known to fail the whole timeout to answer, so that one that
came back is waited for rather than refused; an available one does not wait for it
again, so that a lost node does not cost every fsync the timeout.

The checkpoint of the volume's log moves to the lowest acknowledged sequence, so
records a replica has not acknowledged are kept for it.

A replica that needs records the log no longer holds (a new replica, or one more than
``changelog_retain`` records behind; the replica answers GAP or TRIMMED, or the records
are gone here) gets the volume copied whole (``send_copy``): every row as of the last
commit, sequence S, in ``VolumeCopy`` parts with their chunks pushed ahead; shipping
then goes on from S. S is the head when the copy starts, so the records after it are
after the checkpoint (which waits for this replica) and stay in the log; should they
be gone anyway, the next round copies again.

Progress: whole copies, and the records a healer's round (``ship_once``) ships, are
entries of the node's ``Transfers`` (mountd.cluster.progress), advanced after each part.

Concurrency: one task (``run``) ships; fsync callers only wait on ``_progress``. The
store is read between awaits, through ``NodeRecords``; a whole-volume copy reads a
snapshot (``NodeRecords.copy_source``) that holds across awaits.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Callable, Iterator

import trio

from cfs.codec import VolumeRecord, decode_block
from cfs.errors import LogTrimmed, ReplicationError, VolumeLost
from cfs.repl.wire import (
    CHUNK_ENTRY_OVERHEAD, COPY_ROW_OVERHEAD, AppendLog, CopyRow, ErrorCode, LogAck, PutChunks, VolumeCopy,
    VolumeInfo, VolumeInfoReply,
)
from cfs.store import CopySource, NodeRecords, Table
from cfs.types import ChunkId, NodeId
from mountd.cluster.handler import MAX_RECORD_BYTES
from mountd.cluster.links import PeerError, PeerPool, PeerUnavailable
from mountd.cluster.progress import Direction, Transfer, TransferKind, Transfers, describe

log = logging.getLogger(__name__)

BATCH_BYTES = 1 << 20
"""Records per AppendLog, and chunk bytes per PutChunks (well under the frame limit)."""
RETRY_SECONDS = 2.0
COPY_ROW_BYTES = 1 << 20
"""Row bytes per VolumeCopy part."""
COPY_CHUNK_BYTES = 8 << 20
"""Bytes of the chunks a VolumeCopy part names, at most (they are held in memory to push)."""


class VolumeReplicator:
    """Keeps ``record``'s replicas up to date while this node writes it under ``epoch``."""

    def __init__(self, records: NodeRecords, pool: PeerPool, record: VolumeRecord, epoch: int, *,
                 targets: Callable[[], list[NodeId]], on_fenced: Callable[[int], None],
                 timeout: float, wanted: int = 0, strict: bool = False, transfers: Transfers | None = None,
                 kind: TransferKind = TransferKind.REPLICA) -> None:
        """``wanted``: how many targets a replicated volume needs (``replicas - 1``; 0 for
        a healer's round, which waits for nothing); ``strict``: its durability is
        ``strict`` (see the module doc). ``transfers``: the node's, where whole copies (and
        a healer's rounds) show their progress as ``kind``; None: not shown."""
        self.records = records
        self.pool = pool
        self.record = record
        self.epoch = epoch
        self.targets = targets
        self.on_fenced = on_fenced
        self.timeout = timeout
        self.wanted = wanted
        self.strict = strict
        self.acked: dict[NodeId, int] = {}
        self.failing: dict[NodeId, str] = {}
        self.degraded: str | None = None
        self.copies: dict[NodeId, int] = {}
        """Whole-volume copies sent: target -> the sequence the last one held."""
        self.fenced_by: int | None = None
        """The newer epoch a replica reported: this node may not write the volume any more."""
        self.transfers = transfers
        self.kind = kind
        self._rounds: dict[NodeId, Transfer] = {}
        """Records shipped in a ``ship_once`` round, per target (only there: the writer's
        steady shipping is replication lag, not a transfer)."""
        self.behind_since: dict[NodeId, float] = {}
        """Replica -> the ``time.monotonic()`` at which it was first seen lacking records
        since it last held them all (checked at each shipping round, at least every 0.5 s,
        and at each ``lag``): how long it has been behind."""
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
        return self.records.applied_seq(self.record.slot)

    def caught_up(self, seq: int, *, reachable_only: bool = False) -> bool:
        """Every target (``reachable_only``: every target not known to be failing) holds ``seq``."""
        targets = [t for t in self.targets() if not (reachable_only and t in self.failing)]
        return all(self.acked.get(t, -1) >= seq for t in targets)

    def placed(self) -> bool:
        """Placement finds as many replicas as the volume wants (enough live nodes)."""
        return len(self.targets()) >= self.wanted

    async def wait_replicated(self) -> bool:
        """Return when the volume's records so far are on as many replicas as it wants:
        True. Or False after ``timeout`` (at once when too few nodes are live), the
        volume degraded: durable here and on the replicas that answered. Unless strict,
        a replica already known to fail is not waited for again: the volume is degraded
        until it answers. VolumeLost if the writer was fenced meanwhile."""
        seq = self.head()
        self._check_fenced()
        if self.placed() and self.caught_up(seq):
            return True
        self.notify()
        with trio.move_on_after(self.timeout):
            while not self.caught_up(seq, reachable_only=not self.strict):
                progress = self._progress
                await progress.wait()
                self._check_fenced()
            if self.placed() and self.caught_up(seq):
                return True
        targets = self.targets()
        lagging = [t.hex()[:8] for t in targets if self.acked.get(t, -1) < seq]
        reasons = [f"replicas {', '.join(lagging)} did not acknowledge within {self.timeout:g} s"] if lagging else []
        if len(targets) < self.wanted:
            reasons.append(f"{len(targets)} of the {self.wanted} other nodes it needs are live")
        self._degrade("; ".join(reasons) or f"replicas did not acknowledge within {self.timeout:g} s")
        return False

    def unacknowledged(self) -> dict[NodeId, int | None]:
        """Replicas that lack records of the head: how many (None: it never said how far
        its copy goes)."""
        head = self.head()
        out: dict[NodeId, int | None] = {}
        for target in self.targets():
            acked = self.acked.get(target)
            if acked is None or acked < head:
                out[target] = None if acked is None else head - acked
        return out

    def _check_fenced(self) -> None:
        if self.fenced_by is not None:
            raise VolumeLost(f"volume {self.record.name!r} is written by another node now "
                           f"(epoch {self.fenced_by}); this node's changes are refused")

    def lag(self) -> dict[NodeId, tuple[int, float]]:
        """Per replica: (records it has not acknowledged, seconds since it last held them
        all, to the resolution of a shipping round). A replica not yet asked what it holds
        counts as lacking every record."""
        self._note_lag()
        head, now = self.head(), time.monotonic()
        out = {}
        for target in self.targets():
            records = max(0, head - self.acked.get(target, 0))
            out[target] = (records, now - self.behind_since.get(target, now) if records else 0.0)
        return out

    def _note_lag(self) -> None:
        head, now = self.head(), time.monotonic()
        for target in self.targets():
            if self.acked.get(target, -1) >= head:
                self.behind_since.pop(target, None)
            else:
                self.behind_since.setdefault(target, now)

    def status(self) -> dict[str, object]:
        return {
            "epoch": self.epoch, "head": self.head(),
            "replicas": {t.hex(): self.acked.get(t) for t in self.targets()},
            "degraded": self.degraded, "failing": {k.hex(): v for k, v in self.failing.items()},
            "copied": {k.hex(): v for k, v in self.copies.items()},
        }

    # --- the shipping task ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(0.5):
                await self._wake.wait()
            self._wake = trio.Event()
            self._note_lag()
            async with trio.open_nursery() as nursery:
                for target in self.targets():
                    nursery.start_soon(self._ship_to, target)
            self._note_lag()
            if self.fenced_by is not None:
                self.on_fenced(self.fenced_by)
                return
            self._checkpoint()
            self._signal_progress()

    async def ship_once(self) -> None:
        """One round to every target (the healer's use: a volume nobody writes)."""
        async with trio.open_nursery() as nursery:
            for target in self.targets():
                nursery.start_soon(self._ship_to, target, self.transfers is not None)

    def _signal_progress(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def _ship_to(self, target: NodeId, tracked: bool = False) -> None:
        try:
            await self._ship_all(target, tracked)
            self.failing.pop(target, None)
            targets = self.targets()
            for gone in [t for t in self.failing if t not in targets]:
                del self.failing[gone]  # no longer a replica (dead, draining): nothing to wait for
            if self.degraded and not self.failing and self.placed() and self.caught_up(self.head()):
                log.info("volume %s: every replica caught up; no longer degraded", self.record.name)
                self.degraded = None
        except (PeerUnavailable, ReplicationError) as exc:
            self._failed(target, str(exc))
        except ValueError as exc:  # a message the session refuses to send (over the peer's limit)
            self._failed(target, f"cannot send: {exc}")
        except PeerError as exc:
            if exc.code == ErrorCode.STALE_EPOCH:
                self.fence(exc.value)
                return
            if exc.code == ErrorCode.GAP:
                self.acked[target] = exc.value - 1
                self._wake.set()
                return
            self._failed(target, str(exc))

    async def _ship_all(self, target: NodeId, tracked: bool) -> None:
        """Ship until ``target`` has everything; ``tracked``: the records shipped are a
        transfer (ended, done or failed, when this returns or raises)."""
        try:
            while await self._ship_batch(target, tracked=tracked):
                self._signal_progress()
        except BaseException as exc:
            self._end_round(target, describe(exc))
            raise
        self._end_round(target, None)

    def _end_round(self, target: NodeId, error: str | None) -> None:
        transfer = self._rounds.pop(target, None)
        if transfer is not None and error is None:
            transfer.finish()
        elif transfer is not None:
            transfer.fail(error or "failed")

    def _shipped(self, target: NodeId, records: list[tuple[int, bytes]], chunk_bytes: int) -> None:
        """A healer's round sent ``records`` (and their chunks) to ``target``."""
        assert self.transfers is not None
        transfer = self._rounds.get(target)
        if transfer is None:
            left = self.head() - records[0][0] + 1
            transfer = self._rounds[target] = self.transfers.start(
                self.record.name, self.kind, Direction.OUT, target, whole=False, records_total=left)
        transfer.advance(sum(len(raw) for _seq, raw in records) + chunk_bytes, len(records))

    def _failed(self, target: NodeId, reason: str) -> None:
        if self.failing.get(target) != reason:
            log.warning("volume %s: replica %s: %s", self.record.name, target.hex()[:8], reason)
        self.failing[target] = reason

    def _degrade(self, reason: str) -> None:
        if self.degraded is None:
            log.warning("volume %s is degraded: %s%s", self.record.name, reason,
                        "; durability=strict: its fsyncs fail with EIO until enough replicas acknowledge"
                        if self.strict else "")
        self.degraded = reason

    async def _ship_batch(self, target: NodeId, *, tracked: bool = False) -> bool:
        """Send the next records ``target`` lacks; False when it has everything.
        ``tracked``: count them in a transfer (``_shipped``)."""
        if target not in self.acked:
            info = await self.pool.request(target, VolumeInfo(self.record.volume_id), timeout=self.timeout)
            assert isinstance(info, VolumeInfoReply)
            self.acked[target] = info.applied_seq
        records = self._next_records(target)
        if records is None:
            await self._copy_to(target)  # trimmed, or the next record is too large for a frame
            return True
        if not records:
            return False
        chunk_bytes = 0
        for batch in _batches(self.records.chunks_named(records)):
            await self.pool.request(target, PutChunks(batch), timeout=self.timeout)
            chunk_bytes += sum(len(data) for _cid, data in batch)
        try:
            reply = await self.pool.request(target, AppendLog(self.record.volume_id, self.epoch, records),
                                            timeout=self.timeout)
        except PeerError as exc:
            if exc.code != ErrorCode.TRIMMED:
                raise
            await self._copy_to(target)  # its copy is incomplete: an earlier copy was cut short
            return True
        assert isinstance(reply, LogAck)
        self.acked[target] = reply.applied_seq
        self.pool.counters.shipped_bytes += chunk_bytes + sum(len(raw) for _seq, raw in records)
        if tracked:
            self._shipped(target, records, chunk_bytes)
        return True

    def _next_records(self, target: NodeId) -> list[tuple[int, bytes]] | None:
        """The records ``target`` needs next, or None if they must go as a whole copy: the
        log no longer holds them, or the next one is too large for a frame (a truncate
        of ~100,000 blocks)."""
        try:
            records = self.records.records_after(self.record.slot, self.acked[target], BATCH_BYTES)
        except LogTrimmed:
            return None
        oversized = next((i for i, (_seq, raw) in enumerate(records) if len(raw) > MAX_RECORD_BYTES), None)
        return records if oversized is None else records[:oversized] or None

    async def _copy_to(self, target: NodeId) -> None:
        log.info("volume %s: replica %s needs records from %d on, which the log no longer holds: "
                 "copying the volume whole", self.record.name, target.hex()[:8], self.acked[target] + 1)
        seq = await send_copy(self.records, self.pool, self.record, self.epoch, target,
                              transfers=self.transfers, kind=self.kind)
        self.acked[target] = self.copies[target] = seq
        log.info("volume %s: copied whole to %s, up to record %d", self.record.name, target.hex()[:8], seq)

    def _checkpoint(self) -> None:
        targets = self.targets()
        if not targets or any(t not in self.acked for t in targets):
            return
        self.records.acknowledge(self.record.slot, min(self.acked[t] for t in targets))


async def send_copy(records: NodeRecords, pool: PeerPool, record: VolumeRecord, epoch: int,
                    target: NodeId, *, transfers: Transfers | None = None,
                    kind: TransferKind = TransferKind.REPLICA) -> int:
    """``_send_copy``, counted in the pool's ``LinkCounters.copies`` while it runs."""
    pool.counters.copies += 1
    try:
        return await _send_copy(records, pool, record, epoch, target, transfers, kind)
    finally:
        pool.counters.copies -= 1


async def _send_copy(records: NodeRecords, pool: PeerPool, record: VolumeRecord, epoch: int,
                     target: NodeId, transfers: Transfers | None, kind: TransferKind) -> int:
    """Copy the volume whole to ``target`` under lease ``epoch``; the sequence S it holds.

    The rows are read from a snapshot of a commit made now (``NodeRecords.copy_source``),
    so that it is the volume's state at its head S; the snapshot does not change while
    the parts go out, across awaits, while this node keeps writing. With ``transfers``,
    the copy is an entry there (``kind``), its total the volume's bytes in use. Each part's chunks
    are pushed ahead of it; those this node does not hold, or holds damaged, are left
    for the target to mark remote and fetch from another node. Raises
    PeerError/PeerUnavailable (the target refused or went away: the next attempt starts
    over) and ReplicationError (this node's copy is incomplete itself).
    """
    with records.copy_source(record) as source, _tracked(transfers, kind, record, target, source) as transfer:
        copy_id = int.from_bytes(os.urandom(8), "big") or 1
        pages = _copy_pages(source)
        page, cids, used = next(pages, ([], [], 0))
        first = True
        while True:
            following = next(pages, None)
            for batch in _batches(_held(source, cids)):
                await pool.request(target, PutChunks(batch))
                pool.counters.copied_bytes += sum(len(data) for _cid, data in batch)
            part = VolumeCopy(record.volume_id, epoch, copy_id, source.seq, source.next_local, first,
                              following is None, page)
            reply = await pool.request(target, part)
            pool.counters.copied_bytes += sum(len(key) + len(value) for _table, key, value in page)
            if transfer is not None:
                transfer.advance(used, len(page))
            if following is None:
                break
            (page, cids, used), first = following, False
    assert isinstance(reply, LogAck)
    return source.seq


def _tracked(transfers: Transfers | None, kind: TransferKind, record: VolumeRecord, target: NodeId,
             source: CopySource) -> AbstractContextManager[Transfer | None]:
    """The copy's entry in ``transfers`` (ended with the block), or nothing."""
    if transfers is None:
        return nullcontext()
    return transfers.start(record.name, kind, Direction.OUT, target, whole=True, bytes_total=source.used_bytes)


def _copy_pages(source: CopySource) -> Iterator[tuple[list[CopyRow], list[bytes], int]]:
    """The volume's rows in parts of about COPY_ROW_BYTES, each with the chunks its block
    rows name first in the copy (so each chunk is pushed once), and the bytes in use its
    block rows count (``mountd.cluster.progress.copied_bytes``)."""
    seen: set[bytes] = set()
    page: list[CopyRow] = []
    cids: list[bytes] = []
    row_bytes = chunk_bytes = used = 0
    for table, key, value in source.rows():
        if page and (row_bytes >= COPY_ROW_BYTES or chunk_bytes >= COPY_CHUNK_BYTES):
            yield page, cids, used
            page, cids, row_bytes, chunk_bytes, used = [], [], 0, 0, 0
        page.append((table, key, value))
        row_bytes += COPY_ROW_OVERHEAD + len(key) + len(value)
        if table == Table.BLOCKS:
            block = decode_block(value)
            used += block.units * 512
            for cid, length in block.chunks():
                if cid not in seen:
                    seen.add(cid)
                    cids.append(cid)
                    chunk_bytes += length
    if page:
        yield page, cids, used


def _held(source: CopySource, cids: list[bytes]) -> list[tuple[ChunkId, bytes]]:
    found, damaged = source.chunks(cids)
    for cid in damaged:
        log.warning("chunk %s is damaged here, not sent with a volume copy (run cfs fsck)", cid.hex())
    return found


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

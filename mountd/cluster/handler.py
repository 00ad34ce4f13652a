"""Answers peers' requests against this node's store: the replica side of replication.

Every handler runs on the trio thread and touches the store only between awaits,
through ``NodeRecords``, in operations of its own, so a request is applied whole or not
at all. Records are committed durably before ``LogAck`` goes out: an acknowledgement is
a promise that the records survive a crash of this node.

A chunk asked for (``GetChunks``) that is damaged here is answered as missing, with a
warning: the asker then asks another replica, as it does for a chunk this node lacks.

Fencing: every request that carries an epoch raises this node's remembered epoch for
the volume (``replica.admit_epoch``) or is refused with STALE_EPOCH. When the raised
epoch belongs to a volume this node is writing, this node has been fenced: ``on_fenced``
is called and the volume stops taking writes at once.

Whole-volume copies: ``VolumeCopy`` parts replace this node's copy of a volume
(``cfs.store.replica.begin_copy`` ... ``finish_copy``; the last part is committed before
``LogAck``); ``PushCopy`` asks this node to send such a copy to the asker (``push_copy``,
the node's ``mountd.cluster.replicator.send_copy``), which answers once the copy is
complete. A copy in progress here is reported as no copy (``VolumeInfoReply.known``
False, applied 0).

Progress: each whole copy being received is an entry of the node's ``Transfers``
(kind ``incoming``, or ``snapshot``), advanced by each part: no totals (a part carries
none), and ended as failed if no part came for ``COPY_IDLE_SECONDS``.

Snapshots: ``TakeSnapshot`` asks this node, which writes the volume, to snapshot it and
enter the snapshot in the catalog (``take_snapshot``, the node's ``create_snapshot``
without forwarding); a name taken is EXISTS, a volume unknown NOT_FOUND, one this node
cannot write now BUSY.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from cfs.codec import VolumeRecord
from cfs.errors import (
    CorruptRecord, LogGap, LogTrimmed, NoSpace, ReplicationError, StaleEpoch, UserError, VolumeBusy, VolumeExists,
    VolumeNotFound,
)
from cfs.repl.wire import (
    DEFAULT_MAX_PAYLOAD, MAX_CHUNK_SIZE, Ack, AppendLog, Chunks, Error, ErrorCode, Fence, FetchLog,
    GetChunks, LogAck, LogRecords, Ping, Pong, PushCopy, PutChunks, Release, Reply, Request,
    SnapshotTaken, TakeSnapshot, VolumeCopy, VolumeInfo, VolumeInfoReply,
)
from cfs.names import is_snapshot_name
from cfs.store import NodeRecords
from cfs.types import NodeId, VolumeId
from mountd.cluster.progress import Direction, Transfer, TransferKind, Transfers, copied_bytes, describe

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 4 * MAX_CHUNK_SIZE
MAX_RECORD_BYTES = DEFAULT_MAX_PAYLOAD - 64 * 1024
"""The largest change record that is shipped as a record; larger ones (rare: an operation
touching ~100,000 rows) make the volume travel as a whole-volume copy."""
COPY_IDLE_SECONDS = 120.0
"""A copy being received that got no part for this long is over (its sender went away)."""


class PeerHandler:
    """The node's answers to the peer protocol's requests."""

    def __init__(self, records: NodeRecords, *,
                 adopt: Callable[[VolumeId], Awaitable[VolumeRecord | None]],
                 writing_epoch: Callable[[VolumeId], int | None],
                 on_fenced: Callable[[VolumeId, int], None],
                 release: Callable[[VolumeId, int], Awaitable[None]],
                 push_copy: Callable[[NodeId, VolumeRecord, int], Awaitable[int]] | None = None,
                 take_snapshot: Callable[[VolumeId, str], Awaitable[VolumeId]] | None = None,
                 transfers: Transfers | None = None) -> None:
        """``adopt``: the local record of a volume, created from the cluster catalog if
        this node has none (None: no such volume). ``writing_epoch``: the epoch under
        which this node writes the volume, None if it does not. ``on_fenced``: this node's
        writer of the volume was superseded. ``release``: flush, ship and unmount the
        volume because another node is taking it over. ``push_copy``: copy the volume
        whole to a node under an epoch, returning the sequence the copy holds (None:
        ``PushCopy`` is refused). ``take_snapshot``: snapshot a volume this node writes
        under a name, returning the snapshot's id (None: ``TakeSnapshot`` is refused).
        ``transfers``: the node's, where copies being received show (None: nowhere)."""
        self.records = records
        self.adopt = adopt
        self.writing_epoch = writing_epoch
        self.on_fenced = on_fenced
        self.release = release
        self.push_copy = push_copy
        self.take_snapshot = take_snapshot
        self.transfers = transfers
        self._incoming: dict[int, Transfer] = {}
        """Copies being received, by copy id."""

    async def __call__(self, peer: NodeId, request: Request) -> Reply:
        try:
            return await self._dispatch(peer, request)
        except StaleEpoch as exc:
            return Error.of(ErrorCode.STALE_EPOCH, str(exc), exc.current)
        except LogGap as exc:
            return Error.of(ErrorCode.GAP, str(exc), exc.expected)
        except LogTrimmed as exc:
            return Error.of(ErrorCode.TRIMMED, str(exc))
        except NoSpace as exc:
            return Error.of(ErrorCode.NO_SPACE, str(exc))
        except CorruptRecord as exc:
            log.warning("peer %s sent a bad record: %s", peer.hex()[:8], exc)
            return Error.of(ErrorCode.BAD_REQUEST, str(exc))
        except ReplicationError as exc:
            return Error.of(ErrorCode.BAD_REQUEST, str(exc))

    async def _dispatch(self, peer: NodeId, request: Request) -> Reply:
        if isinstance(request, Ping):
            return Pong(time.time_ns())
        if isinstance(request, PutChunks):
            return self._put_chunks(request)
        if isinstance(request, GetChunks):
            return self._get_chunks(peer, request)
        if isinstance(request, TakeSnapshot):
            return await self._take_snapshot(peer, request)
        if isinstance(request, (AppendLog, VolumeCopy, FetchLog, VolumeInfo, Fence, Release, PushCopy)):
            # Only records and copies make this node a replica; the others ask about a copy.
            if isinstance(request, (AppendLog, VolumeCopy)):
                fence = self.records.fence_of(request.volume_id)
                if request.epoch < fence:  # refused before this node would become a replica
                    return Error.of(ErrorCode.STALE_EPOCH, f"epoch {request.epoch} is stale, this node "
                                    f"has seen epoch {fence}", fence)
                record = await self.adopt(request.volume_id)
            else:
                record = self.records.volume_by_id(request.volume_id)
            if isinstance(request, VolumeInfo):
                if record is None:
                    return VolumeInfoReply(request.volume_id, 0, 0, False)
                return self._volume_info(record)
            if record is None:
                if isinstance(request, Fence):
                    self.records.remember_fence(request.volume_id, request.epoch)
                    return Ack()
                return Error.of(ErrorCode.NOT_FOUND, f"volume {request.volume_id.hex()} has no copy here")
            self._check_epoch(record, request.epoch)
            if isinstance(request, AppendLog):
                return self._append(peer, record, request)
            if isinstance(request, VolumeCopy):
                return self._copy(peer, record, request)
            if isinstance(request, PushCopy):
                return await self._push_copy(peer, record, request)
            if isinstance(request, FetchLog):
                return self._fetch(record, request)
            if isinstance(request, Release):
                await self.release(record.volume_id, request.epoch)
            else:
                self.records.commit()  # a fence holds across a crash of this node
            return Ack()
        return Error.of(ErrorCode.BAD_REQUEST, f"{type(request).__name__} is not served here")

    def _check_epoch(self, record: VolumeRecord, epoch: int) -> None:
        """Refuse a stale epoch; a newer one than ours fences our own writer of the volume."""
        self.records.admit_epoch(record, epoch)
        mine = self.writing_epoch(record.volume_id)
        if mine is not None and epoch > mine:
            self.on_fenced(record.volume_id, epoch)

    def _put_chunks(self, request: PutChunks) -> Reply:
        self.records.stage_chunks(request.chunks)  # verified against their ids by the session
        return Ack()

    def _get_chunks(self, peer: NodeId, request: GetChunks) -> Reply:
        # Ids past the reply's size are in neither list: the asker asks again.
        found, missing, damaged = self.records.get_chunks(request.ids, MAX_REPLY_BYTES)
        for cid in damaged:
            log.warning("chunk %s asked for by node %s is damaged here: answered as missing (run cfs fsck)",
                        cid.hex(), peer.hex()[:8])
        return Chunks(found, missing + damaged)

    def _volume_info(self, record: VolumeRecord) -> Reply:
        epoch = self.records.epoch_seen(record.slot)
        if self.records.incomplete(record.slot):  # a whole-volume copy is being received
            return VolumeInfoReply(record.volume_id, epoch, 0, False)
        return VolumeInfoReply(record.volume_id, epoch, self.records.applied_seq(record.slot), True)

    def _append(self, peer: NodeId, record: VolumeRecord, request: AppendLog) -> Reply:
        if self.writing_epoch(record.volume_id) is not None:
            # We write this volume under the newest epoch we know: another writer is stale.
            return Error.of(ErrorCode.STALE_EPOCH, f"node writes volume {record.name!r} itself",
                            self.writing_epoch(record.volume_id) or 0)
        applied = self.records.apply_records(record, request.epoch, request.records, durable=True)
        return LogAck(record.volume_id, applied)  # durable before we say so

    def _copy(self, peer: NodeId, record: VolumeRecord, request: VolumeCopy) -> Reply:
        if self.writing_epoch(record.volume_id) is not None:
            return Error.of(ErrorCode.STALE_EPOCH, f"node writes volume {record.name!r} itself",
                            self.writing_epoch(record.volume_id) or 0)
        if is_snapshot_name(record.name) and self._complete(record):
            # A snapshot never changes: a complete copy here is the one being sent (it came
            # from the volume's log meanwhile). Replacing it would empty it under its readers.
            held = self.records.applied_seq(record.slot)
            return LogAck(record.volume_id, held) if request.last else Ack()
        if request.first:
            log.info("volume %s: receiving a whole copy (up to record %d) from node %s",
                     record.name, request.snapshot_seq, peer.hex()[:8])
        transfer = self._incoming_transfer(peer, record, request)
        try:
            self.records.receive_copy(record, request.epoch, request.copy_id, request.snapshot_seq,
                                      first=request.first, last=request.last, rows=request.rows,
                                      next_local=request.next_local)
        except Exception as exc:
            if transfer is not None:
                transfer.fail(describe(exc))
            raise
        if transfer is not None:
            transfer.advance(copied_bytes(request.rows), len(request.rows))
            if request.last:
                transfer.finish()
        if not request.last:
            return Ack()
        log.info("volume %s: whole copy up to record %d received", record.name, request.snapshot_seq)
        return LogAck(record.volume_id, request.snapshot_seq)

    def _incoming_transfer(self, peer: NodeId, record: VolumeRecord, request: VolumeCopy) -> Transfer | None:
        """The entry of the copy ``request`` is a part of (begun by its first part)."""
        if self.transfers is None:
            return None
        for copy_id in [c for c, t in self._incoming.items() if t.over]:
            del self._incoming[copy_id]  # failed, or expired
        if request.first:
            for other in self._incoming.values():
                if other.volume == record.name:
                    other.fail("replaced by another copy")
            kind = TransferKind.SNAPSHOT if is_snapshot_name(record.name) else TransferKind.INCOMING
            self._incoming[request.copy_id] = self.transfers.start(
                record.name, kind, Direction.IN, peer, whole=True, idle_limit=COPY_IDLE_SECONDS)
        return self._incoming.pop(request.copy_id, None) if request.last else self._incoming.get(request.copy_id)

    def _complete(self, record: VolumeRecord) -> bool:
        return not self.records.incomplete(record.slot) and self.records.applied_seq(record.slot) > 0

    async def _push_copy(self, peer: NodeId, record: VolumeRecord, request: PushCopy) -> Reply:
        if self.push_copy is None:
            return Error.of(ErrorCode.BAD_REQUEST, "this node does not send volume copies")
        log.info("volume %s: node %s asks for a whole copy", record.name, peer.hex()[:8])
        seq = await self.push_copy(peer, record, request.epoch)
        return LogAck(record.volume_id, seq)

    async def _take_snapshot(self, peer: NodeId, request: TakeSnapshot) -> Reply:
        if self.take_snapshot is None:
            return Error.of(ErrorCode.BAD_REQUEST, "this node does not take snapshots for peers")
        log.info("node %s asks for a snapshot %r of volume %s", peer.hex()[:8], request.name,
                 request.volume_id.hex())
        try:
            return SnapshotTaken(await self.take_snapshot(request.volume_id, request.name))
        except VolumeExists as exc:
            return Error.of(ErrorCode.EXISTS, str(exc))
        except VolumeNotFound as exc:
            return Error.of(ErrorCode.NOT_FOUND, str(exc))
        except VolumeBusy as exc:
            return Error.of(ErrorCode.BUSY, str(exc))
        except UserError as exc:
            return Error.of(ErrorCode.BAD_REQUEST, str(exc))

    def _fetch(self, record: VolumeRecord, request: FetchLog) -> Reply:
        records = self.records.records_after(record.slot, request.after_seq,
                                             min(request.max_bytes, MAX_REPLY_BYTES))
        last = self.records.applied_seq(record.slot)
        oversized = next((i for i, (_seq, raw) in enumerate(records) if len(raw) > MAX_RECORD_BYTES), None)
        if oversized == 0:
            # One operation's record is larger than a frame may carry (a truncate of a huge
            # file): the asker gets the volume whole instead (PushCopy), in parts.
            return Error.of(ErrorCode.TRIMMED, f"record {records[0][0]} is {len(records[0][1])} bytes, "
                            "more than a frame carries: copy the volume whole")
        return LogRecords(record.volume_id, last, records[:oversized])


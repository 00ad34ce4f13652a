"""Progress of the node's bulk transfers: whole-volume copies, healing, catch-up.

``Transfers`` is owned by the node (``ClusterNode`` makes it and hands it to the healer,
the peer handler, the writers and their replicators). Each copy or catch-up in flight
holds one entry, a ``Transfer``, which the copy loop advances after each part it sent or
received: an addition and, at most every ``SAMPLE_SECONDS``, one sample appended, so
advancing costs next to nothing beside a part of up to megabytes. Readers take
``Transfers.snapshot()``: immutable ``TransferState`` values (``cfs status``,
``cfs node drain --wait``, metrics).

What is counted, per kind of transfer:

* a whole-volume copy (``whole``): ``bytes`` are the bytes in use of the block rows
  copied (what ``du`` counts of the volume: ``BlockRow.units`` x 512), ``records`` the
  rows of the volume's tables. The sender knows the bytes' total up front (the volume's
  bytes in use at the copy's commit) and not the rows' (counting them costs a walk of
  the metadata). The receiver knows neither: a ``VolumeCopy`` part carries no totals,
  and adding them would change the peer protocol; its entry shows what came so far.
* shipping change records (the healer topping up a lagging copy) and catch-up (a mount
  replaying what it lacks): ``records`` are change records, whose total is known up
  front (the source's last sequence); ``bytes`` are the records' encoded bytes, plus
  the chunks pushed with them when sending, total unknown.

The rate is measured over the last ``WINDOW_SECONDS``; the ETA is what is left of the
bytes (or, without their total, of the records) at that rate: None while no total is
known or nothing moved yet.

Concurrency: trio thread only; every method runs to completion without awaiting.
"""

from __future__ import annotations

import collections
import enum
import itertools
import time
from dataclasses import dataclass
from typing import Callable

from cfs.codec import decode_block
from cfs.store import Table
from cfs.types import NodeId

SAMPLE_SECONDS = 0.5
"""At most one rate sample per transfer this often."""
WINDOW_SECONDS = 10.0
"""The rate is measured over this much of the recent past (or since the start, if shorter)."""
KEEP_FINISHED = 16
"""Finished transfers kept for ``finished()`` (newest last)."""


class TransferKind(enum.Enum):
    HEAL = "heal"
    """The healer tops up a volume nobody writes (records, or a whole copy)."""
    DRAIN = "drain"
    """As HEAL, by a node that is draining: its copy is on its way elsewhere."""
    REPLICA = "replica"
    """A writer's replicator copies its volume whole to a replica whose log fell behind."""
    CATCH_UP = "catch-up"
    """A mount replays the records it lacks from a peer; or a peer is sent a whole copy
    for its catch-up (``PushCopy``)."""
    SNAPSHOT = "snapshot"
    """A snapshot copied whole to a node that opens it."""
    INCOMING = "incoming"
    """A whole copy received: the receiver is not told why it is sent."""


class Direction(enum.Enum):
    OUT = "out"
    IN = "in"


@dataclass(frozen=True)
class TransferState:
    """One transfer as it stood when ``Transfers.snapshot()`` was taken.

    ``id`` is unique on the node while it runs; ``kind`` a ``TransferKind`` value,
    ``direction`` a ``Direction`` value; ``peer`` is the other node (hex id). ``whole``:
    a whole-volume copy, whose records are rows (see the module doc). ``started`` is
    wall-clock (seconds since the epoch), ``elapsed_seconds`` monotonic. ``bytes_total``,
    ``records_total``, ``percent``, the rates (per second, over the last
    ``WINDOW_SECONDS``) and ``eta_seconds`` are None when not known; ``percent`` and the
    ETA follow the bytes when their total is known, else the records. ``state``: running,
    done (totals then equal what was counted) or failed (``error`` says why)."""

    id: int
    volume: str
    kind: str
    direction: str
    peer: str
    whole: bool
    bytes_done: int
    bytes_total: int | None
    records_done: int
    records_total: int | None
    started: float
    elapsed_seconds: float
    bytes_per_second: float | None
    records_per_second: float | None
    percent: float | None
    eta_seconds: float | None
    state: str
    error: str | None

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Transfer:
    """One transfer in flight: advanced by the loop that moves it, ended once."""

    def __init__(self, owner: Transfers, ident: int, volume: str, kind: TransferKind, direction: Direction,
                 peer: NodeId, *, whole: bool, bytes_total: int | None, records_total: int | None,
                 idle_limit: float | None) -> None:
        self._owner = owner
        self.id = ident
        self.volume = volume
        self.kind = kind
        self.direction = direction
        self.peer = peer
        self.whole = whole
        self.bytes_total = bytes_total
        self.records_total = records_total
        self.bytes_done = 0
        self.records_done = 0
        self.idle_limit = idle_limit
        """Seconds without an advance after which the transfer counts as failed (a sender
        that went away says nothing to its receiver); None: no limit."""
        self.started = owner.wall()
        self.started_at = self.last_advance = owner.clock()
        self.ended_at: float | None = None
        self.error: str | None = None
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque(
            [(self.started_at, 0, 0)])

    @property
    def over(self) -> bool:
        return self.ended_at is not None

    def advance(self, nbytes: int = 0, records: int = 0) -> None:
        now = self._owner.clock()
        self.bytes_done += nbytes
        self.records_done += records
        self.last_advance = now
        if now - self._samples[-1][0] >= SAMPLE_SECONDS:
            self._samples.append((now, self.bytes_done, self.records_done))
            while len(self._samples) > 2 and now - self._samples[1][0] >= WINDOW_SECONDS:
                self._samples.popleft()

    def finish(self) -> None:
        """Done: the totals become what was counted (a total may have been an estimate)."""
        if not self.over:
            self.bytes_total, self.records_total = self.bytes_done, self.records_done
            self._end(None)

    def fail(self, error: str) -> None:
        if not self.over:
            self._end(error or "failed")

    def _end(self, error: str | None) -> None:
        self.ended_at = self._owner.clock()
        self.error = error
        self._owner._ended(self)

    def state(self) -> TransferState:
        now = self.ended_at if self.ended_at is not None else self._owner.clock()
        bytes_rate, records_rate = self._rates(now)
        percent = eta = None
        if self.bytes_total is not None:
            done, total, rate = self.bytes_done, self.bytes_total, bytes_rate
        elif self.records_total is not None:
            done, total, rate = self.records_done, self.records_total, records_rate
        else:
            done, total, rate = 0, None, None
        if total is not None:
            percent = 100.0 if total <= 0 else round(min(100.0, 100.0 * done / total), 1)
            if self.over:
                eta = 0.0
            elif rate:
                eta = round(max(0, total - done) / rate, 1)
        return TransferState(
            id=self.id, volume=self.volume, kind=self.kind.value, direction=self.direction.value,
            peer=self.peer.hex(), whole=self.whole, bytes_done=self.bytes_done, bytes_total=self.bytes_total,
            records_done=self.records_done, records_total=self.records_total, started=self.started,
            elapsed_seconds=round(now - self.started_at, 3), bytes_per_second=bytes_rate,
            records_per_second=records_rate, percent=percent, eta_seconds=eta,
            state="running" if not self.over else ("done" if self.error is None else "failed"),
            error=self.error)

    def _rates(self, now: float) -> tuple[float | None, float | None]:
        """Bytes and records per second over the window; None before anything was timed."""
        base = next((s for s in self._samples if now - s[0] <= WINDOW_SECONDS), self._samples[-1])
        elapsed = now - base[0]
        if elapsed <= 0:
            return None, None
        return (round((self.bytes_done - base[1]) / elapsed, 1), round((self.records_done - base[2]) / elapsed, 1))

    def __enter__(self) -> Transfer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self.finish()
        else:
            self.fail(describe(exc))


class Transfers:
    """The node's bulk transfers in flight, and the last few that ended.

    Read API (for ``cfs status`` and metrics): ``snapshot()`` for those in flight,
    ``finished()`` for the last ``KEEP_FINISHED`` that ended, both oldest first.
    Write API (for the copy loops): ``start(...)`` returns a ``Transfer``; advance it,
    then ``finish()`` or ``fail()`` it, or use it as a context manager (an exception
    fails it, a normal exit finishes it)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.wall = wall
        self._running: dict[int, Transfer] = {}
        self._finished: collections.deque[Transfer] = collections.deque(maxlen=KEEP_FINISHED)
        self._ids = itertools.count(1)

    def start(self, volume: str, kind: TransferKind, direction: Direction, peer: NodeId, *, whole: bool,
              bytes_total: int | None = None, records_total: int | None = None,
              idle_limit: float | None = None) -> Transfer:
        self._expire()
        transfer = Transfer(self, next(self._ids), volume, kind, direction, peer, whole=whole,
                            bytes_total=bytes_total, records_total=records_total, idle_limit=idle_limit)
        self._running[transfer.id] = transfer
        return transfer

    def snapshot(self) -> list[TransferState]:
        """The transfers in flight, oldest first. One whose ``idle_limit`` passed without
        an advance is ended as failed first."""
        self._expire()
        return [t.state() for t in self._running.values()]

    def finished(self) -> list[TransferState]:
        """The last transfers that ended (done or failed), oldest first."""
        return [t.state() for t in self._finished]

    def _ended(self, transfer: Transfer) -> None:
        if self._running.pop(transfer.id, None) is not None:
            self._finished.append(transfer)

    def _expire(self) -> None:
        now = self.clock()
        for transfer in list(self._running.values()):
            if transfer.idle_limit is not None and now - transfer.last_advance > transfer.idle_limit:
                transfer.fail(f"nothing moved for {transfer.idle_limit:g} s")


def describe(exc: BaseException) -> str:
    """An exception as a transfer's error."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def copied_bytes(rows: list[tuple[int, bytes, bytes]]) -> int:
    """Bytes in use of the block rows among a whole copy's ``rows`` (``BlockRow.units`` x
    512, as the volume's bytes in use count them): what a copy counts as bytes moved."""
    return sum(decode_block(value).units * 512 for table, _key, value in rows if table == Table.BLOCKS)

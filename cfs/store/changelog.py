"""The ordered per-volume change log: the unit replication ships to peers.

Each filesystem operation that changes a volume appends one ``Change`` (its row puts and
deletes, with volume-local keys) under ``slot + sequence``. Sequence numbers start at 1
and have no gaps. The log is bounded: records at or below the volume's checkpoint (what
every replica has applied) are trimmed once more than ``retain`` records are kept. A
volume without replicas keeps no records at all (see ``append``).

The volume's counters live beside its log (``VolumeState``): the next inode number, the
log positions, and the bytes in use, which ``Op`` moves with every inode row it writes
and adds here when the operation finishes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from cfs.codec import U64X2, Change, ReplState, VolumeState, pack_u64, stored_bytes
from cfs.store.tables import Table
from cfs.types import LocalIno, Slot, make_ino

if TYPE_CHECKING:
    from cfs.store.store import Op, View


def log_key(slot: Slot, seq: int) -> bytes:
    return U64X2.pack(slot, seq)


def split_key(key: bytes) -> tuple[Slot, int]:
    slot, seq = U64X2.unpack(key)
    return Slot(slot), seq


def load_state(op: "View", slot: Slot) -> VolumeState:
    """The volume's counters, without the usage change of ``op`` (added when it finishes).

    A record without a count of bytes in use (version 1, or none at all) gets one
    counted from the volume's inodes.
    """
    raw = op.get(Table.VOLSTATE, slot.to_bytes(8, "big"))
    state = VolumeState.decode(raw) if raw is not None else VolumeState(used_bytes=None)
    if state.used_bytes is None:
        state.used_bytes = count_used(op, slot) - op.usage_change(slot)
    return state


def used_bytes(op: "View", slot: Slot) -> int:
    """The volume's bytes in use as they stand in ``op``, its own changes included."""
    return _count_change(op, slot, load_state(op, slot)).used_bytes or 0


def _count_change(op: "View", slot: Slot, state: VolumeState) -> VolumeState:
    assert state.used_bytes is not None, "load_state counts what a record lacks"
    state.used_bytes += op.usage_change(slot)
    return state


def count_used(op: "View", slot: Slot) -> int:
    """Bytes in use counted the slow way: ``stored_units * 512`` over the volume's inodes."""
    lo, hi = pack_u64(make_ino(slot, LocalIno(0))), pack_u64(make_ino(Slot(slot + 1), LocalIno(0)))
    return sum(stored_bytes(raw) for _key, raw in op.range(Table.INODES, lo, hi))


def add_usage(op: "Op", slot: Slot) -> None:
    """Add ``op``'s change of bytes in use to the counter of a volume it wrote no log
    record for (unlogged inode rows); a slot without state (a volume being removed)
    keeps none."""
    if op.get(Table.VOLSTATE, slot.to_bytes(8, "big")) is not None:
        save_state(op, slot, _count_change(op, slot, load_state(op, slot)))


def save_state(op: "Op", slot: Slot, state: VolumeState) -> None:
    op.put(Table.VOLSTATE, slot.to_bytes(8, "big"), state.encode())


def append(op: "Op", slot: Slot, change: Change | None, retain: int) -> int:
    """Record ``change`` as the volume's next change, return its sequence; ``None`` for a
    volume that keeps no records (the operation asked ``Store.replicated`` before its
    first row and collected none).

    Only a replicated volume keeps the record, for its replicas to fetch, and trims what
    every replica has (the checkpoint, moved by cfs.store.replica.acknowledge) once more
    than ``retain`` records are kept. A single copy has no reader for it: the sequence
    moves on, the change is checkpointed at once, and no record is written, so an
    operation costs two fewer row writes and a store emptied of files is empty again.
    A replica added later starts from a whole copy of the volume (records_after raises
    LogTrimmed), as one further behind than ``retain`` would.
    """
    state = _count_change(op, slot, load_state(op, slot))
    seq = state.next_seq
    state.next_seq = seq + 1
    if change is not None:
        op.put(Table.CHANGELOG, log_key(slot, seq), change.encode())
        trim(op, slot, state, retain)
    else:
        state.checkpoint_seq = seq
        # Records kept while the volume was replicated go; once none are left the store
        # remembers it (``Store.logless``), and the next operations need not look.
        if slot not in op.store.logless and not trim(op, slot, state, 0):
            op.store.logless.add(slot)
    save_state(op, slot, state)
    return seq


def trim(op: "Op", slot: Slot, state: VolumeState, retain: int) -> int:
    """Drop records that are both checkpointed and more than ``retain`` behind the head;
    how many were dropped."""
    # Deleting a range rather than the one record that just fell out keeps the bound
    # when ``retain`` shrinks or the checkpoint jumps ahead.
    last = min(state.next_seq - 1 - retain, state.checkpoint_seq)
    if last <= 0:
        return 0
    doomed = [key for key, _value in op.range(Table.CHANGELOG, log_key(slot, 0), log_key(slot, last + 1))]
    for key in doomed:
        op.delete(Table.CHANGELOG, key)
    return len(doomed)


def replicated(view: "View", slot: Slot) -> bool:
    """Whether the volume keeps its change log for replicas, as its ``volrepl`` row says
    (``Store.replicated`` remembers it)."""
    raw = view.get(Table.VOLREPL, slot.to_bytes(8, "big"))
    return raw is not None and ReplState.decode(raw).replicated


def read(op: "Op", slot: Slot, after: int = 0) -> Iterator[tuple[int, Change]]:
    """Yield (seq, change) of the volume's retained records with seq > ``after``, in order."""
    for key, value in op.seek(Table.CHANGELOG, log_key(slot, after + 1)):
        key_slot, seq = U64X2.unpack(key)
        if key_slot != slot:
            return
        yield seq, Change.decode(value)

"""The ordered per-volume change log: the unit replication ships to peers.

Each filesystem operation that changes a volume appends one ``Change`` (its row puts and
deletes, with volume-local keys) under ``slot + sequence``. Sequence numbers start at 1
and have no gaps. The log is bounded: records at or below the volume's checkpoint (what
every replica has applied; on a single node, everything) are trimmed once more than
``retain`` records are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from cfs.codec import U64X2, Change, VolumeState
from cfs.store.tables import Table
from cfs.types import Slot

if TYPE_CHECKING:
    from cfs.store.store import Op


def log_key(slot: Slot, seq: int) -> bytes:
    return U64X2.pack(slot, seq)


def load_state(op: "Op", slot: Slot) -> VolumeState:
    raw = op.get(Table.VOLSTATE, slot.to_bytes(8, "big"))
    return VolumeState.decode(raw) if raw is not None else VolumeState()


def save_state(op: "Op", slot: Slot, state: VolumeState) -> None:
    op.put(Table.VOLSTATE, slot.to_bytes(8, "big"), state.encode())


def append(op: "Op", slot: Slot, change: Change, retain: int) -> int:
    """Append ``change`` to the volume's log, trim what is checkpointed, return its sequence."""
    state = load_state(op, slot)
    seq = state.next_seq
    op.put(Table.CHANGELOG, log_key(slot, seq), change.encode())
    state.next_seq = seq + 1
    # A single node has no replica to wait for: everything appended is checkpointed.
    # Replication moves the checkpoint to what every replica has acknowledged instead.
    state.checkpoint_seq = seq
    # Everything up to ``last`` may go. Deleting a range rather than the one record that
    # just fell out keeps the bound when ``retain`` shrinks or the checkpoint jumps ahead.
    last = min(seq - retain, state.checkpoint_seq)
    if last > 0:
        for key, _value in list(op.range(Table.CHANGELOG, log_key(slot, 0), log_key(slot, last + 1))):
            op.delete(Table.CHANGELOG, key)
    save_state(op, slot, state)
    return seq


def read(op: "Op", slot: Slot, after: int = 0) -> Iterator[tuple[int, Change]]:
    """Yield (seq, change) of the volume's retained records with seq > ``after``, in order."""
    cursor = op.cursor(Table.CHANGELOG)
    if not cursor.set_range(log_key(slot, after + 1)):
        return
    for key, value in cursor:
        key_slot, seq = U64X2.unpack(key)
        if key_slot != slot:
            return
        yield seq, Change.decode(value)

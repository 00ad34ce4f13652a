"""A volume's replication state on this node, and replay of another node's change log.

The node holding a volume's lease (the *writer*) appends a record per operation to the
volume's change log (cfs.store.changelog). Replica nodes replay those records in
sequence order: each row is written under the replica's own slot for the volume, block
rows move chunk reference counts exactly as the writer's operation did, and the record
is appended to the replica's log under the same sequence number. The replica's log is
therefore a copy of the writer's, so any replica can become the writer, or bring
another node up to date, after a move.

Fencing: every record carries the writer's lease epoch. A node remembers the highest
epoch it has seen per volume and refuses records with a lower one, so a writer that
lost its lease (frozen, partitioned, or replaced with ``--takeover``) cannot change a
replica any more.

Checkpoint: on a replicated volume the writer's checkpoint is the lowest sequence every
replica acknowledged (``acknowledge``); records after it are kept however many there are,
so a replica that falls behind can catch up from the log.

Whole-volume copies: a replica that needs records the log no longer has (a new replica,
or one that fell more than ``changelog_retain`` records behind) gets every row of the
volume as it stood at one sequence number S instead (``copy_origin``, ``copy_rows`` on
the source; ``begin_copy``, ``add_copy_rows``, ``finish_copy`` here), then records after S
as usual. From ``begin_copy`` until ``finish_copy`` the copy is marked incomplete in its
``ReplState``, in the same transactions that change its rows: a crash leaves either the
old copy, or one marked incomplete, never a half-copied volume that looks whole.
An incomplete copy reports applied sequence 0, refuses replayed records (LogTrimmed: copy
it again), and is neither served nor used as a source.
"""

from __future__ import annotations

from typing import Iterator

from cfs.codec import (
    ROW_DELETE, ROW_PUT, Change, Inode, ReplState, VolumeRecord, decode_block, decode_dirent, pack_u64,
    stored_bytes,
)
from cfs.errors import CorruptRecord, LogGap, LogTrimmed, ReplicationError, StaleEpoch
from cfs.store import catalog, changelog, chunks, snapshots
from cfs.store.store import Op, View
from cfs.store.tables import Table
from cfs.types import LOCAL_MASK, LocalIno, Slot, VolumeId, make_ino

COPY_TABLES = (Table.INODES, Table.DIRENTS, Table.DIRORDER, Table.BLOCKS, Table.XATTRS, Table.SYMLINKS)
"""The per-volume tables, in the order a whole-volume copy sends them."""


def state(op: View, slot: Slot) -> ReplState:
    raw = op.get(Table.VOLREPL, pack_u64(slot))
    return ReplState.decode(raw) if raw is not None else ReplState()


def save(op: Op, slot: Slot, repl: ReplState) -> None:
    op.put(Table.VOLREPL, pack_u64(slot), repl.encode())


def remember_fence(op: Op, volume_id: VolumeId, epoch: int) -> None:
    """A fence for a volume this node has no copy of: kept for when a copy arrives, so a
    stale writer cannot make this node its replica after a newer writer fenced it."""
    if epoch > fence_of(op, volume_id):
        op.put(Table.FENCES, volume_id, pack_u64(epoch))


def fence_of(op: View, volume_id: VolumeId) -> int:
    raw = op.get(Table.FENCES, volume_id)
    return 0 if raw is None else int.from_bytes(raw, "big")


def admit_epoch(op: Op, record: VolumeRecord, epoch: int) -> None:
    """Refuse ``epoch`` if a newer one was seen for the volume; remember it if it is the newest."""
    repl = state(op, record.slot)
    seen = max(repl.epoch, fence_of(op, record.volume_id))
    if epoch < seen:
        raise StaleEpoch(
            f"volume {record.name!r}: epoch {epoch} is stale, this node has seen epoch {seen}", seen)
    if epoch != repl.epoch:
        repl.epoch = epoch
        save(op, record.slot, repl)


def set_replicated(op: Op, slot: Slot, replicated: bool) -> None:
    repl = state(op, slot)
    if repl.replicated != replicated:
        repl.replicated = replicated
        save(op, slot, repl)


def applied_seq(op: View, slot: Slot) -> int:
    """The sequence number of the last record this node holds for the volume (0: none)."""
    return changelog.load_state(op, slot).next_seq - 1


def apply(op: Op, record: VolumeRecord, epoch: int, seq: int, raw_change: bytes, retain: int) -> bool:
    """Replay record ``seq``; False if it was applied before (a resend), True if now.

    Raises StaleEpoch (fenced writer), LogGap (a record is missing before this one) or
    CorruptRecord (the record does not decode or names rows outside the volume); the
    caller's operation is then rolled back whole.
    """
    admit_epoch(op, record, epoch)
    if incomplete(op, record.slot):
        raise LogTrimmed(f"volume {record.name!r}: the copy here is incomplete (a whole-volume copy "
                         "was interrupted); it must be copied whole again")
    vstate = changelog.load_state(op, record.slot)
    if seq < vstate.next_seq:
        return False
    if seq > vstate.next_seq:
        raise LogGap(f"volume {record.name!r}: got record {seq}, expected {vstate.next_seq}", vstate.next_seq)
    change = Change.decode(raw_change)
    for table, kind, key, value in change.rows:
        if table == snapshots.SNAPSHOT_EVENT:
            snapshots.replay(op, record, key, value)  # the writer took a snapshot here
            continue
        local = _apply_row(op, record.slot, table, kind, key, value)
        if table == Table.INODES and kind == ROW_PUT:
            vstate.next_local = max(vstate.next_local, local + 1)
    op.put(Table.CHANGELOG, changelog.log_key(record.slot, seq), raw_change)
    vstate.next_seq = seq + 1
    # Everything a replica holds is checkpointed for it: it only keeps ``retain`` records
    # so that it can bring another node up to date after a move.
    vstate.checkpoint_seq = seq
    changelog.trim(op, record.slot, vstate, retain)
    changelog.save_state(op, record.slot, vstate)
    return True


def _apply_row(op: Op, slot: Slot, table_id: int, kind: int, key: bytes, value: bytes) -> int:
    """Write one replayed row under this node's slot; returns its volume-local inode."""
    try:
        table = Table(table_id)
    except ValueError:
        raise CorruptRecord(f"change record names unknown table {table_id}") from None
    if not table.per_volume or len(key) < 8 or kind not in (ROW_PUT, ROW_DELETE):
        raise CorruptRecord(f"change record row for {table.name} is malformed")
    local = int.from_bytes(key[:8], "big")
    if local == 0 or local > LOCAL_MASK:
        raise CorruptRecord(f"change record row names inode {local}, outside any volume")
    node_key = pack_u64(make_ino(slot, LocalIno(local))) + key[8:]
    if kind == ROW_PUT:
        _validate(table, value)
    if table is Table.BLOCKS:
        _move_chunk_refs(op, node_key, value if kind == ROW_PUT else None)
    if kind == ROW_PUT:
        op.put(table, node_key, value, logged=False)
    else:
        op.delete(table, node_key, logged=False)
    return local


def _validate(table: Table, value: bytes) -> None:
    if table is Table.INODES:
        Inode.decode(value)
    elif table is Table.DIRENTS:
        decode_dirent(value)
    elif table is Table.BLOCKS:
        decode_block(value)


def _move_chunk_refs(op: Op, node_key: bytes, new_value: bytes | None) -> None:
    """Block row replaced: the new row's chunks gain their references before the old
    row's lose theirs (a chunk both name must not go in between)."""
    old = op.get(Table.BLOCKS, node_key)
    if new_value is not None:
        for cid, length in decode_block(new_value).chunks():
            chunks.reference(op, cid, length)
    if old is not None:
        for cid, _length in decode_block(old).chunks():
            chunks.decref(op, cid)


# --- whole-volume copies: the receiving side -------------------------------------------

def incomplete(view: View, slot: Slot) -> bool:
    """Whether a whole-volume copy into ``slot`` began and has not finished."""
    return state(view, slot).copy_id != 0


def begin_copy(op: Op, record: VolumeRecord, epoch: int, copy_id: int, seq: int, now_ns: int) -> None:
    """Replace this node's copy of the volume by the copy ``copy_id`` of the source's state
    at ``seq``: every row of the volume goes, its change log too, and the volume is marked
    incomplete until ``finish_copy``.

    Chunks losing their last reference keep their bytes, staged (``chunks.decref``):
    the copy's rows will mostly name them again.
    """
    if copy_id == 0:
        raise CorruptRecord("a volume copy needs a nonzero copy id")
    admit_epoch(op, record, epoch)
    lo, hi = catalog.slot_range(record.slot)
    for _key, value in catalog.delete_rows(op, Table.BLOCKS, lo, hi):
        for cid, _length in decode_block(value).chunks():
            chunks.decref(op, cid, stage_ns=now_ns)
    for table in (Table.INODES, Table.DIRENTS, Table.DIRORDER, Table.XATTRS, Table.SYMLINKS, Table.ORPHANS):
        catalog.delete_rows(op, table, lo, hi)
    catalog.delete_rows(op, Table.CHANGELOG, changelog.log_key(record.slot, 0),
                        changelog.log_key(Slot(record.slot + 1), 0))
    vstate = changelog.load_state(op, record.slot)
    vstate.next_local, vstate.next_seq, vstate.checkpoint_seq = 2, 1, 0
    changelog.save_state(op, record.slot, vstate)
    repl = state(op, record.slot)
    repl.copy_id, repl.copy_seq = copy_id, seq
    save(op, record.slot, repl)


def add_copy_rows(op: Op, record: VolumeRecord, epoch: int, copy_id: int, seq: int,
                  rows: list[tuple[int, bytes, bytes]]) -> None:
    """Write rows of copy ``copy_id`` (volume-local keys), validated like replayed rows;
    block rows reference their chunks (REMOTE if the bytes are not here)."""
    _check_copy(op, record, epoch, copy_id, seq)
    for table, key, value in rows:
        _apply_row(op, record.slot, table, ROW_PUT, key, value)


def finish_copy(op: Op, record: VolumeRecord, epoch: int, copy_id: int, seq: int, next_local: int) -> None:
    """Every row of copy ``copy_id`` is here: the copy holds the volume up to ``seq``."""
    _check_copy(op, record, epoch, copy_id, seq)
    used, top = 0, 1
    for key, raw in op.range(Table.INODES, *catalog.slot_range(record.slot)):
        used += stored_bytes(raw)
        top = max(top, int.from_bytes(key[:8], "big") & LOCAL_MASK)
    vstate = changelog.load_state(op, record.slot)
    vstate.next_seq, vstate.checkpoint_seq = seq + 1, seq
    vstate.next_local = max(next_local, top + 1)
    # The operation adds its own change of bytes in use when it finishes (``Op``).
    vstate.used_bytes = used - op.usage_change(record.slot)
    changelog.save_state(op, record.slot, vstate)
    repl = state(op, record.slot)
    repl.copy_id = repl.copy_seq = 0
    save(op, record.slot, repl)


def _check_copy(op: Op, record: VolumeRecord, epoch: int, copy_id: int, seq: int) -> None:
    admit_epoch(op, record, epoch)
    repl = state(op, record.slot)
    if repl.copy_id != copy_id or repl.copy_seq != seq:
        raise ReplicationError(
            f"volume {record.name!r}: part of copy {copy_id:x} (sequence {seq}) does not belong to the "
            f"copy in progress here ({repl.copy_id:x}, sequence {repl.copy_seq}); start the copy again")


# --- whole-volume copies: the sending side ----------------------------------------------

def copy_origin(view: View, slot: Slot) -> tuple[int, int]:
    """(S, next local inode) of the volume as ``view`` sees it: its rows are the state
    after record S. Raises ReplicationError if this copy is itself incomplete."""
    if incomplete(view, slot):
        raise ReplicationError("the copy of the volume here is incomplete: it cannot be copied from")
    vstate = changelog.load_state(view, slot)
    return vstate.next_seq - 1, vstate.next_local


def copy_rows(view: View, slot: Slot) -> Iterator[tuple[int, bytes, bytes]]:
    """Every row of the volume as (table, volume-local key, value), table by table in key
    order. Read it from a view that does not change under it (``Store.reading``)."""
    lo, hi = catalog.slot_range(slot)
    for table in COPY_TABLES:
        for key, value in view.range(table, lo, hi):
            local = (int.from_bytes(key[:8], "big") & LOCAL_MASK).to_bytes(8, "big")
            yield int(table), local + bytes(key[8:]), bytes(value)


# --- the writer's side --------------------------------------------------------------

def acknowledge(op: Op, slot: Slot, seq: int, retain: int) -> None:
    """Every replica holds the records up to ``seq``: move the checkpoint and trim."""
    vstate = changelog.load_state(op, slot)
    seq = min(seq, vstate.next_seq - 1)
    if seq <= vstate.checkpoint_seq:
        return
    vstate.checkpoint_seq = seq
    changelog.trim(op, slot, vstate, retain)
    changelog.save_state(op, slot, vstate)


def records_after(op: View, slot: Slot, after: int, max_bytes: int) -> list[tuple[int, bytes]]:
    """Encoded records after sequence ``after``, in order, up to about ``max_bytes``.

    At least one record is returned when there is one, however large. Raises LogTrimmed
    when the next record needed is no longer in the log.
    """
    out: list[tuple[int, bytes]] = []
    size = 0
    for key, value in op.seek(Table.CHANGELOG, changelog.log_key(slot, after + 1)):
        key_slot, seq = changelog.split_key(key)
        if key_slot != slot:
            break
        if not out and seq != after + 1:
            raise LogTrimmed(f"records after {after} were trimmed (the log starts at {seq})")
        if out and size + len(value) > max_bytes:
            break
        out.append((seq, bytes(value)))
        size += len(value)
    if not out and after + 1 < changelog.load_state(op, slot).next_seq:
        raise LogTrimmed(f"records after {after} were trimmed")
    return out

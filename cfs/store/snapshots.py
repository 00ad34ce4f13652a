"""Snapshots and clones: a volume's rows copied into a slot of their own, chunks shared.

A *snapshot* of volume V, named ``V@S``, is a read-only volume of its own: a catalog
entry (``snapshot_of`` and ``snapshot`` among its options), a slot, and a copy of every
row of V's tables as they stood at one instant, with keys rewritten into the new slot.
No chunk is copied: each block row's chunks (a base and its patches) gain one
reference. So a snapshot costs a walk of V's metadata, whatever its bytes, and lives on
after V is deleted. A *clone* is the same copy made into a new, writable volume.

The copy runs in one store operation: it is consistent at one instant and never shows
half of an operation (no other operation runs on the store's thread meanwhile), and a
crash leaves all of it or nothing. Open unlinked files (``orphans``) are not copied:
nothing could reach them. The copy's counters: the next inode number and the bytes in
use of the source (the latter moved by ``Op`` as the inode rows are written); its change
log is empty and its sequence starts after 1, so that a replica of it, which cannot
replay what was never logged, is copied whole (``replica.records_after`` raises
``LogTrimmed``).

Replication: taking a snapshot appends an *event* to V's change log (``SNAPSHOT_EVENT``,
in no table), so that every replica replaying V's log takes the same snapshot of its
own copy at the same point (``replay``), under the same id. Whole-volume copies carry no
events: a snapshot's copies are otherwise kept like any volume's.
"""

from __future__ import annotations

import struct
from typing import Iterator

from cfs.codec import VolumeRecord, VolumeState, decode_block, decode_chunkref, pack_u64
from cfs.errors import CorruptRecord, InvalidName, ReadOnly, VolumeExists
from cfs.names import snapshot_name, validate_volume_name
from cfs.store import catalog, changelog, chunks
from cfs.store.store import Op, View
from cfs.store.tables import Table
from cfs.types import LOCAL_MASK, LocalIno, VolumeId, make_ino

SNAPSHOT_OF = "snapshot_of"
"""Option of a snapshot: the hex id of the volume it was taken of."""
SNAPSHOT = "snapshot"
"""Option of a snapshot: its own name (the part after ``@``)."""

SNAPSHOT_EVENT = 64
"""The change-log "table" of a snapshot event: a row of no table, replayed by taking the
snapshot (``replay``). Key: the snapshot's name; value: ``_EVENT`` (id, creation time)."""
_EVENT = struct.Struct(">16sq")

COPIED_TABLES = (Table.INODES, Table.DIRENTS, Table.DIRORDER, Table.BLOCKS, Table.XATTRS, Table.SYMLINKS)


def is_snapshot(record: VolumeRecord) -> bool:
    return SNAPSHOT_OF in record.options


def snapshot_of(record: VolumeRecord) -> VolumeId | None:
    """The id of the volume ``record`` is a snapshot of, None for a volume."""
    raw = record.options.get(SNAPSHOT_OF)
    return None if raw is None else VolumeId(bytes.fromhex(raw))


def take(op: Op, source: VolumeRecord, name: str, snapshot_id: VolumeId, created_ns: int, *,
         logged: bool = True) -> VolumeRecord:
    """Snapshot ``source`` as ``source@name`` (see the module doc); ``logged``: append the
    event to the source's change log (the writer does; a replica replaying it does not,
    its replay appends the record itself)."""
    if is_snapshot(source):
        raise InvalidName(f"{source.name!r} is a snapshot: take snapshots of volumes")
    options = {**source.options, SNAPSHOT_OF: source.volume_id.hex(), SNAPSHOT: name}
    record = catalog.create(op, snapshot_name(source.name, name), source.block_size, options,
                            volume_id=snapshot_id, created_ns=created_ns)
    op.store.frozen_slots.add(record.slot)  # read-only from birth: no logged change, no atime
    _copy(op, source, record)
    if logged:
        op.log_event(source.slot, SNAPSHOT_EVENT, name.encode(), _EVENT.pack(snapshot_id, created_ns))
    return record


def clone(op: Op, source: VolumeRecord, name: str, volume_id: VolumeId, created_ns: int,
          options: dict[str, str]) -> VolumeRecord:
    """A new writable volume ``name`` holding what ``source`` (a volume or a snapshot)
    holds now, sharing its chunks."""
    validate_volume_name(name)
    record = catalog.create(op, name, source.block_size, dict(options), volume_id=volume_id, created_ns=created_ns)
    _copy(op, source, record)
    return record


def replay(op: Op, source: VolumeRecord, key: bytes, value: bytes) -> None:
    """A snapshot event replayed on a replica: take the same snapshot of this copy, at
    the same point of its history, under the same id (once: a snapshot already here,
    copied whole before, stays)."""
    try:
        snapshot_id, created_ns = _EVENT.unpack(value)
        name = key.decode()
    except (struct.error, UnicodeDecodeError):
        raise CorruptRecord("snapshot event is malformed") from None
    if catalog.by_id(op, VolumeId(snapshot_id)) is not None:
        return
    try:
        take(op, source, name, VolumeId(snapshot_id), created_ns, logged=False)
    except (InvalidName, VolumeExists) as exc:
        raise CorruptRecord(f"snapshot event {name!r}: {exc}") from None


def _copy(op: Op, source: VolumeRecord, target: VolumeRecord) -> None:
    """Copy ``source``'s rows into ``target``'s empty slot; chunks gain references."""
    lo, hi = catalog.slot_range(source.slot)
    orphans = {bytes(key[:8]) for key in op.keys(Table.ORPHANS, lo, hi)}
    base = make_ino(target.slot, LocalIno(0))
    for table in COPIED_TABLES:
        rows = [(key, value) for key, value in op.range(table, lo, hi) if bytes(key[:8]) not in orphans]
        for key, value in rows:
            local = int.from_bytes(key[:8], "big") & LOCAL_MASK
            if table is Table.BLOCKS:
                for cid, _length in decode_block(value).chunks():
                    chunks.incref(op, cid)
            op.put(table, pack_u64(base | local) + bytes(key[8:]), bytes(value), logged=False)
    state = changelog.load_state(op, source.slot)
    changelog.save_state(op, target.slot, VolumeState(next_local=state.next_local, next_seq=2, checkpoint_seq=1,
                                                      used_bytes=changelog.load_state(op, target.slot).used_bytes))


def exclusive_bytes(view: View, record: VolumeRecord) -> int:
    """Chunk bytes that only ``record``'s blocks reference: what deleting it frees."""
    named: dict[bytes, tuple[int, int]] = {}
    for _key, value in view.range(Table.BLOCKS, *catalog.slot_range(record.slot)):
        for cid, length in decode_block(value).chunks():
            count, _ = named.get(cid, (0, length))
            named[cid] = (count + 1, length)
    total = 0
    for named_id, (count, length) in named.items():
        raw = view.get(Table.CHUNKREFS, named_id)
        if raw is not None and decode_chunkref(raw)[0] == count:
            total += length
    return total


def snapshots_of(view: View, volume_id: VolumeId) -> Iterator[VolumeRecord]:
    """The local snapshots of a volume, by name."""
    hex_id = volume_id.hex()
    return (r for r in catalog.all_volumes(view) if r.options.get(SNAPSHOT_OF) == hex_id)


def check_writable(record: VolumeRecord) -> None:
    """ReadOnly (EROFS) for a snapshot: nothing changes it but its deletion."""
    if is_snapshot(record):
        raise ReadOnly(f"{record.name} is a snapshot: read-only")

"""The volume catalog of a node: names, slots and identities of its volumes."""

from __future__ import annotations

import json
import os
import time
from typing import Iterator

from cfs.codec import VolumeRecord, VolumeState, pack_u64, unpack_u64
from cfs.errors import CorruptRecord, InvalidName, VolumeExists, VolumeNotFound
from cfs.names import validate_catalog_name
from cfs.store.changelog import log_key
from cfs.store.store import Op, View
from cfs.store.tables import Table
from cfs.types import MAX_SLOT, LocalIno, Slot, VolumeId, make_ino

MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 1 << 20


def check_block_size(block_size: int) -> int:
    if block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise InvalidName(
            f"block size {block_size} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}")
    return block_size


def create(op: Op, name: str, block_size: int, options: dict[str, str], *,
           volume_id: VolumeId | None = None, created_ns: int | None = None) -> VolumeRecord:
    """Add a volume to the node's catalog in a new slot.

    ``volume_id`` and ``created_ns`` are given when the volume already exists elsewhere
    in the cluster and this node becomes a replica of it or mounts it.
    """
    validate_catalog_name(name)
    check_block_size(block_size)
    if op.get(Table.VOLUMES, name.encode()) is not None:
        raise VolumeExists(f"volume {name!r} already exists")
    slot = Slot(unpack_u64(op.get(Table.META, b"next_slot") or pack_u64(1)))
    if slot > MAX_SLOT:
        raise VolumeExists("this node has used up its volume slots")
    op.put(Table.META, b"next_slot", pack_u64(slot + 1))
    if volume_id is not None and by_id(op, volume_id) is not None:
        raise VolumeExists(f"volume id {volume_id.hex()} is already on this node")
    record = VolumeRecord(name, volume_id or VolumeId(os.urandom(16)), slot, block_size,
                          time.time_ns() if created_ns is None else created_ns, dict(options))
    op.put(Table.VOLUMES, name.encode(), record.encode())
    op.put(Table.VOLIDS, record.volume_id, name.encode())
    op.put(Table.VOLSLOTS, pack_u64(slot), name.encode())
    op.put(Table.VOLSTATE, pack_u64(slot), VolumeState().encode())
    return record


def set_options(op: Op, record: VolumeRecord, options: dict[str, str]) -> VolumeRecord:
    """The volume's catalog entry with ``options`` in place of its own (a size limit
    raised); the node-local entry, not logged: the cluster's catalog says what the writer
    takes, replicas take it when they write the volume."""
    changed = VolumeRecord(record.name, record.volume_id, record.slot, record.block_size, record.created_ns,
                           dict(options))
    op.put(Table.VOLUMES, record.name.encode(), changed.encode())
    return changed


def get(op: View, name: str) -> VolumeRecord:
    raw = op.get(Table.VOLUMES, name.encode("utf-8", "surrogateescape"))
    if raw is None:
        raise VolumeNotFound(f"no volume named {name!r}")
    return VolumeRecord.decode(raw)


def by_slot(op: View, slot: Slot) -> VolumeRecord | None:
    name = op.get(Table.VOLSLOTS, pack_u64(slot))
    if name is None:
        return None
    return get(op, bytes(name).decode())


def by_id(op: View, volume_id: VolumeId) -> VolumeRecord | None:
    """The volume with cluster identity ``volume_id``, None if this node has none."""
    name = op.get(Table.VOLIDS, volume_id)
    if name is not None:
        return get(op, bytes(name).decode())
    # Stores made before the index existed: look through the (small) catalog.
    return next((r for r in all_volumes(op) if r.volume_id == volume_id), None)


def all_volumes(op: View) -> Iterator[VolumeRecord]:
    for _key, value in op.rows(Table.VOLUMES):
        yield VolumeRecord.decode(value)


def slot_range(slot: Slot) -> tuple[bytes, bytes]:
    """Key bounds [lo, hi) of every per-volume row of ``slot``."""
    return pack_u64(make_ino(slot, LocalIno(0))), pack_u64(make_ino(Slot(slot + 1), LocalIno(0)))


def delete_rows(op: Op, table: Table, lo: bytes, hi: bytes) -> list[tuple[bytes, bytes]]:
    """Delete, unlogged, every row of ``table`` with lo <= key < hi; return them."""
    rows = list(op.range(table, lo, hi))
    for key, _value in rows:
        op.delete(table, key, logged=False)
    return rows


def remove_record(op: Op, record: VolumeRecord) -> None:
    """Forget the volume's catalog entry and its change log. Its rows go in ``fs``."""
    op.delete(Table.VOLUMES, record.name.encode())
    op.delete(Table.VOLSLOTS, pack_u64(record.slot))
    op.delete(Table.VOLSTATE, pack_u64(record.slot))
    op.delete(Table.VOLIDS, record.volume_id)
    op.delete(Table.VOLREPL, pack_u64(record.slot))
    delete_rows(op, Table.CHANGELOG, log_key(record.slot, 0), log_key(Slot(record.slot + 1), 0))


# --- mounts: which volumes this node should have mounted where -----------------------

def record_mount(op: Op, path: str, name: str, read_only: bool) -> None:
    value = json.dumps({"volume": name, "read_only": read_only}).encode()
    op.put(Table.MOUNTS, path.encode("utf-8", "surrogateescape"), value)


def drop_mount(op: Op, path: str) -> None:
    op.delete(Table.MOUNTS, path.encode("utf-8", "surrogateescape"))


def recorded_mounts(op: View) -> dict[str, tuple[str, bool]]:
    """mount point -> (volume name, read-only), as the node should have them."""
    mounts = {}
    for key, value in op.range(Table.MOUNTS, b"", b"\xff" * 8):
        try:
            data = json.loads(value)
            mounts[bytes(key).decode("utf-8", "surrogateescape")] = (data["volume"], bool(data["read_only"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptRecord(f"mount record for {bytes(key)!r}: {exc}") from None
    return mounts


# --- the Docker plugin: which container mount IDs hold which volume ----------------

HOLDS_VERSION = 1


def plugin_holders(op: View, name: str) -> set[str]:
    """The Docker mount IDs that hold volume ``name`` mounted (empty: none)."""
    raw = op.get(Table.PLUGIN_HOLDS, name.encode("utf-8", "surrogateescape"))
    return set() if raw is None else _decode_holders(name, raw)


def set_plugin_holders(op: Op, name: str, ids: set[str]) -> None:
    """Record who holds ``name``; an empty set forgets the volume's entry."""
    key = name.encode("utf-8", "surrogateescape")
    if ids:
        op.put(Table.PLUGIN_HOLDS, key, json.dumps({"v": HOLDS_VERSION, "ids": sorted(ids)}).encode())
    else:
        op.delete(Table.PLUGIN_HOLDS, key)


def all_plugin_holders(op: View) -> dict[str, set[str]]:
    holders = {}
    for key, raw in op.rows(Table.PLUGIN_HOLDS):
        name = bytes(key).decode("utf-8", "surrogateescape")
        holders[name] = _decode_holders(name, raw)
    return holders


def _decode_holders(name: str, raw: bytes) -> set[str]:
    try:
        data = json.loads(bytes(raw))
        if data["v"] != HOLDS_VERSION:
            raise ValueError(f"version {data['v']}, this cfs reads {HOLDS_VERSION}")
        ids = data["ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids is not a list of strings")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRecord(f"plugin record of volume {name!r}: {exc}") from None
    return set(ids)

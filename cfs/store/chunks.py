"""Content-addressed chunks with reference counts.

A chunk is the stored form of one block: its bytes with trailing zeros cut off (an
all-zero block is a hole and has no chunk). Its key is the xxh3-128 of those bytes, so
identical blocks anywhere on the node, in any volume, are stored once. ``CHUNKREFS``
counts how many block-map entries name the chunk; when the count drops to zero the
chunk is deleted in the same transaction and LMDB reuses its pages.

Every read verifies the bytes against the key. A mismatch raises ``CorruptChunk``; the
caller reports EIO. Wrong bytes are never returned.
"""

from __future__ import annotations

import logging

from cfs.codec import CHUNK_HEADER, CHUNK_V1, decode_chunkref, encode_chunkref
from cfs.errors import CorruptChunk, CorruptRecord, MissingChunk, RemoteChunk
from cfs.hashing import chunk_id
from cfs.store.store import Op, View
from cfs.store.tables import Table
from cfs.types import ChunkId

log = logging.getLogger(__name__)


def put(op: Op, data: bytes, cid: ChunkId | None = None) -> ChunkId:
    """Store ``data`` (already trimmed, non-empty) or add a reference to the copy we have.

    ``cid`` may be passed when the caller has hashed ``data`` already.
    """
    if cid is None:
        cid = chunk_id(data)
    raw = op.get(Table.CHUNKREFS, cid)
    if raw is None:
        op.put(Table.CHUNKS, cid, CHUNK_HEADER + data)
        op.put(Table.CHUNKREFS, cid, encode_chunkref(1, len(data)))
        op.delete(Table.STAGED, cid)
    else:
        refcount, length = decode_chunkref(raw)
        op.put(Table.CHUNKREFS, cid, encode_chunkref(refcount + 1, length))
        op.deduped_bytes += len(data)
        _heal_if_damaged(op, cid, data)
    return cid


def _heal_if_damaged(op: Op, cid: ChunkId, good: bytes) -> None:
    """A dedup hit must not tie new data to a damaged copy: check it, and rewrite it from ``good``."""
    stored = op.get(Table.CHUNKS, cid)
    if stored is None and op.delete(Table.REMOTE, cid):
        op.put(Table.CHUNKS, cid, CHUNK_HEADER + good)  # was on replicas only; now here too
        return
    try:
        if stored is None:
            raise MissingChunk(cid.hex())
        verify(cid, stored)
    except (CorruptChunk, CorruptRecord, MissingChunk):
        log.warning("chunk %s was damaged or missing; rewritten from identical new data", cid.hex())
        op.put(Table.CHUNKS, cid, CHUNK_HEADER + good)


def incref(op: Op, cid: ChunkId) -> None:
    raw = op.get(Table.CHUNKREFS, cid)
    if raw is None:
        raise MissingChunk(f"chunk {cid.hex()} is referenced but not stored")
    refcount, length = decode_chunkref(raw)
    op.put(Table.CHUNKREFS, cid, encode_chunkref(refcount + 1, length))


def decref(op: Op, cid: ChunkId, *, stage_ns: int | None = None) -> None:
    """Drop one reference; the chunk goes with the last one.

    With ``stage_ns`` (a volume being replaced by a whole-volume copy) the last
    reference keeps the bytes, staged as of ``stage_ns``: the copy's rows will most
    likely name the chunk again, and then it need not travel; if none does, the sweep
    of staged chunks removes it after its grace period.

    A missing or already-zero count is logged and left for fsck rather than raised:
    the caller is freeing space, and refusing to free it would help nobody.
    """
    raw = op.get(Table.CHUNKREFS, cid)
    if raw is None:
        log.error("chunk %s: dropping a reference to a chunk that has no count (run cfs fsck)", cid.hex())
        return
    refcount, length = decode_chunkref(raw)
    if refcount > 1:
        op.put(Table.CHUNKREFS, cid, encode_chunkref(refcount - 1, length))
        return
    op.delete(Table.CHUNKREFS, cid)
    op.delete(Table.REMOTE, cid)
    if stage_ns is None:
        op.delete(Table.CHUNKS, cid)
    elif op.get(Table.CHUNKS, cid) is not None:
        op.put(Table.STAGED, cid, stage_ns.to_bytes(8, "big"))


def get(view: View, cid: ChunkId, where: str = "") -> bytes:
    """The verified bytes of a chunk. ``where`` names the file for the error message.

    Served from the store's cache of verified chunks when it has them (an id names one
    content forever, so a cached copy cannot be stale); otherwise read, verified, and
    cached.
    """
    cache = view.store.chunk_cache
    data = cache.get(cid)
    if data is not None:
        return data
    raw = view.get(Table.CHUNKS, cid)
    if raw is None:
        if view.get(Table.REMOTE, cid) is not None:
            raise RemoteChunk(cid, where)
        raise MissingChunk(f"chunk {cid.hex()} is missing{where}", cid)
    data = verify(cid, raw, where)
    cache.put(cid, data)
    return data


def verify(cid: ChunkId | bytes, raw: bytes, where: str = "") -> bytes:
    """The chunk's bytes, once its header and its hash are checked."""
    data = payload(cid, raw, where)
    if chunk_id(data) != cid:
        raise CorruptChunk(bytes(cid).hex(), where)
    return data


def payload(cid: ChunkId | bytes, raw: bytes, where: str = "") -> bytes:
    """The chunk's bytes, its header checked but not its hash."""
    if len(raw) < len(CHUNK_HEADER) or raw[0] != CHUNK_V1 or raw[1] != 0:
        raise CorruptRecord(f"chunk {bytes(cid).hex()} has an unknown header{where}")
    return raw[len(CHUNK_HEADER):]


# --- replication: chunks that arrive before, or live apart from, their references ----
#
# A replica replays a writer's block-map rows (``reference``) without needing the bytes:
# a chunk it does not hold is counted as usual and marked REMOTE, and a read of it
# fetches the bytes from a replica (``fill``). Chunks pushed by the writer ahead of the
# records that will name them are STAGED: stored with no reference yet, and swept away
# if no record names them within a grace period (their writer died before shipping it).


def reference(op: Op, cid: ChunkId, length: int) -> None:
    """Add a reference from a replayed block row, whether or not the bytes are here."""
    raw = op.get(Table.CHUNKREFS, cid)
    if raw is not None:
        refcount, known = decode_chunkref(raw)
        op.put(Table.CHUNKREFS, cid, encode_chunkref(refcount + 1, known))
        return
    op.put(Table.CHUNKREFS, cid, encode_chunkref(1, length))
    if not op.delete(Table.STAGED, cid):
        if op.get(Table.CHUNKS, cid) is None:
            op.put(Table.REMOTE, cid, b"")


def stage(op: Op, cid: ChunkId, data: bytes, now_ns: int) -> bool:
    """Keep a chunk a peer pushed (already verified against ``cid``); False if it was here."""
    if op.get(Table.CHUNKREFS, cid) is not None:
        if op.get(Table.REMOTE, cid) is not None:
            fill(op, cid, data)
            return True
        return False
    if op.get(Table.CHUNKS, cid) is not None:
        return False
    op.put(Table.CHUNKS, cid, CHUNK_HEADER + data)
    op.put(Table.STAGED, cid, now_ns.to_bytes(8, "big"))
    return True


def fill(op: Op, cid: ChunkId, data: bytes) -> None:
    """Store the verified bytes of a chunk that was referenced but held only by replicas."""
    op.put(Table.CHUNKS, cid, CHUNK_HEADER + data)
    op.delete(Table.REMOTE, cid)


def is_referenced(op: View, cid: ChunkId) -> bool:
    return op.get(Table.CHUNKREFS, cid) is not None


def is_remote(op: View, cid: ChunkId) -> bool:
    return op.get(Table.REMOTE, cid) is not None


def has_bytes(op: View, cid: ChunkId) -> bool:
    """Whether this node holds the chunk's bytes (referenced or staged)."""
    return op.get(Table.CHUNKS, cid) is not None


def sweep_staged(op: Op, older_than_ns: int) -> int:
    """Drop staged chunks no record named before ``older_than_ns``; how many went."""
    doomed = [bytes(k) for k, v in op.rows(Table.STAGED) if int.from_bytes(v, "big") < older_than_ns]
    for cid in doomed:
        op.delete(Table.STAGED, cid)
        if op.get(Table.CHUNKREFS, cid) is None:
            op.delete(Table.CHUNKS, cid)
    return len(doomed)

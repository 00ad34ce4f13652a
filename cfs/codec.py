"""Binary layouts of everything cfs stores, each versioned and validated on read.

Every record starts with a one-byte layout version. Decoders check the version and the
length before using a single field and raise ``CorruptRecord`` otherwise, so damaged or
future-format bytes are reported instead of being misread. All integers are big-endian so
that LMDB's byte-wise key order is numeric order.
"""

from __future__ import annotations

import json
import stat
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from cfs.errors import CorruptRecord
from cfs.types import ChunkId, InodeId, LocalIno, Slot, VolumeId

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
U64X2 = struct.Struct(">QQ")


def pack_u64(value: int) -> bytes:
    return U64.pack(value)


def unpack_u64(raw: bytes) -> int:
    if len(raw) != 8:
        raise CorruptRecord(f"expected an 8-byte integer, got {len(raw)} bytes")
    value: int = U64.unpack(raw)[0]  # struct gives Any: typed by a local, cheaper than cast()
    return value


# --- inodes -----------------------------------------------------------------------

INODE_V1 = 1
_INODE = struct.Struct(">BxxxIIIIQqqqQQQ")


@dataclass(slots=True)
class Inode:
    """The attributes of one inode.

    ``stored_units`` counts 512-byte units of chunk bytes the file's blocks reference
    (its st_blocks): holes and trailing zeros of a block take none. ``next_cookie`` is,
    for directories, the readdir position the next entry will get.
    """

    mode: int
    uid: int
    gid: int
    nlink: int
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    rdev: int = 0
    stored_units: int = 0
    next_cookie: int = 1

    def encode(self) -> bytes:
        return _INODE.pack(
            INODE_V1, self.mode, self.uid, self.gid, self.nlink, self.size,
            self.atime_ns, self.mtime_ns, self.ctime_ns, self.rdev,
            self.stored_units, self.next_cookie,
        )

    @classmethod
    def decode(cls, raw: bytes) -> "Inode":
        if len(raw) != _INODE.size or raw[0] != INODE_V1:
            raise CorruptRecord(f"inode record: bad length {len(raw)} or version {raw[:1].hex()}")
        (_v, mode, uid, gid, nlink, size, atime, mtime, ctime, rdev, units, cookie) = _INODE.unpack(raw)
        return cls(mode, uid, gid, nlink, size, atime, mtime, ctime, rdev, units, cookie)


def inode_mode(raw: bytes) -> int:
    """The mode of an ``inodes`` record, without decoding the rest (readdir of names)."""
    if len(raw) != _INODE.size or raw[0] != INODE_V1:
        raise CorruptRecord(f"inode record: bad length {len(raw)} or version {bytes(raw[:1]).hex()}")
    mode: int = U32.unpack_from(raw, 4)[0]
    return mode


_UNITS_AT = _INODE.size - 16
"""Offset of ``stored_units`` in an inode record (the next readdir cookie follows it)."""


def units_of(length: int) -> int:
    """The 512-byte units a chunk of ``length`` bytes adds to its file's ``stored_units``."""
    return (length + 511) // 512


def stored_bytes(raw: bytes | None) -> int:
    """The bytes an ``inodes`` value counts toward its volume's usage: st_blocks * 512.

    ``None`` (no record) counts nothing, and so does a damaged record (fsck counts it
    so too), so that writing a good record over a damaged one counts it from zero.
    """
    if raw is None or len(raw) != _INODE.size or raw[0] != INODE_V1:
        return 0
    units: int = U64.unpack_from(raw, _UNITS_AT)[0]
    return units * 512


def usage_delta(old: bytes | None, new: bytes | None) -> int:
    """How much a volume's bytes in use change when an ``inodes`` row goes from ``old`` to
    ``new`` (``None``: no row). Summed over every inode row change of a volume, in any
    order, it keeps ``VolumeState.used_bytes`` right: this is how a replica replaying
    change-log rows maintains the counter (``Op`` does it for every logged row)."""
    return stored_bytes(new) - stored_bytes(old)


# --- keys -------------------------------------------------------------------------

def ino_key(ino: InodeId) -> bytes:
    return U64.pack(ino)


def ino_name_key(ino: InodeId, name: bytes) -> bytes:
    return U64.pack(ino) + name


def ino_u64_key(ino: InodeId, n: int) -> bytes:
    return U64X2.pack(ino, n)


def split_ino_u64(key: bytes) -> tuple[InodeId, int]:
    if len(key) != 16:
        raise CorruptRecord(f"expected a 16-byte key, got {len(key)} bytes")
    ino, n = U64X2.unpack(key)
    return InodeId(ino), n


def split_ino_name(key: bytes) -> tuple[InodeId, bytes]:
    if len(key) < 8:
        raise CorruptRecord(f"key too short: {len(key)} bytes")
    return InodeId(U64.unpack_from(key)[0]), bytes(key[8:])


# --- directory entries --------------------------------------------------------------

_DIRENT = struct.Struct(">QQ")


def encode_dirent(child: LocalIno, cookie: int) -> bytes:
    """A directory entry stores the *volume-local* child number, so entries are slot-free."""
    return _DIRENT.pack(child, cookie)


def decode_dirent(raw: bytes) -> tuple[LocalIno, int]:
    if len(raw) != _DIRENT.size:
        raise CorruptRecord(f"directory entry: bad length {len(raw)}")
    child, cookie = _DIRENT.unpack(raw)
    return LocalIno(child), cookie


ORDER_HEAD = struct.Struct(">QB")
"""The head of a readdir-order row: child (volume-local), file type (``S_IFMT`` >> 12)."""


def encode_order(child: LocalIno, mode: int, name: bytes) -> bytes:
    """A readdir-order row: the child's number and file type, then the entry's name.

    A listing reads these rows alone: no DIRENTS lookup for the child, no inode load
    for d_type. The file type of an inode never changes, and an entry that comes to
    name another inode (rename over it) is written again. The value starts with a zero
    byte (volume-local numbers have 40 bits), which no name does: rows written before
    (schema 1: the name alone) are told apart by it.
    """
    return ORDER_HEAD.pack(child, stat.S_IFMT(mode) >> 12) + name


def decode_order(raw: bytes) -> tuple[LocalIno | None, int, bytes]:
    """(child, file type as in d_type, name); child None and type 0 for a schema-1 row."""
    if raw[:1] != b"\0":
        if not raw:
            raise CorruptRecord("readdir-order row without a name")
        return None, 0, raw
    if len(raw) <= ORDER_HEAD.size:
        raise CorruptRecord(f"readdir-order row: bad length {len(raw)}")
    child, kind = ORDER_HEAD.unpack_from(raw)
    return LocalIno(child), kind, raw[ORDER_HEAD.size:]


# --- block maps ---------------------------------------------------------------------
#
# A block row names the chunk of the block's bytes (trailing zeros cut off: the rest of
# the block is zeros), its base, and possibly patches laid over it in order: each one
# holds exactly the bytes of a range of the block. Patches let a small write into a
# large block store the bytes it wrote instead of a new copy of the whole block (see
# cfs.fs.data). A row without patches keeps the original 20-byte layout; one with
# patches starts with the version byte 2, so the two can never be mistaken.
#
# A row may also hold the block *reserved* (fallocate): counted in full toward its
# file's st_blocks and its volume's bytes in use whatever it stores, so that writing
# into it never needs more room under a size limit. Such a row starts with the version
# byte 3 and the bytes reserved (the block size), then, if the block stores bytes, the
# base and its patches as above; without them it is a reserved hole (reads as zeros).

_BLOCK = struct.Struct(">16sI")
_PATCH = struct.Struct(">16sII")
_RESERVED = struct.Struct(">BI")
BLOCK_PATCHED = 2
BLOCK_RESERVED = 3


class Patch(NamedTuple):
    at: int
    """Where in the block the patch's bytes start."""
    chunk: ChunkId
    length: int
    """How many bytes it holds; its chunk is exactly this long."""


class BlockRow(NamedTuple):
    chunk: ChunkId | None
    """The base: the block's bytes, up to ``length``; zeros follow. None: the block
    stores nothing (a reserved hole; it has no patches either)."""
    length: int
    patches: tuple[Patch, ...] = ()
    reserved: int = 0
    """Bytes held for the block whatever it stores (0, or the block size)."""

    def chunks(self) -> list[tuple[ChunkId, int]]:
        """Every chunk the row names, with its length: each is one reference."""
        if self.chunk is None:
            return []
        return [(self.chunk, self.length), *((p.chunk, p.length) for p in self.patches)]

    @property
    def end(self) -> int:
        """Where the block's stored bytes end: past it the block holds zeros."""
        return max([self.length, *(p.at + p.length for p in self.patches)])

    @property
    def units(self) -> int:
        """What the row adds to its file's ``stored_units``: its chunks, and at least
        what it reserves."""
        return max(sum([units_of(length) for _cid, length in self.chunks()]), units_of(self.reserved))


def encode_block(chunk: ChunkId | None, length: int, patches: tuple[Patch, ...] | list[Patch] = (),
                 reserved: int = 0) -> bytes:
    if reserved:
        head = _RESERVED.pack(BLOCK_RESERVED, reserved)
        if chunk is None:
            return head
        return b"".join([head, _BLOCK.pack(chunk, length), *(_PATCH.pack(p.chunk, p.at, p.length) for p in patches)])
    assert chunk is not None, "a row that reserves nothing stores something"
    if not patches:
        return _BLOCK.pack(chunk, length)
    return b"".join([bytes([BLOCK_PATCHED]), _BLOCK.pack(chunk, length),
                     *(_PATCH.pack(p.chunk, p.at, p.length) for p in patches)])


def encode_row(row: BlockRow) -> bytes:
    return encode_block(row.chunk, row.length, row.patches, row.reserved)


def decode_block(raw: bytes) -> BlockRow:
    if len(raw) == _BLOCK.size:
        chunk, length = _BLOCK.unpack(raw)
        return BlockRow(ChunkId(chunk), length)
    if raw[:1] == bytes([BLOCK_RESERVED]) and len(raw) >= _RESERVED.size:
        reserved = _RESERVED.unpack_from(raw)[1]
        if not reserved:
            raise CorruptRecord("block map entry: a reserved row that reserves nothing")
        if len(raw) == _RESERVED.size:
            return BlockRow(None, 0, (), reserved)
        return _stored(raw, _RESERVED.size, 0)._replace(reserved=reserved)
    if raw[:1] != bytes([BLOCK_PATCHED]):
        raise CorruptRecord(f"block map entry: bad length {len(raw)} or version")
    return _stored(raw, 1, 1)


def _stored(raw: bytes, at: int, least: int) -> BlockRow:
    """The base and the patches that follow it from ``at`` on (at least ``least`` patches)."""
    count, rest = divmod(len(raw) - at - _BLOCK.size, _PATCH.size)
    if count < least or rest:
        raise CorruptRecord(f"block map entry: bad length {len(raw)} or version")
    chunk, length = _BLOCK.unpack_from(raw, at)
    patches = []
    for i in range(count):
        pchunk, pat, plength = _PATCH.unpack_from(raw, at + _BLOCK.size + i * _PATCH.size)
        if not plength:
            raise CorruptRecord("block map entry: an empty patch")
        patches.append(Patch(pat, ChunkId(pchunk), plength))
    return BlockRow(ChunkId(chunk), length, tuple(patches))


# --- chunks -------------------------------------------------------------------------

CHUNK_V1 = 1
CHUNK_HEADER = bytes([CHUNK_V1, 0])
"""Stored chunk = version byte, flags byte (0: raw bytes), payload. The hash covers the payload."""

_CHUNKREF = struct.Struct(">BQI")


def encode_chunkref(refcount: int, length: int) -> bytes:
    return _CHUNKREF.pack(1, refcount, length)


def decode_chunkref(raw: bytes) -> tuple[int, int]:
    if len(raw) != _CHUNKREF.size or raw[0] != 1:
        raise CorruptRecord(f"chunk reference record: bad length {len(raw)} or version")
    _v, refcount, length = _CHUNKREF.unpack(raw)
    return refcount, length


# --- volumes ------------------------------------------------------------------------

VOLUME_V1 = 1
_VOLUME = struct.Struct(">B16sIIq")


@dataclass(slots=True)
class VolumeRecord:
    """The catalog entry of a volume: identity, layout and the options it was made with."""

    name: str
    volume_id: VolumeId
    slot: Slot
    block_size: int
    created_ns: int
    options: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        head = _VOLUME.pack(VOLUME_V1, self.volume_id, self.slot, self.block_size, self.created_ns)
        tail = json.dumps({"name": self.name, "options": self.options}, sort_keys=True).encode()
        return head + tail

    @classmethod
    def decode(cls, raw: bytes) -> "VolumeRecord":
        if len(raw) < _VOLUME.size or raw[0] != VOLUME_V1:
            raise CorruptRecord("volume record: bad length or version")
        _v, vid, slot, block_size, created = _VOLUME.unpack_from(raw)
        try:
            tail = json.loads(bytes(raw[_VOLUME.size:]))
            name, options = tail["name"], tail["options"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptRecord(f"volume record: bad tail ({exc})") from None
        if not isinstance(name, str) or not isinstance(options, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
            raise CorruptRecord("volume record: name and options must be strings")
        return cls(name, VolumeId(vid), Slot(slot), block_size, created, dict(options))


_VOLSTATE_V1 = struct.Struct(">BQQQ")
_VOLSTATE_V2 = struct.Struct(">BQQQQ")


@dataclass(slots=True)
class VolumeState:
    """Counters of a volume that change with its content: next inode, change-log
    positions, and the bytes in use.

    ``used_bytes`` is the sum of ``stored_units * 512`` over the volume's inodes, kept in
    step with every logged ``inodes`` row (see ``usage_delta``); it is what a size limit
    is held against. Version 1 records have no such field: they decode with
    ``used_bytes`` None, "count again" (``changelog.load_state`` does), and are
    written back as version 2.
    """

    next_local: int = 2
    next_seq: int = 1
    checkpoint_seq: int = 0
    used_bytes: int | None = 0

    def encode(self) -> bytes:
        if self.used_bytes is None:
            raise ValueError("volume state: count used_bytes before storing the state")
        return _VOLSTATE_V2.pack(2, self.next_local, self.next_seq, self.checkpoint_seq, self.used_bytes)

    @classmethod
    def decode(cls, raw: bytes) -> "VolumeState":
        if len(raw) == _VOLSTATE_V2.size and raw[0] == 2:
            _v, next_local, next_seq, checkpoint, used = _VOLSTATE_V2.unpack(raw)
            return cls(next_local, next_seq, checkpoint, used)
        if len(raw) == _VOLSTATE_V1.size and raw[0] == 1:
            _v, next_local, next_seq, checkpoint = _VOLSTATE_V1.unpack(raw)
            return cls(next_local, next_seq, checkpoint, None)
        raise CorruptRecord("volume state: bad length or version")


# --- change log ---------------------------------------------------------------------

CHANGE_V1 = 1
_CHANGE_HEAD = struct.Struct(">BqI")
_ROW_HEAD = struct.Struct(">BBHI")
ROW_PUT = 1
ROW_DELETE = 2


@dataclass(slots=True)
class Change:
    """One filesystem operation's row changes, in order: (table, kind, key, value).

    Keys are volume-local (their leading inode number has the slot bits cleared), so a
    change can be replayed on a node where the volume has another slot.
    """

    time_ns: int
    rows: list[tuple[int, int, bytes, bytes]]

    def encode(self) -> bytes:
        parts = [_CHANGE_HEAD.pack(CHANGE_V1, self.time_ns, len(self.rows))]
        for table, kind, key, value in self.rows:
            parts.append(_ROW_HEAD.pack(table, kind, len(key), len(value)))
            parts.append(key)
            parts.append(value)
        return b"".join(parts)

    @classmethod
    def decode(cls, raw: bytes) -> "Change":
        view = memoryview(raw)
        if len(view) < _CHANGE_HEAD.size or view[0] != CHANGE_V1:
            raise CorruptRecord("change record: bad length or version")
        _v, time_ns, count = _CHANGE_HEAD.unpack_from(view)
        pos = _CHANGE_HEAD.size
        rows = []
        for _ in range(count):
            if pos + _ROW_HEAD.size > len(view):
                raise CorruptRecord("change record: truncated row header")
            table, kind, klen, vlen = _ROW_HEAD.unpack_from(view, pos)
            pos += _ROW_HEAD.size
            if kind not in (ROW_PUT, ROW_DELETE) or pos + klen + vlen > len(view):
                raise CorruptRecord("change record: bad row")
            key = bytes(view[pos:pos + klen])
            pos += klen
            value = bytes(view[pos:pos + vlen])
            pos += vlen
            rows.append((table, kind, key, value))
        if pos != len(view):
            raise CorruptRecord("change record: trailing bytes")
        return cls(time_ns, rows)


# --- replication --------------------------------------------------------------------

REPL_V1 = 1
REPL_V2 = 2
_REPLSTATE = struct.Struct(">BQB")
_REPLSTATE_V2 = struct.Struct(">BQBQQ")


@dataclass(slots=True)
class ReplState:
    """A volume's replication state on this node.

    ``epoch`` is the highest lease epoch this node has seen for the volume: log records
    carrying a lower one come from a writer that lost its lease and are refused (fencing).
    ``replicated``: peers hold copies, so the change-log checkpoint follows their
    acknowledgements instead of advancing with every record.
    ``copy_id``: nonzero while a whole-volume copy (of the source's state at sequence
    ``copy_seq``) is being received: the volume's rows are incomplete and must not be
    served, replayed onto or copied from (``cfs.store.replica.begin_copy``). Written
    as version 2; a state without a copy in progress is written as version 1.
    """

    epoch: int = 0
    replicated: bool = False
    copy_id: int = 0
    copy_seq: int = 0

    def encode(self) -> bytes:
        if not self.copy_id:
            return _REPLSTATE.pack(REPL_V1, self.epoch, int(self.replicated))
        return _REPLSTATE_V2.pack(REPL_V2, self.epoch, int(self.replicated), self.copy_id, self.copy_seq)

    @classmethod
    def decode(cls, raw: bytes) -> "ReplState":
        if len(raw) == _REPLSTATE.size and raw[0] == REPL_V1 and raw[-1] <= 1:
            _v, epoch, replicated = _REPLSTATE.unpack(raw)
            return cls(epoch, bool(replicated))
        if len(raw) == _REPLSTATE_V2.size and raw[0] == REPL_V2:
            _v, epoch, replicated, copy_id, copy_seq = _REPLSTATE_V2.unpack(raw)
            if replicated <= 1 and copy_id:
                return cls(epoch, bool(replicated), copy_id, copy_seq)
        raise CorruptRecord("replication state: bad length or version")

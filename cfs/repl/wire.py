"""The bytes of the peer protocol: frames and the messages they carry. No I/O, no state.

A **frame** is a fixed 16-byte header, a payload, and, once the handshake is done, a
16-byte MAC::

    magic b"CFSP" | version u8 | type u8 | flags u8 (0) | reserved u8 (0)
    | request id u32 | payload length u32                        (header, big-endian)
    payload                                                       (length bytes)
    MAC                                                           (16 bytes)

The header is checked on its own, before any payload byte is awaited: a bad magic, an
unknown version or type, or a length above the receiver's limit ends the connection
without buffering what the peer announced. The MAC is HMAC-SHA256 truncated to 16
bytes, keyed with the sender's direction key and covering an implicit frame counter, the
header and the payload (``frame_mac``); see ``cfs.repl.session`` for the keys.

**Messages** are small dataclasses, each with a strict binary layout: ``encode`` builds
the payload, ``decode`` checks every length, count and value and refuses trailing bytes,
raising ``ProtocolError`` for anything it cannot vouch for. Counts are checked against
the bytes left before anything is allocated, so a count cannot ask for more work than
the frame limit allows. Chunk data is verified against its id while decoding: a decoded
``PutChunks`` or ``Chunks`` never holds a chunk whose bytes do not hash to its key.

A message is a *request* (it gets a fresh request id) or a *reply* (it echoes the id of
the request it answers). ``Error`` answers any request; each request lists the other
replies it accepts in ``REPLIES``. To add a message: a dataclass deriving from
``Request`` or ``Reply`` with an unused ``TYPE`` (requests 0x10-0x3f, replies 0x40-0x7f),
``encode``/``decode``, and ``@register``.

Layouts (all integers big-endian; ``id`` = 16 bytes; ``blob`` = u32 length + bytes;
``chunk`` = id + blob; ``record`` = seq u64 + blob)::

    Hello          version u16, node id, nonce 32, max payload u32, cluster u8 length + UTF-8
    Auth           mac 32
    Ping / Pong    time ns u64
    Ack            (empty)
    Error          code u16, value u64, message u16 length + UTF-8 (at most 1 KiB)
    PutChunks      u32 count, chunk*
    GetChunks      u32 count, id*
    Chunks         u32 count, chunk*, u32 count, id*
    AppendLog      volume id, epoch u64, u32 count, record*
    LogAck         volume id, applied seq u64
    FetchLog       volume id, epoch u64, after seq u64, max bytes u32
    LogRecords     volume id, last seq u64, u32 count, record*
    VolumeInfo     volume id
    VolumeInfoReply volume id, epoch u64, applied seq u64, known u8 (0 or 1)
    Fence/Release  volume id, epoch u64
    PushCopy       volume id, epoch u64
    TakeSnapshot   volume id, snapshot name u8 length (1 to 255) + UTF-8
    SnapshotTaken  snapshot's volume id
    VolumeCopy     volume id, epoch u64, copy id u64 (not 0), snapshot seq u64, next local u64,
                   flags u8 (1 first, 2 last), u32 count, row*
                   (row = table u8, key u16 length (8 to 511) + bytes, value blob)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from typing import ClassVar, NoReturn, Self, TypeVar

from cfs.errors import ProtocolError
from cfs.hashing import chunk_id
from cfs.types import ChunkId, NodeId, VolumeId

KiB = 1 << 10
MiB = 1 << 20

MAGIC = b"CFSP"
FRAME_VERSION = 1
"""Version of the frame layout (the header above). Bumped only if the header changes."""

PROTOCOL_VERSION = 4
"""Version of the handshake and message set, exchanged in ``Hello``. Also bumped when
the rows that replication ships change meaning: 2 since readdir-order rows hold the
child and its type (store schema 2), which a node of version 1 would list as names;
3 since block rows may carry patches (store schema 3), which a node of version 2 would
take for damaged rows; 4 since change records may carry snapshot events
(``cfs.store.snapshots``), which a node of version 3 would refuse as malformed, and
block rows may reserve their block (store schema 4). (Version 4 also brought
``TakeSnapshot``: no node of 4 without it was ever released.)"""

_HEADER = struct.Struct(">4sBBBBII")
HEADER_SIZE = _HEADER.size  # 16
MAC_SIZE = 16
ID_SIZE = 16
NONCE_SIZE = 32
AUTH_MAC_SIZE = 32

MAX_CHUNK_SIZE = 1 * MiB
"""Largest chunk: a chunk is at most one block, and blocks are at most 1 MiB
(``cfs.store.catalog.MAX_BLOCK_SIZE``; repeated here so this module needs no store)."""

DEFAULT_MAX_PAYLOAD = 4 * MiB + 64 * KiB
"""Default receive limit on a frame's payload: 4 MiB of chunk or log data in one message,
plus room for the per-entry headers (20 bytes per chunk)."""

MIN_MAX_PAYLOAD = MAX_CHUNK_SIZE + 4 * KiB
"""Smallest limit a node may announce: one largest chunk must fit in one message."""

MAX_HANDSHAKE_PAYLOAD = 512
"""Limit on handshake frames, so an unauthenticated peer cannot make us buffer much."""

MAX_ERROR_MESSAGE = 1 * KiB
MAX_CLUSTER_NAME = 255
MAX_REQUEST_ID = 2**32 - 1

CHUNK_ENTRY_OVERHEAD = ID_SIZE + 4
"""Bytes a chunk adds to a ``PutChunks``/``Chunks`` payload besides its data (the
payload is 4 + sum(CHUNK_ENTRY_OVERHEAD + len(data)) for ``PutChunks``)."""

LOG_RECORD_OVERHEAD = 8 + 4
"""Bytes a log record adds to an ``AppendLog``/``LogRecords`` payload besides its bytes."""

COPY_ROW_OVERHEAD = 1 + 2 + 4
"""Bytes a row adds to a ``VolumeCopy`` payload besides its key and value."""
MIN_COPY_KEY = 8
MAX_COPY_KEY = 511
"""Row keys start with a volume-local inode number (8 bytes); LMDB keys are at most 511."""

HELLO = 0x01
AUTH = 0x02
HANDSHAKE_TYPES = frozenset({HELLO, AUTH})

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


# --- frames ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fixed part of a frame, validated except for its length (which depends on the
    receiver's state: handshake frames have a smaller limit)."""

    type: int
    request_id: int
    length: int

    def encode(self) -> bytes:
        return _pack(_HEADER, MAGIC, FRAME_VERSION, self.type, 0, 0, self.request_id, self.length)


def parse_header(raw: bytes | bytearray | memoryview) -> FrameHeader:
    """Check and decode the first ``HEADER_SIZE`` bytes of ``raw``."""
    if len(raw) < HEADER_SIZE:
        raise ProtocolError(f"frame header: {len(raw)} bytes, need {HEADER_SIZE}")
    magic, version, type_id, flags, reserved, request_id, length = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise ProtocolError(f"frame header: bad magic {bytes(magic)!r}")
    if version != FRAME_VERSION:
        raise ProtocolError(f"frame header: unsupported frame version {version}")
    if flags or reserved:
        raise ProtocolError(f"frame header: flags {flags:#x} and reserved {reserved:#x} must be 0")
    return FrameHeader(type_id, request_id, length)


def frame_mac(key: bytes, seq: int, header: bytes | memoryview, payload: bytes | memoryview) -> bytes:
    """MAC of the ``seq``-th authenticated frame one side sends.

    The counter is not on the wire: both sides count frames, so a frame replayed,
    dropped, reordered or reflected back to its sender fails verification.
    """
    mac = hmac.new(key, _U64.pack(seq), hashlib.sha256)
    mac.update(header)
    mac.update(payload)
    return mac.digest()[:MAC_SIZE]


def encode_frame(type_id: int, request_id: int, payload: bytes, *,
                 key: bytes | None = None, seq: int = 0) -> bytes:
    """A whole frame; with ``key``, followed by its MAC (every frame after the handshake)."""
    header = FrameHeader(type_id, request_id, len(payload)).encode()
    if key is None:
        return header + payload
    return b"".join((header, payload, frame_mac(key, seq, header, payload)))


# --- decoding helpers -----------------------------------------------------------------

class _Reader:
    """Reads a payload front to back; every shortfall is a ``ProtocolError`` naming ``what``."""

    __slots__ = ("_pos", "_view", "_what")

    def __init__(self, payload: bytes | memoryview, what: str) -> None:
        self._view = memoryview(payload)
        self._pos = 0
        self._what = what

    def fail(self, problem: str) -> NoReturn:
        raise ProtocolError(f"{self._what}: {problem}")

    @property
    def remaining(self) -> int:
        return len(self._view) - self._pos

    def take(self, n: int) -> memoryview:
        if n > self.remaining:
            self.fail(f"truncated (need {n} bytes at offset {self._pos}, have {self.remaining})")
        view = self._view[self._pos:self._pos + n]
        self._pos += n
        return view

    def _int(self, st: struct.Struct) -> int:
        value: int = st.unpack(self.take(st.size))[0]  # struct gives Any: typed by a local, cheaper than cast()
        return value

    def u8(self) -> int:
        return self._int(_U8)

    def u16(self) -> int:
        return self._int(_U16)

    def u32(self) -> int:
        return self._int(_U32)

    def u64(self) -> int:
        return self._int(_U64)

    def fixed(self, n: int) -> bytes:
        return bytes(self.take(n))

    def blob(self) -> memoryview:
        return self.take(self.u32())

    def count(self, min_entry_size: int) -> int:
        """A u32 entry count, refused if that many entries cannot fit in what is left."""
        n = self.u32()
        if n * min_entry_size > self.remaining:
            self.fail(f"{n} entries cannot fit in {self.remaining} bytes")
        return n

    def text(self, n: int, limit: int) -> str:
        if n > limit:
            self.fail(f"text of {n} bytes exceeds {limit}")
        try:
            return str(self.take(n), "utf-8")
        except UnicodeDecodeError:
            self.fail("text is not UTF-8")

    def end(self) -> None:
        if self.remaining:
            self.fail(f"{self.remaining} trailing bytes")


def _pack(st: struct.Struct, *values: object) -> bytes:
    """``st.pack``, with out-of-range values reported as ``ValueError`` (a caller's bug)."""
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise ValueError(f"cannot encode {values!r}: {exc}") from None


def _check_id(what: str, value: bytes) -> None:
    if len(value) != ID_SIZE:
        raise ValueError(f"{what} must be {ID_SIZE} bytes, got {len(value)}")


def _encode_text(text: str, limit: int, length: struct.Struct) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"text of {len(raw)} bytes exceeds {limit}")
    return length.pack(len(raw)) + raw


# --- chunk and record lists -----------------------------------------------------------

ChunkEntry = tuple[ChunkId, bytes]
LogRecord = tuple[int, bytes]


def _encode_chunks(chunks: list[ChunkEntry]) -> list[bytes]:
    parts = [_pack(_U32, len(chunks))]
    for cid, data in chunks:
        _check_id("chunk id", cid)
        if len(data) > MAX_CHUNK_SIZE:
            raise ValueError(f"chunk {cid.hex()} has {len(data)} bytes, more than {MAX_CHUNK_SIZE}")
        parts += (cid, _U32.pack(len(data)), data)
    return parts


def _decode_chunks(reader: _Reader) -> list[ChunkEntry]:
    """Chunk entries, each verified: bytes that do not hash to their id end the connection."""
    chunks = []
    for _ in range(reader.count(CHUNK_ENTRY_OVERHEAD)):
        cid = ChunkId(reader.fixed(ID_SIZE))
        data = reader.blob()
        if len(data) > MAX_CHUNK_SIZE:
            reader.fail(f"chunk {cid.hex()} has {len(data)} bytes, more than {MAX_CHUNK_SIZE}")
        if chunk_id(data) != cid:
            reader.fail(f"chunk {cid.hex()} does not match its data")
        chunks.append((cid, bytes(data)))
    return chunks


def _encode_ids(ids: list[ChunkId]) -> list[bytes]:
    for cid in ids:
        _check_id("chunk id", cid)
    return [_pack(_U32, len(ids)), *ids]


def _decode_ids(reader: _Reader) -> list[ChunkId]:
    return [ChunkId(reader.fixed(ID_SIZE)) for _ in range(reader.count(ID_SIZE))]


def records_problem(records: list[LogRecord]) -> str | None:
    """Why ``records`` is not a run of consecutive sequence numbers from 1 up, or None."""
    for i, (seq, _change) in enumerate(records):
        if seq < 1:
            return f"sequence number {seq} (they start at 1)"
        if i and seq != records[i - 1][0] + 1:
            return f"sequence {seq} follows {records[i - 1][0]}: records must be consecutive"
    return None


def _encode_records(records: list[LogRecord]) -> list[bytes]:
    problem = records_problem(records)
    if problem:
        raise ValueError(problem)
    parts = [_pack(_U32, len(records))]
    for seq, change in records:
        parts += (_pack(_U64, seq), _U32.pack(len(change)), change)
    return parts


def _decode_records(reader: _Reader) -> list[LogRecord]:
    records = [(reader.u64(), bytes(reader.blob())) for _ in range(reader.count(LOG_RECORD_OVERHEAD))]
    problem = records_problem(records)
    if problem:
        reader.fail(problem)
    return records


# --- handshake ------------------------------------------------------------------------

_HELLO_HEAD = struct.Struct(">H16s32sI")


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame each side sends: who it is, a fresh nonce, and what it accepts.

    ``max_payload`` is the sender's receive limit: the other side never sends it a larger
    payload. ``cluster`` is a name both sides must share; it turns a misconfigured
    address into a clear error instead of a MAC failure.
    """

    node_id: NodeId
    nonce: bytes
    max_payload: int
    cluster: str = ""
    version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        _check_id("node id", self.node_id)
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        head = _pack(_HELLO_HEAD, self.version, self.node_id, self.nonce, self.max_payload)
        return head + _encode_text(self.cluster, MAX_CLUSTER_NAME, _U8)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Hello:
        reader = _Reader(payload, "hello")
        version = reader.u16()
        if version != PROTOCOL_VERSION:
            reader.fail(f"peer speaks protocol version {version}, this node {PROTOCOL_VERSION}")
        node_id = NodeId(reader.fixed(ID_SIZE))
        nonce = reader.fixed(NONCE_SIZE)
        max_payload = reader.u32()
        cluster = reader.text(reader.u8(), MAX_CLUSTER_NAME)
        reader.end()
        return cls(node_id, nonce, max_payload, cluster, version)


@dataclass(frozen=True, slots=True)
class Auth:
    """Second frame each side sends: proof that it knows the cluster secret."""

    mac: bytes

    def encode(self) -> bytes:
        if len(self.mac) != AUTH_MAC_SIZE:
            raise ValueError(f"auth mac must be {AUTH_MAC_SIZE} bytes")
        return self.mac

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Auth:
        reader = _Reader(payload, "auth")
        mac = reader.fixed(AUTH_MAC_SIZE)
        reader.end()
        return cls(mac)


# --- messages -------------------------------------------------------------------------

class Message:
    """A message exchanged after the handshake. ``TYPE`` is its frame type."""

    __slots__ = ()
    TYPE: ClassVar[int]

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Self:
        raise NotImplementedError


class Reply(Message):
    """A message answering a request; its frame carries the request's id."""

    __slots__ = ()


class Request(Message):
    """A message that expects one reply: one of ``REPLIES``, or ``Error``."""

    __slots__ = ()
    REPLIES: ClassVar[tuple[type[Reply], ...]]


MessageT = TypeVar("MessageT", bound=Message)

MESSAGES: dict[int, type[Message]] = {}
"""Frame type -> message class, filled by ``register``."""


def register(cls: type[MessageT]) -> type[MessageT]:
    """Make ``cls`` decodable; its ``TYPE`` must be new and in its kind's range."""
    low, high = (0x10, 0x3F) if issubclass(cls, Request) else (0x40, 0x7F)
    if not low <= cls.TYPE <= high or cls.TYPE in MESSAGES:
        raise ValueError(f"{cls.__name__}: type {cls.TYPE:#x} is taken or out of range")
    MESSAGES[cls.TYPE] = cls
    return cls


def decode_message(type_id: int, payload: bytes | memoryview) -> Message:
    cls = MESSAGES.get(type_id)
    if cls is None:
        raise ProtocolError(f"unknown message type {type_id:#x}")
    return cls.decode(payload)


def _volume_and(st: struct.Struct, what: str, payload: bytes | memoryview) -> tuple[VolumeId, tuple[int, ...]]:
    """Decode a fixed layout that starts with a volume id: (volume id, the other fields)."""
    reader = _Reader(payload, what)
    raw = reader.fixed(st.size)
    reader.end()
    volume_id, *rest = st.unpack(raw)
    return VolumeId(volume_id), tuple(rest)


# replies first, so that requests can name them


@register
@dataclass(frozen=True, slots=True)
class Pong(Reply):
    TYPE: ClassVar[int] = 0x40
    time_ns: int

    def encode(self) -> bytes:
        return _pack(_U64, self.time_ns)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Pong:
        reader = _Reader(payload, "pong")
        time_ns = reader.u64()
        reader.end()
        return cls(time_ns)


@register
@dataclass(frozen=True, slots=True)
class Ack(Reply):
    """The request was carried out (chunks stored, fence raised, volume released)."""

    TYPE: ClassVar[int] = 0x41

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Ack:
        _Reader(payload, "ack").end()
        return cls()


class ErrorCode(enum.IntEnum):
    """Why a request failed. Unknown codes are kept as plain ints (``Error.code``)."""

    BAD_REQUEST = 1
    """The request is well-formed but makes no sense here (e.g. a volume id mismatch)."""
    INTERNAL = 2
    """The replier hit a bug or an unexpected failure; the message says which."""
    NOT_FOUND = 3
    """The volume (or chunk) is not on the replier."""
    STALE_EPOCH = 4
    """The request's epoch is below one the replier has seen; ``value`` is that epoch."""
    GAP = 5
    """Log records do not follow the replier's last one; ``value`` is the sequence it needs."""
    NO_SPACE = 6
    """The replier's disk is full."""
    BUSY = 7
    """The replier cannot take this now (overloaded, volume in use); try again later."""
    TRIMMED = 8
    """The records asked for were trimmed from the log: copy the volume whole."""
    EXISTS = 9
    """The name asked for is taken (a snapshot of that name exists)."""


_ERROR_HEAD = struct.Struct(">HQ")


@register
@dataclass(frozen=True, slots=True)
class Error(Reply):
    """A request failed. ``value`` carries the number the code's doc names, else 0."""

    TYPE: ClassVar[int] = 0x42
    code: int
    message: str = ""
    value: int = 0

    @classmethod
    def of(cls, code: int, message: str, value: int = 0) -> Error:
        """An Error whose message is cut (at a character boundary) to fit the 1 KiB limit."""
        raw = message.encode("utf-8")[:MAX_ERROR_MESSAGE]
        return cls(code, raw.decode("utf-8", errors="ignore"), value)

    def encode(self) -> bytes:
        return _pack(_ERROR_HEAD, self.code, self.value) + _encode_text(self.message, MAX_ERROR_MESSAGE, _U16)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Error:
        reader = _Reader(payload, "error")
        code, value = reader.u16(), reader.u64()
        message = reader.text(reader.u16(), MAX_ERROR_MESSAGE)
        reader.end()
        known = code in ErrorCode._value2member_map_
        return cls(ErrorCode(code) if known else code, message, value)


@register
@dataclass(frozen=True, slots=True)
class Chunks(Reply):
    """Answer to ``GetChunks``. Ids in neither list were left out to keep the reply under
    the requester's limit: ask for them again."""

    TYPE: ClassVar[int] = 0x43
    found: list[ChunkEntry] = field(default_factory=list)
    missing: list[ChunkId] = field(default_factory=list)

    def encode(self) -> bytes:
        return b"".join(_encode_chunks(self.found) + _encode_ids(self.missing))

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Chunks:
        reader = _Reader(payload, "chunks")
        found = _decode_chunks(reader)
        missing = _decode_ids(reader)
        reader.end()
        return cls(found, missing)


_VOLUME_SEQ = struct.Struct(">16sQ")


@register
@dataclass(frozen=True, slots=True)
class LogAck(Reply):
    """The replier has applied (durably) every record of the volume up to ``applied_seq``."""

    TYPE: ClassVar[int] = 0x44
    volume_id: VolumeId
    applied_seq: int

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        return _pack(_VOLUME_SEQ, self.volume_id, self.applied_seq)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> LogAck:
        volume_id, (applied,) = _volume_and(_VOLUME_SEQ, "log ack", payload)
        return cls(volume_id, applied)


@register
@dataclass(frozen=True, slots=True)
class LogRecords(Reply):
    """Answer to ``FetchLog``: consecutive records after the asked sequence (possibly
    none), and ``last_seq``, the highest sequence the replier has."""

    TYPE: ClassVar[int] = 0x45
    volume_id: VolumeId
    last_seq: int
    records: list[LogRecord] = field(default_factory=list)

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        if self.records and self.records[-1][0] > self.last_seq:
            raise ValueError("records go beyond last_seq")
        head = _pack(_VOLUME_SEQ, self.volume_id, self.last_seq)
        return b"".join([head, *_encode_records(self.records)])

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> LogRecords:
        reader = _Reader(payload, "log records")
        volume_id = VolumeId(reader.fixed(ID_SIZE))
        last_seq = reader.u64()
        records = _decode_records(reader)
        reader.end()
        if records and records[-1][0] > last_seq:
            reader.fail(f"record {records[-1][0]} beyond last_seq {last_seq}")
        return cls(volume_id, last_seq, records)


_VOLUME_INFO_REPLY = struct.Struct(">16sQQB")


@register
@dataclass(frozen=True, slots=True)
class VolumeInfoReply(Reply):
    """What the replier knows of a volume: the highest epoch it has seen and the last
    record it applied. ``known`` is False (and the numbers 0) if it has no copy."""

    TYPE: ClassVar[int] = 0x46
    volume_id: VolumeId
    epoch: int
    applied_seq: int
    known: bool

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        return _pack(_VOLUME_INFO_REPLY, self.volume_id, self.epoch, self.applied_seq, int(self.known))

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> VolumeInfoReply:
        volume_id, (epoch, applied, known) = _volume_and(_VOLUME_INFO_REPLY, "volume info reply", payload)
        if known > 1:
            raise ProtocolError(f"volume info reply: known must be 0 or 1, got {known}")
        return cls(volume_id, epoch, applied, bool(known))


@register
@dataclass(frozen=True, slots=True)
class SnapshotTaken(Reply):
    """Answer to ``TakeSnapshot``: the snapshot exists, durably, and is in the catalog
    under ``snapshot_id``."""

    TYPE: ClassVar[int] = 0x47
    snapshot_id: VolumeId

    def encode(self) -> bytes:
        _check_id("snapshot id", self.snapshot_id)
        return bytes(self.snapshot_id)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> SnapshotTaken:
        reader = _Reader(payload, "snapshot taken")
        snapshot_id = VolumeId(reader.fixed(ID_SIZE))
        reader.end()
        return cls(snapshot_id)


# --- requests -------------------------------------------------------------------------

@register
@dataclass(frozen=True, slots=True)
class Ping(Request):
    """Liveness and round-trip time; the reply echoes ``time_ns``."""

    TYPE: ClassVar[int] = 0x10
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (Pong,)
    time_ns: int

    def encode(self) -> bytes:
        return _pack(_U64, self.time_ns)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> Ping:
        reader = _Reader(payload, "ping")
        time_ns = reader.u64()
        reader.end()
        return cls(time_ns)


@register
@dataclass(frozen=True, slots=True)
class PutChunks(Request):
    """Store these chunks (verified on receipt). Ack once they are durable."""

    TYPE: ClassVar[int] = 0x11
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (Ack,)
    chunks: list[ChunkEntry] = field(default_factory=list)

    def encode(self) -> bytes:
        return b"".join(_encode_chunks(self.chunks))

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> PutChunks:
        reader = _Reader(payload, "put chunks")
        chunks = _decode_chunks(reader)
        reader.end()
        return cls(chunks)


@register
@dataclass(frozen=True, slots=True)
class GetChunks(Request):
    TYPE: ClassVar[int] = 0x12
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (Chunks,)
    ids: list[ChunkId] = field(default_factory=list)

    def encode(self) -> bytes:
        return b"".join(_encode_ids(self.ids))

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> GetChunks:
        reader = _Reader(payload, "get chunks")
        ids = _decode_ids(reader)
        reader.end()
        return cls(ids)


_VOLUME_EPOCH = struct.Struct(">16sQ")


@register
@dataclass(frozen=True, slots=True)
class AppendLog(Request):
    """Apply these consecutive records of the volume, written under lease ``epoch``."""

    TYPE: ClassVar[int] = 0x13
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (LogAck,)
    volume_id: VolumeId
    epoch: int
    records: list[LogRecord] = field(default_factory=list)

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        head = _pack(_VOLUME_EPOCH, self.volume_id, self.epoch)
        return b"".join([head, *_encode_records(self.records)])

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> AppendLog:
        reader = _Reader(payload, "append log")
        volume_id = VolumeId(reader.fixed(ID_SIZE))
        epoch = reader.u64()
        records = _decode_records(reader)
        reader.end()
        return cls(volume_id, epoch, records)


_FETCH_LOG = struct.Struct(">16sQQI")


@register
@dataclass(frozen=True, slots=True)
class FetchLog(Request):
    """Send the volume's records after ``after_seq``, about ``max_bytes`` of them at most
    (at least one record if there is one, so that a large record still moves)."""

    TYPE: ClassVar[int] = 0x14
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (LogRecords,)
    volume_id: VolumeId
    epoch: int
    after_seq: int
    max_bytes: int

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        return _pack(_FETCH_LOG, self.volume_id, self.epoch, self.after_seq, self.max_bytes)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> FetchLog:
        volume_id, (epoch, after, max_bytes) = _volume_and(_FETCH_LOG, "fetch log", payload)
        return cls(volume_id, epoch, after, max_bytes)


@register
@dataclass(frozen=True, slots=True)
class VolumeInfo(Request):
    TYPE: ClassVar[int] = 0x15
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (VolumeInfoReply,)
    volume_id: VolumeId

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        return bytes(self.volume_id)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> VolumeInfo:
        reader = _Reader(payload, "volume info")
        volume_id = VolumeId(reader.fixed(ID_SIZE))
        reader.end()
        return cls(volume_id)


@dataclass(frozen=True, slots=True)
class _VolumeEpochRequest(Request):
    volume_id: VolumeId
    epoch: int

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        return _pack(_VOLUME_EPOCH, self.volume_id, self.epoch)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> _VolumeEpochRequest:
        volume_id, (epoch,) = _volume_and(_VOLUME_EPOCH, cls.__name__, payload)
        return cls(volume_id, epoch)


@register
@dataclass(frozen=True, slots=True)
class Fence(_VolumeEpochRequest):
    """Refuse, from now on, records of the volume with an epoch below ``epoch``."""

    TYPE: ClassVar[int] = 0x16
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (Ack,)


@register
@dataclass(frozen=True, slots=True)
class Release(_VolumeEpochRequest):
    """To the volume's current holder: flush, ship every record, unmount, then Ack
    (``epoch`` is the lease the asker is about to take)."""

    TYPE: ClassVar[int] = 0x17
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (Ack,)


@register
@dataclass(frozen=True, slots=True)
class PushCopy(_VolumeEpochRequest):
    """To a node holding a complete copy: send the asker, which takes the volume's lease
    with ``epoch``, a whole-volume copy (``VolumeCopy`` parts, chunks pushed ahead), then
    answer with the sequence the copy holds (``LogAck``). Used when the asker's own copy
    is further behind than the replier's log goes back."""

    TYPE: ClassVar[int] = 0x18
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (LogAck,)


CopyRow = tuple[int, bytes, bytes]
_VOLUME_COPY_HEAD = struct.Struct(">16sQQQQB")
COPY_FIRST = 1
COPY_LAST = 2


@register
@dataclass(frozen=True, slots=True)
class VolumeCopy(Request):
    """One part of a whole-volume copy: the volume's rows as they stood after record
    ``snapshot_seq`` on the sender (volume-local keys, any per-volume table).

    The ``first`` part makes the receiver drop its copy and mark the volume incomplete;
    the parts of one copy share ``copy_id`` (random, not 0) and ``snapshot_seq``; the
    ``last`` part completes the copy (the receiver's log then continues after
    ``snapshot_seq``, its next inode is at least ``next_local``) and is answered with
    ``LogAck``, the others with ``Ack``. Chunks the rows name are pushed ahead
    (``PutChunks``); any the receiver lacks are marked remote."""

    TYPE: ClassVar[int] = 0x19
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (Ack, LogAck)
    volume_id: VolumeId
    epoch: int
    copy_id: int
    snapshot_seq: int
    next_local: int
    first: bool
    last: bool
    rows: list[CopyRow] = field(default_factory=list)

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        if not self.copy_id:
            raise ValueError("a volume copy needs a nonzero copy id")
        flags = (COPY_FIRST if self.first else 0) | (COPY_LAST if self.last else 0)
        parts = [_pack(_VOLUME_COPY_HEAD, self.volume_id, self.epoch, self.copy_id, self.snapshot_seq,
                       self.next_local, flags), _pack(_U32, len(self.rows))]
        for table, key, value in self.rows:
            if not MIN_COPY_KEY <= len(key) <= MAX_COPY_KEY:
                raise ValueError(f"copy row key of {len(key)} bytes")
            parts += (_pack(_U8, table), _U16.pack(len(key)), key, _pack(_U32, len(value)), value)
        return b"".join(parts)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> VolumeCopy:
        reader = _Reader(payload, "volume copy")
        volume_id, epoch, copy_id, seq, next_local, flags = _VOLUME_COPY_HEAD.unpack(
            reader.take(_VOLUME_COPY_HEAD.size))
        if not copy_id:
            reader.fail("copy id 0")
        if flags & ~(COPY_FIRST | COPY_LAST):
            reader.fail(f"unknown flags {flags:#x}")
        rows = []
        for _ in range(reader.count(COPY_ROW_OVERHEAD + MIN_COPY_KEY)):
            table = reader.u8()
            key_length = reader.u16()
            if not MIN_COPY_KEY <= key_length <= MAX_COPY_KEY:
                reader.fail(f"row key of {key_length} bytes")
            key = bytes(reader.take(key_length))
            rows.append((table, key, bytes(reader.blob())))
        reader.end()
        return cls(VolumeId(volume_id), epoch, copy_id, seq, next_local, bool(flags & COPY_FIRST),
                   bool(flags & COPY_LAST), rows)


MAX_SNAPSHOT_NAME = 255
"""Bytes of a snapshot's own name (the part after ``@``): a volume name's limit."""


@register
@dataclass(frozen=True, slots=True)
class TakeSnapshot(Request):
    """To the node that writes the volume: snapshot it as ``<volume>@<name>`` there (its
    replicas take it from its log) and enter it in the catalog, then answer
    ``SnapshotTaken``. A node asked to snapshot a volume another node writes forwards
    the request thus, since only the writer holds every record."""

    TYPE: ClassVar[int] = 0x1A
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (SnapshotTaken,)
    volume_id: VolumeId
    name: str

    def encode(self) -> bytes:
        _check_id("volume id", self.volume_id)
        if not self.name:
            raise ValueError("a snapshot needs a name")
        return bytes(self.volume_id) + _encode_text(self.name, MAX_SNAPSHOT_NAME, _U8)

    @classmethod
    def decode(cls, payload: bytes | memoryview) -> TakeSnapshot:
        reader = _Reader(payload, "take snapshot")
        volume_id = VolumeId(reader.fixed(ID_SIZE))
        name = reader.text(reader.u8(), MAX_SNAPSHOT_NAME)
        reader.end()
        if not name:
            reader.fail("empty snapshot name")
        return cls(volume_id, name)

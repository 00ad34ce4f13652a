"""Peer protocol bytes: every message round-trips, and every damaged payload or header
raises ProtocolError (never another exception, never a wrong message)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfs.errors import ProtocolError
from cfs.hashing import chunk_id
from cfs.repl import wire
from cfs.repl.wire import (
    MAX_CHUNK_SIZE, MAX_ERROR_MESSAGE, MESSAGES, Ack, AppendLog, Auth, Chunks, Error, ErrorCode,
    Fence, FetchLog, FrameHeader, GetChunks, Hello, LogAck, LogRecords, Message, Ping, Pong,
    PushCopy, PutChunks, Release, Reply, Request, SnapshotTaken, TakeSnapshot, VolumeCopy, VolumeInfo,
    VolumeInfoReply,
)
from cfs.types import ChunkId, NodeId, VolumeId

u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
ids16 = st.binary(min_size=16, max_size=16)
volume_ids = ids16.map(VolumeId)
chunk_ids = ids16.map(ChunkId)
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@st.composite
def chunk_entries(draw: st.DrawFn) -> tuple[ChunkId, bytes]:
    data = draw(st.binary(max_size=300))
    return chunk_id(data), data


@st.composite
def log_records(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    first = draw(st.integers(1, 2**64 - 64))
    changes = draw(st.lists(st.binary(max_size=100), max_size=6))
    return [(first + i, change) for i, change in enumerate(changes)]


@st.composite
def log_records_replies(draw: st.DrawFn) -> LogRecords:
    records = draw(log_records())
    low = records[-1][0] if records else 0
    return LogRecords(draw(volume_ids), draw(st.integers(low, 2**64 - 1)), records)


copy_rows = st.lists(st.tuples(st.integers(0, 255), st.binary(min_size=8, max_size=40), st.binary(max_size=60)),
                     max_size=5)


MESSAGE_STRATEGIES: dict[type[Message], st.SearchStrategy[Message]] = {
    Ping: st.builds(Ping, u64),
    Pong: st.builds(Pong, u64),
    Ack: st.just(Ack()),
    Error: st.builds(Error, u16, st.text(max_size=200), u64),
    PutChunks: st.builds(PutChunks, st.lists(chunk_entries(), max_size=5)),
    GetChunks: st.builds(GetChunks, st.lists(chunk_ids, max_size=10)),
    Chunks: st.builds(Chunks, st.lists(chunk_entries(), max_size=5), st.lists(chunk_ids, max_size=5)),
    AppendLog: st.builds(AppendLog, volume_ids, u64, log_records()),
    LogAck: st.builds(LogAck, volume_ids, u64),
    FetchLog: st.builds(FetchLog, volume_ids, u64, u64, u32),
    LogRecords: log_records_replies(),
    VolumeInfo: st.builds(VolumeInfo, volume_ids),
    VolumeInfoReply: st.builds(VolumeInfoReply, volume_ids, u64, u64, st.booleans()),
    Fence: st.builds(Fence, volume_ids, u64),
    Release: st.builds(Release, volume_ids, u64),
    PushCopy: st.builds(PushCopy, volume_ids, u64),
    VolumeCopy: st.builds(VolumeCopy, volume_ids, u64, st.integers(1, 2**64 - 1), u64, u64, st.booleans(),
                          st.booleans(), copy_rows),
    TakeSnapshot: st.builds(TakeSnapshot, volume_ids, texts.filter(lambda s: 0 < len(s.encode()) <= 255)),
    SnapshotTaken: st.builds(SnapshotTaken, volume_ids),
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())
requests = st.one_of(*(s for cls, s in MESSAGE_STRATEGIES.items() if issubclass(cls, Request)))

VOL = VolumeId(bytes(range(16)))


def decode(message: Message) -> Message:
    return wire.decode_message(message.TYPE, message.encode())


# --- round trips -------------------------------------------------------------------

def test_every_registered_message_has_a_strategy() -> None:
    assert set(MESSAGE_STRATEGIES) == set(MESSAGES.values())


@given(messages)
def test_message_round_trip(message: Message) -> None:
    assert decode(message) == message


@given(messages)
def test_every_truncation_or_extension_is_refused(message: Message) -> None:
    payload = message.encode()
    for cut in range(len(payload)):
        with pytest.raises(ProtocolError):
            wire.decode_message(message.TYPE, payload[:cut])
    with pytest.raises(ProtocolError, match="trailing"):
        wire.decode_message(message.TYPE, payload + b"\0")


@settings(max_examples=300)
@given(st.sampled_from(sorted(MESSAGES)), st.binary(max_size=200))
def test_garbage_payloads_raise_only_protocol_error(type_id: int, payload: bytes) -> None:
    try:
        message = wire.decode_message(type_id, payload)
    except ProtocolError:
        return
    assert message.encode() == payload  # whatever decodes is exactly what it says


@given(st.integers(0, 255).filter(lambda t: t not in MESSAGES), st.binary(max_size=20))
def test_unknown_message_type(type_id: int, payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        wire.decode_message(type_id, payload)


@given(st.builds(Hello, ids16.map(NodeId), st.binary(min_size=32, max_size=32), u32,
                 st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)))
def test_hello_round_trip(hello: Hello) -> None:
    assert Hello.decode(hello.encode()) == hello


def test_auth_round_trip() -> None:
    auth = Auth(bytes(range(32)))
    assert Auth.decode(auth.encode()) == auth
    with pytest.raises(ProtocolError):
        Auth.decode(auth.mac[:31])
    with pytest.raises(ProtocolError):
        Auth.decode(auth.mac + b"x")


# --- pinned layouts: a change here breaks compatibility between nodes ---------------

def test_frame_and_message_layouts_are_pinned() -> None:
    header = FrameHeader(0x10, 7, 8).encode()
    assert header == b"CFSP\x01\x10\x00\x00" + b"\x00\x00\x00\x07" + b"\x00\x00\x00\x08"
    assert Ping(258).encode() == bytes(6) + b"\x01\x02"
    assert Error(ErrorCode.GAP, "ab", 9).encode() == b"\x00\x05" + (9).to_bytes(8, "big") + b"\x00\x02ab"
    data = b"hi"
    assert PutChunks([(chunk_id(data), data)]).encode() == (
        b"\0\0\0\1" + chunk_id(data) + b"\0\0\0\2hi")
    assert AppendLog(VOL, 3, [(5, b"x")]).encode() == (
        VOL + (3).to_bytes(8, "big") + b"\0\0\0\1" + (5).to_bytes(8, "big") + b"\0\0\0\1x")


# --- frames --------------------------------------------------------------------------

@given(st.integers(0, 255), u32, u32)
def test_header_round_trip(type_id: int, request_id: int, length: int) -> None:
    header = FrameHeader(type_id, request_id, length)
    assert wire.parse_header(header.encode() + b"payload") == header


@pytest.mark.parametrize(("offset", "value", "match"), [
    (0, ord("X"), "magic"), (4, 2, "version"), (4, 0, "version"), (6, 1, "flags"), (7, 1, "reserved"),
])
def test_bad_header_fields(offset: int, value: int, match: str) -> None:
    raw = bytearray(FrameHeader(0x10, 1, 8).encode())
    raw[offset] = value
    with pytest.raises(ProtocolError, match=match):
        wire.parse_header(raw)


def test_short_header() -> None:
    with pytest.raises(ProtocolError):
        wire.parse_header(FrameHeader(0x10, 1, 8).encode()[:15])


def test_frame_mac_covers_key_counter_header_and_payload() -> None:
    key, header, payload = b"k" * 32, FrameHeader(0x10, 1, 3).encode(), b"abc"
    mac = wire.frame_mac(key, 0, header, payload)
    assert len(mac) == wire.MAC_SIZE
    assert wire.encode_frame(0x10, 1, payload, key=key, seq=0) == header + payload + mac
    assert wire.encode_frame(0x10, 1, payload) == header + payload
    others = {wire.frame_mac(b"K" * 32, 0, header, payload), wire.frame_mac(key, 1, header, payload),
              wire.frame_mac(key, 0, FrameHeader(0x10, 2, 3).encode(), payload),
              wire.frame_mac(key, 0, header, b"abd")}
    assert mac not in others and len(others) == 4


# --- chunk verification and bounds ---------------------------------------------------

def test_chunk_whose_bytes_do_not_match_its_id_is_refused() -> None:
    good, bad = b"good data", b"evil data"
    with pytest.raises(ProtocolError, match="does not match"):
        decode(PutChunks([(chunk_id(good), good), (chunk_id(good), bad)]))
    with pytest.raises(ProtocolError, match="does not match"):
        decode(Chunks([(chunk_id(good), bad)], []))


def test_oversized_chunk() -> None:
    data = b"\1" * (MAX_CHUNK_SIZE + 1)
    with pytest.raises(ValueError):
        PutChunks([(chunk_id(data), data)]).encode()
    raw = b"\0\0\0\1" + chunk_id(data) + struct.pack(">I", len(data)) + data
    with pytest.raises(ProtocolError, match="more than"):
        PutChunks.decode(raw)
    largest = b"\1" * MAX_CHUNK_SIZE
    assert decode(PutChunks([(chunk_id(largest), largest)])) == PutChunks([(chunk_id(largest), largest)])


@pytest.mark.parametrize("cls", [PutChunks, GetChunks, Chunks])
def test_huge_counts_are_refused_before_any_work(cls: type[Message]) -> None:
    with pytest.raises(ProtocolError, match="cannot fit"):
        cls.decode(b"\xff\xff\xff\xff" + bytes(100))


def test_huge_record_count_is_refused() -> None:
    with pytest.raises(ProtocolError, match="cannot fit"):
        AppendLog.decode(VOL + bytes(8) + b"\xff\xff\xff\xff" + bytes(100))


def test_blob_longer_than_the_payload() -> None:
    data = b"abc"
    raw = b"\0\0\0\1" + chunk_id(data) + b"\xff\xff\xff\xf0" + data
    with pytest.raises(ProtocolError, match="truncated"):
        PutChunks.decode(raw)


# --- log records ---------------------------------------------------------------------

@pytest.mark.parametrize("records", [
    [(0, b"a")], [(1, b"a"), (3, b"b")], [(2, b"a"), (1, b"b")], [(5, b"a"), (5, b"b")],
])
def test_records_must_be_consecutive_from_one_up(records: list[tuple[int, bytes]]) -> None:
    with pytest.raises(ValueError):
        AppendLog(VOL, 1, records).encode()
    raw = VOL + bytes(8) + struct.pack(">I", len(records)) + b"".join(
        struct.pack(">QI", seq, len(change)) + change for seq, change in records)
    with pytest.raises(ProtocolError, match="sequence"):
        AppendLog.decode(raw)


def test_log_records_beyond_last_seq() -> None:
    with pytest.raises(ValueError):
        LogRecords(VOL, 4, [(5, b"x")]).encode()
    raw = VOL + struct.pack(">QIQI", 4, 1, 5, 1) + b"x"
    with pytest.raises(ProtocolError, match="beyond"):
        LogRecords.decode(raw)
    assert decode(LogRecords(VOL, 9, [])) == LogRecords(VOL, 9, [])


# --- whole-volume copies ---------------------------------------------------------------

def test_volume_copy_layout_and_checks() -> None:
    message = VolumeCopy(VOL, 3, 7, 9, 11, True, False, [(1, b"k" * 8, b"value")])
    raw = message.encode()
    assert raw == (VOL + struct.pack(">QQQQB", 3, 7, 9, 11, 1) + struct.pack(">IBH", 1, 1, 8) + b"k" * 8
                   + struct.pack(">I", 5) + b"value")
    assert decode(message) == message
    head = VOL + struct.pack(">QQQQ", 3, 7, 9, 11)
    with pytest.raises(ProtocolError, match="flags"):
        VolumeCopy.decode(head + b"\x04" + bytes(4))
    with pytest.raises(ProtocolError, match="copy id"):
        VolumeCopy.decode(VOL + struct.pack(">QQQQB", 3, 0, 9, 11, 0) + bytes(4))
    for key in (b"short", b"k" * 512):
        with pytest.raises(ValueError):
            VolumeCopy(VOL, 3, 7, 9, 11, False, False, [(1, key, b"")]).encode()
        with pytest.raises(ProtocolError, match="key"):
            VolumeCopy.decode(head + b"\0" + struct.pack(">IBH", 1, 1, len(key)) + key + bytes(12))
    with pytest.raises(ProtocolError, match="cannot fit"):
        VolumeCopy.decode(head + b"\0" + b"\xff\xff\xff\xff" + bytes(100))
    with pytest.raises(ValueError):
        VolumeCopy(VOL, 3, 0, 9, 11, False, False, []).encode()


# --- snapshots ---------------------------------------------------------------------------

def test_take_snapshot_layout_and_checks() -> None:
    message = TakeSnapshot(VOL, "monday")
    assert message.encode() == VOL + b"\x06monday"
    assert decode(message) == message
    assert decode(TakeSnapshot(VOL, "é" * 127)) == TakeSnapshot(VOL, "é" * 127)  # 254 bytes
    assert SnapshotTaken(VOL).encode() == VOL and decode(SnapshotTaken(VOL)) == SnapshotTaken(VOL)
    with pytest.raises(ProtocolError, match="empty"):
        TakeSnapshot.decode(VOL + b"\x00")
    with pytest.raises(ProtocolError, match="UTF-8"):
        TakeSnapshot.decode(VOL + b"\x02\xff\xfe")
    for bad in ("", "x" * 256, "é" * 128):
        with pytest.raises(ValueError):
            TakeSnapshot(VOL, bad).encode()
    with pytest.raises(ValueError):
        SnapshotTaken(VolumeId(b"short")).encode()


# --- small messages ------------------------------------------------------------------

def test_volume_info_reply_known_is_a_strict_boolean() -> None:
    raw = bytearray(VolumeInfoReply(VOL, 1, 2, True).encode())
    raw[-1] = 2
    with pytest.raises(ProtocolError, match="known"):
        VolumeInfoReply.decode(bytes(raw))


def test_error_codes_and_message_limit() -> None:
    assert decode(Error(ErrorCode.STALE_EPOCH, "fenced", 7)).code is ErrorCode.STALE_EPOCH
    unknown = decode(Error(999, "from the future"))
    assert isinstance(unknown, Error) and unknown.code == 999
    with pytest.raises(ValueError):
        Error(ErrorCode.INTERNAL, "x" * (MAX_ERROR_MESSAGE + 1)).encode()
    cut = Error.of(ErrorCode.INTERNAL, "é" * MAX_ERROR_MESSAGE)
    assert cut.message == "é" * (MAX_ERROR_MESSAGE // 2)
    assert decode(cut) == cut
    too_long = struct.pack(">HQH", 2, 0, MAX_ERROR_MESSAGE + 1) + b"x" * (MAX_ERROR_MESSAGE + 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        Error.decode(too_long)
    with pytest.raises(ProtocolError, match="UTF-8"):
        Error.decode(struct.pack(">HQH", 2, 0, 2) + b"\xff\xfe")


def test_bad_ids_and_ranges_are_caller_errors() -> None:
    with pytest.raises(ValueError):
        VolumeInfo(VolumeId(b"short")).encode()
    with pytest.raises(ValueError):
        GetChunks([ChunkId(b"x" * 17)]).encode()
    with pytest.raises(ValueError):
        Ping(-1).encode()
    with pytest.raises(ValueError):
        Fence(VOL, 2**64).encode()


def test_hello_checks() -> None:
    hello = Hello(NodeId(bytes(16)), bytes(32), 2**20, "prod")
    raw = hello.encode()
    other = wire.PROTOCOL_VERSION + 1
    with pytest.raises(ProtocolError, match=f"version {other}"):
        Hello.decode(other.to_bytes(2, "big") + raw[2:])
    with pytest.raises(ProtocolError, match="version 1"):  # before readdir rows held child and type
        Hello.decode(b"\0\1" + raw[2:])
    with pytest.raises(ValueError):
        Hello(NodeId(bytes(16)), bytes(32), 2**20, "x" * 256).encode()
    with pytest.raises(ValueError):
        Hello(NodeId(bytes(16)), bytes(31), 2**20).encode()
    assert len(raw) <= wire.MAX_HANDSHAKE_PAYLOAD
    longest = Hello(NodeId(bytes(16)), bytes(32), 2**32 - 1, "é" * 127)
    assert len(longest.encode()) <= wire.MAX_HANDSHAKE_PAYLOAD


# --- the registry --------------------------------------------------------------------

def test_every_request_names_its_replies() -> None:
    for cls in MESSAGES.values():
        if issubclass(cls, Request):
            assert cls.REPLIES and all(issubclass(r, Reply) for r in cls.REPLIES)
            assert 0x10 <= cls.TYPE <= 0x3F
        else:
            assert issubclass(cls, Reply) and 0x40 <= cls.TYPE <= 0x7F


def test_register_refuses_taken_or_misplaced_types() -> None:
    class Taken(Request):
        TYPE = Ping.TYPE

    class Misplaced(Reply):
        TYPE = 0x20

    for cls in (Taken, Misplaced):
        with pytest.raises(ValueError):
            wire.register(cls)
    assert MESSAGES[Ping.TYPE] is Ping and 0x20 not in MESSAGES

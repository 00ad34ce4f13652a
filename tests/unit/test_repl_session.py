"""The peer session: handshake, authentication, framed messages, and refusal of anything
a peer sends that is malformed, tampered with, replayed or out of place.

The fuzz tests check the promise the I/O layer relies on: whatever bytes arrive, the
session yields only the events of intact frames, then ``Rejected`` (or waits for data),
never raises, and never delivers anything from a damaged frame or after it.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cfs.errors import AuthFailed, ProtocolError
from cfs.hashing import chunk_id
from cfs.repl import wire
from cfs.repl.session import (
    NEED_DATA, Authenticated, Closed, Event, NeedData, Rejected, ReplyReceived, RequestReceived,
    Session, auth_mac, session_keys, transcript,
)
from cfs.repl.wire import (
    AUTH, HELLO, MAX_REQUEST_ID, Ack, AppendLog, Chunks, Error, ErrorCode, Fence, FetchLog,
    FrameHeader, GetChunks, Hello, LogAck, LogRecords, Message, Ping, Pong, PutChunks, Release,
    Request, VolumeInfo, VolumeInfoReply,
)
from cfs.types import NodeId, VolumeId

from test_repl_wire import requests

SECRET = b"cluster secret, 32 bytes long!!!"
A_ID = NodeId(b"A" * 16)
B_ID = NodeId(b"B" * 16)
VOL = VolumeId(bytes(range(16)))
DATA = b"some chunk data"
CID = chunk_id(DATA)


# --- helpers -------------------------------------------------------------------------

def make_pair(secret_a: bytes = SECRET, secret_b: bytes = SECRET, **kwargs: object) -> tuple[Session, Session]:
    a = Session("initiator", A_ID, secret_a, **kwargs)  # type: ignore[arg-type]
    b = Session("responder", B_ID, secret_b, **kwargs)  # type: ignore[arg-type]
    return a, b


def events(session: Session) -> list[Event]:
    """Every event available now, up to NEED_DATA or the terminal event."""
    out: list[Event] = []
    while True:
        event = session.next_event()
        if isinstance(event, NeedData):
            return out
        out.append(event)
        if isinstance(event, (Closed, Rejected)):
            return out


def pump(src: Session, dst: Session) -> list[Event]:
    data = src.data_to_send()
    if dst.wants_close:
        return []
    if data:
        dst.receive_data(data)
    return events(dst)


def handshake(a: Session, b: Session) -> tuple[list[Event], list[Event]]:
    """Run the handshake to its end: (events of a, events of b)."""
    ev_a: list[Event] = []
    ev_b: list[Event] = []
    for _ in range(3):
        ev_b += pump(a, b)
        ev_a += pump(b, a)
    return ev_a, ev_b


def open_pair(**kwargs: object) -> tuple[Session, Session]:
    a, b = make_pair(**kwargs)
    ev_a, ev_b = handshake(a, b)
    assert [type(e) for e in ev_a + ev_b] == [Authenticated, Authenticated]
    return a, b


def forge(sender: Session, type_id: int, request_id: int, payload: bytes) -> bytes:
    """A frame with a valid MAC from ``sender``, bypassing its checks: a buggy peer that
    knows the secret."""
    frame = wire.encode_frame(type_id, request_id, payload, key=sender._send_key, seq=sender._send_seq)
    sender._send_seq += 1
    return frame


def rejected(session: Session, match: str = "", kind: type[ProtocolError] = ProtocolError) -> None:
    event = session.next_event()
    assert isinstance(event, Rejected), event
    assert isinstance(event.error, kind), event.error
    assert match in event.reason
    assert session.wants_close and session.failure is event.error
    assert session.next_event() is event  # terminal
    with pytest.raises(RuntimeError):
        session.receive_data(b"more")
    with pytest.raises(RuntimeError):
        session.request(Ping(0))


def stream_of(messages: list[Request]) -> tuple[bytes, list[int], Session]:
    """(A's whole output, the end offset of each of its frames, a B that has seen none of it).

    A's auth and frames are only valid for the B whose nonce A saw, so A talks to one
    responder and the stream is fed to its twin: same id, same nonce, hence the same
    keys, but untouched.
    """
    nonce = secrets.token_bytes(wire.NONCE_SIZE)
    with mock.patch("secrets.token_bytes", return_value=nonce):
        b, twin = Session("responder", B_ID, SECRET), Session("responder", B_ID, SECRET)
    a = Session("initiator", A_ID, SECRET)
    hello_a = a.data_to_send()
    b.receive_data(hello_a)
    assert events(b) == []
    a.receive_data(b.data_to_send())
    assert [type(e) for e in events(a)] == [Authenticated]
    frames = [hello_a, a.data_to_send()]
    for message in messages:
        a.request(message)
        frames.append(a.data_to_send())
    ends = list(itertools.accumulate(map(len, frames)))
    return b"".join(frames), ends, twin


# --- handshake -----------------------------------------------------------------------

def test_handshake() -> None:
    a, b = make_pair(cluster="prod")
    assert not a.authenticated and a.peer_node_id is None
    ev_a, ev_b = handshake(a, b)
    assert ev_a == [Authenticated(B_ID, "prod", wire.DEFAULT_MAX_PAYLOAD)]
    assert ev_b == [Authenticated(A_ID, "prod", wire.DEFAULT_MAX_PAYLOAD)]
    for session, peer in ((a, B_ID), (b, A_ID)):
        assert session.authenticated and session.peer_node_id == peer and not session.wants_close
        assert session.bytes_to_send == 0 and session.bytes_buffered == 0


def test_handshake_with_everything_in_one_read() -> None:
    """B's hello and auth arrive together: A must still queue its auth before anything."""
    a, b = make_pair()
    b.receive_data(a.data_to_send())
    assert events(b) == []
    a.receive_data(b.data_to_send())
    assert [type(e) for e in events(a)] == [Authenticated]
    a.request(Ping(1))  # queued behind a's auth, which is still unsent
    b.receive_data(a.data_to_send())
    assert [type(e) for e in events(b)] == [Authenticated, RequestReceived]


@pytest.mark.parametrize("first_to_check", ["initiator", "responder"])
@pytest.mark.parametrize("wrong", ["initiator", "responder"])
def test_wrong_secret_on_either_side(wrong: str, first_to_check: str) -> None:
    """The first side to check the other's auth refuses it, and sends no auth of its own:
    the other side sees the connection close, never an authenticated peer."""
    other = b"another secret of 32 bytes......"
    a, b = make_pair(other if wrong == "initiator" else SECRET, other if wrong == "responder" else SECRET)
    checker, peer = (a, b) if first_to_check == "initiator" else (b, a)
    peer_hello, checker_hello = peer.data_to_send(), checker.data_to_send()
    peer.receive_data(checker_hello)
    assert events(peer) == []  # the peer answers the hello with its auth
    checker.receive_data(peer_hello + peer.data_to_send())
    rejected(checker, "failed authentication", AuthFailed)
    assert checker.data_to_send() == b""
    peer.receive_data(b"")
    assert events(peer) == [Closed()]
    assert not a.authenticated and not b.authenticated and a.peer_node_id is b.peer_node_id is None


def test_cluster_name_mismatch() -> None:
    a = Session("initiator", A_ID, SECRET, cluster="prod")
    b = Session("responder", B_ID, SECRET, cluster="test")
    b.receive_data(a.data_to_send())
    rejected(b, "cluster", AuthFailed)
    assert b.data_to_send() == b""  # no auth given to a peer we refuse


def test_self_connection_is_refused() -> None:
    a = Session("initiator", A_ID, SECRET)
    b = Session("responder", A_ID, SECRET)
    b.receive_data(a.data_to_send())
    rejected(b, "own id", AuthFailed)


def test_reflected_hello_is_refused() -> None:
    a = Session("initiator", A_ID, SECRET)
    a.receive_data(a.data_to_send())
    rejected(a, "own id", AuthFailed)


def test_initiator_checks_whom_it_dialled() -> None:
    a = Session("initiator", A_ID, SECRET, expected_peer=NodeId(b"C" * 16))
    b = Session("responder", B_ID, SECRET)
    a.receive_data(b.data_to_send())
    rejected(a, "expected node", AuthFailed)


def _hello_frame(**changes: object) -> bytes:
    hello = dataclasses.replace(Hello(B_ID, bytes(32), wire.DEFAULT_MAX_PAYLOAD), **changes)
    payload = hello.encode()
    return FrameHeader(HELLO, 0, len(payload)).encode() + payload


@pytest.mark.parametrize("version", [wire.PROTOCOL_VERSION - 1, wire.PROTOCOL_VERSION + 1])
def test_version_mismatch(version: int) -> None:
    a = Session("initiator", A_ID, SECRET)
    a.receive_data(_hello_frame(version=version))
    rejected(a, f"protocol version {version}")


def test_peer_limit_below_minimum() -> None:
    a = Session("initiator", A_ID, SECRET)
    a.receive_data(_hello_frame(max_payload=wire.MIN_MAX_PAYLOAD - 1))
    rejected(a, "frame limit")


@pytest.mark.parametrize("type_id", [AUTH, Ping.TYPE, Ack.TYPE, 0x99])
def test_anything_but_hello_first_is_refused(type_id: int) -> None:
    a = Session("initiator", A_ID, SECRET)
    a.receive_data(FrameHeader(type_id, 0, 8).encode())
    rejected(a, "while awaiting the peer's hello")


def test_message_instead_of_auth_is_refused() -> None:
    """A peer that knows no secret cannot skip the auth step with a message."""
    a, b = make_pair()
    a.receive_data(b.data_to_send())
    assert events(a) == []
    a.receive_data(wire.encode_frame(Ping.TYPE, 1, Ping(0).encode(), key=bytes(32)))
    rejected(a, "while awaiting the peer's auth")


def test_handshake_frame_with_request_id() -> None:
    a, b = make_pair()
    raw = bytearray(b.data_to_send())
    raw[11] = 1
    a.receive_data(bytes(raw))
    rejected(a, "request id 0")


def test_handshake_after_authentication_is_refused() -> None:
    a, _b = open_pair()
    a.receive_data(_hello_frame())
    rejected(a, "misplaced")


def test_oversized_handshake_frame_is_refused_from_its_header() -> None:
    a = Session("initiator", A_ID, SECRET)
    a.receive_data(FrameHeader(HELLO, 0, wire.MAX_HANDSHAKE_PAYLOAD + 1).encode())
    rejected(a, "exceeds the limit")


def test_auth_mac_binds_roles_and_transcript() -> None:
    hi, hr = Hello(A_ID, b"i" * 32, 2**21), Hello(B_ID, b"r" * 32, 2**21)
    t = transcript(hi.encode(), hr.encode())
    mac = auth_mac(SECRET, "initiator", hi, hr, t)
    assert mac != auth_mac(SECRET, "responder", hi, hr, t)
    assert mac != auth_mac(SECRET, "initiator", hi, hr, transcript(hi.encode(), hi.encode()))
    assert mac != auth_mac(SECRET + b"x", "initiator", hi, hr, t)
    keys = session_keys(SECRET, hi.nonce, hr.nonce, t)
    assert keys[0] != keys[1] and keys != session_keys(SECRET, hr.nonce, hi.nonce, t)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        Session("initiator", A_ID, b"short")
    with pytest.raises(ValueError):
        Session("initiator", A_ID, SECRET, max_payload=1000)
    with pytest.raises(ValueError):
        Session("client", A_ID, SECRET)  # type: ignore[arg-type]


# --- requests and replies ------------------------------------------------------------

EXCHANGES: list[tuple[Request, Message]] = [
    (Ping(5), Pong(5)),
    (PutChunks([(CID, DATA)]), Ack()),
    (GetChunks([CID, chunk_id(b"gone")]), Chunks([(CID, DATA)], [chunk_id(b"gone")])),
    (AppendLog(VOL, 3, [(7, b"c7"), (8, b"c8")]), LogAck(VOL, 8)),
    (FetchLog(VOL, 3, 6, 1 << 20), LogRecords(VOL, 8, [(7, b"c7"), (8, b"c8")])),
    (VolumeInfo(VOL), VolumeInfoReply(VOL, 3, 8, True)),
    (Fence(VOL, 4), Ack()),
    (Release(VOL, 5), Error(ErrorCode.BUSY, "still flushing")),
    (AppendLog(VOL, 2, [(9, b"c9")]), Error(ErrorCode.STALE_EPOCH, "fenced", 3)),
]


@pytest.mark.parametrize(("request_", "reply"), EXCHANGES, ids=lambda m: type(m).__name__)
def test_request_and_reply(request_: Request, reply: Message) -> None:
    a, b = open_pair()
    request_id = a.request(request_)
    assert a.requests_in_flight == 1
    (received,) = pump(a, b)
    assert received == RequestReceived(request_id, request_)
    assert b.replies_owed == 1
    b.reply(request_id, reply)  # type: ignore[arg-type]
    assert b.replies_owed == 0
    assert pump(b, a) == [ReplyReceived(request_id, reply)]  # type: ignore[arg-type]
    assert a.requests_in_flight == 0


def test_both_sides_request_concurrently() -> None:
    a, b = open_pair()
    ra = [a.request(Ping(i)) for i in range(3)]
    rb = b.request(VolumeInfo(VOL))
    got_b = pump(a, b)
    got_a = pump(b, a)
    assert [e.request_id for e in got_b] == ra == [1, 2, 3]
    assert got_a == [RequestReceived(rb, VolumeInfo(VOL))]
    a.reply(rb, VolumeInfoReply(VOL, 0, 0, False))
    for event in reversed(got_b):  # replies in any order
        b.reply(event.request_id, Pong(event.message.time_ns))  # type: ignore[union-attr]
    assert [e.request_id for e in pump(b, a)] == [3, 2, 1]
    assert pump(a, b) == [ReplyReceived(rb, VolumeInfoReply(VOL, 0, 0, False))]


def test_local_misuse_raises_and_changes_nothing() -> None:
    a, b = make_pair()
    with pytest.raises(RuntimeError):
        a.request(Ping(0))  # not authenticated yet
    handshake(a, b)
    with pytest.raises(TypeError):
        a.request(Ack())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        a.reply(1, Ack())  # nothing to answer
    request_id = a.request(PutChunks([(CID, DATA)]))
    assert len(pump(a, b)) == 1
    with pytest.raises(TypeError):
        b.reply(request_id, Pong(0))  # not an answer to PutChunks
    big = b"\1" * wire.MAX_CHUNK_SIZE
    too_many = PutChunks([(chunk_id(big[1:] + bytes([i])), big[1:] + bytes([i])) for i in range(5)])
    with pytest.raises(ValueError, match="peer's limit"):
        a.request(too_many)
    b.reply(request_id, Ack())
    with pytest.raises(ValueError):
        b.reply(request_id, Ack())  # answered already
    assert pump(b, a) == [ReplyReceived(request_id, Ack())]
    next_id = a.request(Ping(9))  # the refused requests used no id and no frame counter
    assert next_id == request_id + 1
    assert pump(a, b) == [RequestReceived(next_id, Ping(9))]


def test_reply_size_is_checked_against_the_peer_limit() -> None:
    a = Session("initiator", A_ID, SECRET)
    b = Session("responder", B_ID, SECRET, max_payload=wire.MIN_MAX_PAYLOAD)
    handshake(a, b)
    request_id = b.request(GetChunks([CID]))
    pump(b, a)
    big = b"\2" * wire.MAX_CHUNK_SIZE
    two = Chunks([(chunk_id(big), big), (CID, DATA * 1000)], [])
    with pytest.raises(ValueError, match="peer's limit"):
        a.reply(request_id, two)
    a.reply(request_id, Chunks([(chunk_id(big), big)], []))  # the rest: ask again
    assert pump(a, b) == [ReplyReceived(request_id, Chunks([(chunk_id(big), big)], []))]


def test_request_ids_wrap_and_skip_ids_in_flight() -> None:
    a, b = open_pair()
    first = a.request(Ping(0))
    a._next_request_id = MAX_REQUEST_ID
    assert a.request(Ping(1)) == MAX_REQUEST_ID
    assert a.request(Ping(2)) == first + 1  # wrapped past 0 and skipped `first`, still in flight
    assert [e.request_id for e in pump(a, b)] == [first, MAX_REQUEST_ID, first + 1]


def test_abandoned_request_late_reply_is_dropped() -> None:
    a, b = open_pair()
    r1, r2 = a.request(Ping(1)), a.request(Ping(2))
    pump(a, b)
    a.abandon(r1)
    assert a.requests_in_flight == 1
    b.reply(r1, Pong(1))
    b.reply(r2, Pong(2))
    assert pump(b, a) == [ReplyReceived(r2, Pong(2))]
    a.abandon(r2)  # answered already: no effect
    assert a.requests_in_flight == 0


# --- a peer that knows the secret but breaks the rules -------------------------------

def test_reply_to_no_request() -> None:
    a, b = open_pair()
    a.receive_data(forge(b, Ack.TYPE, 42, b""))
    rejected(a, "not in flight")


def test_reply_of_the_wrong_type() -> None:
    a, b = open_pair()
    request_id = a.request(PutChunks([(CID, DATA)]))
    pump(a, b)
    a.receive_data(forge(b, Pong.TYPE, request_id, Pong(1).encode()))
    rejected(a, "cannot answer PutChunks")


def test_request_without_id_or_with_a_reused_id() -> None:
    a, b = open_pair()
    b.receive_data(forge(a, Ping.TYPE, 0, Ping(0).encode()))
    rejected(b, "without a request id")
    a, b = open_pair()
    b.receive_data(forge(a, Ping.TYPE, 5, Ping(0).encode()) + forge(a, Ping.TYPE, 5, Ping(1).encode()))
    assert events(b)[:1] == [RequestReceived(5, Ping(0))]
    assert b.failure is not None and "reused" in str(b.failure)


def test_unknown_message_type_is_refused_from_its_header() -> None:
    a, b = open_pair()
    b.receive_data(forge(a, 0x3F, 1, b"")[:wire.HEADER_SIZE])
    rejected(b, "unknown")


def test_malformed_payload_with_a_valid_mac() -> None:
    a, b = open_pair()
    b.receive_data(forge(a, Ping.TYPE, 1, b"\0" * 9))
    rejected(b, "trailing")


def test_chunk_hash_mismatch_disconnects_and_delivers_nothing_of_the_frame() -> None:
    a, b = open_pair()
    a.request(Ping(1))
    a.request(PutChunks([(CID, DATA), (CID, b"not the data")]))
    a.request(Ping(2))
    got = pump(a, b)
    assert [type(e) for e in got] == [RequestReceived, Rejected]
    assert "does not match" in got[1].reason  # type: ignore[union-attr]
    rejected(b, "does not match")


def test_fetched_chunk_hash_mismatch_is_refused() -> None:
    a, b = open_pair()
    request_id = a.request(GetChunks([CID]))
    pump(a, b)
    payload = Chunks([(CID, b"bad bytes")], []).encode()
    a.receive_data(forge(b, Chunks.TYPE, request_id, payload))
    rejected(a, "does not match")


# --- tampering -----------------------------------------------------------------------

def test_every_mangled_mac_bit_is_refused() -> None:
    for bit in range(wire.MAC_SIZE * 8):
        a, b = open_pair()
        a.request(Ping(1))
        raw = bytearray(a.data_to_send())
        raw[len(raw) - wire.MAC_SIZE + bit // 8] ^= 1 << (bit % 8)
        b.receive_data(bytes(raw))
        rejected(b, "failed its MAC")


def test_replayed_frame_is_refused() -> None:
    a, b = open_pair()
    a.request(Ping(1))
    frame = a.data_to_send()
    b.receive_data(frame + frame)
    assert events(b)[0] == RequestReceived(1, Ping(1))
    rejected(b, "failed its MAC")


def test_reordered_frames_are_refused() -> None:
    a, b = open_pair()
    a.request(Ping(1))
    first = a.data_to_send()
    a.request(Ping(2))
    second = a.data_to_send()
    b.receive_data(second + first)
    rejected(b, "failed its MAC")


def test_reflected_frame_is_refused() -> None:
    a, _b = open_pair()
    a.request(Ping(1))
    a.receive_data(a.data_to_send())
    rejected(a, "failed its MAC")


def test_frame_from_another_session_is_refused() -> None:
    a1, _ = open_pair()
    _, b2 = open_pair()
    a1.request(Ping(1))
    b2.receive_data(a1.data_to_send())
    rejected(b2, "failed its MAC")


def test_oversized_frame_is_refused_without_buffering_its_payload() -> None:
    _a, b = open_pair()
    header = FrameHeader(PutChunks.TYPE, 1, b.max_payload + 1).encode()
    b.receive_data(header)
    rejected(b, "exceeds the limit")
    assert b.bytes_buffered == 0


def test_frame_at_the_limit_is_awaited() -> None:
    _a, b = open_pair()
    b.receive_data(FrameHeader(PutChunks.TYPE, 1, b.max_payload).encode() + b"\0" * 1000)
    assert b.next_event() is NEED_DATA and b.bytes_buffered == wire.HEADER_SIZE + 1000


# --- stream handling -----------------------------------------------------------------

MESSAGES_FOR_STREAMS: list[Request] = [
    Ping(1), PutChunks([(CID, DATA)]), AppendLog(VOL, 1, [(1, b"x")]), GetChunks([CID]),
]


def expected_requests(messages: list[Request]) -> list[Event]:
    return [RequestReceived(i + 1, m) for i, m in enumerate(messages)]


def feed(b: Session, pieces: list[bytes]) -> list[Event]:
    got: list[Event] = []
    for piece in pieces:
        if b.wants_close:
            break
        b.receive_data(piece)
        got += events(b)
    return got


def test_data_split_at_every_byte() -> None:
    stream, _, b = stream_of(MESSAGES_FOR_STREAMS)
    got = feed(b, [stream[i:i + 1] for i in range(len(stream))])
    assert got == [Authenticated(A_ID, "", wire.DEFAULT_MAX_PAYLOAD), *expected_requests(MESSAGES_FOR_STREAMS)]


def test_data_split_in_two_at_every_position() -> None:
    stream, _, _ = stream_of(MESSAGES_FOR_STREAMS[:2])
    for cut in range(len(stream) + 1):
        stream, _, b = stream_of(MESSAGES_FOR_STREAMS[:2])
        got = feed(b, [stream[:cut], stream[cut:]] if 0 < cut < len(stream) else [stream])
        assert got == [Authenticated(A_ID, "", wire.DEFAULT_MAX_PAYLOAD),
                       *expected_requests(MESSAGES_FOR_STREAMS[:2])], cut


def test_clean_close() -> None:
    a, b = open_pair()
    a.request(Ping(1))
    b.receive_data(a.data_to_send())
    b.receive_data(b"")
    assert events(b) == [RequestReceived(1, Ping(1)), Closed()]
    assert b.wants_close and b.authenticated and b.next_event() == Closed()
    with pytest.raises(RuntimeError):
        b.receive_data(b"late")
    with pytest.raises(RuntimeError):
        b.reply(1, Pong(1))


def test_close_during_handshake() -> None:
    a, _b = make_pair()
    a.receive_data(b"")
    assert events(a) == [Closed()] and not a.authenticated


def test_close_inside_a_frame() -> None:
    a, b = open_pair()
    a.request(Ping(1))
    b.receive_data(a.data_to_send()[:-1])
    b.receive_data(b"")
    rejected(b, "inside a frame")


def test_truncated_stream_at_every_position() -> None:
    """A peer closing mid-transfer: intact frames only, then Closed (at a boundary) or
    Rejected (inside a frame)."""
    stream, ends, _ = stream_of(MESSAGES_FOR_STREAMS)
    for cut in range(len(stream)):
        stream, ends, b = stream_of(MESSAGES_FOR_STREAMS)
        got = feed(b, [stream[:cut], b""] if cut else [b""])
        whole = [end for end in ends[2:] if end <= cut]
        requests_got = [e for e in got if isinstance(e, RequestReceived)]
        assert requests_got == expected_requests(MESSAGES_FOR_STREAMS)[:len(whole)]
        assert isinstance(got[-1], Closed if cut in (0, *ends) else Rejected), (cut, got)


# --- fuzzing -------------------------------------------------------------------------

def check_only_refusal(session: Session, data: bytes) -> None:
    session.receive_data(data)
    got = events(session)
    assert all(isinstance(e, Rejected) for e in got) and len(got) <= 1


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=600))
def test_garbage_before_authentication(data: bytes) -> None:
    check_only_refusal(Session("responder", B_ID, SECRET), data)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=600))
def test_garbage_that_starts_like_a_frame(data: bytes) -> None:
    check_only_refusal(Session("responder", B_ID, SECRET), b"CFSP\x01\x01\x00\x00\x00\x00\x00\x00" + data)
    _a, b = open_pair()
    check_only_refusal(b, b"CFSP\x01" + bytes([Ping.TYPE]) + b"\0\0\0\0\0\1" + data)


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=600))
def test_garbage_after_authentication(data: bytes) -> None:
    _a, b = open_pair()
    check_only_refusal(b, data)


def check_tampered_stream(messages: list[Request], tamper: Callable[[bytes, list[int]], tuple[bytes, int]]) -> None:
    """Feed B a tampered copy of A's stream: B delivers exactly the frames wholly before
    the first changed byte, and then nothing but Rejected."""
    stream, ends, b = stream_of(messages)
    damaged, first_change = tamper(stream, ends)
    got = feed(b, [damaged[i:i + 97] for i in range(0, len(damaged), 97)])
    intact = sum(1 for end in ends if end <= first_change)
    if intact < 2:  # hello or auth damaged: never authenticated
        assert not b.authenticated and all(isinstance(e, Rejected) for e in got)
        return
    delivered = [e for e in got if not isinstance(e, Rejected)]
    assert delivered == [Authenticated(A_ID, "", wire.DEFAULT_MAX_PAYLOAD),
                         *expected_requests(messages)[:intact - 2]]
    assert len(got) == len(delivered) + (1 if b.wants_close else 0)


def flip(position: int, mask: int) -> Callable[[bytes, list[int]], tuple[bytes, int]]:
    def tamper(stream: bytes, ends: list[int]) -> tuple[bytes, int]:
        raw = bytearray(stream)
        raw[position % len(raw)] ^= mask
        return bytes(raw), position % len(raw)
    return tamper


def test_every_byte_flipped() -> None:
    stream, _, _ = stream_of(MESSAGES_FOR_STREAMS)
    for position in range(len(stream)):
        check_tampered_stream(MESSAGES_FOR_STREAMS, flip(position, 0x01))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=4), st.integers(0, 2**20), st.integers(0, 7))
def test_random_bit_flip(messages: list[Request], position: int, bit: int) -> None:
    check_tampered_stream(messages, flip(position, 1 << bit))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, min_size=1, max_size=4), st.integers(0, 2**20), st.binary(min_size=1, max_size=8),
       st.booleans())
def test_random_insertion_or_deletion(messages: list[Request], position: int, junk: bytes, delete: bool) -> None:
    def tamper(stream: bytes, ends: list[int]) -> tuple[bytes, int]:
        at = position % len(stream)
        if delete:
            return stream[:at] + stream[at + len(junk):], at
        return stream[:at] + junk + stream[at:], at
    check_tampered_stream(messages, tamper)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(requests, max_size=5), st.data())
def test_any_split_of_a_valid_stream(messages: list[Request], data: st.DataObject) -> None:
    stream, _, b = stream_of(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    pieces = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True) if j > i]
    got = feed(b, pieces)
    assert got == [Authenticated(A_ID, "", wire.DEFAULT_MAX_PAYLOAD), *expected_requests(messages)]

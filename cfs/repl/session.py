"""One peer connection as a sans-IO state machine: handshake, authentication, messages.

The I/O layer owns the socket and drives a ``Session``::

    session = Session("initiator", my_id, secret, expected_peer=their_id)
    await stream.send_all(session.data_to_send())          # our Hello
    while True:
        event = session.next_event()
        if out := session.data_to_send():                  # Auth, or nothing
            await stream.send_all(out)
        if event is NEED_DATA:
            session.receive_data(await stream.receive_some(65536))   # b"" at EOF
        elif isinstance(event, (Rejected, Closed)):
            break                                          # log event, close stream
        else:
            ...                                            # Authenticated / RequestReceived / ReplyReceived

and sends with ``request``/``reply``, flushing ``data_to_send()`` afterwards. Every
byte to send goes through that one outbox, so handshake frames always precede messages.

**Handshake** (symmetric; the roles only say who connected). Each side sends a
``Hello`` (protocol version, node id, 32-byte random nonce, receive limit, cluster
name). On the peer's Hello, each side sends ``Auth``: HMAC-SHA256 under the cluster
secret of a label, its role, both nonces, both node ids and a hash of both Hellos
(``auth_mac``). Each side checks the peer's Auth with ``hmac.compare_digest``; only then
is the peer authenticated. Fresh nonces on both sides mean a recorded Auth is useless in
another connection; the role byte means a side's own Auth reflected back fails; hashing
both Hellos means a changed Hello field (limit, cluster) fails too. A peer with our own
node id is refused (a node dialling itself, or a reflected Hello).

**Keys.** ``session_key`` = HMAC-SHA256(secret, label + initiator nonce + responder
nonce + transcript); each direction gets its own key derived from it, and each frame's
MAC covers that direction's frame counter (``wire.frame_mac``), so frames cannot be
replayed, reordered, dropped or reflected without detection. The protocol
authenticates; it does not encrypt (chunk data is not secret from the network here).

**Failure.** The first frame that is malformed, fails its MAC, breaks the state machine
(a message before authentication, a reply to no request) or carries a chunk whose bytes
do not match its id makes ``next_event`` return ``Rejected``: nothing of that frame and
nothing after it is ever delivered, buffered input is dropped, ``wants_close`` is set,
and the session is dead (feeding it more raises). Frame headers are checked on their
own, before the payload they announce is awaited, so an oversized frame is refused after
16 bytes. Misuse by the caller (sending before authentication, replying twice, a message
over the peer's limit) raises ``RuntimeError``/``ValueError``/``TypeError`` and leaves
the session unchanged.

**For the I/O layer.** ``bytes_to_send`` and ``bytes_buffered`` for back-pressure,
``requests_in_flight`` and ``replies_owed`` to bound concurrency, ``abandon`` for a
request given up on (its late reply is checked, then dropped), ``peer_max_payload`` to
size batches, ``wants_close``. Timeouts are the I/O layer's: a session has no clock.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import Final, Literal

from cfs.errors import AuthFailed, ProtocolError
from cfs.repl import wire
from cfs.repl.wire import (
    AUTH, HANDSHAKE_TYPES, HEADER_SIZE, HELLO, MAC_SIZE, MAX_HANDSHAKE_PAYLOAD, MAX_REQUEST_ID,
    MESSAGES, Auth, Error, FrameHeader, Hello, Message, Reply, Request,
)
from cfs.types import NodeId

Role = Literal["initiator", "responder"]

AUTH_LABEL: Final = b"cfs-auth-v1"
SESSION_LABEL: Final = b"cfs-session-v1"
MIN_SECRET_SIZE: Final = 16
_ROLE_BYTE: Final[dict[str, bytes]] = {"initiator": b"I", "responder": b"R"}
_OTHER_ROLE: Final[dict[str, Role]] = {"initiator": "responder", "responder": "initiator"}
_U32 = struct.Struct(">I")


# --- events ---------------------------------------------------------------------------

class NeedData:
    """``next_event`` has nothing until more bytes arrive (the one instance: ``NEED_DATA``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The peer proved it knows the secret; messages may flow both ways now."""

    peer_node_id: NodeId
    peer_cluster: str
    peer_max_payload: int


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """Answer with ``Session.reply(request_id, ...)``."""

    request_id: int
    message: Request


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    """The answer to our ``request`` that returned ``request_id``."""

    request_id: int
    message: Reply


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed the connection between frames (during the handshake if
    ``Session.authenticated`` is False). Requests in flight will get no reply."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The peer broke the protocol or failed authentication; drop the connection."""

    error: ProtocolError

    @property
    def reason(self) -> str:
        return str(self.error)


Event = Authenticated | RequestReceived | ReplyReceived | Closed | Rejected


class _State(enum.Enum):
    AWAIT_HELLO = "awaiting the peer's hello"
    AWAIT_AUTH = "awaiting the peer's auth"
    OPEN = "open"
    CLOSED = "closed by the peer"
    FAILED = "failed"


# --- key derivation -------------------------------------------------------------------

def transcript(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    """SHA-256 of both Hello payloads (length-prefixed), bound into every MAC and key."""
    digest = hashlib.sha256()
    for payload in (initiator_hello, responder_hello):
        digest.update(_U32.pack(len(payload)))
        digest.update(payload)
    return digest.digest()


def auth_mac(secret: bytes, role: Role, own: Hello, peer: Hello, transcript_hash: bytes) -> bytes:
    """What the side in ``role`` sends as its Auth: proof of the secret, bound to this
    connection (both nonces), to both identities, to the role and to both Hellos."""
    message = b"".join((AUTH_LABEL, _ROLE_BYTE[role], own.nonce, peer.nonce,
                        own.node_id, peer.node_id, transcript_hash))
    return hmac.digest(secret, message, hashlib.sha256)


def session_keys(secret: bytes, initiator_nonce: bytes, responder_nonce: bytes,
                 transcript_hash: bytes) -> tuple[bytes, bytes]:
    """(initiator-to-responder key, responder-to-initiator key) of one connection."""
    base = hmac.digest(secret, SESSION_LABEL + initiator_nonce + responder_nonce + transcript_hash,
                       hashlib.sha256)
    return (hmac.digest(base, b"initiator->responder", hashlib.sha256),
            hmac.digest(base, b"responder->initiator", hashlib.sha256))


# --- the session ----------------------------------------------------------------------

class Session:
    """One end of one peer connection (see the module doc for the protocol and usage).

    Resource handling: holds only buffers; the caller owns and closes the socket.
    Error handling: a peer's fault becomes a ``Rejected`` event, never an exception from
    ``next_event``; the caller's misuse raises and changes nothing.
    """

    def __init__(self, role: Role, node_id: NodeId, secret: bytes, *, cluster: str = "",
                 max_payload: int = wire.DEFAULT_MAX_PAYLOAD,
                 expected_peer: NodeId | None = None) -> None:
        """``expected_peer``: the node an initiator dialled; any other is refused."""
        if role not in _ROLE_BYTE:
            raise ValueError(f"role must be 'initiator' or 'responder', not {role!r}")
        if len(secret) < MIN_SECRET_SIZE:
            raise ValueError(f"the cluster secret must have at least {MIN_SECRET_SIZE} bytes")
        if not wire.MIN_MAX_PAYLOAD <= max_payload <= 0xFFFF_FFFF:
            raise ValueError(f"max_payload must be between {wire.MIN_MAX_PAYLOAD} and 2**32-1")
        self.role: Final[Role] = role
        self.node_id: Final = node_id
        self.max_payload: Final = max_payload
        self._secret = secret
        self._expected_peer = expected_peer
        self._hello = Hello(node_id, secrets.token_bytes(wire.NONCE_SIZE), max_payload, cluster)
        self._hello_payload = self._hello.encode()
        self._outbox: list[bytes] = [wire.encode_frame(HELLO, 0, self._hello_payload)]
        self._inbox = bytearray()
        self._eof = False
        self._state = _State.AWAIT_HELLO
        self._failure: Rejected | None = None
        self._peer_hello: Hello | None = None
        self._peer_verified = False
        self._transcript = b""
        self._send_key = self._recv_key = b""
        self._send_seq = self._recv_seq = 0
        self._next_request_id = 1
        self._awaiting: dict[int, type[Request]] = {}
        self._abandoned: set[int] = set()
        self._owed: dict[int, type[Request]] = {}

    # --- state for the I/O layer ---------------------------------------------------

    @property
    def authenticated(self) -> bool:
        """True once the peer proved itself (and still after it closed)."""
        return self._peer_verified

    @property
    def peer_node_id(self) -> NodeId | None:
        return self._peer_hello.node_id if self._peer_hello and self._peer_verified else None

    @property
    def peer_max_payload(self) -> int:
        """Largest payload the peer accepts (known after its Hello; 0 before)."""
        return self._peer_hello.max_payload if self._peer_hello else 0

    @property
    def wants_close(self) -> bool:
        """The connection is over: send what ``data_to_send`` still has, then close."""
        return self._state in (_State.CLOSED, _State.FAILED)

    @property
    def failure(self) -> ProtocolError | None:
        return self._failure.error if self._failure else None

    @property
    def bytes_to_send(self) -> int:
        return sum(map(len, self._outbox))

    @property
    def bytes_buffered(self) -> int:
        """Received bytes not yet turned into events (at most one frame's worth once
        ``next_event`` has returned NEED_DATA)."""
        return len(self._inbox)

    @property
    def requests_in_flight(self) -> int:
        return len(self._awaiting) - len(self._abandoned)

    @property
    def replies_owed(self) -> int:
        return len(self._owed)

    # --- input ---------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its end."""
        if self._state is _State.FAILED:
            raise RuntimeError(f"session failed ({self._failure and self._failure.reason}); "
                               f"close the connection")
        if self._eof:
            raise RuntimeError("data received after the end of the stream")
        if data:
            self._inbox += data
        else:
            self._eof = True

    def next_event(self) -> Event | NeedData:
        """The next event from the received bytes, or ``NEED_DATA``.

        Handshake frames are handled inside (an Auth may be queued to send: flush
        ``data_to_send`` after every call). After ``Closed`` or ``Rejected`` every call
        returns that same event.
        """
        if self._failure is not None:
            return self._failure
        if self._state is _State.CLOSED:
            return Closed()
        try:
            while True:
                frame = self._take_frame()
                if frame is None:
                    return self._out_of_data()
                event = self._handle(*frame)
                if event is not None:
                    return event
        except ProtocolError as exc:
            return self._fail(exc)

    def _out_of_data(self) -> Closed | NeedData:
        if not self._eof:
            return NEED_DATA
        if self._inbox:
            raise ProtocolError(f"connection closed inside a frame ({len(self._inbox)} bytes pending)")
        self._state = _State.CLOSED
        return Closed()

    def _fail(self, error: ProtocolError) -> Rejected:
        self._state = _State.FAILED
        self._failure = Rejected(error)
        self._inbox.clear()
        self._outbox.clear()
        return self._failure

    def _take_frame(self) -> tuple[FrameHeader, bytes] | None:
        """The next whole frame (MAC checked and stripped), or None if it is incomplete.

        The header is validated as soon as its 16 bytes are here, so a frame that is too
        large or not allowed now is refused before its payload arrives.
        """
        if len(self._inbox) < HEADER_SIZE:
            return None
        header = wire.parse_header(self._inbox)
        self._check_allowed(header)
        mac_size = 0 if header.type in HANDSHAKE_TYPES else MAC_SIZE
        end = HEADER_SIZE + header.length
        if len(self._inbox) < end + mac_size:
            return None
        frame = bytes(self._inbox[:end + mac_size])
        del self._inbox[:end + mac_size]
        payload = frame[HEADER_SIZE:end]
        if mac_size:
            self._verify_mac(frame[:HEADER_SIZE], payload, frame[end:])
        return header, payload

    def _check_allowed(self, header: FrameHeader) -> None:
        if self._state is _State.OPEN:
            if header.type not in MESSAGES:
                raise ProtocolError(f"unknown or misplaced frame type {header.type:#x}")
            limit = self.max_payload
        else:
            expected = HELLO if self._state is _State.AWAIT_HELLO else AUTH
            if header.type != expected:
                raise ProtocolError(f"frame type {header.type:#x} while {self._state.value}")
            if header.request_id != 0:
                raise ProtocolError("handshake frames carry request id 0")
            limit = MAX_HANDSHAKE_PAYLOAD
        if header.length > limit:
            raise ProtocolError(f"frame of {header.length} bytes exceeds the limit of {limit}")

    def _verify_mac(self, header: bytes, payload: bytes, mac: bytes) -> None:
        expected = wire.frame_mac(self._recv_key, self._recv_seq, header, payload)
        if not hmac.compare_digest(expected, mac):
            raise ProtocolError(f"frame {self._recv_seq} failed its MAC (tampered, replayed or "
                                f"out of order)")
        self._recv_seq += 1

    def _handle(self, header: FrameHeader, payload: bytes) -> Event | None:
        if self._state is _State.AWAIT_HELLO:
            self._on_hello(Hello.decode(payload), payload)
            return None
        if self._state is _State.AWAIT_AUTH:
            return self._on_auth(Auth.decode(payload))
        message = wire.decode_message(header.type, payload)
        if isinstance(message, Request):
            return self._on_request(header.request_id, message)
        assert isinstance(message, Reply)
        return self._on_reply(header.request_id, message)

    # --- handshake -----------------------------------------------------------------

    def _on_hello(self, hello: Hello, payload: bytes) -> None:
        """Check who the peer says it is, derive the keys, and queue our Auth."""
        if hello.node_id == self.node_id:
            raise AuthFailed("the peer has this node's own id (connected to itself?)")
        if self._expected_peer is not None and hello.node_id != self._expected_peer:
            raise AuthFailed(f"expected node {self._expected_peer.hex()}, "
                             f"the peer says it is {hello.node_id.hex()}")
        if hello.cluster != self._hello.cluster:
            raise AuthFailed(f"the peer is in cluster {hello.cluster!r}, "
                             f"this node in {self._hello.cluster!r}")
        if hello.max_payload < wire.MIN_MAX_PAYLOAD:
            raise ProtocolError(f"the peer's frame limit {hello.max_payload} is below "
                                f"{wire.MIN_MAX_PAYLOAD}")
        self._peer_hello = hello
        if self.role == "initiator":
            self._transcript = transcript(self._hello_payload, payload)
            self._send_key, self._recv_key = session_keys(
                self._secret, self._hello.nonce, hello.nonce, self._transcript)
        else:
            self._transcript = transcript(payload, self._hello_payload)
            self._recv_key, self._send_key = session_keys(
                self._secret, hello.nonce, self._hello.nonce, self._transcript)
        mac = auth_mac(self._secret, self.role, self._hello, hello, self._transcript)
        self._outbox.append(wire.encode_frame(AUTH, 0, Auth(mac).encode()))
        self._state = _State.AWAIT_AUTH

    def _on_auth(self, auth: Auth) -> Authenticated:
        peer = self._peer_hello
        assert peer is not None
        expected = auth_mac(self._secret, _OTHER_ROLE[self.role], peer, self._hello, self._transcript)
        if not hmac.compare_digest(expected, auth.mac):
            raise AuthFailed(f"node {peer.node_id.hex()} failed authentication (wrong cluster secret?)")
        self._state = _State.OPEN
        self._peer_verified = True
        return Authenticated(peer.node_id, peer.cluster, peer.max_payload)

    # --- messages in ---------------------------------------------------------------

    def _on_request(self, request_id: int, message: Request) -> RequestReceived:
        if request_id == 0:
            raise ProtocolError(f"{type(message).__name__} without a request id")
        if request_id in self._owed:
            raise ProtocolError(f"request id {request_id} reused before it was answered")
        self._owed[request_id] = type(message)
        return RequestReceived(request_id, message)

    def _on_reply(self, request_id: int, message: Reply) -> ReplyReceived | None:
        """The reply event, or None for the late answer to an abandoned request."""
        request_type = self._awaiting.get(request_id)
        if request_type is None:
            raise ProtocolError(f"{type(message).__name__} answers request {request_id}, "
                                f"which is not in flight")
        if not isinstance(message, (*request_type.REPLIES, Error)):
            raise ProtocolError(f"{type(message).__name__} cannot answer {request_type.__name__}")
        del self._awaiting[request_id]
        if request_id in self._abandoned:
            self._abandoned.discard(request_id)
            return None
        return ReplyReceived(request_id, message)

    # --- output --------------------------------------------------------------------

    def request(self, message: Request) -> int:
        """Queue ``message`` with a fresh request id, and return that id."""
        if not isinstance(message, Request):
            raise TypeError(f"{type(message).__name__} is not a request")
        self._require_open()
        payload = self._encode(message)
        request_id = self._new_request_id()
        self._queue(message, request_id, payload)
        self._awaiting[request_id] = type(message)
        return request_id

    def reply(self, request_id: int, message: Reply) -> None:
        """Queue the answer to the peer's request ``request_id`` (exactly one per request)."""
        self._require_open()
        request_type = self._owed.get(request_id)
        if request_type is None:
            raise ValueError(f"no request {request_id} from the peer awaits a reply")
        if not isinstance(message, (*request_type.REPLIES, Error)):
            raise TypeError(f"{type(message).__name__} cannot answer {request_type.__name__}")
        payload = self._encode(message)
        del self._owed[request_id]
        self._queue(message, request_id, payload)

    def abandon(self, request_id: int) -> None:
        """Stop waiting for a reply (timeout, cancellation): it will be checked, then
        dropped. Does nothing if the reply already came."""
        if request_id in self._awaiting:
            self._abandoned.add(request_id)

    def data_to_send(self) -> bytes:
        """Every byte queued so far, in order; the outbox is empty afterwards."""
        if len(self._outbox) == 1:
            data = self._outbox[0]
        else:
            data = b"".join(self._outbox)
        self._outbox.clear()
        return data

    def _require_open(self) -> None:
        if self._state is not _State.OPEN:
            raise RuntimeError(f"cannot send: session is {self._state.value}")

    def _encode(self, message: Message) -> bytes:
        payload = message.encode()
        if len(payload) > self.peer_max_payload:
            raise ValueError(f"{type(message).__name__} of {len(payload)} bytes exceeds the "
                             f"peer's limit of {self.peer_max_payload}")
        return payload

    def _new_request_id(self) -> int:
        request_id = self._next_request_id
        while request_id in self._awaiting:
            request_id = request_id % MAX_REQUEST_ID + 1
        self._next_request_id = request_id % MAX_REQUEST_ID + 1
        return request_id

    def _queue(self, message: Message, request_id: int, payload: bytes) -> None:
        frame = wire.encode_frame(message.TYPE, request_id, payload, key=self._send_key, seq=self._send_seq)
        self._send_seq += 1
        self._outbox.append(frame)

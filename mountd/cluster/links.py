"""Peer connections over trio: the I/O layer around the sans-IO ``cfs.repl.session``.

Each node listens for peers (``PeerServer``) and dials out to the peers it sends to
(``PeerPool``): one outbound connection per peer carries this node's requests, one
inbound connection per peer carries theirs, so each side of a connection only ever
answers or only ever asks, and a slow handler on one side never blocks the other's
replies.

Limits, so that no peer can exhaust this node: the handshake must finish within
``HANDSHAKE_TIMEOUT``; a frame larger than the session's limit ends the connection after
its header (the session checks); at most ``MAX_CONCURRENT_REQUESTS`` requests of one peer
are handled at once, further ones wait in the socket (back-pressure: the reader stops
reading); every request this node sends has a timeout, and a peer that could not be
dialled is not dialled again for ``DIAL_BACKOFF`` (its requests fail at once meanwhile). A
peer that fails authentication or sends a malformed frame is logged and disconnected;
nothing of that frame is used.

Concurrency: a ``PeerConnection`` is used from several trio tasks. Sending is
serialised by ``_send_lock`` (the session's outbox is flushed whole under it); the
reader task alone feeds the session. Between awaits the session's state is consistent.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import trio

from cfs.errors import CfsError, ProtocolError
from cfs.repl.session import (
    NEED_DATA, Authenticated, Closed, Rejected, ReplyReceived, RequestReceived, Session,
)
from cfs.repl.wire import Error, ErrorCode, Reply, Request
from cfs.types import NodeId

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
CONNECT_TIMEOUT = 3.0
DIAL_BACKOFF = HANDSHAKE_TIMEOUT
"""After a failed dial, requests to that peer fail at once for this long, instead of each
waiting out the connect or handshake timeout again (a frozen peer still accepts TCP)."""
MAX_CONCURRENT_REQUESTS = 8
RECEIVE_SIZE = 256 * 1024

Handler = Callable[[NodeId, Request], Awaitable[Reply]]


class PeerUnavailable(CfsError):
    """The peer could not be reached, closed the connection, or did not answer in time."""


class PeerError(CfsError):
    """The peer answered a request with an ``Error``; ``code`` and ``value`` say why."""

    def __init__(self, peer: str, error: Error) -> None:
        try:
            name = ErrorCode(error.code).name
        except ValueError:
            name = str(error.code)
        super().__init__(f"peer {peer} refused: {name}: {error.message}")
        self.code = error.code
        self.value = error.value


@dataclass
class LinkCounters:
    """Traffic of the node's peer connections since the daemon started, for its metrics.

    By direction: ``out``, the connections this node dialled, which carry its requests
    (shipping records and chunks to replicas, whole-volume copies, chunk fetches) and
    their replies; ``in``, the ones peers dialled. Made by ``ClusterNode``, handed to its
    ``PeerPool`` and ``PeerServer``, and from them to each ``PeerConnection``, which counts
    as it sends and reads; plain integers, all on the trio thread.
    """

    sent_bytes: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    received_bytes: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    open: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})
    """Authenticated connections being served now."""
    rejected: int = 0
    """Connections ended because of what the peer sent: a frame that failed its MAC, was
    malformed or over the size limit, or a failed handshake (``Rejected``)."""
    shipped_bytes: int = 0
    """Change-log records and chunks shipped to replicas (``VolumeReplicator``: a writer's,
    or the self-healer's), not counting whole-volume copies."""
    copies: int = 0
    """Whole-volume copies this node is sending now (``mountd.cluster.replicator.send_copy``,
    through the pool)."""
    copied_bytes: int = 0
    """Row and chunk bytes those copies sent."""


@dataclass
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    reply: Reply | None = None


class PeerConnection:
    """One authenticated connection; ``request`` from any task while ``run`` reads."""

    def __init__(self, stream: trio.abc.Stream, session: Session, name: str, *,
                 counters: LinkCounters, direction: str) -> None:
        self.stream = stream
        self.session = session
        self.name = name
        self.counters = counters
        self.direction = direction
        """``out``: this node dialled it; ``in``: a peer did."""
        self.peer: NodeId | None = None
        self._send_lock = trio.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self.closed = trio.Event()

    async def _flush(self) -> None:
        async with self._send_lock:
            data = self.session.data_to_send()
            if data:
                self.counters.sent_bytes[self.direction] += len(data)
                await self.stream.send_all(data)

    async def _receive(self) -> None:
        data = await self.stream.receive_some(RECEIVE_SIZE)
        self.counters.received_bytes[self.direction] += len(data)
        self.session.receive_data(data)

    async def handshake(self) -> NodeId:
        """Exchange Hello/Auth; raises ProtocolError (refused) or PeerUnavailable."""
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await self._flush()
                while True:
                    event = self.session.next_event()
                    await self._flush()
                    if event is NEED_DATA:
                        await self._receive()
                    elif isinstance(event, Authenticated):
                        self.peer = event.peer_node_id
                        return event.peer_node_id
                    elif isinstance(event, Rejected):
                        self.counters.rejected += 1
                        raise event.error
                    elif isinstance(event, Closed):
                        raise PeerUnavailable(f"{self.name} closed the connection during the handshake")
                    else:
                        raise ProtocolError(f"unexpected {type(event).__name__} during the handshake")
        except trio.TooSlowError:
            raise PeerUnavailable(f"{self.name}: no handshake within {HANDSHAKE_TIMEOUT:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise PeerUnavailable(f"{self.name}: connection lost during the handshake ({exc})") from None

    async def run(self, handler: Handler | None) -> None:
        """Read until the connection ends; answer requests with ``handler`` (None: refuse them)."""
        limiter = trio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self.counters.open[self.direction] += 1
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    event = self.session.next_event()
                    if event is NEED_DATA:
                        try:
                            await self._receive()
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                            # Here, not around the nursery, where trio wraps it in an
                            # ExceptionGroup: a peer that resets the connection (one that
                            # stops with our bytes unread) took the whole node down.
                            log.info("peer %s: connection lost (%s)", self.name, exc)
                            nursery.cancel_scope.cancel()
                            return
                    elif isinstance(event, ReplyReceived):
                        waiter = self._waiters.pop(event.request_id, None)
                        if waiter is not None:
                            waiter.reply = event.message
                            waiter.done.set()
                    elif isinstance(event, RequestReceived):
                        await limiter.acquire()  # back-pressure: stop reading until a slot frees
                        nursery.start_soon(self._answer, handler, event, limiter)
                    elif isinstance(event, Rejected):
                        self.counters.rejected += 1
                        log.warning("peer %s: disconnected: %s", self.name, event.reason)
                        nursery.cancel_scope.cancel()
                        return
                    elif isinstance(event, Closed):
                        nursery.cancel_scope.cancel()
                        return
        finally:
            self.counters.open[self.direction] -= 1
            self.closed.set()
            for waiter in self._waiters.values():
                waiter.done.set()
            self._waiters.clear()
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    async def _answer(self, handler: Handler | None, event: RequestReceived, limiter: trio.Semaphore) -> None:
        try:
            if handler is None or self.peer is None:
                reply: Reply = Error(ErrorCode.BAD_REQUEST, "this connection does not take requests")
            else:
                try:
                    reply = await handler(self.peer, event.message)
                except Exception as exc:  # a bug in a handler must not take the node down
                    log.exception("peer %s: handling %s failed", self.name, type(event.message).__name__)
                    reply = Error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"[:1000])
            if not self.closed.is_set():
                self.session.reply(event.request_id, reply)
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            limiter.release()

    async def request(self, message: Request, timeout: float = REQUEST_TIMEOUT) -> Reply:
        """Send ``message`` and wait for its reply; Error replies raise ``PeerError``."""
        if self.closed.is_set() or self.session.wants_close:
            raise PeerUnavailable(f"connection to {self.name} is closed")
        request_id = self.session.request(message)
        waiter = self._waiters[request_id] = _Waiter()
        try:
            with trio.fail_after(timeout):
                await self._flush()
                await waiter.done.wait()
        except trio.TooSlowError:
            self._waiters.pop(request_id, None)
            self.session.abandon(request_id)
            raise PeerUnavailable(f"{self.name} did not answer {type(message).__name__} "
                                  f"within {timeout:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._waiters.pop(request_id, None)
            raise PeerUnavailable(f"connection to {self.name} lost: {exc}") from None
        if waiter.reply is None:
            raise PeerUnavailable(f"connection to {self.name} closed before it answered")
        if isinstance(waiter.reply, Error):
            raise PeerError(self.name, waiter.reply)
        return waiter.reply

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


class PeerServer:
    """Accepts peer connections on ``host:port`` and answers them with ``handler``."""

    def __init__(self, host: str, port: int, node_id: NodeId, secret: bytes, cluster: str,
                 handler: Handler, *, counters: LinkCounters | None = None) -> None:
        self.host, self.port = host, port
        self.node_id, self.secret, self.cluster = node_id, secret, cluster
        self.handler = handler
        self.counters = counters if counters is not None else LinkCounters()

    async def serve(self, *,
                    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        """One peer's connection; whatever it does, it cannot take the server down."""
        try:
            await self._serve_peer(stream)
        except Exception:
            log.exception("peer connection failed")
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _serve_peer(self, stream: trio.SocketStream) -> None:
        try:
            address = "%s:%s" % stream.socket.getpeername()[:2]
        except OSError:
            address = "?"
        session = Session("responder", self.node_id, self.secret, cluster=self.cluster)
        conn = PeerConnection(stream, session, address, counters=self.counters, direction="in")
        try:
            peer = await conn.handshake()
        except (ProtocolError, PeerUnavailable) as exc:
            log.warning("peer connection from %s refused: %s", address, exc)
            await conn.aclose()
            return
        conn.name = f"{peer.hex()[:8]}@{address}"
        log.info("peer %s connected", conn.name)
        await conn.run(self.handler)


class PeerPool:
    """Outbound connections to peers, one per peer, opened on first use.

    Resource handling: connections' reader tasks run in the nursery given to ``run``;
    cancelling it closes every connection.
    """

    def __init__(self, node_id: NodeId, secret: bytes, cluster: str,
                 addresses: Callable[[NodeId], str | None], *, counters: LinkCounters | None = None) -> None:
        self.node_id, self.secret, self.cluster = node_id, secret, cluster
        self.addresses = addresses
        self.counters = counters if counters is not None else LinkCounters()
        self._conns: dict[NodeId, PeerConnection] = {}
        self._dialing: dict[NodeId, trio.Lock] = {}
        self._failed: dict[NodeId, tuple[float, str]] = {}
        """Peer -> (trio time until which it is not dialled again, why the last dial failed)."""
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep(math.inf)

    async def request(self, peer: NodeId, message: Request, timeout: float = REQUEST_TIMEOUT) -> Reply:
        conn = await self._connection(peer)
        return await conn.request(message, timeout)

    async def _connection(self, peer: NodeId) -> PeerConnection:
        lock = self._dialing.setdefault(peer, trio.Lock())
        async with lock:
            conn = self._conns.get(peer)
            if conn is not None and not conn.closed.is_set():
                return conn
            address = self.addresses(peer)
            if address is None:
                raise PeerUnavailable(f"node {peer.hex()} has no known address")
            until, why = self._failed.get(peer, (0.0, ""))
            if trio.current_time() < until:
                raise PeerUnavailable(f"{why} (not dialled again for {until - trio.current_time():.1f} s)")
            try:
                conn = await self._dial(peer, address)
            except PeerUnavailable as exc:
                self._failed[peer] = (trio.current_time() + DIAL_BACKOFF, str(exc))
                raise
            self._failed.pop(peer, None)
            self._conns[peer] = conn
            return conn

    async def _dial(self, peer: NodeId, address: str) -> PeerConnection:
        assert self._nursery is not None, "PeerPool.run is not running"
        host, _, port = address.rpartition(":")
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                stream = await trio.open_tcp_stream(host, int(port))
        except (OSError, trio.TooSlowError, ValueError) as exc:
            raise PeerUnavailable(f"cannot connect to node {peer.hex()[:8]} at {address}: {exc or 'timeout'}") from None
        session = Session("initiator", self.node_id, self.secret, cluster=self.cluster, expected_peer=peer)
        conn = PeerConnection(stream, session, f"{peer.hex()[:8]}@{address}", counters=self.counters,
                              direction="out")
        try:
            await conn.handshake()
        except ProtocolError as exc:
            await conn.aclose()
            log.warning("peer %s refused: %s", conn.name, exc)
            raise PeerUnavailable(f"node {peer.hex()[:8]} at {address} failed authentication: {exc}") from None
        except PeerUnavailable:
            await conn.aclose()
            raise
        self._nursery.start_soon(conn.run, None)
        return conn

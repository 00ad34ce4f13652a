"""The plugin's transport: HTTP/1.1 on a unix socket, as Docker's plugin client speaks it.

h11 parses and writes the HTTP (no I/O of its own); this module moves bytes between it
and the socket and hands each complete request to ``VolumeDriver.handle``.

Resource handling: one task per connection in the server's nursery. A connection stays
open between requests (Go's HTTP client reuses it) and is closed after ``IDLE_TIMEOUT``
without a request, after ``REQUEST_TIMEOUT`` inside an unfinished one, after an error,
or when either side asks. The socket file is removed when the server stops.

Error handling: bytes that are not HTTP (400), a body over ``MAX_BODY`` (413), a request
that stalls (408), a method other than POST (405) get an error reply with a JSON ``Err``
when one can still be sent, and their connection is closed. Nothing a client sends
reaches past its own connection's task.

Only root and the daemon's own user may connect (checked with SO_PEERCRED); the socket
file is also created mode 0600. The plugin mounts and removes volumes.
"""

from __future__ import annotations

import http
import json
import logging
from pathlib import Path
from typing import Any

import h11
import trio

from cfs.errors import CfsError
from mountd import unixsock
from mountd.plugin.driver import MEDIA_TYPE, VolumeDriver

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
"""Docker's requests are a few hundred bytes; anything near this is not Docker."""
MAX_HEAD = 64 << 10
IDLE_TIMEOUT = 300.0
REQUEST_TIMEOUT = 30.0


class RequestRefused(Exception):
    """A request read no further: its HTTP status and the reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PluginServer:
    def __init__(self, path: Path, driver: VolumeDriver) -> None:
        self.path = path
        self.driver = driver

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore the driver's binds, then answer Docker until cancelled."""
        await self.driver.restore()
        try:
            sock = await unixsock.listen(self.path, "plugin")
        except CfsError as exc:
            raise CfsError(f"{exc}; give this daemon its own with --plugin-socket PATH, "
                           "or run it with --no-plugin") from None
        log.info("serving the Docker volume plugin on %s", self.path)
        await unixsock.serve(self.path, sock, self._connection, task_status)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await self._serve(stream, unixsock.peer_allowed(stream.socket))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; its requests were answered or never complete

    async def _serve(self, stream: trio.SocketStream, allowed: bool) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            try:
                request = await _receive(conn, stream)
            except RequestRefused as exc:
                await _reply(conn, stream, exc.status, {"Err": str(exc)}, close=True)
                return
            if request is None:
                return
            method, target, body = request
            if not allowed:
                await _reply(conn, stream, 403, {"Err": "permission denied: only root or the cfs daemon's "
                                                        "user may use the plugin"}, close=True)
                return
            if method != b"POST":
                await _reply(conn, stream, 405, {"Err": "the plugin API takes POST requests, not "
                                                        f"{method.decode(errors='replace')}"}, close=True)
                return
            status, reply = await self.driver.handle(target, body)
            log.debug("plugin %s %s -> %d %s", target, body[:200], status, reply.get("Err") or "")
            await _reply(conn, stream, status, reply)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()


async def _receive(conn: h11.Connection, stream: trio.SocketStream) -> tuple[bytes, str, bytes] | None:
    """The next request's method, target and body; None when the client closed between requests."""
    request: h11.Request | None = None
    body = bytearray()
    deadline = trio.current_time() + IDLE_TIMEOUT
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise RequestRefused(exc.error_status_hint, f"malformed HTTP request: {exc}") from None
        if event is h11.NEED_DATA:
            with trio.move_on_at(deadline) as timer:
                data = await stream.receive_some(65536)
            if timer.cancelled_caught:
                if request is None and not conn.trailing_data[0]:
                    return None
                raise RequestRefused(408, f"the request was not complete within {REQUEST_TIMEOUT:.0f} s")
            conn.receive_data(data)
            deadline = min(deadline, trio.current_time() + REQUEST_TIMEOUT)
        elif isinstance(event, h11.Request):
            request = event
            length = dict(event.headers).get(b"content-length")
            if length is not None and int(length) > MAX_BODY:
                raise RequestRefused(413, f"the request body of {int(length)} bytes is over the {MAX_BODY}-byte limit")
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise RequestRefused(413, f"the request body is over the {MAX_BODY}-byte limit")
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request.method, request.target.decode("ascii", "replace"), bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:  # h11.PAUSED cannot happen: a new cycle starts only after a whole request
            raise RequestRefused(400, f"unexpected HTTP event {event!r}")


async def _reply(conn: h11.Connection, stream: trio.SocketStream, status: int, reply: dict[str, Any],
                 close: bool = False) -> None:
    """Send one JSON reply; ``close`` ends the connection after it."""
    body = json.dumps(reply).encode()
    headers = [("Content-Type", MEDIA_TYPE), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    try:
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return  # HTTP allows no reply here (the client never started a request): just close
    await stream.send_all(out)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""

"""The control API: a unix socket that speaks mountd.protocol to the ``cfs`` tool.

Resource handling: each connection is served by its own task in the server's nursery
and closed when its one request is answered. Error handling: a malformed request, an
unknown operation or a ``UserError`` gets an error reply; a bug gets an error reply and
a traceback in the log. Nothing a client sends can stop the daemon.

Only root and the daemon's own user may connect (checked with SO_PEERCRED); the socket
file is also created mode 0600.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio

from cfs.errors import CfsError
from mountd import protocol, unixsock
from mountd.service import NodeService

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]


class ControlServer:
    def __init__(self, path: Path, service: NodeService, *, stats: Handler | None = None) -> None:
        """``stats``: the ``stats`` operation (mountd.metrics.NodeMetrics.stats)."""
        self.path = path
        self.service = service
        self.ops: dict[str, Handler] = {
            "volume.create": service.volume_create,
            "volume.ls": service.volume_ls,
            "volume.inspect": service.volume_inspect,
            "volume.rm": service.volume_rm,
            "volume.info": service.volume_info,
            "volume.publish": service.volume_publish,
            "volume.unpublish": service.volume_unpublish,
            "volume.attachments": service.volume_attachments,
            "volume.expand": service.volume_expand,
            "volume.condition": service.volume_condition,
            "volume.stats": service.volume_stats,
            "snapshot.create": service.snapshot_create,
            "snapshot.ls": service.snapshot_ls,
            "snapshot.inspect": service.snapshot_inspect,
            "snapshot.rm": service.snapshot_rm,
            "mount": service.mount,
            "umount": service.umount,
            "mount.ls": service.mount_ls,
            "status": service.status,
            "node.ls": service.node_ls,
            "node.drain": service.node_drain,
            "node.stop": service.node_stop,
        }
        if stats is not None:
            self.ops["stats"] = stats

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = await unixsock.listen(self.path, "control")
        await unixsock.serve(self.path, sock, self._connection, task_status)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                if not unixsock.peer_allowed(stream.socket):
                    await stream.send_all(protocol.error("permission denied: only root or the daemon's user",
                                                         "PermissionError"))
                    return
                line = await _read_line(stream)
                op, args = protocol.parse_request(line)
                reply = await self._dispatch(stream, op, args)
                refused = False
            except protocol.ProtocolError as exc:
                reply = protocol.error(f"bad request: {exc}", "ProtocolError")
                refused = True
            except (trio.BrokenResourceError, trio.TooSlowError):
                return
            except Exception as exc:
                # Whatever a client sends, the error stays in its connection: one that
                # reached the server's nursery would stop the daemon and every mount.
                log.exception("bug while reading a control request")
                reply = protocol.error(f"internal error: {exc!r} (see the daemon log)", "InternalError")
                refused = True
            try:
                await stream.send_all(reply)
                if refused:
                    await _discard_rest(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def _dispatch(self, stream: trio.SocketStream, op: str, args: dict[str, Any]) -> bytes:
        try:
            if op == "fsck":
                return protocol.ok(await self._fsck(stream, **args))
            handler = self.ops.get(op)
            if handler is None:
                return protocol.error(f"unknown operation {op!r}", "ProtocolError")
            return protocol.ok(await handler(**args))
        except TypeError as exc:
            return protocol.error(f"bad arguments for {op}: {exc}", "ProtocolError")
        except CfsError as exc:
            return protocol.error(str(exc), type(exc).__name__)
        except OSError as exc:
            return protocol.error(f"{op} failed: {exc}", "OSError")
        except Exception as exc:
            log.exception("bug while serving %s", op)
            return protocol.error(f"internal error in {op}: {exc!r} (see the daemon log)", "InternalError")

    async def _fsck(self, stream: trio.SocketStream, volume: str | None = None, repair: bool = False) -> Any:
        """Run fsck, streaming progress lines to the client every 0.2 s while it works."""
        latest: list[tuple[str, int, int]] = []

        def progress(phase: str, done: int, total: int) -> None:
            latest[:] = [(phase, done, total)]

        async def report_progress() -> None:
            sent = None
            while True:
                await trio.sleep(0.2)
                if latest and latest[0] != sent:
                    sent = latest[0]
                    try:
                        await stream.send_all(protocol.progress(*sent))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(report_progress)
            try:
                return await self.service.fsck(volume, bool(repair), progress)
            finally:
                nursery.cancel_scope.cancel()


DISCARD_BYTES = 64 << 20
DISCARD_SECONDS = 2.0


async def _discard_rest(stream: trio.SocketStream) -> None:
    """Read what a refused client is still sending (a request over the size limit),
    for a bounded time and amount, before the socket is closed: closing a Unix socket
    with unread bytes resets the connection, and the client could lose the reply that
    says why it was refused."""
    received = 0
    with trio.move_on_after(DISCARD_SECONDS):
        while received < DISCARD_BYTES:
            data = await stream.receive_some(65536)
            if not data:
                return
            received += len(data)


async def _read_line(stream: trio.SocketStream) -> bytes:
    reader = protocol.LineReader()
    with trio.fail_after(30):
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise protocol.ProtocolError("connection closed before a full request")
            lines = reader.feed(data)
            if lines:
                return lines[0]


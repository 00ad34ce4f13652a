"""Unix-socket servers of the daemon (control API, Docker plugin): one way to listen,
serve and check who connects.

Resource handling: ``serve`` owns the listening socket and removes the socket file when
it ends, also on cancellation. Connections are served in the server's own nursery.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import Awaitable, Callable

import trio

from cfs.errors import CfsError

MAX_PATH = 107


async def listen(path: Path, what: str) -> trio.socket.SocketType:
    """A listening socket at ``path``, mode 0600; refuses to take over one still served."""
    if len(str(path).encode()) > MAX_PATH:
        raise CfsError(f"{what} socket path {path} is longer than a unix socket allows ({MAX_PATH} bytes)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    if path.exists() or path.is_symlink():
        if await _answers(path):
            raise CfsError(f"another process serves the {what} socket {path}")
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(64)
    return sock


async def serve(path: Path, sock: trio.socket.SocketType,
                handler: Callable[[trio.SocketStream], Awaitable[None]],
                task_status: trio.TaskStatus[None]) -> None:
    """Serve ``handler`` on ``sock`` until cancelled, then remove the socket file."""
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(handler, [listener], handler_nursery=nursery)
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def _answers(path: Path) -> bool:
    with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            await probe.connect(str(path))
        except OSError:
            return False
    return True


def peer_allowed(sock: trio.socket.SocketType) -> bool:
    """Only root and the daemon's own user may talk to it (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())

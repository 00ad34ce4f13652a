"""A blocking client of the daemon's control socket (see mountd.protocol)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Callable

from cfs.errors import CfsError
from cfs.faults import crash_point
from mountd import protocol


class DaemonNotRunning(CfsError):
    pass


class RemoteError(CfsError):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def call(socket_path: Path, op: str, args: dict[str, Any] | None = None, *,
         on_progress: Callable[[dict[str, Any]], None] | None = None, timeout: float | None = 600) -> Any:
    """Send one request and return its result; raise ``RemoteError`` with the daemon's message."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunning(
                f"the cfs daemon is not running (no daemon at {socket_path}); start it with 'cfs node run'"
            ) from None
        except PermissionError:
            raise DaemonNotRunning(f"no permission to talk to the daemon at {socket_path} (run as root?)") from None
        sock.sendall(protocol.request(op, args))
        crash_point(f"sent-{op}")  # the request is the daemon's now, its answer not yet ours (cfs.faults)
        reader = protocol.LineReader()
        while True:
            data = sock.recv(65536)
            if not data:
                raise CfsError("the daemon closed the connection without answering (see its log)")
            for line in reader.feed(data):
                message = protocol.parse_reply(line)
                if "progress" in message:
                    if on_progress:
                        on_progress(message["progress"])
                    continue
                if message["ok"]:
                    return message.get("result")
                raise RemoteError(str(message.get("error")), str(message.get("kind")))
    except socket.timeout:
        raise CfsError(f"the daemon did not answer {op} within {timeout} s") from None
    finally:
        sock.close()

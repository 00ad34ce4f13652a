"""A blocking client of the Docker plugin socket, speaking HTTP/1.1 like Docker does."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("plugin", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def plugin_call(sock: Path, endpoint: str, body: Any = None, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    """POST one request as Docker would; return the HTTP status and the JSON reply."""
    conn = _UnixConnection(sock, timeout)
    try:
        payload = b"" if body is None else json.dumps(body).encode()
        conn.request("POST", endpoint, body=payload,
                     headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "application/vnd.docker.plugins.v1+json"
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def raw_exchange(sock: Path, data: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes, half-close, and read everything the server answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received

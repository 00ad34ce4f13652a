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
    """POST one request as Docker would; return the HTTP status and the JSON reply.
    ``body`` is sent as JSON, or as it is when it is bytes (a body Docker would not send)."""
    conn = _UnixConnection(sock, timeout)
    try:
        payload = request_body(body)
        conn.request("POST", endpoint, body=payload,
                     headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "application/vnd.docker.plugins.v1+json"
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def request_body(body: Any) -> bytes:
    """A request's body: nothing for None, bytes as they are, anything else as JSON."""
    if body is None:
        return b""
    return body if isinstance(body, bytes) else json.dumps(body).encode()


MALFORMED_REQUESTS: list[tuple[str, Any, int, str]] = [
    ("/VolumeDriver.Get", b"{not json", 400, "the body is not JSON"),
    ("/VolumeDriver.Get", b"[1, 2]", 400, "the body must be a JSON object"),
    ("/VolumeDriver.Get", b"\xff\xfe", 400, "the body is not JSON"),
    ("/VolumeDriver.Get", {}, 400, "the request has no volume Name"),
    ("/VolumeDriver.Remove", {"Name": 7}, 400, "the request has no volume Name"),
    ("/VolumeDriver.Path", {"Name": "../etc"}, 500, "contains '/'"),
    ("/VolumeDriver.Path", {"Name": "-x"}, 500, "is not allowed"),
    ("/VolumeDriver.Mount", {"Name": "v1"}, 400, "the request has no mount ID"),
    ("/VolumeDriver.Unmount", {"Name": "v1", "ID": ["a"]}, 400, "the request has no mount ID"),
    ("/VolumeDriver.Create", {"Name": "v2", "Opts": ["size"]}, 400, "Opts must be a JSON object"),
    ("/VolumeDriver.Create", {"Name": "v2", "Opts": {"size": {"x": 1}}}, 400, "option size must have a string value"),
    ("/VolumeDriver.Explode", {"Name": "v1"}, 404, "unknown endpoint '/VolumeDriver.Explode'"),
]
"""Requests Docker never sends, with the status and a part of the message the plugin
answers: (endpoint, body, status, message). A volume ``v1`` is assumed to exist, ``v2``
not; none of them may change a volume or a holder. Checked against the driver alone
(tests/unit/test_plugin.py) and against a daemon, each followed by a Mount that must
still work (tests/mount/test_plugin_node.py)."""


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


def http_request(path: str, body: bytes, extra: str = "", method: str = "POST") -> bytes:
    """One raw HTTP/1.1 request as Docker sends it; ``extra``: more header lines."""
    head = f"{method} {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
    """Every response in ``data`` (they all carry Content-Length)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        out.append((int(lines[0].split()[1]), headers, json.loads(rest[:length])))
        data = rest[length:]
    return out

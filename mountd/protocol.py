"""The control protocol between the ``cfs`` tool and the daemon, sans I/O.

One request per connection, JSON on one line each way::

    -> {"op": "volume.create", "args": {"name": "v1"}}
    <- {"progress": {"phase": "hash", "done": 10, "total": 99}}     (zero or more)
    <- {"ok": true, "result": {...}}  |  {"ok": false, "error": "no volume named 'x'", "kind": "VolumeNotFound"}

Lines are limited to ``MAX_LINE`` bytes; anything malformed is a ``ProtocolError`` that
the server answers with an error reply instead of crashing.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 1 << 20


class ProtocolError(Exception):
    """A message that does not follow the protocol."""


def encode(message: dict[str, Any]) -> bytes:
    line = json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes exceeds the {MAX_LINE}-byte limit")
    return line


def request(op: str, args: dict[str, Any] | None = None) -> bytes:
    return encode({"op": op, "args": args or {}})


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    message = _parse(line)
    op, args = message.get("op"), message.get("args", {})
    if not isinstance(op, str) or not isinstance(args, dict):
        raise ProtocolError("a request needs a string 'op' and an object 'args'")
    return op, args


def ok(result: Any) -> bytes:
    return encode({"ok": True, "result": result})


def error(message: str, kind: str = "Error") -> bytes:
    return encode({"ok": False, "error": message, "kind": kind})


def progress(phase: str, done: int, total: int) -> bytes:
    return encode({"progress": {"phase": phase, "done": done, "total": total}})


def parse_reply(line: bytes) -> dict[str, Any]:
    message = _parse(line)
    if "progress" not in message and "ok" not in message:
        raise ProtocolError("a reply needs 'ok' or 'progress'")
    return message


def _parse(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message exceeds the {MAX_LINE}-byte limit")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    except RecursionError:
        # ``[`` a thousand times deep is within MAX_LINE and beyond the parser's recursion
        # limit: a client's mistake (or malice), never the daemon's crash.
        raise ProtocolError("not JSON: nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


class LineReader:
    """Splits a byte stream into lines, refusing lines longer than ``MAX_LINE``."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                break
            lines.append(bytes(self._buf[:end]))
            del self._buf[:end + 1]
        if len(self._buf) > MAX_LINE:
            raise ProtocolError(f"message exceeds the {MAX_LINE}-byte limit")
        return lines

"""The node daemon as the CSI plugin sees it: its control socket, errors as gRPC codes.

``Daemon.call`` sends one control request (``tools.client``, as the command line does)
and turns what the daemon refuses into ``Abort`` with the gRPC code of the error's kind
(``CODES``); a caller that knows better for one call names its own codes (``codes=``).
A daemon that does not answer is UNAVAILABLE: the orchestrator retries, and the call
changed nothing it did not report (the daemon finishes or refuses a request whole, also
when the plugin is gone meanwhile).

Calls run in gRPC's worker threads; each opens its own connection, so any number may
run at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc

from cfs.errors import CfsError
from tools.client import DaemonNotRunning, RemoteError, call
from tools.csi.checks import Abort

log = logging.getLogger(__name__)

Code = grpc.StatusCode

CODES: Mapping[str, Code] = {
    "VolumeNotFound": Code.NOT_FOUND,
    "NodeNotFound": Code.NOT_FOUND,
    "VolumeExists": Code.ALREADY_EXISTS,
    "AttachmentMismatch": Code.ALREADY_EXISTS,
    "AttachedElsewhere": Code.FAILED_PRECONDITION,
    "VolumeBusy": Code.FAILED_PRECONDITION,
    "LeaseHeld": Code.FAILED_PRECONDITION,
    "ReadOnly": Code.FAILED_PRECONDITION,
    "InvalidName": Code.INVALID_ARGUMENT,
    "UserError": Code.INVALID_ARGUMENT,
    "NoSpace": Code.RESOURCE_EXHAUSTED,
    "Unavailable": Code.UNAVAILABLE,
    "EtcdUnavailable": Code.UNAVAILABLE,
    "RegistrationLost": Code.UNAVAILABLE,
}
"""The daemon's error kinds (``cfs.errors`` class names) and the codes the CSI spec names
for them; any other kind is INTERNAL."""

LONG_CALL = 3600.0
"""Seconds the plugin waits for a daemon call at most (a mount that copies a volume whole
may take long); the orchestrator's own deadline usually ends the wait first."""


class Daemon:
    """The node daemon whose control socket is ``socket``."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def call(self, op: str, codes: Mapping[str, Code] | None = None, timeout: float = LONG_CALL,
             **args: Any) -> Any:
        """The result of control operation ``op``; ``Abort`` with the code of the daemon's
        refusal (``codes`` first, then ``CODES``)."""
        try:
            return call(self.socket, op, args, timeout=timeout)
        except RemoteError as exc:
            code = (codes or {}).get(exc.kind) or CODES.get(exc.kind, Code.INTERNAL)
            if code is Code.INTERNAL:
                log.error("the daemon failed %s (%s): %s", op, exc.kind, exc)
            raise Abort(code, str(exc)) from None
        except DaemonNotRunning as exc:
            raise Abort(Code.UNAVAILABLE, str(exc)) from None
        except CfsError as exc:  # no answer in time, a connection closed half-way
            raise Abort(Code.UNAVAILABLE, f"the cfs daemon did not answer {op}: {exc}") from None
        except OSError as exc:
            raise Abort(Code.UNAVAILABLE, f"the cfs daemon at {self.socket} could not be asked {op}: {exc}") from None

    def find(self, op: str, **args: Any) -> Any | None:
        """``call``, with a refusal that says the object is not there answered as None."""
        try:
            return self.call(op, **args)
        except Abort as exc:
            if exc.code is Code.NOT_FOUND:
                return None
            raise

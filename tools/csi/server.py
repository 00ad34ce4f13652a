"""``cfs csi``: serve CSI on a unix socket until SIGTERM or SIGINT.

A process of its own beside the node daemon (docs/DESIGN.md, "CSI", says why): it holds
no state of its own, so it may be restarted, or killed, at any time; the daemon keeps
the volumes mounted. ``--mode node`` serves Identity and Node (every host), ``--mode
controller`` Identity and Controller, ``--mode both`` all three. The endpoint is
``--endpoint`` or ``$CSI_ENDPOINT``, ``unix:///path/csi.sock`` (CSI's sidecars dial that);
the options are parsed by ``tools.cli`` (``cfs csi``).

Resource handling: the socket file is made by gRPC at start (a stale one, left by a
killed plugin, is removed first; one that answers is another plugin's, and refused) and
removed at the stop, which lets running calls finish for a grace period.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import stat
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

from cfs.errors import CfsError
from mountd.config import DaemonConfig, default_data_dir
from tools.csi.daemon import Daemon
from tools.csi.generated import csi_pb2_grpc
from tools.csi.service import Controller, Identity, KeyedLocks, Node

log = logging.getLogger(__name__)

WORKERS = 16
"""Calls served at once: orchestrators call a plugin a few at a time, and a call mostly
waits for the daemon."""
STOP_GRACE = 10.0


def socket_path(endpoint: str | None) -> Path:
    """The socket file of a CSI endpoint: ``unix:///abs/path`` or ``unix:/abs/path``."""
    if not endpoint:
        raise CfsError("no endpoint: give --endpoint unix:///path/csi.sock or set CSI_ENDPOINT")
    if not endpoint.startswith("unix:"):
        raise CfsError(f"endpoint {endpoint!r}: cfs csi serves on a unix socket, unix:///path/csi.sock")
    path = endpoint[len("unix:"):]
    if path.startswith("//"):
        path = path[2:]
    if not path.startswith("/"):
        raise CfsError(f"endpoint {endpoint!r}: give an absolute path, unix:///path/csi.sock")
    return Path(path)


def _clear_stale(path: Path) -> None:
    """Remove a socket file no process listens on (a killed plugin's); refuse a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CfsError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            return
    raise CfsError(f"another process serves {path}")


def build(daemon: Daemon, mode: str) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="csi"))
    locks = KeyedLocks()
    controller = mode in ("controller", "both")
    csi_pb2_grpc.add_IdentityServicer_to_server(Identity(daemon, locks, controller=controller), server)
    if controller:
        csi_pb2_grpc.add_ControllerServicer_to_server(Controller(daemon, locks), server)
    if mode in ("node", "both"):
        csi_pb2_grpc.add_NodeServicer_to_server(Node(daemon, locks), server)
    return server


def serve(path: Path, mode: str, daemon: Daemon) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path)
    server = build(daemon, mode)
    if server.add_insecure_port(f"unix://{path}") == 0:
        raise CfsError(f"cannot serve on {path}")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    log.info("serving CSI (%s) on %s for the daemon at %s", mode, path, daemon.socket)
    try:
        stop.wait()
    finally:
        log.info("stopping")
        server.stop(STOP_GRACE).wait()
        path.unlink(missing_ok=True)
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s cfs-csi %(levelname)s %(name)s: %(message)s")
    try:
        path = socket_path(args.endpoint)
        data_dir = Path(getattr(args, "data_dir", None) or default_data_dir()).absolute()
        return serve(path, args.mode, Daemon(DaemonConfig(data_dir=data_dir).socket_path))
    except CfsError as exc:
        print(f"cfs csi: error: {exc}", file=sys.stderr)
        return 1

"""``cfs``: the command line of a cfs node.

Every command but ``node run`` talks to the node daemon over its unix socket; ``fsck``
opens the store itself when no daemon is running. Errors are one line on stderr and a
non-zero exit status: 1 for a failed operation, 2 for a misused command line.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from cfs import check
from cfs.errors import CfsError
from cfs.names import split_snapshot_name, validate_catalog_name, validate_volume_name
from cfs.store import Store
from mountd import main as mountd_main
from mountd.config import DaemonConfig, default_data_dir
from tools.bench import runner as bench
from tools import stats
from tools.client import DaemonNotRunning, call
from tools import stop
from tools.progress import ProgressBar, size, transfer_line


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help=f"the node's data directory (default: $CFS_DATA_DIR or {default_data_dir()})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")
    parser = argparse.ArgumentParser(prog="cfs", parents=[common],
                                     description="cfs: container volumes that outlive their containers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    node = sub.add_parser("node", parents=[common],
                          help="run and stop the node daemon; list and drain nodes").add_subparsers(
        dest="node_command", required=True, metavar="SUBCOMMAND")
    run = node.add_parser("run", help="run the node daemon in the foreground")
    mountd_main.add_arguments(run)
    node.add_parser("ls", parents=[common], help="list the cluster's nodes and their state")
    drain = node.add_parser("drain", parents=[common],
                            help="mark this node as draining: it takes no new replicas")
    drain.add_argument("--undo", action="store_true", help="take the node back into service")
    drain.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                       help="wait up to SECONDS until no volume needs this node any more")
    node_stop = node.add_parser("stop", parents=[common], help="stop the node daemon and wait until it is gone")
    node_stop.add_argument("--timeout", type=float, default=stop.DEFAULT_TIMEOUT, metavar="SECONDS",
                           help="how long to wait for the daemon to exit; it gives up on replicas and etcd "
                                f"after its own --stop-timeout (default: {stop.DEFAULT_TIMEOUT:g})")

    volume = sub.add_parser("volume", parents=[common], help="create, list, inspect, remove volumes")
    vsub = volume.add_subparsers(dest="volume_command", required=True, metavar="SUBCOMMAND")
    create = vsub.add_parser("create", parents=[common], help="create a volume")
    create.add_argument("name")
    source = create.add_mutually_exclusive_group()
    source.add_argument("--from-snapshot", metavar="VOLUME@SNAPSHOT",
                        help="a clone: a new, writable volume holding what the snapshot holds")
    source.add_argument("--from-volume", metavar="VOLUME",
                        help="a clone of a volume as it is now (this node takes the volume for the moment, "
                             "or the live node that writes it takes a snapshot to clone)")
    create.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="volume option: block_size=BYTES, uid=N, gid=N, mode=OCTAL, "
                             "size=10G (the most the volume may hold: ENOSPC beyond; 0: no limit), "
                             "replicas=N (copies on distinct nodes; default 2 in a cluster of 2 or more), "
                             "durability=available|strict (when a replica does not answer within the "
                             "replication timeout, fsync succeeds and the volume is degraded, or fails with "
                             "EIO; default available)")
    vsub.add_parser("ls", parents=[common], help="list volumes")
    inspect = vsub.add_parser("inspect", parents=[common], help="show a volume's details and usage")
    inspect.add_argument("name")
    rm = vsub.add_parser("rm", parents=[common], help="remove a volume (refused while mounted)")
    rm.add_argument("name")

    snapshot = sub.add_parser("snapshot", parents=[common], help="take, list, inspect, remove snapshots")
    ssub = snapshot.add_subparsers(dest="snapshot_command", required=True, metavar="SUBCOMMAND")
    screate = ssub.add_parser("create", parents=[common],
                              help="snapshot a volume: read-only, at one instant, sharing every chunk")
    screate.add_argument("volume")
    screate.add_argument("name")
    sls = ssub.add_parser("ls", parents=[common], help="list snapshots (of one volume)")
    sls.add_argument("volume", nargs="?", default=None)
    sinspect = ssub.add_parser("inspect", parents=[common],
                               help="show a snapshot, with the bytes only it holds")
    sinspect.add_argument("name", metavar="VOLUME@SNAPSHOT")
    srm = ssub.add_parser("rm", parents=[common], help="remove a snapshot (refused while mounted)")
    srm.add_argument("name", metavar="VOLUME@SNAPSHOT")

    mount = sub.add_parser("mount", parents=[common],
                           help="mount a volume (or a snapshot, VOLUME@SNAPSHOT, read-only) on a directory "
                                "(what is in it is hidden until umount, as with mount(8))")
    mount.add_argument("name")
    mount.add_argument("dir")
    mount.add_argument("--read-only", action="store_true", help="mount read-only")
    mount.add_argument("--takeover", action="store_true",
                       help="if another live node has the volume mounted, make it unmount first")
    umount = sub.add_parser("umount", parents=[common], help="unmount a volume")
    umount.add_argument("dir")
    sub.add_parser("status", parents=[common], help="show the node's state")
    fsck = sub.add_parser("fsck", parents=[common], help="check (and repair) the store")
    fsck.add_argument("volume", nargs="?", default=None)
    fsck.add_argument("--repair", action="store_true", help="fix what can be fixed without guessing")
    live = sub.add_parser("stats", parents=[common], help="a live view of the node: requests, throughput, "
                          "latency, cache hits, replication lag, one line per interval")
    live.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="seconds per line (default: 1)")
    live.add_argument("--count", type=int, default=None, metavar="N",
                      help="print N lines and exit (default: until interrupted)")
    bench.add_arguments(sub.add_parser("bench", help="run the benchmark suite on the disk, C FUSE and cfs"))
    csi = sub.add_parser("csi", parents=[common], help="serve the Container Storage Interface (Kubernetes, Nomad) "
                         "for the daemon of --data-dir")
    csi_arguments(csi)
    return parser


def csi_arguments(parser: argparse.ArgumentParser) -> None:
    """``cfs csi``'s options; as ``tools.csi.server.add_arguments``, without importing it."""
    parser.add_argument("--endpoint", default=os.environ.get("CSI_ENDPOINT"), metavar="unix:///PATH",
                        help="the unix socket to serve on (default: $CSI_ENDPOINT)")
    parser.add_argument("--mode", choices=("node", "controller", "both"), default="both",
                        help="node: the Node service (every host); controller: the Controller service; "
                             "both (default). Identity always")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir = getattr(args, "data_dir", None) or default_data_dir()
    as_json = getattr(args, "json", False)
    try:
        if args.command == "bench":
            return bench.run(args)
        if args.command == "csi":
            return run_csi(args)
        if args.command == "node" and args.node_command == "run":
            args.data_dir = data_dir
            return mountd_main.run(args)
        config = DaemonConfig(data_dir=Path(data_dir).absolute())
        if args.command == "stats":  # prints as it goes
            return stats.run(config.socket_path, args.interval, args.count, as_json)
        result = dispatch(args, config)
    except CfsError as exc:
        print(f"cfs: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    try:
        if as_json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print_human(args, result)
        sys.stdout.flush()
    except BrokenPipeError:  # cfs ... | head: the reader is gone, and so is the point of printing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.command == "fsck" and not result.get("clean", False):
        return 1
    return 0


def run_csi(args: argparse.Namespace) -> int:
    """Serve CSI. Imported here, not at the top: the plugin needs the gRPC stubs that
    tools/bootstrap.sh generates (tools/csi/generate.sh) and gRPC itself, which the rest of
    the command line neither needs nor should pay ~100 ms for at every start."""
    from tools.csi import server
    return server.run(args)


def dispatch(args: argparse.Namespace, config: DaemonConfig) -> Any:
    sock = config.socket_path
    if args.command == "volume":
        if args.volume_command == "create":
            validate_volume_name(args.name)
            options = parse_options(args.opt)
            source = args.from_snapshot or args.from_volume
            if args.from_snapshot:
                split_snapshot_name(args.from_snapshot)
            if source:
                if "from" in options:
                    raise CfsError("give the source once: --from-snapshot, --from-volume or -o from=")
                options["from"] = source
            return call(sock, "volume.create", {"name": args.name, "options": options})
        if args.volume_command == "ls":
            return call(sock, "volume.ls")
        return call(sock, f"volume.{args.volume_command}", {"name": args.name})
    if args.command == "snapshot":
        if args.snapshot_command == "create":
            return call(sock, "snapshot.create", {"volume": validate_volume_name(args.volume),
                                                  "name": validate_volume_name(args.name)})
        if args.snapshot_command == "ls":
            return call(sock, "snapshot.ls", {"volume": args.volume})
        split_snapshot_name(args.name)
        return call(sock, f"snapshot.{args.snapshot_command}", {"name": args.name})
    if args.command == "mount":
        validate_catalog_name(args.name)
        return call(sock, "mount", {"name": args.name, "path": os.path.abspath(args.dir),
                                    "read_only": args.read_only, "takeover": args.takeover})
    if args.command == "node":
        if args.node_command == "ls":
            return call(sock, "node.ls")
        if args.node_command == "stop":
            return stop.stop(config, args.timeout)
        return drain(sock, not args.undo, args.wait)
    if args.command == "umount":
        return call(sock, "umount", {"path": os.path.abspath(args.dir)})
    if args.command == "status":
        return call(sock, "status")
    if args.command == "fsck":
        return run_fsck(config, args.volume, args.repair, quiet=getattr(args, "json", False))
    raise CfsError(f"unknown command {args.command}")


def drain(sock: Path, draining: bool, wait: float, out: TextIO = sys.stderr) -> Any:
    """Mark the node draining; with ``wait``, poll until its data is copied elsewhere (and
    the copies this node sends for it ended), showing progress on ``out`` (``DrainView``)."""
    deadline = time.monotonic() + wait
    view = DrainView(out, since=time.time())
    try:
        while True:
            result = call(sock, "node.drain", {"draining": draining})
            waiting = result["still_here"]
            if wait:
                view.show(waiting, result.get("transfers", []), result.get("transfers_ended", []))
            if (not waiting and not view.sending) or time.monotonic() >= deadline:
                if wait and waiting:
                    raise CfsError(f"still needed here after {wait:g} s: {', '.join(waiting)}")
                return result
            time.sleep(1.0)
    finally:
        view.finish()


class DrainView:
    """How far a drain is: volumes no longer needed on the node of all that were, and the
    copies the node sends for them. On a terminal a bar; otherwise a line whenever that
    changed, then the transfers of this node below it, and each copy once it ended."""

    def __init__(self, out: TextIO, since: float) -> None:
        self.out = out
        self.bar = ProgressBar(out)
        self.since = since
        self.needed: set[str] = set()
        self.sending = False
        """Copies for the drained volumes are still going out from this node."""
        self._shown = ""
        self._ended: set[int] = set()

    def show(self, waiting: list[str], running: list[dict[str, Any]], ended: list[dict[str, Any]]) -> None:
        self.needed |= set(waiting)
        mine = [t for t in running if t["direction"] == "out" and t["volume"] in self.needed]
        self.sending = bool(mine)
        done = len(self.needed) - len(waiting)
        if waiting:
            head = f"drain: {done} of {len(self.needed)} volumes copied elsewhere; waiting for {', '.join(waiting)}"
        elif self.needed:
            head = f"drain: {done} of {len(self.needed)} volumes copied elsewhere; " + (
                "ending the copies it sends" if mine else "no volume needs this node any more")
        else:
            return
        if self.bar.enabled:
            sent = f"{size(sum(t['bytes_done'] for t in mine))} sent; " if mine else ""
            self.bar.update("draining", done, len(self.needed), sent + head.partition("; ")[2])
            return
        for t in ended:
            if (t["id"] not in self._ended and t["direction"] == "out" and t["volume"] in self.needed
                    and t["started"] >= self.since):
                self._ended.add(t["id"])
                print(f"drain:   {transfer_line(t)}", file=self.out, flush=True)
        text = "\n".join([head, *(f"drain:   {transfer_line(t)}" for t in mine)])
        if text != self._shown:
            print(text, file=self.out, flush=True)
            self._shown = text

    def finish(self) -> None:
        self.bar.finish()


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CfsError(f"option {pair!r} is not KEY=VALUE")
        options[key] = value
    return options


def run_fsck(config: DaemonConfig, volume: str | None, repair: bool, quiet: bool) -> dict[str, Any]:
    bar = ProgressBar(sys.stderr, enabled=not quiet)
    try:
        try:
            return call(config.socket_path, "fsck", {"volume": volume, "repair": repair},
                        on_progress=lambda p: bar.update(p["phase"], p["done"], p["total"]), timeout=None)
        except DaemonNotRunning:
            return offline_fsck(config, volume, repair, bar)
    finally:
        bar.finish()


def offline_fsck(config: DaemonConfig, volume: str | None, repair: bool, bar: ProgressBar) -> dict[str, Any]:
    """No daemon: take its lock so none starts meanwhile, and check the store directly."""
    if not config.store_dir.exists():
        raise CfsError(f"no cfs store at {config.store_dir}")
    fd = os.open(config.data_dir / "mountd.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CfsError("the daemon holds the store but its socket does not answer; try again") from None
        store = Store(config.store_dir)
        try:
            report = check.check(store, volume, repair=repair, progress=bar.update)
        finally:
            store.close()
        return report.to_json()
    finally:
        os.close(fd)


def print_human(args: argparse.Namespace, result: Any) -> None:
    if args.command == "volume" and args.volume_command == "ls":
        print_table(("NAME", "BLOCK SIZE", "CREATED", "MOUNTED AT"),
                    [(v["name"], str(v["block_size"]), v["created"], ",".join(v["mountpoints"]) or "-")
                     for v in result])
    elif args.command == "volume" and args.volume_command == "inspect":
        print_mapping(result)
    elif args.command == "volume" and args.volume_command == "create":
        print(result["name"])
    elif args.command == "volume" and args.volume_command == "rm":
        print(result["removed"])
    elif args.command == "snapshot" and args.snapshot_command == "ls":
        print_table(("SNAPSHOT", "CREATED", "USED", "HERE"),
                    [(s["name"], s["created"], str(s["used_bytes"]), "yes" if s["here"] else "no") for s in result])
    elif args.command == "snapshot" and args.snapshot_command in ("create", "rm"):
        print(result.get("name") or result["removed"])
    elif args.command == "mount":
        print(result["mountpoint"])
    elif args.command == "umount":
        print(f"unmounted {result['volume']} from {result['mountpoint']}")
    elif args.command == "fsck":
        for line in result.get("lines", []):
            print(line)
    elif args.command == "node" and args.node_command == "stop":
        print(f"stopped the cfs daemon (pid {result['pid']}) in {result['seconds']:g} s")
    elif args.command == "status":
        cluster = dict(result.get("cluster", {}))
        transfers = cluster.pop("transfers", [])
        ended = cluster.pop("transfers_ended", [])
        print_mapping({**result, "cluster": cluster})
        print("transfers:" if transfers else "transfers: -")
        for t in transfers:
            print(f"  {transfer_line(t)}")
        if ended:
            print("transfers ended:")
            for t in ended[-5:]:
                print(f"  {transfer_line(t)}")
    elif args.command == "node" and args.node_command == "ls":
        print_table(("NODE", "ADDRESS", "STATE", "CAPACITY", "CHUNKS"),
                    [(n["node_id"][:12] + (" *" if n["self"] else ""), n["address"] or "-", n["state_text"],
                      str(n["capacity"]), str(n["chunks"])) for n in result])
    else:
        print_mapping(result)


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell, two spaces apart."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_mapping(mapping: dict[str, Any], indent: str = "") -> None:
    """Nested keys indented; nothing (None, "", an empty list or mapping) shown as "-"."""
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            print(f"{indent}{key}:")
            print_mapping(value, indent + "  ")
        elif isinstance(value, list):
            print(f"{indent}{key}: {', '.join(map(str, value)) or '-'}")
        else:
            print(f"{indent}{key}: {human_value(key, value)}")


def human_value(key: str, value: Any) -> str:
    """A scalar as a person reads it: yes/no for flags, "-" for nothing.

    ``degraded`` is the reason a volume is degraded, or None when it is not: "no"."""
    if value is None:
        return "no" if key == "degraded" else "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value == "" or value == {}:
        return "-"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())

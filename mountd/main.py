"""``cfs-mountd``: run the node daemon in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cfs.errors import CfsError
from cfs.fuse.session import DEFAULT_SPIN_US
from cfs.store import StoreConfig
from cfs.repl.session import MIN_SECRET_SIZE
from mountd.cluster.node import ClusterConfig
from mountd.cluster.stopping import DEFAULT_STOP_TIMEOUT
from mountd.config import DaemonConfig, default_data_dir
from mountd.daemon import Daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # No default of its own: as a subcommand of ``cfs``, a default here would overwrite the
    # ``--data-dir`` given before ``node run`` (argparse lets a subparser's defaults win).
    parser.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help=f"where the node keeps its state (default: $CFS_DATA_DIR or {default_data_dir()})")
    parser.add_argument("--commit-interval", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between background commits; fsync always commits at once (default: 1)")
    parser.add_argument("--fuse-spin-us", type=int, default=DEFAULT_SPIN_US, metavar="MICROSECONDS",
                        help="how long the FUSE loop polls for the next request before it sleeps; "
                             f"saves ~18 us per request when requests come back to back, 0 turns it off "
                             f"(default: {DEFAULT_SPIN_US})")
    parser.add_argument("--reserve", type=int, default=None, metavar="BYTES",
                        help="disk space kept for deletes and control operations, also held as a file that "
                             "is given up when the disk fills (default: 1%% of the disk, 8 MiB to 256 MiB)")
    parser.add_argument("--plugin-socket", type=Path, default=None, metavar="PATH",
                        help="serve the Docker volume plugin here (default: /run/docker/plugins/cfs.sock "
                             "for the data directory /var/lib/cfs, DATA_DIR/plugin.sock for any other)")
    parser.add_argument("--no-plugin", action="store_true", help="do not serve the Docker volume plugin")
    parser.add_argument("--metrics", metavar="HOST:PORT", default=None,
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: not served; "
                             "cfs stats works without)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--stop-timeout", type=float, default=DEFAULT_STOP_TIMEOUT, metavar="SECONDS",
                        help="how long a stop (SIGTERM, cfs node stop) may wait for replicas to acknowledge and "
                             "for etcd; what is not acknowledged by then is shipped later, and a second signal "
                             f"stops at once (default: {DEFAULT_STOP_TIMEOUT:g})")
    parser.add_argument("--changelog-retain", type=int, default=StoreConfig.changelog_retain, metavar="N",
                        help="change-log records kept per volume beyond what every replica has "
                             f"(default: {StoreConfig.changelog_retain}); a replica further behind is "
                             "copied whole. Small values are for tests and small deployments")
    cluster = parser.add_argument_group("cluster (without --etcd the node runs alone)")
    cluster.add_argument("--etcd", metavar="URL", default=None,
                         help="etcd endpoint holding the cluster's state, e.g. http://127.0.0.1:2379")
    cluster.add_argument("--listen", metavar="HOST:PORT", default=None,
                         help="where peers reach this node (default with --etcd: 127.0.0.1:7101)")
    cluster.add_argument("--advertise", metavar="HOST:PORT", default=None,
                         help="the address other nodes dial (default: the --listen address)")
    cluster.add_argument("--secret-file", type=Path, default=None, metavar="PATH",
                         help="file holding the cluster secret (at least 16 bytes, not readable by others); "
                              "required with --etcd")
    cluster.add_argument("--cluster-name", default="cfs", help="nodes of another cluster name are refused")
    cluster.add_argument("--replication-timeout", type=float, default=10.0, metavar="SECONDS",
                         help="how long fsync waits for an unreachable replica before the volume "
                              "is marked degraded (default: 10)")
    cluster.add_argument("--lease-ttl", type=int, default=10, metavar="SECONDS",
                         help="seconds after which a silent node counts as dead (default: 10)")


def config_from(args: argparse.Namespace) -> DaemonConfig:
    if args.commit_interval <= 0:
        raise CfsError("--commit-interval must be positive")
    if not 0 <= args.fuse_spin_us <= 10_000:
        raise CfsError("--fuse-spin-us must be between 0 and 10000")
    if args.changelog_retain < 1:
        raise CfsError("--changelog-retain must be at least 1")
    if not 0 <= args.stop_timeout <= 3600:
        raise CfsError("--stop-timeout must be between 0 and 3600 seconds")
    data_dir = Path(getattr(args, "data_dir", None) or default_data_dir()).absolute()
    return DaemonConfig(data_dir=data_dir, commit_interval=args.commit_interval, fuse_spin_us=args.fuse_spin_us,
                        store=StoreConfig(reserve_bytes=args.reserve, hold_reserve=True,
                                          changelog_retain=args.changelog_retain),
                        plugin_socket_path=args.plugin_socket.absolute() if args.plugin_socket else None,
                        plugin_enabled=not args.no_plugin, cluster=cluster_config(args),
                        metrics=None if args.metrics is None else _host_port("--metrics", args.metrics),
                        stop_timeout=args.stop_timeout)


def cluster_config(args: argparse.Namespace) -> ClusterConfig:
    if args.etcd is None:
        for flag in ("listen", "advertise", "secret_file"):
            if getattr(args, flag) is not None:
                raise CfsError(f"--{flag.replace('_', '-')} needs --etcd (a cluster)")
        return ClusterConfig()
    if not args.etcd.startswith("http://"):
        raise CfsError(f"--etcd {args.etcd!r}: give the endpoint as http://HOST:PORT")
    if args.secret_file is None:
        raise CfsError("--etcd needs --secret-file: nodes authenticate each other with the cluster secret")
    listen = _host_port("--listen", args.listen or "127.0.0.1:7101")
    advertise = args.advertise or f"{listen[0]}:{listen[1]}"
    _host_port("--advertise", advertise)
    if args.replication_timeout <= 0 or args.lease_ttl < 2:
        raise CfsError("--replication-timeout must be positive and --lease-ttl at least 2")
    return ClusterConfig(etcd=args.etcd.rstrip("/"), listen=listen, advertise=advertise,
                         secret=read_secret(args.secret_file), name=args.cluster_name,
                         replication_timeout=args.replication_timeout, lease_ttl=args.lease_ttl)


def _host_port(flag: str, raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CfsError(f"{flag} {raw!r}: expected HOST:PORT, e.g. 127.0.0.1:7101")
    return host, int(port)


def read_secret(path: Path) -> bytes:
    """The cluster secret: the file's bytes, surrounding whitespace removed."""
    try:
        st = path.stat()
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise CfsError(f"cannot read the secret file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise CfsError(f"secret file {path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if len(secret) < MIN_SECRET_SIZE:
        raise CfsError(f"secret file {path} holds {len(secret)} bytes; the cluster secret needs at least "
                       f"{MIN_SECRET_SIZE} (e.g. head -c 32 /dev/urandom | base64 > {path})")
    return secret


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s cfs-mountd %(levelname)s %(name)s: %(message)s")
    try:
        return Daemon(config_from(args)).run()
    except CfsError as exc:
        print(f"cfs-mountd: error: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"cfs-mountd: error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cfs-mountd", description="Run the cfs node daemon in the foreground.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

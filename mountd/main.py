"""``cfs-mountd``: run the node daemon in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cfs.errors import CfsError
from cfs.store import StoreConfig
from mountd.config import DaemonConfig, default_data_dir
from mountd.daemon import Daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"where the node keeps its state (default: {default_data_dir()})")
    parser.add_argument("--commit-interval", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between background commits; fsync always commits at once (default: 1)")
    parser.add_argument("--reserve", type=int, default=None, metavar="BYTES",
                        help="disk space kept free for deletes (default: 1%% of the disk, 8 MiB to 256 MiB)")
    parser.add_argument("--plugin-socket", type=Path, default=None, metavar="PATH",
                        help="serve the Docker volume plugin here (default: /run/docker/plugins/cfs.sock "
                             "for the data directory /var/lib/cfs, DATA_DIR/plugin.sock for any other)")
    parser.add_argument("--no-plugin", action="store_true", help="do not serve the Docker volume plugin")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def config_from(args: argparse.Namespace) -> DaemonConfig:
    if args.commit_interval <= 0:
        raise CfsError("--commit-interval must be positive")
    data_dir = (args.data_dir or default_data_dir()).absolute()
    return DaemonConfig(data_dir=data_dir, commit_interval=args.commit_interval,
                        store=StoreConfig(reserve_bytes=args.reserve),
                        plugin_socket_path=args.plugin_socket.absolute() if args.plugin_socket else None,
                        plugin_enabled=not args.no_plugin)


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

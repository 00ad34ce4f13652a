"""Where the daemon keeps its state, and the knobs a person may turn."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cfs.fs.core import DIRTY_LIMIT
from cfs.fuse.session import DEFAULT_SPIN_US
from cfs.store import StoreConfig
from mountd.cluster.node import ClusterConfig
from mountd.cluster.stopping import DEFAULT_STOP_TIMEOUT

SOCKET_NAME = "mountd.sock"
SYSTEM_DATA_DIR = Path("/var/lib/cfs")
DOCKER_PLUGIN_SOCKET = Path("/run/docker/plugins/cfs.sock")
"""Where Docker looks for a plugin named ``cfs``; only the system data directory's daemon takes it."""


def default_data_dir() -> Path:
    """``/var/lib/cfs`` for root; ``$XDG_DATA_HOME/cfs`` (or ``~/.local/share/cfs``) otherwise."""
    env = os.environ.get("CFS_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/cfs")
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(xdg) / "cfs"


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    write_cache_bytes: int = DIRTY_LIMIT
    """Written blocks kept in memory before they are hashed and stored (see cfs.fs.cache)."""
    commit_interval: float = 1.0
    """Seconds between background commits: the most a crash can lose of what was not fsync'd."""
    fuse_spin_us: int = DEFAULT_SPIN_US
    """Microseconds the FUSE loop polls for the next request before sleeping (cfs.fuse.session)."""
    store: StoreConfig = field(default_factory=StoreConfig)
    foreground_log_level: str = "INFO"
    plugin_socket_path: Path | None = None
    """The Docker volume plugin's socket; None: the default (see ``plugin_socket``)."""
    plugin_enabled: bool = True
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Cluster membership (etcd, peer address, secret); the default is a single node."""
    metrics: tuple[str, int] | None = None
    """Where to serve Prometheus metrics over HTTP (``--metrics HOST:PORT``); None: not served."""
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    """Seconds a stop may wait for replicas and etcd (mountd.cluster.stopping)."""

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def fuse_root(self) -> Path:
        """The hidden mount point of the node's FUSE session; volumes are bind-mounted from it."""
        return self.data_dir / "fuse"

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    @property
    def plugin_socket(self) -> Path | None:
        """Docker's ``cfs`` socket for the system data directory, ``DATA_DIR/plugin.sock`` for any
        other (so test and side daemons never take each other's), None with the plugin off."""
        if not self.plugin_enabled:
            return None
        if self.plugin_socket_path is not None:
            return self.plugin_socket_path
        return DOCKER_PLUGIN_SOCKET if self.data_dir == SYSTEM_DATA_DIR else self.data_dir / "plugin.sock"

    @property
    def plugin_mount_root(self) -> Path:
        """Where the plugin binds each volume Docker mounts: ``<root>/<volume>``."""
        return self.data_dir / "plugin-mounts"

    @property
    def coord_dir(self) -> Path:
        """The embedded coordinator's state (volume catalog, lease epochs) without --etcd."""
        return self.data_dir / "coord"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "mountd.pid"

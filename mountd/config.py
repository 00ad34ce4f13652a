"""Where the daemon keeps its state, and the knobs a person may turn."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cfs.store import StoreConfig

SOCKET_NAME = "mountd.sock"


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
    commit_interval: float = 1.0
    """Seconds between background commits: the most a crash can lose of what was not fsync'd."""
    store: StoreConfig = field(default_factory=StoreConfig)
    foreground_log_level: str = "INFO"

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
    def pid_file(self) -> Path:
        return self.data_dir / "mountd.pid"

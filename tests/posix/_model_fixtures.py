"""Helpers for the model, fsx, concurrency and program tests of tests/posix.

Plain functions and context managers rather than fixtures, so this module does not
compete with a ``conftest.py`` of the same directory. The ``node`` and ``short_tmp``
fixtures come from ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.node import Node, mounts_under


@contextmanager
def tmpfs(path: Path, size: str = "256m") -> Iterator[Path]:
    """A private tmpfs at ``path``: the reference filesystem the cfs mount is compared with."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=755,nosuid,nodev", "cfs-test-ref", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def is_mounted(path: Path) -> bool:
    return str(path.resolve()) in mounts_under(path)


def wait_mounted(path: Path, timeout: float = 30) -> None:
    """The daemon answers its socket before it has bound the recorded mounts again."""
    deadline = time.monotonic() + timeout
    while not is_mounted(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not mounted again within {timeout} s")
        time.sleep(0.02)


def remount(node: Node, volume: str, path: Path) -> None:
    """Unmount and mount a volume again through the daemon (nothing may be open below it)."""
    node.api("umount", path=str(path))
    assert not is_mounted(path), f"{path} is still mounted after umount"
    node.api("mount", name=volume, path=str(path))
    assert is_mounted(path)


def restart(node: Node, *paths: Path) -> None:
    """Stop the daemon cleanly (must exit 0), start it again, wait for its mounts."""
    status = node.stop()
    assert status == 0, f"cfs-mountd exited with {status} on SIGTERM:\n{node.log()}"
    node.start()
    for path in paths:
        wait_mounted(path)


def assert_fsck_clean(node: Node) -> None:
    report = node.cli("fsck", json_out=True, check=False)
    assert isinstance(report, dict) and report.get("clean"), f"fsck is not clean: {report}"


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default

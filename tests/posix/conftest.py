"""Fixtures of the POSIX conformance suite: every test runs on tmpfs and on cfs.

tmpfs is the kernel's own filesystem, so a test that passes there states what Linux
does; the same test on cfs then shows where cfs differs. Both run as one daemon and one
set of tmpfs mounts per session (starting a daemon per test would cost most of the run):

    BASE/tmpfs  BASE/tmpfs-ro  BASE/tmpfs-other    the reference, a read-only view of it, a second tmpfs
    BASE/node/data                                 the daemon's data directory, on a private tmpfs
    BASE/node/cfs  BASE/node/cfs-ro  BASE/node/cfs-other
                                                   volume "posix" read-write and read-only, volume "other"

Every test gets a fresh directory of the read-write mount (``fsdir``). The daemon's
store has a disk of its own, so statfs on cfs moves only with what the tests do. The
mounts are ``nosuid,nodev`` on both sides, as cfs mounts always are.

Resource handling: the daemon is stopped by PID and every mount below BASE is detached
at the end of the session, whatever happened; BASE is removed only when nothing is
mounted below it any more.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.node import Node, detach_mounts_under, mounts_under

TMPFS_OPTIONS = "mode=0755,nosuid,nodev"
SHORT_TMP = Path(os.environ.get("CFS_TEST_TMP", "/tmp"))  # unix socket paths are short


@dataclass(frozen=True)
class Target:
    """One filesystem under test: where it is mounted read-write and read-only."""

    kind: str
    root: Path
    ro_root: Path
    other_root: Path
    """A different filesystem of the same kind (EXDEV cases)."""

    def ro(self, path: Path) -> Path:
        """``path`` (below ``root``) seen through the read-only mount."""
        return self.ro_root / path.relative_to(self.root)


def _mount_tmpfs(path: Path, options: str = TMPFS_OPTIONS) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "cfs-posix", str(path)], check=True, capture_output=True)


def _bind_read_only(source: Path, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(source), str(path)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True, capture_output=True)


@pytest.fixture(scope="session")
def posix_base() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="cfs-posix-", dir=SHORT_TMP))
    base.chmod(0o755)  # other users must reach the mounts below it
    try:
        yield base
    finally:
        detach_mounts_under(base)
        if not mounts_under(base):
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def tmpfs_target(posix_base: Path) -> Iterator[Target]:
    root, ro, other = posix_base / "tmpfs", posix_base / "tmpfs-ro", posix_base / "tmpfs-other"
    try:
        _mount_tmpfs(root)
        _bind_read_only(root, ro)
        _mount_tmpfs(other)
        yield Target("tmpfs", root, ro, other)
    finally:
        for path in (ro, root, other):
            detach_mounts_under(path)


@pytest.fixture(scope="session")
def cfs_target(posix_base: Path) -> Iterator[Target]:
    base = posix_base / "node"
    base.mkdir(mode=0o755)
    node = Node(base)
    try:
        _mount_tmpfs(node.data_dir, "mode=0700,size=2g")
        node.start()
        root = node.mount("posix", base / "cfs", block_size=4096)
        ro = base / "cfs-ro"
        ro.mkdir()
        node.cli("mount", "--read-only", "posix", str(ro))
        other = node.mount("other", base / "cfs-other", block_size=4096)
        yield Target("cfs", root, ro, other)
    finally:
        node.cleanup()  # stops the daemon by PID, detaches every mount below base


@pytest.fixture(params=["tmpfs", "cfs"])
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(f"{request.param}_target")


_serial = itertools.count()


@pytest.fixture
def fsdir(target: Target) -> Path:
    """A fresh, empty directory (root's, mode 0755) on the filesystem under test."""
    path = target.root / f"t{next(_serial)}"
    path.mkdir()
    path.chmod(0o755)
    return path


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    """Modes in the tests are exact: a known umask, restored afterwards."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)

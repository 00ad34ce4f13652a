"""fsstress's kind of workload against a real mount, then a check that cfs is whole.

Several processes take random mixed metadata and data operations on one tree at once
(tests/mount/stress_worker.py). Then: no operation failed with an errno a racing
program cannot expect; ``cfs fsck`` finds nothing; every file reads whole (st_size
bytes, no EIO); every inode's link count equals the names the tree has for it, and every
directory's is 2 plus its subdirectories; and after a restart of the daemon the tree is
the same, byte for byte. The same workload runs on a tmpfs first, which proves the
checks right on the kernel's own filesystem.

Brief in CI. Long, opt-in: ``CFS_STRESS_SECONDS=600`` (seconds per run, default 15),
``CFS_STRESS_WORKERS`` (processes, default 4), ``CFS_STRESS_SEED``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from tests.node import Node

WORKER = Path(__file__).with_name("stress_worker.py")
SECONDS = float(os.environ.get("CFS_STRESS_SECONDS", "15"))
WORKERS = int(os.environ.get("CFS_STRESS_WORKERS", "4"))
SEED = int(os.environ.get("CFS_STRESS_SEED", "1"))


def stress(root: Path, reports: Path) -> Counter[str]:
    """Run the workers on ``root`` until they are done; their operation counts. Fails on
    any errno a racing program cannot expect."""
    reports.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(root), str(SEED * 1000 + n), str(SECONDS),
                               str(reports / f"{n}.json")]) for n in range(WORKERS)]
    try:
        for proc in procs:
            assert proc.wait(SECONDS + 300) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    counts: Counter[str] = Counter()
    for n in range(WORKERS):
        report = json.loads((reports / f"{n}.json").read_text())
        assert report["unexpected"] == [], report["unexpected"][:20]
        counts.update(report["counts"])
    return counts


def survey(root: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (kind, size, content hash or link target) of everything under ``root``,
    read whole; asserts the link counts agree with the names found."""
    found: dict[str, tuple[str, int, str]] = {}
    names: Counter[int] = Counter()
    nlink: dict[int, int] = {}
    for top, dirs, files in os.walk(root):
        here = os.lstat(top)
        assert here.st_nlink == 2 + len(dirs), (top, here.st_nlink, dirs)
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            names[st.st_ino] += 1
            nlink[st.st_ino] = st.st_nlink
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", st.st_size, os.readlink(path))
            else:
                with open(path, "rb") as f:
                    data = f.read()
                assert len(data) == st.st_size, (rel, len(data), st.st_size)
                found[rel] = ("file", st.st_size, hashlib.sha256(data).hexdigest())
        for name in dirs:
            found[os.path.relpath(os.path.join(top, name), root)] = ("dir", 0, "")
    assert {ino: nlink[ino] for ino in names} == dict(names), "link counts differ from the names found"
    return found


@pytest.fixture
def tmpfs(short_tmp: Path) -> Iterator[Path]:
    path = short_tmp / "tmpfs"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "cfs-stress", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_stress_then_everything_is_whole(short_tmp: Path, tmpfs: Path) -> None:
    reference = stress(tmpfs, short_tmp / "reports-tmpfs")
    survey(tmpfs)
    (short_tmp / "node").mkdir()
    node = Node(short_tmp / "node")
    try:
        node.start()
        mnt = node.mount("stress", short_tmp / "node" / "m", block_size=4096)
        counts = stress(mnt, short_tmp / "reports-cfs")
        assert sum(counts.values()) > 200 * WORKERS and set(counts) == set(reference), counts
        before = survey(mnt)
        assert len(before) > 10
        report = node.cli("fsck", json_out=True)
        assert report["clean"], report["lines"]
        assert node.stop() == 0
        node.start()
        assert survey(mnt) == before
        assert node.cli("fsck", json_out=True)["clean"]
    finally:
        node.cleanup()

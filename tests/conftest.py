import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings

from tests.node import Node, mounts_under

# Property tests check what happens, not how fast: a loaded CI machine (or a test run
# beside benchmarks) must not fail them on hypothesis' 200 ms per-example deadline.
settings.register_profile("cfs", deadline=None)
settings.load_profile("cfs")

SHORT_TMP = Path(os.environ.get("CFS_TEST_TMP", "/tmp"))


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: unix socket paths are limited to 107 bytes.

    Removed afterwards only when nothing is mounted below it, so a cleanup can never
    reach into a live volume.
    """
    path = Path(tempfile.mkdtemp(prefix="cfs-", dir=SHORT_TMP))
    path.chmod(0o755)  # other users must reach the mounts below it
    yield path
    if not mounts_under(path):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(short_tmp: Path) -> Iterator[Node]:
    """A running daemon on a private data directory; stopped by PID and unmounted after the test."""
    n = Node(short_tmp)
    try:
        n.start()
        yield n
    finally:
        n.cleanup()


@pytest.fixture
def mnt(node: Node, short_tmp: Path) -> Path:
    """A fresh volume (4 KiB blocks, so small files cross block boundaries) mounted for one test."""
    return node.mount("vol", short_tmp / "mnt", block_size=4096)

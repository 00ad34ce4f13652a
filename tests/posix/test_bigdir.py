"""A directory of 100,000 entries is listed completely, each name once.

readdir answers in pages (the kernel asks again from the last offset it accepted), so a
listing this long crosses many page boundaries; a lost or repeated entry at one of them
shows up here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

ENTRIES = 100_000


def test_hundred_thousand_entries(fsdir: Path) -> None:
    dfd = os.open(fsdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mknod = os.mknod
        for i in range(ENTRIES):
            mknod(f"e{i}", 0o644 | stat.S_IFREG, dir_fd=dfd)
    finally:
        os.close(dfd)
    listed = os.listdir(fsdir)
    assert len(listed) == ENTRIES
    assert set(listed) == {f"e{i}" for i in range(ENTRIES)}
    assert os.stat(fsdir).st_nlink == 2

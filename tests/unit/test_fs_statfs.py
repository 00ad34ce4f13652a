"""statfs without FUSE: the numbers describe the disk under the store and follow what is stored."""

from __future__ import annotations

import os
import random
from pathlib import Path

from cfs.fs import Filesystem
from cfs.store import Store, StoreConfig

from unit_support import Vol

MiB = 1 << 20


def _check_statfs(numbers: dict[str, int], path: Path) -> None:
    st = os.statvfs(path)
    frsize = numbers["frsize"]
    assert frsize > 0 and numbers["bsize"] > 0 and numbers["namemax"] == 255
    assert abs(numbers["blocks"] * frsize - st.f_blocks * st.f_frsize) < frsize
    assert 0 <= numbers["bavail"] <= numbers["bfree"] <= numbers["blocks"]
    assert 0 <= numbers["ffree"] <= numbers["files"]


def test_statfs_describes_the_disk_under_the_store(vol: Vol) -> None:
    for i in range(5):
        vol.create(b"f%d" % i)
    numbers = vol.fs.statfs()
    _check_statfs(numbers, vol.store.path)
    assert numbers["files"] - numbers["ffree"] == 6       # the volume root and five files


def test_statfs_free_space_follows_what_is_stored(small_disk: Path) -> None:
    reserve = 8 * MiB
    store = Store(small_disk / "store", StoreConfig(reserve_bytes=reserve, commit_bytes=4 * MiB))
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.create_volume("vol", block_size=64 * 1024))
        fs.sync()
        before = fs.statfs()
        _check_statfs(before, small_disk)
        st = os.statvfs(small_disk)
        frsize = before["frsize"]
        mdb_size = (small_disk / "store" / "data.mdb").stat().st_size
        assert st.f_bavail * st.f_frsize - frsize <= before["bfree"] * frsize
        assert before["bfree"] * frsize <= st.f_bavail * st.f_frsize + mdb_size
        assert before["bfree"] - before["bavail"] == reserve // frsize

        vol.create(b"data", random.Random(11).randbytes(4 * MiB))
        fs.sync()
        after = fs.statfs()
        _check_statfs(after, small_disk)
        used = (before["bfree"] - after["bfree"]) * frsize
        assert 4 * MiB <= used <= 6 * MiB
    finally:
        store.close()

"""Volumes of one store without FUSE: removal and the chunks it frees, usage, names, and
what may not cross from one volume to another."""

from __future__ import annotations

import errno
import random

import pytest

from cfs.errors import CrossDevice, InvalidName, NotFound, VolumeBusy, VolumeExists, VolumeLost, VolumeNotFound
from cfs.names import validate_volume_name
from cfs.types import NODE_ROOT

from unit_support import BLOCK_SIZE, ROOT, Vol, assert_chunks_consistent, changes, chunk_refs


@pytest.mark.replicated  # the test reads the change log
def test_volume_removal_frees_its_chunks_but_not_shared_ones(vol: Vol) -> None:
    fs = vol.fs
    other = Vol(vol.store, fs, fs.create_volume("other", block_size=BLOCK_SIZE))
    shared = random.Random(16).randbytes(BLOCK_SIZE)
    own = random.Random(17).randbytes(BLOCK_SIZE)
    vol.create(b"keep", shared)
    d = other.mkdir(b"d")
    gone = other.create(b"f", shared + own, parent=d)
    fs.setxattr(gone, b"user.x", b"y", 0)
    fs.symlink(other.root, b"l", b"d/f", ROOT)
    for ino in (d, gone):
        fs.forget(ino, 1)
    assert sorted(chunk_refs(vol.store).values()) == [1, 2]

    log = changes(vol.store, vol.slot)
    fs.remove_volume("other")
    assert changes(vol.store, vol.slot) == log
    assert list(chunk_refs(vol.store).values()) == [1]
    assert_chunks_consistent(vol.store)
    assert vol.read_all(vol.find(vol.root, b"keep")) == shared
    with pytest.raises(VolumeNotFound):
        fs.volume("other")
    with pytest.raises(NotFound):
        fs.lookup(NODE_ROOT, b"other")
    with pytest.raises(VolumeNotFound):
        fs.remove_volume("other")
    assert [name for name, _a, _c in fs.readdir(NODE_ROOT, 0)] == [b"vol"]
    again = Vol(vol.store, fs, fs.create_volume("other", block_size=BLOCK_SIZE))
    assert again.slot != other.slot
    assert again.names(again.root) == []


def test_volume_usage_counts_referenced_and_unique_bytes(vol: Vol) -> None:
    block = random.Random(18).randbytes(BLOCK_SIZE)
    vol.create(b"a", block * 3)
    vol.create(b"b", block + b"tail")
    vol.mkdir(b"d")
    usage = vol.fs.volume_usage("vol")
    assert usage["inodes"] == 4
    assert usage["apparent_bytes"] == 4 * BLOCK_SIZE + 4
    assert usage["referenced_bytes"] == 4 * BLOCK_SIZE + 4
    assert (usage["chunks"], usage["chunk_bytes"]) == (2, BLOCK_SIZE + 4)
    assert usage["dedup_ratio"] == round((4 * BLOCK_SIZE + 4) / (BLOCK_SIZE + 4), 3)


def test_volume_with_open_unlinked_files_cannot_be_removed(vol: Vol) -> None:
    ino = vol.create(b"f", b"data", keep_open=True)
    vol.fs.unlink(vol.root, b"f")
    with pytest.raises(VolumeBusy):
        vol.fs.remove_volume("vol")
    assert vol.read_all(ino) == b"data"
    vol.fs.release(ino)
    vol.fs.remove_volume("vol")
    assert vol.fs.volumes() == []
    assert chunk_refs(vol.store) == {}


def test_handles_of_a_volume_removed_under_them_fail_with_eio_not_enoent(vol: Vol) -> None:
    """A fenced copy is dropped while programs hold files of it open (``force``): a write
    or fallocate through such a handle is an I/O error (EIO), never "no such file"
    (ENOENT, which write(2) never answers and a program would take for a vanished name).
    (Their fsync fails in the adapter, which asks the volume's writer first.)"""
    ino = vol.create(b"f", b"data", keep_open=True)
    vol.fs.remove_volume("vol", force=True)
    for call in (lambda: vol.fs.write(ino, 0, b"late"), lambda: vol.fs.fallocate(ino, 0, 0, 10)):
        with pytest.raises(VolumeLost) as refused:
            call()
        assert refused.value.errno == errno.EIO
    vol.fs.release(ino)
    with pytest.raises(NotFound):  # nothing holds the slot any more: an unknown inode, as any
        vol.fs.write(ino, 0, b"late")


@pytest.mark.parametrize("name", [
    "", "/", "a/b", "..", ".", "a\0b", "a" * 256, "\u00e9" * 128, "-leading-dash", ".hidden", "sp ace",
])
def test_bad_volume_names_are_refused(vol: Vol, name: str) -> None:
    with pytest.raises(InvalidName):
        validate_volume_name(name)
    with pytest.raises(InvalidName):
        vol.fs.create_volume(name, block_size=BLOCK_SIZE)
    assert [r.name for r in vol.fs.volumes()] == ["vol"]
    assert vol.fs.create_volume("next", block_size=BLOCK_SIZE).slot == 2  # no slot was used up


def test_good_volume_names_and_duplicates(vol: Vol) -> None:
    for name in ("a" * 255, "my-vol_1.2", "0"):
        assert vol.fs.create_volume(name, block_size=BLOCK_SIZE).name == name
    with pytest.raises(VolumeExists):
        vol.fs.create_volume("vol", block_size=BLOCK_SIZE)
    for block_size in (256, 1000, 2 << 20):
        with pytest.raises(InvalidName):
            vol.fs.create_volume("bs", block_size=block_size)
    assert sorted(r.name for r in vol.fs.volumes()) == sorted(["vol", "a" * 255, "my-vol_1.2", "0"])


def test_links_and_renames_do_not_cross_volumes(vol: Vol) -> None:
    other = Vol(vol.store, vol.fs, vol.fs.create_volume("other", block_size=BLOCK_SIZE))
    f = vol.create(b"f")
    for call in (lambda: vol.fs.link(f, other.root, b"g"),
                 lambda: vol.fs.rename(vol.root, b"f", other.root, b"g")):
        with pytest.raises(CrossDevice) as caught:
            call()
        assert caught.value.errno == errno.EXDEV  # so that mv copies instead of failing
    assert other.names(other.root) == []
    assert vol.names(vol.root) == [b"f"]

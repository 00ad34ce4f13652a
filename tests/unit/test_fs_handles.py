"""What file handles need from the core: an inode by its number ("."), a directory's
parent (".."), and a generation that tells volumes apart (cfs.fs.core.generation)."""

from __future__ import annotations

import pytest

from cfs.errors import NotADirectory, NotFound
from cfs.fs import Filesystem
from cfs.types import NODE_ROOT, volume_root

from unit_support import ROOT, Vol


def test_an_inode_is_found_by_number_and_the_lookup_counted(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"f", b"data")
    held = fs.lookups.held(ino)
    attr = fs.lookup_inode(ino)
    assert attr.ino == ino and attr.inode.size == 4
    fs.forget(ino, 1)                                  # the kernel gives back what it got
    assert fs.lookups.held(ino) == held
    fs.forget(ino, 1)                                  # the lookup create counted


def test_an_inode_without_names_is_not_found(vol: Vol) -> None:
    fs = vol.fs
    d = vol.mkdir(b"d")                                # the kernel holds a lookup: kept as an orphan
    fs.rmdir(vol.root, b"d")
    with pytest.raises(NotFound):
        fs.lookup_inode(d)
    fs.forget(d, 1)
    f = vol.create(b"f")
    fs.unlink(vol.root, b"f")
    with pytest.raises(NotFound):
        fs.lookup_inode(f)
    fs.forget(f, 1)


def test_an_inode_of_a_removed_volume_is_not_found(fs: Filesystem) -> None:
    record = fs.create_volume("gone", block_size=4096)
    f = fs.create(volume_root(record.slot), b"f", 0o644, ROOT).ino
    fs.release(f)
    fs.forget(f, 1)
    fs.remove_volume("gone")
    with pytest.raises(NotFound):
        fs.lookup_inode(f)


def test_a_directory_parent_is_found_where_it_is_now(vol: Vol) -> None:
    fs = vol.fs
    a = vol.mkdir(b"a")
    b = vol.mkdir(b"b", parent=a)
    z = vol.mkdir(b"z")
    assert fs.lookup_parent(b).ino == a
    fs.rename(a, b"b", z, b"b2")
    assert fs.lookup_parent(b).ino == z
    assert fs.lookup_parent(z).ino == vol.root
    assert fs.lookup_parent(vol.root).ino == NODE_ROOT  # a volume sits in the node root
    for ino in (z, vol.root, NODE_ROOT):
        fs.forget(ino, 1)
    with pytest.raises(NotADirectory):
        fs.lookup_parent(vol.create(b"f"))
    with pytest.raises(NotFound):
        fs.lookup_parent(NODE_ROOT)


def test_every_entry_of_a_volume_carries_its_generation(vol: Vol) -> None:
    fs = vol.fs
    other = fs.create_volume("other", block_size=4096)
    d = vol.mkdir(b"d")
    f = vol.create(b"f", parent=d)
    generations = {fs.getattr(d).generation, fs.getattr(f).generation, fs.lookup(d, b"f").generation,
                   fs.lookup_inode(f).generation, fs.getattr(vol.root).generation}
    generations |= {attr.generation for _name, attr, _cookie in fs.readdir(vol.root, 0)}
    generations |= {attr.generation for name, attr, _cookie in fs.readdir(NODE_ROOT, 0) if name == b"vol"}
    assert len(generations) == 1
    assert fs.getattr(volume_root(other.slot)).generation not in generations
    assert fs.getattr(NODE_ROOT).generation == 0       # FUSE's root must have generation 0


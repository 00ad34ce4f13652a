"""File handles of cfs volumes across daemon restarts, removed volumes and other nodes.

tests/posix/test_handles.py shows that a handle opens its file like on tmpfs while one
daemon runs. Here what only cfs has: a handle names (node id, generation), the node id
being the volume's slot and the inode's number in it (docs/CONFORMANCE.md, "File
handles"). It stays valid while the store does, across restarts of the daemon; it is
stale once its volume is gone; and a handle taken on another node (here: another
store) is stale even where the same slot and number name an inode there.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tests.node import Node
from tests.posix.calls import drop_inode_caches, fails, name_to_handle_at, open_by_handle_at


def _read_by_handle(mount: Path, handle: object) -> bytes:
    mount_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_by_handle_at(mount_fd, handle, os.O_RDONLY)  # type: ignore[arg-type]
        try:
            return os.read(fd, 1000)
        finally:
            os.close(fd)
    finally:
        os.close(mount_fd)


def _stale(mount: Path, handle: object) -> None:
    mount_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fails(errno.ESTALE, open_by_handle_at, mount_fd, handle, os.O_RDONLY)
    finally:
        os.close(mount_fd)


def test_a_handle_outlives_the_daemon(node: Node, short_tmp: Path) -> None:
    mnt = node.mount("vol", short_tmp / "mnt", block_size=4096)
    (mnt / "d").mkdir()
    (mnt / "d" / "f").write_bytes(b"kept")
    handle = name_to_handle_at(mnt / "d" / "f")
    node.stop()
    node.start()  # mounts the volume again: a new FUSE session, the same store
    assert _read_by_handle(mnt, handle) == b"kept"


def test_a_handle_into_a_removed_volume_is_stale(node: Node, short_tmp: Path) -> None:
    kept = node.mount("kept", short_tmp / "kept", block_size=4096)
    gone = node.mount("gone", short_tmp / "gone", block_size=4096)
    (gone / "f").write_bytes(b"x")
    handle = name_to_handle_at(gone / "f")
    node.cli("umount", str(gone))
    node.cli("volume", "rm", "gone")
    drop_inode_caches()
    _stale(kept, handle)


def test_a_handle_from_another_node_does_not_open_the_same_number_here(short_tmp: Path) -> None:
    """Two stores number their first volume's slot and first file alike; the handle of
    one must not open the other's file (the generation differs), nor the reverse."""
    first, second = Node(short_tmp / "first"), Node(short_tmp / "second")
    for node in (first, second):
        node.base.mkdir()
    try:
        first.start()
        second.start()
        mine = first.mount("mine", short_tmp / "mine", block_size=4096)
        theirs = second.mount("theirs", short_tmp / "theirs", block_size=4096)
        (mine / "f").write_bytes(b"mine")
        (theirs / "f").write_bytes(b"theirs")
        assert os.stat(mine / "f").st_ino == os.stat(theirs / "f").st_ino
        my_handle, their_handle = name_to_handle_at(mine / "f"), name_to_handle_at(theirs / "f")
        drop_inode_caches()
        assert _read_by_handle(mine, my_handle) == b"mine"
        _stale(theirs, my_handle)
        _stale(mine, their_handle)
        assert my_handle.raw() != their_handle.raw()
    finally:
        first.cleanup()
        second.cleanup()

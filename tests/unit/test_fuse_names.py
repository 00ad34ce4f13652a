"""Name-only listing entries (cfs.fuse.names) on pyfuse3's real EntryAttributes."""

from __future__ import annotations

import stat

import pyfuse3

from cfs.fuse.names import NameOnlyEntries, node_id_offset


def test_entries_carry_no_node_id_but_the_mode() -> None:
    entries = NameOnlyEntries.create()
    assert entries is not None
    first = entries(4711, stat.S_IFDIR)
    assert first.st_ino == 0  # the getter reads the node id the kernel sees
    assert first.st_mode == stat.S_IFDIR
    second = entries(4712, stat.S_IFLNK)
    assert second.st_ino == 0 and second.st_mode == stat.S_IFLNK


def test_other_objects_are_left_alone() -> None:
    """Setting the node id back to 0 touches the shared entry only."""
    entries = NameOnlyEntries.create()
    assert entries is not None
    other = pyfuse3.EntryAttributes()
    other.st_ino = 99
    entries(5, stat.S_IFREG)
    assert other.st_ino == 99


class _PlainAttributes:
    """Looks like EntryAttributes to Python; its fields are Python ints held elsewhere."""

    def __init__(self) -> None:
        self.st_ino = 0
        self.generation = 0


def test_no_offset_when_the_layout_is_not_found() -> None:
    assert node_id_offset(_PlainAttributes) is None
    assert node_id_offset() is not None

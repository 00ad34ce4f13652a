"""Values the filesystem core hands to and takes from its callers (the FUSE adapter, tests)."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Callable

from cfs.codec import Inode
from cfs.types import InodeId


@dataclass(frozen=True, slots=True)
class Attr:
    """What stat(2) shows for one inode."""

    ino: InodeId
    inode: Inode
    block_size: int
    generation: int
    """Told to the kernel with every entry; with ``ino`` it names the inode in file handles
    (see ``cfs.fs.core.generation``)."""

    @property
    def mode(self) -> int:
        return self.inode.mode

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.inode.mode)

    @property
    def st_blocks(self) -> int:
        return self.inode.stored_units


@dataclass(slots=True)
class SetAttr:
    """The fields a setattr call changes; None leaves a field as it is."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None


def _no_groups(_pid: int) -> list[int]:
    return []


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked: the kernel checks permissions (default_permissions), the core needs
    the ids for ownership of new inodes and the set-group-ID rules."""

    uid: int = 0
    gid: int = 0
    pid: int = 0
    supplementary_groups: Callable[[int], list[int]] = field(default=_no_groups, compare=False)

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.supplementary_groups(self.pid)


ROOT_CALLER = Caller()

"""Identifier types shared by every layer.

Inode numbers are node-local and carry their volume: the top bits are the volume's
*slot* on this node, the low 40 bits the inode number inside the volume. One FUSE
session serves every volume of a node, so inode numbers must be unique node-wide,
while replication ships the volume-local part only.
"""

from __future__ import annotations

from typing import NewType

InodeId = NewType("InodeId", int)
"""Node-wide inode number: ``slot << LOCAL_BITS | local``."""

LocalIno = NewType("LocalIno", int)
"""Inode number inside one volume; the volume root is 1."""

Slot = NewType("Slot", int)
"""Small node-local number of a volume, the high bits of its inode numbers."""

ChunkId = NewType("ChunkId", bytes)
"""xxh3-128 digest (16 bytes) of a chunk's stored bytes."""

VolumeId = NewType("VolumeId", bytes)
"""Cluster-wide identity of a volume (16 random bytes), stable across nodes."""

FileHandle = NewType("FileHandle", int)

NodeId = NewType("NodeId", bytes)
"""Cluster-wide identity of a node (16 random bytes, the store's ``node_id``)."""

LOCAL_BITS = 40
LOCAL_MASK = (1 << LOCAL_BITS) - 1
MAX_SLOT = (1 << (64 - LOCAL_BITS)) - 1

NODE_ROOT = InodeId(1)
"""Inode of the hidden directory that lists the volumes of this node (slot 0)."""

VOLUME_ROOT_LOCAL = LocalIno(1)


def make_ino(slot: Slot, local: LocalIno) -> InodeId:
    return InodeId((slot << LOCAL_BITS) | local)


def slot_of(ino: InodeId) -> Slot:
    return Slot(ino >> LOCAL_BITS)


def local_of(ino: InodeId) -> LocalIno:
    return LocalIno(ino & LOCAL_MASK)


def volume_root(slot: Slot) -> InodeId:
    return make_ino(slot, VOLUME_ROOT_LOCAL)

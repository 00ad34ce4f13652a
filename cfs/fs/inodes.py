"""Loading, saving, allocating and destroying inode records."""

from __future__ import annotations

import stat

from cfs.codec import Inode, decode_block, ino_key, ino_u64_key, pack_u64
from cfs.errors import NotFound
from cfs.fs import data
from cfs.store import Op, Table, View
from cfs.store.changelog import load_state, save_state
from cfs.types import InodeId, LocalIno, make_ino, slot_of


def load(view: View, ino: InodeId) -> Inode:
    raw = view.get(Table.INODES, ino_key(ino))
    if raw is None:
        raise NotFound(f"inode {ino} does not exist")
    return Inode.decode(raw)


def exists(view: View, ino: InodeId) -> bool:
    return view.get(Table.INODES, ino_key(ino)) is not None


def save(op: Op, ino: InodeId, inode: Inode) -> None:
    op.put(Table.INODES, ino_key(ino), inode.encode())


def allocate(op: Op, parent: InodeId) -> InodeId:
    """A fresh inode number in the parent's volume. Numbers are never reused."""
    slot = slot_of(parent)
    state = load_state(op, slot)
    local = LocalIno(state.next_local)
    state.next_local += 1
    save_state(op, slot, state)
    return make_ino(slot, local)


def is_orphan(view: View, ino: InodeId) -> bool:
    return view.get(Table.ORPHANS, ino_key(ino)) is not None


def mark_orphan(op: Op, ino: InodeId) -> None:
    """Unlinked but still open: remembered so a restart frees it (nobody has it open then)."""
    op.put(Table.ORPHANS, ino_key(ino), b"")


def unmark_orphan(op: Op, ino: InodeId) -> None:
    """An unnamed file got a name (O_TMPFILE, then linkat): a restart must keep it."""
    op.delete(Table.ORPHANS, ino_key(ino))


def destroy(op: Op, ino: InodeId, inode: Inode) -> None:
    """Delete the inode and everything that hangs off it, releasing its chunks."""
    lo, hi = ino_u64_key(ino, 0), pack_u64(ino + 1)
    if stat.S_ISREG(inode.mode):
        for key, value in list(op.range(Table.BLOCKS, lo, hi)):
            op.delete(Table.BLOCKS, key)
            data.release(op, None, decode_block(value))
    for key, _value in list(op.range(Table.XATTRS, ino_key(ino), hi)):
        op.delete(Table.XATTRS, key)
    op.delete(Table.SYMLINKS, ino_key(ino))
    op.delete(Table.INODES, ino_key(ino))
    op.delete(Table.ORPHANS, ino_key(ino))

"""Directory entries: name lookup (DIRENTS) and stable readdir order (DIRORDER).

Each entry gets a *cookie* from its directory's ``next_cookie`` counter when it is added.
readdir walks DIRORDER by cookie, so an offset handed to the kernel stays valid while
entries are added or removed: nothing is skipped or returned twice. A DIRORDER row also
holds the child's number and file type (``encode_order``), so a listing reads nothing else.
"""

from __future__ import annotations

import stat
from typing import Iterator

from cfs.codec import (ORDER_HEAD, U64X2, Inode, decode_dirent, decode_order, encode_dirent, encode_order,
                       ino_key, ino_name_key, ino_u64_key, inode_mode, pack_u64)
from cfs.errors import NotFound
from cfs.store import Op, Table, View
from cfs.types import InodeId, LocalIno, Slot, local_of, make_ino, slot_of


def lookup(view: View, parent: InodeId, name: bytes) -> InodeId | None:
    raw = view.get(Table.DIRENTS, ino_name_key(parent, name))
    if raw is None:
        return None
    child, _cookie = decode_dirent(raw)
    return make_ino(slot_of(parent), child)


def add(op: Op, parent: InodeId, parent_inode: Inode, name: bytes, child: InodeId, mode: int) -> None:
    """Add an entry naming ``child`` (of ``mode``, for its file type); the caller saves
    ``parent_inode`` (its cookie counter moved)."""
    cookie = parent_inode.next_cookie
    parent_inode.next_cookie += 1
    op.put(Table.DIRENTS, ino_name_key(parent, name), encode_dirent(local_of(child), cookie))
    op.put(Table.DIRORDER, ino_u64_key(parent, cookie), encode_order(local_of(child), mode, name))


def remove(op: Op, parent: InodeId, name: bytes) -> None:
    raw = op.get(Table.DIRENTS, ino_name_key(parent, name))
    if raw is None:
        return
    _child, cookie = decode_dirent(raw)
    op.delete(Table.DIRENTS, ino_name_key(parent, name))
    op.delete(Table.DIRORDER, ino_u64_key(parent, cookie))


def replace_child(op: Op, parent: InodeId, name: bytes, child: InodeId, mode: int) -> None:
    """Point an existing entry at another inode, keeping its readdir position."""
    raw = op.get(Table.DIRENTS, ino_name_key(parent, name))
    assert raw is not None, "replace_child needs an existing entry"
    _old, cookie = decode_dirent(raw)
    op.put(Table.DIRENTS, ino_name_key(parent, name), encode_dirent(local_of(child), cookie))
    op.put(Table.DIRORDER, ino_u64_key(parent, cookie), encode_order(local_of(child), mode, name))


def is_empty(view: View, directory: InodeId) -> bool:
    for _ in view.range(Table.DIRENTS, pack_u64(directory), pack_u64(directory + 1)):
        return False
    return True


def entries(view: View, directory: InodeId, after_cookie: int = 0) -> Iterator[tuple[bytes, InodeId, int]]:
    """(name, child, cookie) of the entries with a cookie above ``after_cookie``, in order."""
    rows = view.range(Table.DIRORDER, ino_u64_key(directory, after_cookie + 1), pack_u64(directory + 1))
    for key, row in rows:
        name, child, _kind = _entry_of(view, directory, row)
        if child is not None:
            yield name, child, int.from_bytes(key[8:16], "big")


def typed_entries(view: View, directory: InodeId, after_cookie: int) -> Iterator[tuple[bytes, InodeId, int, int]]:
    """(name, child, file type, cookie) of the entries after ``after_cookie``, in order;
    the file type is the ``S_IFMT`` bits of the child's mode.

    What a listing of names reads, once per entry: the common row is decoded right in
    the loop, over the rows ``view.seek`` hands out (generator and call layers were half
    the cost). Take the entries without writing to the store in between.
    """
    hi = pack_u64(directory + 1)
    base = make_ino(slot_of(directory), LocalIno(0))
    head, head_size, split_key = ORDER_HEAD.unpack_from, ORDER_HEAD.size, U64X2.unpack
    for key, row in view.seek(Table.DIRORDER, ino_u64_key(directory, after_cookie + 1)):
        if key >= hi:
            return
        if row[:1] == b"\0" and len(row) > head_size:
            local, kind = head(row)
            yield row[head_size:], base | local, kind << 12, split_key(key)[1]
        else:
            name, child, kind = _entry_of(view, directory, row)
            if child is not None:
                yield name, child, kind, split_key(key)[1]


def _entry_of(view: View, directory: InodeId, row: bytes) -> tuple[bytes, InodeId | None, int]:
    """(name, child, file type) of a readdir-order row; child None if the name has no entry.

    A row of schema 1 holds the name alone: its child comes from DIRENTS and its type
    from the child's inode.
    """
    local, kind, name = decode_order(row)
    if local is not None:
        return name, make_ino(slot_of(directory), local), kind << 12
    child = lookup(view, directory, name)
    if child is None:
        return name, None, 0
    raw = view.get(Table.INODES, ino_key(child))
    if raw is None:
        raise NotFound(f"inode {child} does not exist")
    return name, child, stat.S_IFMT(inode_mode(raw))


def parent_of(view: View, directory: InodeId) -> InodeId | None:
    """The directory with an entry naming ``directory`` (one at most: directories have no
    other links), None if none does. Directories store no parent, so this scans every
    entry of the volume: for rare callers only (a directory's file handle)."""
    slot = slot_of(directory)
    want = pack_u64(local_of(directory))
    hi = pack_u64(make_ino(Slot(slot + 1), LocalIno(0)))
    for key, value in view.seek(Table.DIRENTS, pack_u64(make_ino(slot, LocalIno(0)))):
        if key >= hi:
            return None
        if value[:8] == want:
            return InodeId(int.from_bytes(key[:8], "big"))
    return None


def all_entries(view: View, directory: InodeId) -> Iterator[tuple[bytes, LocalIno]]:
    """Every (name, local child) of a directory straight from DIRENTS, for fsck."""
    for key, value in view.range(Table.DIRENTS, pack_u64(directory), pack_u64(directory + 1)):
        child, _cookie = decode_dirent(value)
        yield bytes(key[8:]), child

"""Directory entries: name lookup (DIRENTS) and stable readdir order (DIRORDER).

Each entry gets a *cookie* from its directory's ``next_cookie`` counter when it is added.
readdir walks DIRORDER by cookie, so an offset handed to the kernel stays valid while
entries are added or removed: nothing is skipped or returned twice.
"""

from __future__ import annotations

from typing import Iterator

from cfs.codec import Inode, decode_dirent, encode_dirent, ino_name_key, ino_u64_key, inode_mode, pack_u64
from cfs.errors import NotFound
from cfs.store import Op, Table, View
from cfs.types import InodeId, LocalIno, local_of, make_ino, slot_of


def lookup(view: View, parent: InodeId, name: bytes) -> InodeId | None:
    raw = view.get(Table.DIRENTS, ino_name_key(parent, name))
    if raw is None:
        return None
    child, _cookie = decode_dirent(raw)
    return make_ino(slot_of(parent), child)


def add(op: Op, parent: InodeId, parent_inode: Inode, name: bytes, child: InodeId) -> None:
    """Add an entry; the caller saves ``parent_inode`` (its cookie counter moved)."""
    cookie = parent_inode.next_cookie
    parent_inode.next_cookie += 1
    op.put(Table.DIRENTS, ino_name_key(parent, name), encode_dirent(local_of(child), cookie))
    op.put(Table.DIRORDER, ino_u64_key(parent, cookie), name)


def remove(op: Op, parent: InodeId, name: bytes) -> None:
    raw = op.get(Table.DIRENTS, ino_name_key(parent, name))
    if raw is None:
        return
    _child, cookie = decode_dirent(raw)
    op.delete(Table.DIRENTS, ino_name_key(parent, name))
    op.delete(Table.DIRORDER, ino_u64_key(parent, cookie))


def replace_child(op: Op, parent: InodeId, name: bytes, child: InodeId) -> None:
    """Point an existing entry at another inode, keeping its readdir position."""
    raw = op.get(Table.DIRENTS, ino_name_key(parent, name))
    assert raw is not None, "replace_child needs an existing entry"
    _old, cookie = decode_dirent(raw)
    op.put(Table.DIRENTS, ino_name_key(parent, name), encode_dirent(local_of(child), cookie))


def is_empty(view: View, directory: InodeId) -> bool:
    for _ in view.range(Table.DIRENTS, pack_u64(directory), pack_u64(directory + 1)):
        return False
    return True


def entries(view: View, directory: InodeId, after_cookie: int = 0) -> Iterator[tuple[bytes, InodeId, int]]:
    """(name, child, cookie) of the entries with a cookie above ``after_cookie``, in order."""
    rows = view.range(Table.DIRORDER, ino_u64_key(directory, after_cookie + 1), pack_u64(directory + 1))
    for key, name in rows:
        cookie = int.from_bytes(key[8:16], "big")
        child = lookup(view, directory, bytes(name))
        if child is not None:
            yield bytes(name), child, cookie


def typed_entries(view: View, directory: InodeId, after_cookie: int,
                  limit: int) -> list[tuple[bytes, InodeId, int, int]]:
    """(name, child, mode, cookie) of up to ``limit`` entries after ``after_cookie``.

    ``entries`` with each child's mode, written out in one loop: a listing of names
    pays this per entry, and the function layers of ``lookup`` and ``inodes.load``
    were half of it.
    """
    dirent_of = view.getter(Table.DIRENTS)
    inode_of = view.getter(Table.INODES)
    parent_key = pack_u64(directory)
    base = make_ino(slot_of(directory), LocalIno(0))
    out = []
    for key, name in view.range(Table.DIRORDER, ino_u64_key(directory, after_cookie + 1),
                                pack_u64(directory + 1)):
        name = bytes(name)
        raw = dirent_of(parent_key + name)
        if raw is None:
            continue
        child = InodeId(base | decode_dirent(raw)[0])
        raw_inode = inode_of(pack_u64(child))
        if raw_inode is None:
            raise NotFound(f"inode {child} does not exist")
        out.append((name, child, inode_mode(raw_inode), int.from_bytes(key[8:16], "big")))
        if len(out) >= limit:
            break
    return out


def all_entries(view: View, directory: InodeId) -> Iterator[tuple[bytes, LocalIno]]:
    """Every (name, local child) of a directory straight from DIRENTS, for fsck."""
    for key, value in view.range(Table.DIRENTS, pack_u64(directory), pack_u64(directory + 1)):
        child, _cookie = decode_dirent(value)
        yield bytes(key[8:]), child

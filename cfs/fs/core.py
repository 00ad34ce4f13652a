"""Filesystem semantics of a node's volumes, independent of FUSE.

``Filesystem`` answers the calls the kernel makes (lookup, mkdir, write, rename, ...)
on node inode numbers, raising ``FsError`` subclasses for the errno cases. The FUSE
adapter (cfs.fuse) only translates; tests drive this class directly.

The node root (inode 1) is a read-only directory listing every volume by name; each
volume's root directory is the volume's local inode 1. The daemon bind-mounts a
volume's root wherever the volume should appear.

Permission checks are the kernel's (the mount uses ``default_permissions``): the
kernel checks mode bits, ownership for chmod/chown/utimes, sticky directories and the
set-ID bits on write and chown before a call reaches us. We decide what only the
filesystem can: existence, emptiness, types, link counts, times, set-group-ID
inheritance.

Concurrency: every public method runs to completion without awaiting (it is called on
the trio thread), and each one that changes state runs in exactly one ``Store.op``: it
is atomic on disk and between calls. Calls that only read (lookup, getattr, read,
readdir, getxattr, ...) read the batch through ``Store.view()`` instead: no nested
transaction, no change-log record. When such a call must write after all (an atime
that relatime says is due), it opens one ``Store.op`` for that write alone, trusting
what it read: nothing else runs on the thread in between.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
from typing import Iterator

from cfs.codec import Inode, VolumeRecord, decode_block, decode_dirent, ino_key
from cfs.errors import (
    Corrupted, CrossDevice, Exists, FileTooBig, FsError, InvalidArgument, IsADirectory, NoAttribute, NoDevice,
    NotADirectory, NoSpace, NotEmpty, NotFound, NotPermitted, NotSupported, ReadOnly, RemoteChunk, TooManyLinks,
    VolumeBusy, VolumeLost, VolumeNotFound,
)
from cfs.fs import data, dirs, inodes, quota, xattrs
from cfs.fs.attrs import Attr, Caller, SetAttr
from cfs.fs.cache import DirtyBlock, DirtyBlocks
from cfs.fs.refs import RefCounts
from cfs.names import check_file_name
from cfs.store import Op, Store, Table, View, catalog, changelog, replica, snapshots
from cfs.types import (
    LOCAL_MASK, NODE_ROOT, VOLUME_ROOT_LOCAL, InodeId, Slot, VolumeId, local_of, slot_of, volume_root,
)

log = logging.getLogger(__name__)

LINK_MAX = 65000
DEFAULT_BLOCK_SIZE = 64 * 1024
ATIME_REFRESH_NS = 24 * 3600 * 10**9
DIRTY_LIMIT = 64 << 20
"""The daemon's write-back cache: bytes of written blocks held before they are stored."""
TIME_RANGE_NS = (-(1 << 63), (1 << 63) - 1)
"""Times are stored as signed 64-bit nanoseconds: years 1677 to 2262."""
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
"""The fallocate(2) modes cfs serves; COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE are EOPNOTSUPP."""


def _stored_time(ns: int) -> int:
    """A time cfs can store: outside the range, the nearest end, as the kernel clamps
    times for its own filesystems of narrower range (FUSE cannot tell it ours)."""
    return min(max(ns, TIME_RANGE_NS[0]), TIME_RANGE_NS[1])


def _owned(parent: Inode, mode: int, caller: Caller) -> tuple[int, int]:
    """The mode and group of a new inode in ``parent``: set-group-ID directories hand
    their group on (and their set-group-ID bit, to directories); a file keeps the bit
    only if its creator is in its group or root."""
    gid = caller.gid
    is_dir = stat.S_ISDIR(mode)
    if parent.mode & stat.S_ISGID:
        gid = parent.gid
        if is_dir:
            mode |= stat.S_ISGID
    if mode & stat.S_ISGID and not is_dir and caller.uid != 0 and not caller.in_group(gid):
        mode &= ~stat.S_ISGID
    return mode, gid


def generation(record: VolumeRecord) -> int:
    """The generation of every inode of a volume: 32 bits of its cluster identity.

    The kernel puts (node id, generation) into a file handle (name_to_handle_at(2)) and
    refuses a handle whose generation differs from the inode's. Inode numbers are never
    reused in a slot, and slots never on a node, so within one node the number alone
    names one inode for good. The generation covers what lies outside: the same slot on
    another node, or in a store made anew, holds another volume, and a handle taken there
    must not open this volume's inode of the same number (it gets ESTALE). A volume
    moved with its slot keeps its numbers and identity, and its handles stay valid.
    """
    return int.from_bytes(record.volume_id[:4], "big")


def _atime_due(inode: Inode, now_ns: int) -> bool:
    """relatime: mark an access when atime is not newer than mtime or ctime, or a day old."""
    return (inode.atime_ns <= inode.mtime_ns or inode.atime_ns <= inode.ctime_ns
            or now_ns - inode.atime_ns >= ATIME_REFRESH_NS)


class Filesystem:
    """The node's filesystem: every volume of one store, addressed by node inode numbers."""

    def __init__(self, store: Store, *, dirty_limit: int = 0) -> None:
        """``dirty_limit``: bytes of written blocks to keep in memory before storing them;
        0 stores every write at once (the daemon passes ``DIRTY_LIMIT``)."""
        self.store = store
        self.dirty = DirtyBlocks(dirty_limit)
        """Written blocks not yet stored as chunks (see cfs.fs.cache)."""
        self.lookups = RefCounts()
        """Kernel lookups: counted by every reply that hands the kernel an entry, dropped by forget."""
        self.opens = RefCounts()
        """Open file handles: counted by open and create, dropped by release."""
        self._parents: dict[InodeId, tuple[InodeId, bytes]] = {}
        """Where the kernel found each directory it holds a lookup of, (parent, name): what
        its ``..`` lists (see ``parent``). Dropped with the directory's last lookup."""
        self.linkable: set[InodeId] = set()
        """Unnamed files made by ``tmpfile`` that a link may name (O_TMPFILE without
        O_EXCL): the kernel's I_LINKABLE, which lasts as long as the open file."""
        self._volumes: dict[Slot, VolumeRecord] = {}
        for record in catalog.all_volumes(store.view()):
            if snapshots.is_snapshot(record):
                store.frozen_slots.add(record.slot)  # read-only: no logged change, no atime

    # --- volumes -------------------------------------------------------------------

    def create_volume(self, name: str, *, block_size: int = DEFAULT_BLOCK_SIZE,
                      options: dict[str, str] | None = None, uid: int = 0, gid: int = 0,
                      mode: int = 0o755, volume_id: VolumeId | None = None,
                      created_ns: int | None = None, replicated: bool = False) -> VolumeRecord:
        """A new, empty volume; ``volume_id`` when the cluster catalog named it already.

        ``replicated``: peers will hold copies, so the volume keeps its change log from
        its first record on (cfs.store.changelog.append).
        """
        options = dict(options or {})
        if "size" in options:  # a size limit, in bytes (cfs.fs.quota)
            options["size"] = str(quota.parse_size(options["size"]))
        with self.store.op() as op:
            record = catalog.create(op, name, block_size, options, volume_id=volume_id,
                                    created_ns=created_ns)
            if replicated:
                replica.set_replicated(op, record.slot, True)
            now = op.time_ns
            root = Inode(stat.S_IFDIR | (mode & 0o7777), uid, gid, 2,
                         atime_ns=now, mtime_ns=now, ctime_ns=now)
            inodes.save(op, volume_root(record.slot), root)
        self.store.commit()
        return record

    def snapshot(self, volume: str, name: str, *, snapshot_id: VolumeId | None = None,
                 created_ns: int | None = None) -> VolumeRecord:
        """Snapshot ``volume`` as ``volume@name`` (cfs.store.snapshots): everything written
        to it so far, cached writes included, in one operation; durable on return."""
        source = self.volume(volume)
        self.flush_all()
        with self.store.op() as op:
            record = snapshots.take(op, source, name, snapshot_id or VolumeId(os.urandom(16)),
                                    op.time_ns if created_ns is None else created_ns)
        self.store.commit()
        return record

    def clone(self, source: str, name: str, *, volume_id: VolumeId | None = None, created_ns: int | None = None,
              options: dict[str, str] | None = None, replicated: bool = False) -> VolumeRecord:
        """A new writable volume holding what volume or snapshot ``source`` holds now,
        sharing its chunks (cfs.store.snapshots.clone); durable on return. ``options``:
        the new volume's (a size limit, ...), its source's when None."""
        record = self.volume(source)
        self.flush_all()
        if options is None:
            options = {k: v for k, v in record.options.items()
                       if k not in (snapshots.SNAPSHOT_OF, snapshots.SNAPSHOT)}
        with self.store.op() as op:
            clone = snapshots.clone(op, record, name, volume_id or VolumeId(os.urandom(16)),
                                    op.time_ns if created_ns is None else created_ns, options)
            if replicated:
                replica.set_replicated(op, clone.slot, True)
        self.store.commit()
        return clone

    def volume(self, name: str) -> VolumeRecord:
        return catalog.get(self.store.view(), name)

    def set_size_limit(self, name: str, limit: int) -> VolumeRecord:
        """Make ``limit`` bytes the volume's size limit (0: none), durably, from the next
        operation on: how a node takes the limit the cluster's catalog gives the volume
        (an expansion). A limit below what the volume holds is allowed, as a limit on a
        full volume: writes that grow it fail, deletes work (cfs.fs.quota)."""
        if limit < 0:
            raise ValueError(f"a size limit is not negative, got {limit}")
        record = catalog.get(self.store.view(), name)
        if snapshots.is_snapshot(record):
            raise ReadOnly(f"{name} is a snapshot: it never changes, nor does its size")
        options = {k: v for k, v in record.options.items() if k != "size"}
        if limit:
            options["size"] = str(limit)
        if options == record.options:
            return record
        self.flush_all(record.slot)  # cached writes were admitted under the old limit: stored under it
        with self.store.op(adds_data=False) as op:
            record = catalog.set_options(op, record, options)
        self._volumes[record.slot] = record  # the cached entry the limit checks read
        self.store.commit()
        return record

    def volumes(self) -> list[VolumeRecord]:
        return list(catalog.all_volumes(self.store.view()))

    def remove_volume(self, name: str, *, force: bool = False) -> None:
        """Delete a volume and release its chunks. The caller makes sure it is not mounted.

        ``force`` removes it even while files of it are open (a fenced copy being
        discarded): their handles fail from then on.
        """
        with self.store.op(adds_data=False) as op:
            record = catalog.get(op, name)
            lo, hi = catalog.slot_range(record.slot)
            orphans = [key for key, _v in op.range(Table.ORPHANS, lo, hi)]
            if orphans and not force:
                raise VolumeBusy(f"volume {name!r} has files that are still open")
            for key in orphans:
                op.delete(Table.ORPHANS, key)
            for _key, value in catalog.delete_rows(op, Table.BLOCKS, lo, hi):
                data.release(op, None, decode_block(value))
            for table in (Table.INODES, Table.DIRENTS, Table.DIRORDER, Table.XATTRS, Table.SYMLINKS):
                catalog.delete_rows(op, table, lo, hi)
            catalog.remove_record(op, record)
        for ino in self.dirty.files():
            if slot_of(ino) == record.slot:
                self.dirty.take(ino)  # the volume's rows are gone: nothing to store them into
        self._volumes.pop(record.slot, None)
        self.store.frozen_slots.discard(record.slot)
        self.store.commit()

    def volume_in_use(self, slot: Slot) -> bool:
        """Whether files of the volume are open, or unlinked while open: removing it would
        pull them from under the programs that hold them."""
        lo, hi = catalog.slot_range(slot)
        return (any(slot_of(ino) == slot for ino in self.opens)
                or next(iter(self.store.view().keys(Table.ORPHANS, lo, hi)), None) is not None)

    def volume_usage(self, name: str) -> dict[str, int | float]:
        """Sizes for ``cfs volume inspect``: apparent bytes, referenced and unique chunk bytes."""
        view = self.store.view()
        record = catalog.get(view, name)
        lo, hi = catalog.slot_range(record.slot)
        files = apparent = 0
        for _key, raw in view.range(Table.INODES, lo, hi):
            inode = Inode.decode(raw)
            files += 1
            if stat.S_ISREG(inode.mode):
                apparent += inode.size
        referenced = 0
        unique: dict[bytes, int] = {}
        for _key, raw in view.range(Table.BLOCKS, lo, hi):
            for cid, length in decode_block(raw).chunks():
                referenced += length
                unique[cid] = length
        stored = sum(unique.values())
        return {
            "inodes": files, "apparent_bytes": apparent, "referenced_bytes": referenced,
            "chunks": len(unique), "chunk_bytes": stored,
            "dedup_ratio": round(referenced / stored, 3) if stored else 1.0,
        }

    def exclusive_bytes(self, name: str) -> int:
        """Chunk bytes only volume or snapshot ``name`` references: what removing it frees."""
        return snapshots.exclusive_bytes(self.store.view(), self.volume(name))

    def volume_space(self, name: str) -> dict[str, int]:
        """The volume's stored bytes (its counter: st_blocks * 512 over its files; cached
        writes count once stored) and its size limit, 0 for none. Cheap: two reads."""
        view = self.store.view()
        record = catalog.get(view, name)
        return {"used_bytes": changelog.used_bytes(view, record.slot), "size_bytes": quota.size_limit(record)}

    def volume_inodes(self, name: str) -> tuple[int, int]:
        """(inodes the volume has, inode numbers it has left), for a CSI node's volume
        stats: a scan of the volume's inode keys (no values read), and the 40 bits of
        volume-local numbers, which are never reused, less those handed out."""
        view = self.store.view()
        record = catalog.get(view, name)
        lo, hi = catalog.slot_range(record.slot)
        used = sum(1 for _key in view.keys(Table.INODES, lo, hi))
        return used, max(0, LOCAL_MASK + 1 - changelog.load_state(view, record.slot).next_local)

    def _volume(self, slot: Slot) -> VolumeRecord:
        """The volume of ``slot``. VolumeLost (EIO) when it is gone while files of it are
        open: it was removed under them (``remove_volume(force=True)``, a fenced copy
        dropped), and a write or fsync through such a handle must fail as an I/O error,
        not as "no such file" (slots are never reused, so the handle can name nothing
        else)."""
        record = self._volumes.get(slot)
        if record is None:
            found = catalog.by_slot(self.store.view(), slot)
            if found is None:
                if any(slot_of(ino) == slot for ino in self.opens):
                    raise VolumeLost(f"volume slot {slot} was removed while files of it were open; "
                                     "their handles fail")
                raise NotFound(f"volume slot {slot} does not exist")
            self._volumes[slot] = record = found
        return record

    def _report(self, ino: InodeId, exc: Exception) -> None:
        """One log line naming the damaged chunk and the file it belongs to."""
        if isinstance(exc, RemoteChunk):
            return  # not damage: the caller fetches the chunk from a replica and retries
        log.error("I/O error: %s, in %s", exc, self.where(ino))

    def where(self, ino: InodeId) -> str:
        """Names a file in log lines and errors: volume, inode and, when it can, the path."""
        try:
            name = self._volume(slot_of(ino)).name
        except NotFound:
            name = f"slot {slot_of(ino)}"
        try:
            path = self.path_of(ino)
        except Corrupted:  # the damage may be in the directories too
            path = None
        return f"volume {name}, inode {local_of(ino)}" + (f" ({path})" if path else "")

    def path_of(self, ino: InodeId) -> str | None:
        """Best-effort path of an inode inside its volume; a scan, for error paths only."""
        parts: list[str] = []
        root = volume_root(slot_of(ino))
        lo, hi = catalog.slot_range(slot_of(ino))
        view = self.store.view()
        while ino != root:
            for key, value in view.range(Table.DIRENTS, lo, hi):
                if decode_dirent(value)[0] == local_of(ino):
                    ino = InodeId(int.from_bytes(key[:8], "big"))
                    parts.append(bytes(key[8:]).decode("utf-8", "replace"))
                    break
            else:
                return None
            if len(parts) > 4096:
                return None
        return "/" + "/".join(reversed(parts))

    # --- start-up ------------------------------------------------------------------

    def recover(self) -> int:
        """Destroy the orphans a previous run left (unlinked while open). Nothing holds them now."""
        with self.store.op(adds_data=False) as op:
            orphans = [InodeId(int.from_bytes(k, "big")) for k, _ in op.range(Table.ORPHANS, b"", b"\xff" * 9)]
            for ino in orphans:
                try:
                    inodes.destroy(op, ino, inodes.load(op, ino))
                except NotFound:
                    op.delete(Table.ORPHANS, ino_key(ino))
        if orphans:
            log.info("freed %d files that were unlinked while open before the last stop", len(orphans))
            self.store.commit()
        return len(orphans)

    # --- attributes ----------------------------------------------------------------

    def _attr(self, ino: InodeId, inode: Inode) -> Attr:
        if ino == NODE_ROOT:
            return Attr(ino, inode, 4096, 0)  # FUSE's root: generation 0
        record = self._volume(slot_of(ino))
        return Attr(ino, self._as_written(ino, inode), record.block_size, generation(record))

    def _as_written(self, ino: InodeId, inode: Inode) -> Inode:
        """``inode`` as the file's cached writes left it (size, mtime, ctime): what every
        caller is shown until the flush writes them into the record. A copy when it
        differs; the record itself is left alone."""
        written = self.dirty.written(ino)
        if written is None:
            return inode
        shown = dataclasses.replace(inode)
        written.apply(shown)
        return shown

    def _node_root(self, view: View) -> Inode:
        count = sum(1 for _ in catalog.all_volumes(view))
        return Inode(stat.S_IFDIR | 0o755, 0, 0, 2 + count)

    def getattr(self, ino: InodeId) -> Attr:
        """stat(2). A file with cached blocks is flushed first, so st_blocks is exact:
        the hashing and storing is work the flush would do anyway."""
        if self.dirty.has(ino):
            try:
                self.flush(ino)
            except FsError as exc:
                log.warning("stat of %s shows st_blocks before its cached blocks: %s", self.where(ino), exc)
        view = self.store.view()
        inode = self._node_root(view) if ino == NODE_ROOT else inodes.load(view, ino)
        return self._attr(ino, inode)

    def lookup(self, parent: InodeId, name: bytes) -> Attr:
        """Find ``name`` in ``parent`` and count a kernel lookup on what it names."""
        check_file_name(name)
        view = self.store.view()
        if parent == NODE_ROOT:
            try:
                record = catalog.get(view, name.decode("utf-8", "surrogateescape"))
            except VolumeNotFound:
                raise NotFound(f"no volume {name!r}") from None
            child = volume_root(record.slot)
        else:
            found = dirs.lookup(view, parent, name)
            if found is None:
                self._dir(view, parent)  # ENOTDIR before ENOENT, as before
                raise NotFound(f"{name!r} not found")
            child = found
        inode = inodes.load(view, child)
        self._hold(parent, name, child, inode.mode)
        return self._attr(child, inode)

    def count_lookup(self, parent: InodeId, name: bytes, attr: Attr) -> None:
        """The kernel accepted ``parent``'s entry ``name`` from readdirplus: it now holds
        one more lookup of ``attr.ino``."""
        self._hold(parent, name, attr.ino, attr.inode.mode)

    def _hold(self, parent: InodeId, name: bytes, child: InodeId, mode: int) -> None:
        """Count a kernel lookup of ``child``, found as ``name`` in ``parent``; for a
        directory, remember where (its ``..``). Volume roots are their own ``..``."""
        self.lookups.add(child)
        if stat.S_ISDIR(mode) and parent != NODE_ROOT:
            self._parents[child] = (parent, name)

    def lookup_inode(self, ino: InodeId) -> Attr:
        """The inode numbered ``ino`` while it has a name, counting a kernel lookup.

        For a file handle whose inode the kernel no longer holds (FUSE export support:
        the kernel looks up "." in the handle's node id, and counts the reply as a lookup
        like any other). An inode without names is gone as far as handles go (ESTALE),
        as on Linux's own filesystems once the last user closed it; while a program
        still holds it, the kernel has it and does not ask.
        """
        view = self.store.view()
        inode = self._node_root(view) if ino == NODE_ROOT else inodes.load(view, ino)
        if inode.nlink == 0:
            raise NotFound(f"inode {ino} has no name")
        attr = self._attr(ino, inode)  # NotFound for a slot whose volume is gone
        self.lookups.add(ino)
        return attr

    def lookup_parent(self, directory: InodeId) -> Attr:
        """The directory that holds ``directory``, counting a kernel lookup.

        For a directory handle: the kernel connects the directory it found to the root
        by looking up ".." from it, level by level. A volume's root sits in the node
        root. Directories store no parent (``parent``: where the kernel found it, if it
        still holds it; otherwise a scan of the volume's entries, linear in its size, for
        a call that comes only when a handle names a directory the kernel no longer has).
        """
        if directory == NODE_ROOT:
            raise NotFound("the node root has no parent")
        self._dir(self.store.view(), directory)
        parent = NODE_ROOT if local_of(directory) == VOLUME_ROOT_LOCAL else self.parent(directory)
        return self.lookup_inode(parent)

    def forget(self, ino: InodeId, n: int) -> None:
        if not self.lookups.drop(ino, n) or local_of(ino) == VOLUME_ROOT_LOCAL:
            return
        self._parents.pop(ino, None)
        self._destroy_if_unused(ino)

    def release(self, ino: InodeId) -> None:
        """The kernel closed a handle from open/create; the last one may free an unlinked file."""
        if self.opens.drop(ino):
            self._destroy_if_unused(ino)

    def _destroy_if_unused(self, ino: InodeId) -> None:
        """After a forget or release: destroy a nameless inode nothing uses any more."""
        if self.opens.held(ino):
            return
        try:
            inode = inodes.load(self.store.view(), ino)
        except NotFound:
            return
        if inode.nlink == 0 and not self._in_use(ino, inode.mode):
            with self.store.op(adds_data=False) as op:
                self._destroy(op, ino, inode)

    def _in_use(self, ino: InodeId, mode: int) -> bool:
        """Whether the kernel still uses an inode: a regular file while a handle is open,
        anything else while the kernel holds a lookup. A directory may be a working
        directory; FIFOs and device nodes are opened by the kernel alone (no open or
        release reaches us), and fstat on such a descriptor must still work."""
        return self.opens.held(ino) if stat.S_ISREG(mode) else self.lookups.held(ino)

    def _destroy(self, op: Op, ino: InodeId, inode: Inode) -> None:
        """Delete an inode with everything hanging off it, its unstored blocks included."""
        self.dirty.take(ino)
        self.linkable.discard(ino)
        inodes.destroy(op, ino, inode)

    def setattr(self, ino: InodeId, change: SetAttr) -> Attr:
        self._writable(ino)
        if self.dirty.has(ino):
            # Cached writes first: a truncate or utimes after them must win over them, and
            # a truncate then has only stored blocks to cut (the cache holds none of the
            # file, or the flush failed and so does this call, the blocks kept).
            self.flush(ino)
        with self.store.op(adds_data=False) as op:
            inode = inodes.load(op, ino)
            now = op.time_ns
            if change.size is not None:
                if stat.S_ISDIR(inode.mode):
                    raise IsADirectory("cannot truncate a directory")
                if not stat.S_ISREG(inode.mode):
                    raise InvalidArgument("cannot truncate a special file")
                if change.size > data.MAX_FILE_SIZE:
                    raise InvalidArgument("size too large")
                data.truncate(op, ino, inode, change.size, self._volume(slot_of(ino)).block_size)
                inode.mtime_ns = now
            if change.mode is not None:
                inode.mode = stat.S_IFMT(inode.mode) | (change.mode & 0o7777)
            if change.uid is not None:
                inode.uid = change.uid
            if change.gid is not None:
                inode.gid = change.gid
            if change.atime_ns is not None:
                inode.atime_ns = _stored_time(change.atime_ns)
            if change.mtime_ns is not None:
                inode.mtime_ns = _stored_time(change.mtime_ns)
            inode.ctime_ns = change.ctime_ns if change.ctime_ns is not None else now
            inodes.save(op, ino, inode)
        return self._attr(ino, inode)

    # --- creating ------------------------------------------------------------------

    def _writable(self, ino: InodeId) -> None:
        if ino == NODE_ROOT:
            raise NotPermitted("the node root lists volumes; create files inside a volume")
        snapshots.check_writable(self._volume(slot_of(ino)))

    def _dir(self, view: View, ino: InodeId) -> Inode:
        inode = inodes.load(view, ino)
        if not stat.S_ISDIR(inode.mode):
            raise NotADirectory(f"inode {ino} is not a directory")
        return inode

    def _new_inode(self, parent: InodeId, name: bytes, mode: int, caller: Caller,
                   rdev: int = 0, target: bytes | None = None) -> Attr:
        self._writable(parent)
        check_file_name(name)
        with self.store.op() as op:
            parent_inode = self._dir(op, parent)
            if parent_inode.nlink == 0:
                raise NotFound("directory was removed")
            if dirs.lookup(op, parent, name) is not None:
                raise Exists(f"{name!r} exists")
            is_dir = stat.S_ISDIR(mode)
            mode, gid = _owned(parent_inode, mode, caller)
            now = op.time_ns
            child = inodes.allocate(op, parent)
            inode = Inode(mode, caller.uid, gid, 2 if is_dir else 1, rdev=rdev,
                          atime_ns=now, mtime_ns=now, ctime_ns=now)
            if target is not None:
                inode.size = len(target)
                op.put(Table.SYMLINKS, ino_key(child), target)
            inodes.save(op, child, inode)
            dirs.add(op, parent, parent_inode, name, child, mode)
            if is_dir:
                parent_inode.nlink += 1
            parent_inode.mtime_ns = parent_inode.ctime_ns = now
            inodes.save(op, parent, parent_inode)
        self._hold(parent, name, child, mode)
        return self._attr(child, inode)

    def mknod(self, parent: InodeId, name: bytes, mode: int, rdev: int, caller: Caller) -> Attr:
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise InvalidArgument(f"cannot mknod file type {kind:o}")
        keep_rdev = rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0
        return self._new_inode(parent, name, kind | (mode & 0o7777), caller, rdev=keep_rdev)

    def create(self, parent: InodeId, name: bytes, mode: int, caller: Caller) -> Attr:
        """Create and open a regular file: the caller releases the handle it gets."""
        attr = self._new_inode(parent, name, stat.S_IFREG | (mode & 0o7777), caller)
        self.opens.add(attr.ino)
        return attr

    def tmpfile(self, parent: InodeId, mode: int, caller: Caller, *, linkable: bool = True) -> Attr:
        """open(O_TMPFILE): a regular file without a name in ``parent``, open (the caller
        releases the handle it gets), an orphan from its birth, as an open file whose last
        name was unlinked: ``release`` or the next start destroys it. ``linkable`` (no
        O_EXCL): a ``link`` may give it a name while it is open. The directory does not
        change (no entry, no times), as on Linux's own filesystems."""
        self._writable(parent)
        with self.store.op() as op:
            parent_inode = self._dir(op, parent)
            if parent_inode.nlink == 0:
                raise NotFound("directory was removed")
            mode, gid = _owned(parent_inode, stat.S_IFREG | (mode & 0o7777), caller)
            now = op.time_ns
            child = inodes.allocate(op, parent)
            inode = Inode(mode, caller.uid, gid, 0, atime_ns=now, mtime_ns=now, ctime_ns=now)
            inodes.save(op, child, inode)
            inodes.mark_orphan(op, child)
        self.lookups.add(child)
        self.opens.add(child)
        if linkable:
            self.linkable.add(child)
        return self._attr(child, inode)

    def mkdir(self, parent: InodeId, name: bytes, mode: int, caller: Caller) -> Attr:
        return self._new_inode(parent, name, stat.S_IFDIR | (mode & 0o7777), caller)

    def symlink(self, parent: InodeId, name: bytes, target: bytes, caller: Caller) -> Attr:
        return self._new_inode(parent, name, stat.S_IFLNK | 0o777, caller, target=target)

    def readlink(self, ino: InodeId) -> bytes:
        view = self.store.view()
        target = view.get(Table.SYMLINKS, ino_key(ino))
        if target is None:
            inodes.load(view, ino)
            raise InvalidArgument("not a symbolic link")
        return bytes(target)

    def link(self, ino: InodeId, new_parent: InodeId, new_name: bytes) -> Attr:
        self._writable(new_parent)
        check_file_name(new_name)
        if slot_of(ino) != slot_of(new_parent):
            raise CrossDevice("hard links cannot cross volumes")
        with self.store.op() as op:
            inode = inodes.load(op, ino)
            if stat.S_ISDIR(inode.mode):
                raise NotPermitted("hard links to directories are not allowed")
            if inode.nlink == 0 and ino not in self.linkable:
                raise NotFound("file was removed")
            if inode.nlink >= LINK_MAX:
                raise TooManyLinks(f"file has {LINK_MAX} links")
            parent_inode = self._dir(op, new_parent)
            if parent_inode.nlink == 0:
                raise NotFound("directory was removed")
            if dirs.lookup(op, new_parent, new_name) is not None:
                raise Exists(f"{new_name!r} exists")
            now = op.time_ns
            if inode.nlink == 0:  # an O_TMPFILE file gets its name: no orphan any more
                inodes.unmark_orphan(op, ino)
            inode.nlink += 1
            inode.ctime_ns = now
            inodes.save(op, ino, inode)
            dirs.add(op, new_parent, parent_inode, new_name, ino, inode.mode)
            parent_inode.mtime_ns = parent_inode.ctime_ns = now
            inodes.save(op, new_parent, parent_inode)
        self.linkable.discard(ino)
        self.lookups.add(ino)
        return self._attr(ino, inode)

    # --- removing ------------------------------------------------------------------

    def _drop_link(self, op: Op, ino: InodeId, inode: Inode, now: int) -> None:
        """One name fewer. Without names the inode goes at once unless the kernel still
        uses it (see ``_in_use``); it then waits as an orphan for release/forget."""
        inode.nlink = 0 if stat.S_ISDIR(inode.mode) else inode.nlink - 1
        inode.ctime_ns = now
        if inode.nlink > 0:
            inodes.save(op, ino, inode)
        elif self._in_use(ino, inode.mode):
            inodes.save(op, ino, inode)
            inodes.mark_orphan(op, ino)
        else:
            self._destroy(op, ino, inode)

    def unlink(self, parent: InodeId, name: bytes) -> None:
        self._writable(parent)
        check_file_name(name)
        with self.store.op(adds_data=False) as op:
            parent_inode = self._dir(op, parent)
            child = dirs.lookup(op, parent, name)
            if child is None:
                raise NotFound(f"{name!r} not found")
            inode = inodes.load(op, child)
            if stat.S_ISDIR(inode.mode):
                raise IsADirectory(f"{name!r} is a directory")
            now = op.time_ns
            dirs.remove(op, parent, name)
            parent_inode.mtime_ns = parent_inode.ctime_ns = now
            inodes.save(op, parent, parent_inode)
            self._drop_link(op, child, inode, now)

    def rmdir(self, parent: InodeId, name: bytes) -> None:
        self._writable(parent)
        check_file_name(name)
        if name == b".":
            raise InvalidArgument("cannot remove '.'")
        with self.store.op(adds_data=False) as op:
            parent_inode = self._dir(op, parent)
            child = dirs.lookup(op, parent, name)
            if child is None:
                raise NotFound(f"{name!r} not found")
            inode = inodes.load(op, child)
            if not stat.S_ISDIR(inode.mode):
                raise NotADirectory(f"{name!r} is not a directory")
            if not dirs.is_empty(op, child):
                raise NotEmpty(f"{name!r} is not empty")
            now = op.time_ns
            dirs.remove(op, parent, name)
            parent_inode.nlink -= 1
            parent_inode.mtime_ns = parent_inode.ctime_ns = now
            inodes.save(op, parent, parent_inode)
            self._drop_link(op, child, inode, now)

    # --- rename --------------------------------------------------------------------

    def rename(self, old_parent: InodeId, old_name: bytes, new_parent: InodeId,
               new_name: bytes, *, noreplace: bool = False, exchange: bool = False) -> None:
        """rename(2)/renameat2(2). The kernel refuses moving a directory into itself."""
        self._writable(old_parent)
        self._writable(new_parent)
        check_file_name(old_name)
        check_file_name(new_name)
        if slot_of(old_parent) != slot_of(new_parent):
            raise CrossDevice("rename cannot cross volumes")
        if noreplace and exchange:
            raise InvalidArgument("RENAME_NOREPLACE and RENAME_EXCHANGE together")
        with self.store.op() as op:
            now = op.time_ns
            src_dir = self._dir(op, old_parent)
            dst_dir = src_dir if new_parent == old_parent else self._dir(op, new_parent)
            src = dirs.lookup(op, old_parent, old_name)
            if src is None:
                raise NotFound(f"{old_name!r} not found")
            dst = dirs.lookup(op, new_parent, new_name)
            src_inode = inodes.load(op, src)
            if exchange:
                if dst is None:
                    raise NotFound(f"{new_name!r} not found")
                self._exchange(op, old_parent, src_dir, old_name, src, src_inode,
                               new_parent, dst_dir, new_name, dst, now)
                return
            if dst is not None:
                if noreplace:
                    raise Exists(f"{new_name!r} exists")
                if dst == src:
                    return
                dst_inode = inodes.load(op, dst)
                self._check_replace(op, src_inode, dst, dst_inode, new_name)
                dirs.remove(op, new_parent, new_name)
                if stat.S_ISDIR(dst_inode.mode):
                    dst_dir.nlink -= 1
                self._drop_link(op, dst, dst_inode, now)
            dirs.remove(op, old_parent, old_name)
            dirs.add(op, new_parent, dst_dir, new_name, src, src_inode.mode)
            if stat.S_ISDIR(src_inode.mode) and new_parent != old_parent:
                src_dir.nlink -= 1
                dst_dir.nlink += 1
            src_inode.ctime_ns = now
            inodes.save(op, src, src_inode)
            self._touch_parents(op, old_parent, src_dir, new_parent, dst_dir, now)
            self._moved(src, src_inode.mode, new_parent, new_name)

    def _moved(self, ino: InodeId, mode: int, parent: InodeId, name: bytes) -> None:
        """A rename put ``ino`` at ``name`` in ``parent``: keep a held directory's ``..``
        at hand (``parent`` checks it against the store, should the rename be undone)."""
        if stat.S_ISDIR(mode) and self.lookups.held(ino):
            self._parents[ino] = (parent, name)

    def _touch_parents(self, op: Op, old_parent: InodeId, src_dir: Inode,
                       new_parent: InodeId, dst_dir: Inode, now: int) -> None:
        """A rename changed both directories: new mtime and ctime, saved once each."""
        src_dir.mtime_ns = src_dir.ctime_ns = now
        dst_dir.mtime_ns = dst_dir.ctime_ns = now
        inodes.save(op, old_parent, src_dir)
        if new_parent != old_parent:
            inodes.save(op, new_parent, dst_dir)

    def _check_replace(self, op: Op, src: Inode, dst: InodeId, dst_inode: Inode, name: bytes) -> None:
        if stat.S_ISDIR(src.mode) and not stat.S_ISDIR(dst_inode.mode):
            raise NotADirectory(f"{name!r} is not a directory")
        if not stat.S_ISDIR(src.mode) and stat.S_ISDIR(dst_inode.mode):
            raise IsADirectory(f"{name!r} is a directory")
        if stat.S_ISDIR(dst_inode.mode) and not dirs.is_empty(op, dst):
            raise NotEmpty(f"{name!r} is not empty")

    def _exchange(self, op: Op, old_parent: InodeId, src_dir: Inode, old_name: bytes,
                  src: InodeId, src_inode: Inode, new_parent: InodeId, dst_dir: Inode,
                  new_name: bytes, dst: InodeId, now: int) -> None:
        if src == dst:
            return
        dst_inode = inodes.load(op, dst)
        dirs.replace_child(op, old_parent, old_name, dst, dst_inode.mode)
        dirs.replace_child(op, new_parent, new_name, src, src_inode.mode)
        if new_parent != old_parent:
            moved = int(stat.S_ISDIR(src_inode.mode)) - int(stat.S_ISDIR(dst_inode.mode))
            src_dir.nlink -= moved
            dst_dir.nlink += moved
        for ino, inode in ((src, src_inode), (dst, dst_inode)):
            inode.ctime_ns = now
            inodes.save(op, ino, inode)
        self._touch_parents(op, old_parent, src_dir, new_parent, dst_dir, now)
        self._moved(src, src_inode.mode, new_parent, new_name)
        self._moved(dst, dst_inode.mode, old_parent, old_name)

    # --- directories ---------------------------------------------------------------

    def opendir(self, ino: InodeId) -> int:
        """Check that ``ino`` is a directory; return where a listing of it that starts now
        ends: its next cookie (the node root's: the next volume slot, never reused).

        Every entry added from now on, a renamed one included (it is added anew), gets a
        cookie at or past it: a listing that stops there ends however its reader renames
        what it reads, and returns no entry twice (cfs.fs.dirs). Entries added after the
        listing began are not listed, which POSIX leaves open.
        """
        view = self.store.view()
        if ino == NODE_ROOT:
            return max((r.slot for r in catalog.all_volumes(view)), default=0) + 1
        return self._dir(view, ino).next_cookie

    def parent(self, ino: InodeId) -> InodeId:
        """What ``..`` of directory ``ino`` lists: the directory whose entry names it. The
        node root and a volume root are their own ``..``, as the root of a filesystem
        is: a volume is mounted as a filesystem of its own (bind-mounted from below the
        hidden node root, which its users cannot reach).

        Directories keep no parent pointer. The kernel opens only directories it holds,
        and it got each through lookup, mkdir or a listing with attributes, which name
        its place, and moved it only through ``rename``: ``_parents`` remembers that
        place, and one read of the store checks it here. A directory not remembered
        (not reached through this Filesystem) is looked for in its volume's entries.
        NotFound for a removed directory (Linux lists none: ENOENT).
        """
        if ino == NODE_ROOT or local_of(ino) == VOLUME_ROOT_LOCAL:
            return ino
        view = self.store.view()
        self._dir(view, ino)
        place = self._parents.get(ino)
        if place is None or dirs.lookup(view, *place) != ino:
            place = dirs.find_parent(view, ino)
            if place is None:
                raise NotFound(f"directory {ino} was removed")
            if self.lookups.held(ino):
                self._parents[ino] = place
        return place[0]

    def readdir(self, ino: InodeId, after_cookie: int, limit: int = 384,
                end: int | None = None) -> list[tuple[bytes, Attr, int]]:
        """Up to ``limit`` entries after ``after_cookie`` and before ``end`` (``opendir``'s),
        in cookie order.

        A list, not a generator: the operation is closed before the caller hands entries
        to the kernel, and the kernel asks again from the last cookie it accepted. One
        reply of the kernel holds about 390 entries with short names: loading many more
        would be work thrown away. The
        caller counts a lookup per entry it hands on.
        """
        if ino == NODE_ROOT:
            return self._list_volumes(after_cookie, end)
        record = self._volume(slot_of(ino))
        block_size, gen = record.block_size, generation(record)
        view = self.store.view()
        directory = self._dir(view, ino)
        entries = []
        for name, child, cookie in dirs.entries(view, ino, after_cookie, end):
            entries.append((name, Attr(child, self._as_written(child, inodes.load(view, child)), block_size, gen),
                            cookie))
            if len(entries) >= limit:
                break
        if after_cookie == 0:  # a listing starts: an access, like read
            self._mark_atime(ino, directory)
        return entries

    def readdir_names(self, ino: InodeId, after_cookie: int,
                      end: int | None = None) -> Iterator[tuple[bytes, InodeId, int, int]]:
        """(name, child, file type, cookie) of the entries after ``after_cookie`` and before
        ``end`` (``opendir``'s); the file type is the ``S_IFMT`` bits of the child's mode.

        What plain readdir needs (d_ino, d_type), from the readdir-order rows alone: no
        attributes, so no lookup for the kernel to hold. An iterator over the current
        batch, so that the caller reads only the entries the kernel's buffer takes: take
        them without awaiting in between (a commit or a change would end the batch or
        move rows under the cursor). The directory is checked and its atime marked
        before this returns.
        """
        if ino == NODE_ROOT:
            return iter([(name, attr.ino, stat.S_IFDIR, cookie)
                         for name, attr, cookie in self._list_volumes(after_cookie, end)])
        view = self.store.view()
        directory = self._dir(view, ino)
        if after_cookie == 0:
            self._mark_atime(ino, directory)
            view = self.store.view()
        return dirs.typed_entries(view, ino, after_cookie, end)

    def _list_volumes(self, after_cookie: int, end: int | None) -> list[tuple[bytes, Attr, int]]:
        """The node root's entries: a volume's cookie is its slot, so they go in slot order."""
        view = self.store.view()
        records = sorted((r for r in catalog.all_volumes(view)
                          if r.slot > after_cookie and (end is None or r.slot < end)),
                         key=lambda r: r.slot)
        return [(r.name.encode(), Attr(volume_root(r.slot), inodes.load(view, volume_root(r.slot)),
                                       r.block_size, generation(r)), r.slot) for r in records]

    # --- file content --------------------------------------------------------------

    def open(self, ino: InodeId, write: bool, truncate: bool = False) -> Attr:
        """Open for reading or writing; ``truncate`` is O_TRUNC, which the kernel passes
        on (atomic_o_trunc) instead of sending a separate setattr. Linux truncates on
        O_RDONLY | O_TRUNC too; the kernel has checked write permission for it."""
        inode = inodes.load(self.store.view(), ino)
        if stat.S_ISDIR(inode.mode) and write:
            raise IsADirectory("cannot open a directory for writing")
        if write or truncate:
            self._writable(ino)
        attr = self._attr(ino, inode)
        if truncate and stat.S_ISREG(inode.mode):
            attr = self.setattr(ino, SetAttr(size=0))
        self.opens.add(ino)
        return attr

    def read(self, ino: InodeId, offset: int, size: int, *, mark_atime: bool = True) -> bytes:
        """Bytes of the file; ``mark_atime`` False for a handle opened O_NOATIME."""
        if offset < 0:
            raise InvalidArgument("negative offset")
        block_size = self._volume(slot_of(ino)).block_size
        view = self.store.view()
        try:
            inode = inodes.load(view, ino)
            if stat.S_ISDIR(inode.mode):
                raise IsADirectory("is a directory")
            result = data.read(view, ino, self._as_written(ino, inode), offset, size, block_size,
                               self.dirty.blocks(ino))
        except Corrupted as exc:
            self._report(ino, exc)
            raise
        if mark_atime:
            self._mark_atime(ino, inode)
        return result

    def _mark_atime(self, ino: InodeId, inode: Inode) -> None:
        """Record an access (read, the start of a listing) when relatime says it is due:
        the one write a reading call may make, in an operation of its own. ``inode`` is
        the record the caller just read; nothing can have changed it since. Whether the
        access is due is judged on the times cached writes gave the file."""
        due = _atime_due(self._as_written(ino, inode), time.time_ns())
        if due and slot_of(ino) not in self.store.frozen_slots:
            with self.store.op(adds_data=False) as op:
                inode.atime_ns = op.time_ns
                inodes.save(op, ino, inode)

    def write(self, ino: InodeId, offset: int, buf: bytes) -> int:
        """Write into the file's cached blocks; they are stored as chunks when flushed.

        A cached write changes nothing in the store: its size, mtime and ctime are kept
        with the blocks (``Written``) and reach the inode record in the flush's operation,
        so a small file costs two store operations (create, flush), not three. Without a
        cache (``dirty_limit`` 0), near a full disk, where the store commits every
        operation, and near the volume's size limit, writes go straight to chunks, so
        ENOSPC reaches the writer instead of a later close.
        """
        if offset < 0:
            raise InvalidArgument("negative offset")
        if offset + len(buf) > data.MAX_FILE_SIZE:
            raise InvalidArgument("write beyond the largest file size")
        record = self._volume(slot_of(ino))
        block_size = record.block_size
        through = self.store.low_space or not self.dirty.limit_bytes
        if not through and self._near_limit(ino, record, offset, len(buf)):
            through = True
            self.flush_all(record.slot)  # measure the volume exactly: nothing held in reserve
        if through:
            self.flush(ino)  # the store must hold the newest blocks before writing through
        try:
            if through:
                with self.store.op(expect_bytes=self.dirty.bytes + len(buf)) as op:
                    inode = inodes.load(op, ino)
                    data.write(op, ino, inode, offset, buf, block_size)
                    inode.mtime_ns = inode.ctime_ns = op.time_ns
                    inodes.save(op, ino, inode)
                    self._check_limit(op, record)
            else:
                if record.slot in self.store.frozen_slots:
                    raise ReadOnly("this node does not hold the volume's write lease")
                self.store.admit(expect_bytes=self.dirty.bytes + len(buf))
                if not inodes.exists(self.store.view(), ino):
                    raise NotFound(f"inode {ino} does not exist")
                self._write_cached(ino, offset, buf, block_size)
                self.dirty.wrote(ino, offset + len(buf), time.time_ns())
        except Corrupted as exc:
            self._report(ino, exc)  # after the read: reporting opens an operation of its own
            raise
        if self.dirty.over_limit or (self.store.low_space and self.dirty.bytes):
            self.flush_all()
        return len(buf)

    def _write_cached(self, ino: InodeId, offset: int, buf: bytes, block_size: int) -> None:
        """Lay the bytes into the file's cached blocks; nothing is read from the store."""
        for n, lo, piece in data.split(offset, buf, block_size):
            block = self.dirty.get(ino, n)
            if block is None:
                block = DirtyBlock.empty()
                self.dirty.put(ino, n, block, block_size)
            block.write(lo, piece)

    def _store_dirty(self, op: Op, ino: InodeId, inode: Inode, blocks: dict[int, DirtyBlock],
                     block_size: int) -> None:
        for n in sorted(blocks):
            if n * block_size < inode.size:
                data.store_written(op, ino, inode, n, blocks[n], block_size)

    def flush(self, ino: InodeId) -> None:
        """Store the file's cached blocks as chunks (close, fsync, timer, memory pressure).

        On failure (ENOSPC, damage) the blocks stay cached and the error goes to the
        caller: close(2) reports it.
        """
        blocks, written = self.dirty.take(ino)
        if not blocks and written is None:
            return
        block_size = self._volume(slot_of(ino)).block_size
        try:
            with self.store.op() as op:
                try:
                    inode = inodes.load(op, ino)
                except NotFound:
                    return
                if written is not None:
                    written.apply(inode)  # first: the blocks stored are those below the size
                self._store_dirty(op, ino, inode, blocks, block_size)
                inodes.save(op, ino, inode)
                self._check_limit(op, self._volume(slot_of(ino)))
        except FsError as exc:
            self.dirty.give_back(ino, blocks, written, block_size)
            if isinstance(exc, Corrupted):
                self._report(ino, exc)
            raise

    def flush_all(self, slot: Slot | None = None) -> None:
        """Flush every file (of the volume in ``slot``); the first error is raised after all were tried."""
        failure: FsError | None = None
        for ino in self.dirty.files():
            if slot is not None and slot_of(ino) != slot:
                continue
            try:
                self.flush(ino)
            except FsError as exc:
                log.error("could not store written blocks of %s: %s", self.where(ino), exc)
                failure = failure or exc
        if failure is not None:
            raise failure

    def _near_limit(self, ino: InodeId, record: VolumeRecord, offset: int, length: int) -> bool:
        """Whether caching this write could let the volume outgrow its size limit later.

        Storing a cached block adds at most its length to the volume, so the cached
        blocks of a volume are held in reserve against its limit: a write is cached only
        if the bytes in use, every cached block of the volume and the blocks this write
        caches anew all fit. Otherwise it goes straight to the store, where it is
        measured exactly (``_check_limit``), and ENOSPC reaches write(), not close().
        """
        limit = quota.size_limit(record)
        if not limit or not length:
            return False
        bs = record.block_size
        held = self.dirty.blocks(ino)
        fresh = sum(bs for n in range(offset // bs, (offset + length - 1) // bs + 1) if n not in held)
        used = changelog.used_bytes(self.store.view(), record.slot)
        return used + self.dirty.volume_bytes(record.slot) + fresh > limit

    def _check_limit(self, op: Op, record: VolumeRecord) -> None:
        """ENOSPC for an operation that grew the volume beyond its size limit, counting the
        volume's cached blocks as stored; it is rolled back whole. Shrinking always runs."""
        limit = quota.size_limit(record)
        if limit and op.usage_change(record.slot) > 0:
            used = changelog.used_bytes(op, record.slot) + self.dirty.volume_bytes(record.slot)
            if used > limit:
                raise NoSpace(f"volume {record.name} is full: {limit} bytes, {used} would be in use")

    def fallocate(self, ino: InodeId, mode: int, offset: int, length: int) -> None:
        """fallocate(2) on a regular file: allocate, punch a hole, or zero a range.

        Allocating (mode 0, ``FALLOC_FL_KEEP_SIZE``) reserves the blocks of the range
        (cfs.fs.data: each counts in full toward st_blocks and the volume's bytes in use,
        whatever it stores), so that writing into them later never fails for the volume's
        size limit; mode 0 also extends the file to the end of the range, KEEP_SIZE
        reserves past the end without. Nothing is set aside on the node's disk, which
        every volume shares and which holds each distinct block once: a write can still
        meet a full disk. ``FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`` makes the range
        read as zeros and frees the blocks inside it (their reservations too);
        ``FALLOC_FL_ZERO_RANGE`` zeros the range and reserves its blocks, extending the
        file unless KEEP_SIZE. Every mode sets mtime and ctime, as tmpfs and ext4 do.

        Allocation is refused whole with ENOSPC when the volume's limit, or the disk,
        cannot hold the new reservations (counted from the rows in the range before
        anything is written); punching is never refused for space. The file's cached
        writes are stored first, as setattr stores them, so the cache holds nothing the
        call changes.
        """
        if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            raise NotSupported(f"fallocate mode {mode:#x} is not supported")
        punch, zero = bool(mode & FALLOC_FL_PUNCH_HOLE), bool(mode & FALLOC_FL_ZERO_RANGE)
        if punch and (zero or not mode & FALLOC_FL_KEEP_SIZE):
            raise NotSupported("a hole is punched with FALLOC_FL_KEEP_SIZE and without ZERO_RANGE")
        if offset < 0 or length <= 0:
            raise InvalidArgument("fallocate needs offset >= 0 and length > 0")
        if offset + length > data.MAX_FILE_SIZE:
            raise FileTooBig("fallocate beyond the largest file size")
        self._writable(ino)
        record = self._volume(slot_of(ino))
        if record.slot in self.store.frozen_slots:  # EROFS before any other answer, as a write
            raise ReadOnly("this node does not hold the volume's write lease")
        block_size = record.block_size
        if self.dirty.has(ino):
            self.flush(ino)
        end = offset + length
        first, last = offset // block_size, (end - 1) // block_size
        view = self.store.view()
        kind = stat.S_IFMT(inodes.load(view, ino).mode)
        if kind == stat.S_IFDIR:
            raise IsADirectory("fallocate on a directory")
        if kind != stat.S_IFREG:
            raise NoDevice("fallocate on a special file")
        if not punch:
            self._admit_reservation(view, ino, record, first, last)
        with self.store.op(adds_data=not punch) as op:
            inode = inodes.load(op, ino)
            if punch or zero:
                data.punch(op, ino, inode, offset, length, block_size)
            if not punch:
                data.reserve(op, ino, inode, first, last, block_size)
                if not mode & FALLOC_FL_KEEP_SIZE:
                    inode.size = max(inode.size, end)
            inode.mtime_ns = inode.ctime_ns = op.time_ns
            inodes.save(op, ino, inode)
            if not punch:
                self._check_limit(op, record)

    def _admit_reservation(self, view: View, ino: InodeId, record: VolumeRecord, first: int, last: int) -> None:
        """ENOSPC before anything is written when reserving blocks ``first`` to ``last``
        would take the volume past its size limit, or when the store's disk would not
        take that much data (the store's own rule for data about to come, as for a cached
        write): one row per block, so a request for more than the disk could ever hold is
        refused rather than written row by row."""
        gain = data.reservation(view, ino, first, last, record.block_size) * 512
        if not gain:
            return
        limit = quota.size_limit(record)
        used = changelog.used_bytes(view, record.slot) + self.dirty.volume_bytes(record.slot)
        if limit and used + gain > limit:
            raise NoSpace(f"volume {record.name} is full: {limit} bytes, {used + gain} would be in use")
        if gain > self.store.free_bytes():
            raise NoSpace(f"reserving {gain} bytes: the store's disk has less free")
        self.store.admit(expect_bytes=gain)  # the store's rule for data that will come, its reserve kept

    def fsync(self, ino: InodeId) -> None:
        """fsync, fdatasync: the file's data and all metadata so far are durable on return."""
        self.flush(ino)
        self.store.commit()

    def sync(self) -> None:
        """fsyncdir, syncfs, the commit timer: everything so far is durable on return."""
        self.flush_all()
        self.store.commit()

    # --- extended attributes -------------------------------------------------------

    def getxattr(self, ino: InodeId, name: bytes) -> bytes:
        if ino == NODE_ROOT:  # it has no inode record, but it exists
            raise NoAttribute("the node root has no extended attributes")
        view = self.store.view()
        inodes.load(view, ino)
        return xattrs.get(view, ino, name)

    def listxattr(self, ino: InodeId, *, trusted: bool = True) -> list[bytes]:
        """Attribute names; without ``trusted``, none of the trusted.* ones, which only
        callers with CAP_SYS_ADMIN may see (as Linux's own filesystems list them)."""
        if ino == NODE_ROOT:
            return []
        view = self.store.view()
        inodes.load(view, ino)
        names = xattrs.names(view, ino)
        return names if trusted else [n for n in names if not n.startswith(xattrs.TRUSTED)]

    def setxattr(self, ino: InodeId, name: bytes, value: bytes, flags: int) -> None:
        self._writable(ino)
        with self.store.op() as op:
            inode = inodes.load(op, ino)
            xattrs.put(op, ino, name, value, flags)
            inode.ctime_ns = op.time_ns
            inodes.save(op, ino, inode)

    def removexattr(self, ino: InodeId, name: bytes) -> None:
        self._writable(ino)
        with self.store.op(adds_data=False) as op:
            inode = inodes.load(op, ino)
            xattrs.remove(op, ino, name)
            inode.ctime_ns = op.time_ns
            inodes.save(op, ino, inode)

    # --- whole filesystem ----------------------------------------------------------

    def statfs(self) -> dict[str, int]:
        """Real numbers: the store's disk, counting LMDB's free pages as free."""
        st = self.store.statvfs()
        frsize = 4096
        total = st.f_blocks * st.f_frsize // frsize
        free = min(total, self.store.free_bytes() // frsize)
        used_inodes = self.store.view().entries(Table.INODES)
        free_inodes = free * frsize // 512
        return {
            "bsize": DEFAULT_BLOCK_SIZE, "frsize": frsize, "blocks": total, "bfree": free,
            "bavail": max(0, free - self.store.reserve_bytes() // frsize),
            "files": used_inodes + free_inodes, "ffree": free_inodes, "namemax": 255,
        }


"""pyfuse3 ``Operations`` over ``cfs.fs.Filesystem``: a protocol adapter and nothing else.

Each handler converts arguments, calls the core, and converts the result. Domain
errors become ``FUSEError(errno)`` here (``raise ... from None``), the one place where
errno meets the kernel. Handlers never await between reading and writing the store,
so each call is atomic with respect to the others (pyfuse3 runs several handler tasks
on the one trio thread).

Lookup counts (pyfuse3 developer notes): lookup, create, mkdir, mknod, symlink and link
each give the kernel one lookup, counted by the core (lookups of "." and ".." too: file
handles, see ``supports_dot_lookup``); readdirplus counts an entry only
after ``readdir_reply`` has accepted it, and an entry listed by name only (node id 0,
cfs.fuse.names) not at all: the kernel holds nothing for it. Nor for "." and "..": the
kernel links neither (``fuse_direntplus_link`` skips them), and they go with node id 0
where cfs.fuse.names can set it.

Directory handles: every opendir gets a handle of its own, holding where its listing
ends (``Filesystem.opendir``): the kernel sends no inode with readdir, and two streams
of one directory end apart. See ``readdir`` for the offsets and rewinds.

File handles: every open and create gets a handle number of its own, naming the inode
and what that open asked of later reads (O_NOATIME, which read requests do not repeat)
and writes (O_DIRECT: the kernel's cache of the file is dropped after a direct write,
cfs.fuse.coherence, while the handler lends its FUSE worker, cfs.fuse.session).
The core counts the opens of each inode; the handle table is the adapter's.

Replication (``Remote``, given by the daemon): an operation that needs a chunk held by
replicas only fails in the core with ``RemoteChunk``, one whose local copy is missing
or damaged with ``MissingChunk``/``CorruptChunk``; the adapter fetches the chunk from a
peer (which verifies and stores it, repairing the local copy) and runs the operation
again (the failed attempt changed nothing: its store operation was rolled back).
fsync, fdatasync, fsyncdir and the close of a handle that wrote return only once
``Remote.replicated`` says the volume's records are on its replicas, and fail with EIO
from the start (``Remote.check_writer``) when the volume's writer here was fenced or
closed: their data may have been thrown away, and EROFS from the frozen volume would
tell the program something else.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
from bisect import bisect_left
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Callable, Concatenate, Coroutine, ParamSpec, Protocol, Sequence, TypeVar

import pyfuse3

from cfs.errors import CfsError, ChunkNotHere, CorruptChunk, FsError, RemoteChunk
from cfs.fs import Attr, Caller, Filesystem, SetAttr
from cfs.fuse.lowlevel import TMPFILE_NAME
from cfs.fuse.coherence import DirectWrites
from cfs.fuse.counters import LATENCY_BOUNDS_NS, FuseCounters
from cfs.fuse.names import NameOnlyEntries
from cfs.fuse.session import Workers
from cfs.types import InodeId, Slot, slot_of

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

ENTRY_TIMEOUT = 1.0
ATTR_TIMEOUT = 1.0
CAP_SYS_ADMIN = 21


MAX_ADVISED = 4096
"""Directories remembered as looked into; past that the memory is cleared (a
forgotten one gets its next listing reply without attributes, nothing else)."""

LISTING_STEP = 64
"""Entries with attributes read from the store at a time for a listing reply (which
holds a few hundred short names), so that at most this many are read for nothing."""

DOTS = 2
"""Listing offsets 1 and 2 are "." and ".."; the entry of cookie c is at offset c + DOTS."""

MAX_FETCHES = 4096
"""Chunks one operation may fetch from replicas before it gives up (a 256 MiB read of 64 KiB blocks)."""


class Remote(Protocol):
    """What the adapter needs from replication (mountd.cluster.node.ClusterNode)."""

    async def fetch_chunk(self, chunk: bytes) -> None:
        """Bring the chunk's bytes to this node, or raise a CfsError."""

    def check_writer(self, slot: Slot) -> None:
        """Raise ``VolumeLost`` if the volume's writer here was fenced or closed: an fsync
        must fail with EIO before it tries to store anything."""

    async def replicated(self, slot: Slot) -> None:
        """Return once the volume's records so far are durable on its replicas."""


def _chunk_of(exc: ChunkNotHere | CorruptChunk) -> bytes | None:
    """The id of the chunk an error is about, when it names one."""
    if isinstance(exc, CorruptChunk):
        return bytes.fromhex(exc.chunk_hex)
    return exc.chunk_id


def _errno_edge(handler: Callable[Concatenate[Operations, P], Coroutine[Any, Any, T]],
                ) -> Callable[Concatenate[Operations, P], Coroutine[Any, Any, T]]:
    """Turn core errors into FUSEError; anything else is a bug: log it and answer EIO.

    A chunk held by replicas only, or missing or damaged here, is fetched from a peer
    and the handler run again (each chunk once: a second failure is EIO).

    Every request is counted and timed here, with its errors (``cfs.fuse.counters``).
    """
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: "Operations", /, *args: P.args, **kwargs: P.kwargs) -> T:
        start = perf_counter_ns()
        answered = False
        try:
            fetched: set[bytes] = set()
            while True:
                try:
                    result = await handler(self, *args, **kwargs)
                    answered = True
                    return result
                except (ChunkNotHere, CorruptChunk) as exc:
                    cid = _chunk_of(exc)
                    if self.remote is None or cid is None or cid in fetched or len(fetched) >= MAX_FETCHES:
                        if isinstance(exc, RemoteChunk):  # damage was logged by the core already
                            log.error("%s failed: %s", name, exc)
                        raise pyfuse3.FUSEError(errno.EIO) from None
                    fetched.add(cid)
                    try:
                        await self.remote.fetch_chunk(cid)
                    except CfsError as fetch_error:
                        log.error("%s failed: %s", name, fetch_error)
                        raise pyfuse3.FUSEError(errno.EIO) from None
                    continue
                except pyfuse3.FUSEError:
                    raise
                except FsError as exc:
                    raise pyfuse3.FUSEError(exc.errno) from None
                except CfsError as exc:
                    log.error("%s failed: %s", name, exc)
                    raise pyfuse3.FUSEError(errno.EIO) from None
                except Exception:
                    log.exception("bug in %s; answering EIO", name)
                    raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            elapsed = perf_counter_ns() - start
            stats = self.counters.ops.get(name) or self.counters.op(name)
            stats.total_ns += elapsed  # OpStats.observe, inline: its call would cost a fifth more
            stats.buckets[bisect_left(LATENCY_BOUNDS_NS, elapsed)] += 1
            if not answered:
                stats.errors += 1

    return wrapper


def _counted(handler: Callable[Concatenate[Operations, P], Coroutine[Any, Any, None]],
             ) -> Callable[Concatenate[Operations, P], Coroutine[Any, Any, None]]:
    """Count and time a handler that answers nothing (forget, release, releasedir), as
    ``_errno_edge`` does the others."""
    name = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self: "Operations", /, *args: P.args, **kwargs: P.kwargs) -> None:
        start = perf_counter_ns()
        try:
            await handler(self, *args, **kwargs)
        finally:
            self.counters.op(name).observe(perf_counter_ns() - start)

    return wrapper


def _caller(ctx: pyfuse3.RequestContext) -> Caller:
    return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, supplementary_groups=_groups)


def _groups(pid: int) -> list[int]:
    try:
        return list(pyfuse3.get_sup_groups(pid))
    except (OSError, ValueError):
        return []


def _may_see_trusted(ctx: pyfuse3.RequestContext) -> bool:
    """trusted.* attributes are for CAP_SYS_ADMIN (xattr(7)). The kernel checks that for
    getting and setting them, but leaves listing to the filesystem. Root with the
    capability in its effective set (not, say, root in a default container); a caller
    that is gone already sees nothing privileged."""
    if ctx.uid != 0:
        return False
    try:
        with open(f"/proc/{ctx.pid}/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


@dataclass(slots=True)
class _DirHandle:
    ino: InodeId
    end: int
    """Entries from this cookie on are not listed: the directory's next cookie when the
    stream was opened, or rewound."""
    read: bool = False
    """A listing was asked for: offset 0 from now on is a rewind."""


@dataclass(slots=True)
class _Handle:
    ino: InodeId
    noatime: bool
    direct: bool
    """Opened O_DIRECT: its reads and writes bypass the kernel's page cache."""
    wrote: bool = False
    """Written through: its close waits for the replicas, as fsync does."""


def entry(attr: Attr) -> pyfuse3.EntryAttributes:
    inode = attr.inode
    out = pyfuse3.EntryAttributes()
    out.st_ino = attr.ino
    out.generation = attr.generation
    out.entry_timeout = ENTRY_TIMEOUT
    out.attr_timeout = ATTR_TIMEOUT
    out.st_mode = inode.mode
    out.st_nlink = inode.nlink
    out.st_uid = inode.uid
    out.st_gid = inode.gid
    out.st_rdev = inode.rdev
    out.st_size = inode.size
    out.st_blksize = attr.block_size
    out.st_blocks = inode.stored_units
    out.st_atime_ns = inode.atime_ns
    out.st_mtime_ns = inode.mtime_ns
    out.st_ctime_ns = inode.ctime_ns
    return out


class Operations(pyfuse3.Operations):
    """Every volume of the node through one FUSE session (see cfs.fs.core)."""

    supports_dot_lookup = True
    """FUSE export support: the kernel resolves a file handle whose inode it dropped by
    looking up "." in the handle's node id, and connects a directory by looking up ".."
    (docs/CONFORMANCE.md, "File handles")."""
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: Filesystem, remote: Remote | None = None, *, workers: Workers,
                 counters: FuseCounters | None = None) -> None:
        """``workers``: the ones ``cfs.fuse.session.run`` runs, which a handler may lend.
        ``counters``: where requests and bytes are counted (the daemon's, read by its
        metrics); a fresh one if not given."""
        super().__init__()
        self.fs = fs
        self.remote = remote
        self.counters = counters if counters is not None else FuseCounters()
        self._handles: dict[int, _Handle] = {}
        self._dirs: dict[int, _DirHandle] = {}
        self._direct = DirectWrites(workers)
        self._next_fh = itertools.count(1)
        self._name_only = NameOnlyEntries.create()
        self._looked_into: set[int] = set()
        """Directories with a lookup since their listing began: the rest of that listing
        carries attributes."""

    def _handle(self, ino: InodeId, flags: int) -> pyfuse3.FileInfo:
        fh = next(self._next_fh)
        direct = bool(flags & os.O_DIRECT)
        self._handles[fh] = _Handle(ino, bool(flags & os.O_NOATIME), direct)
        if direct:
            self._direct.opened(ino)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    def _ino(self, fh: int) -> InodeId:
        return self._handles[fh].ino

    @_errno_edge
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        # A path walk never sends "." or "..": the kernel resolves them itself. They come
        # from file handles only (supports_dot_lookup), "." in any inode, ".." in a directory.
        if name == b".":
            return entry(self.fs.lookup_inode(InodeId(parent_inode)))
        if name == b"..":
            return entry(self.fs.lookup_parent(InodeId(parent_inode)))
        if len(self._looked_into) >= MAX_ADVISED:
            self._looked_into.clear()
        self._looked_into.add(parent_inode)
        return entry(self.fs.lookup(InodeId(parent_inode), name))

    @_errno_edge
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry(self.fs.getattr(InodeId(inode)))

    @_errno_edge
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        change = SetAttr(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
        )
        return entry(self.fs.setattr(InodeId(inode), change))

    @_counted
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, nlookup in inode_list:
            try:
                self.fs.forget(InodeId(ino), nlookup)
            except Exception:
                log.exception("forget(%d, %d) failed", ino, nlookup)

    @_errno_edge
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.fs.readlink(InodeId(inode))

    @_errno_edge
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry(self.fs.mknod(InodeId(parent_inode), name, mode, rdev, _caller(ctx)))

    @_errno_edge
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry(self.fs.mkdir(InodeId(parent_inode), name, mode, _caller(ctx)))

    @_errno_edge
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry(self.fs.symlink(InodeId(parent_inode), name, target, _caller(ctx)))

    @_errno_edge
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry(self.fs.link(InodeId(inode), InodeId(new_parent_inode), new_name))

    @_errno_edge
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.fs.unlink(InodeId(parent_inode), name)

    @_errno_edge
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.fs.rmdir(InodeId(parent_inode), name)

    @_errno_edge
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & ~(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE):
            raise pyfuse3.FUSEError(errno.EINVAL)
        self.fs.rename(InodeId(parent_inode_old), name_old, InodeId(parent_inode_new), name_new,
                       noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
                       exchange=bool(flags & pyfuse3.RENAME_EXCHANGE))

    @_errno_edge
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self.fs.open(InodeId(inode), write=bool(flags & (os.O_WRONLY | os.O_RDWR)),
                     truncate=bool(flags & os.O_TRUNC))
        return self._handle(InodeId(inode), flags)

    @_errno_edge
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if name == TMPFILE_NAME:  # open(O_TMPFILE), passed on as a create (cfs.fuse.lowlevel)
            attr = self.fs.tmpfile(InodeId(parent_inode), mode, _caller(ctx), linkable=not flags & os.O_EXCL)
        else:
            attr = self.fs.create(InodeId(parent_inode), name, mode, _caller(ctx))
        return self._handle(attr.ino, flags), entry(attr)

    @_errno_edge
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handles[fh]
        if not handle.direct:
            self._direct.buffered(handle.ino, off, size)
        data = self.fs.read(handle.ino, off, size, mark_atime=not handle.noatime)
        self.counters.read_bytes += len(data)
        return data

    @_errno_edge
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handles[fh]
        handle.wrote = True
        written = self.fs.write(handle.ino, off, buf)
        self.counters.written_bytes += written
        if handle.direct:
            await self._direct.written(handle.ino, off, written)
        else:
            self._direct.buffered(handle.ino, off, written)
        return written

    @_errno_edge
    async def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """fallocate(2): not a pyfuse3 handler; cfs.fuse.lowlevel calls it."""
        handle = self._handles[fh]
        handle.wrote = True
        self.fs.fallocate(handle.ino, mode, offset, length)

    @_errno_edge
    async def flush(self, fh: int) -> None:
        # Every close(2) of a descriptor: store the written blocks, so errors such as
        # ENOSPC reach the program that closes (release's cannot).
        handle = self._handles[fh]
        if handle.wrote:
            self._check_writer(handle.ino)
        self.fs.flush(handle.ino)
        if handle.wrote:
            await self._replicated(handle.ino)

    @_counted
    async def release(self, fh: int) -> None:
        try:
            handle = self._handles.pop(fh)
            if handle.direct:
                self._direct.released(handle.ino)
            self.fs.release(handle.ino)
        except Exception:
            log.exception("release(%d) failed", fh)

    @_errno_edge
    async def fsync(self, fh: int, datasync: bool) -> None:
        self._check_writer(self._ino(fh))
        self.fs.fsync(self._ino(fh))
        await self._replicated(self._ino(fh))

    def _check_writer(self, ino: InodeId) -> None:
        if self.remote is not None:
            self.remote.check_writer(slot_of(ino))

    async def _replicated(self, ino: InodeId) -> None:
        if self.remote is not None:
            await self.remote.replicated(slot_of(ino))

    @_errno_edge
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        end = self.fs.opendir(InodeId(inode))
        fh = next(self._next_fh)
        self._dirs[fh] = _DirHandle(InodeId(inode), end)
        return fh

    @_errno_edge
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """Entries from offset ``start_id`` on until the kernel's buffer is full: "." and
        ".." first, then the directory's entries up to the handle's end. Names only (read
        one by one as the buffer takes them), or names with attributes (read
        ``LISTING_STEP`` at a time): see cfs.fuse.names.

        Offset 0 again after a listing began is rewinddir (or a seekdir to its start):
        the stream then refers to the directory as it is now, as after opendir (POSIX),
        with a new end. Any other offset keeps the end, so seekdir to a telldir position
        goes on as before.
        """
        handle = self._dirs[fh]
        directory = handle.ino
        if start_id == 0:
            self._looked_into.discard(directory)
            if handle.read:
                handle.end = self.fs.opendir(directory)
            handle.read = True
        first = start_id == 0
        if start_id < DOTS:
            dots = ((b".", directory), (b"..", self.fs.parent(directory)))
            for offset in range(start_id, DOTS):
                name, ino = dots[offset]
                if not pyfuse3.readdir_reply(token, name, self._dot_entry(ino), offset + 1):
                    return
            start_id = DOTS
        cookie = start_id - DOTS
        if self._name_only is not None and not first and directory not in self._looked_into:
            self._name_only.reply(token, self.fs.readdir_names(directory, cookie, handle.end), DOTS)
            return
        while True:
            entries = self.fs.readdir(directory, cookie, LISTING_STEP, handle.end)
            for name, attr, cookie in entries:
                if not pyfuse3.readdir_reply(token, name, entry(attr), cookie + DOTS):
                    return
                self.fs.count_lookup(directory, name, attr)
            if len(entries) < LISTING_STEP:
                return

    def _dot_entry(self, ino: InodeId) -> pyfuse3.EntryAttributes:
        """The entry of "." or ".." for ``readdir_reply``: d_ino and d_type, and no lookup
        to count. Node id 0 where cfs.fuse.names can set it, so the kernel links nothing;
        else the kernel's own rule keeps it from linking the entry."""
        if self._name_only is not None:
            return self._name_only(ino, stat.S_IFDIR)
        out = pyfuse3.EntryAttributes()
        out.st_ino = ino
        out.st_mode = stat.S_IFDIR
        return out

    @_counted
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_errno_edge
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        directory = self._dirs[fh].ino
        self._check_writer(directory)
        self.fs.sync()
        await self._replicated(directory)

    @_errno_edge
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        numbers = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = numbers["bsize"]
        out.f_frsize = numbers["frsize"]
        out.f_blocks = numbers["blocks"]
        out.f_bfree = numbers["bfree"]
        out.f_bavail = numbers["bavail"]
        out.f_files = numbers["files"]
        out.f_ffree = numbers["ffree"]
        out.f_favail = numbers["ffree"]
        out.f_namemax = numbers["namemax"]
        return out

    @_errno_edge
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return self.fs.getxattr(InodeId(inode), name)

    @_errno_edge
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        # pyfuse3 has already applied XATTR_CREATE / XATTR_REPLACE through getxattr.
        self.fs.setxattr(InodeId(inode), name, value, 0)

    @_errno_edge
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return self.fs.listxattr(InodeId(inode), trusted=_may_see_trusted(ctx))

    @_errno_edge
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.fs.removexattr(InodeId(inode), name)

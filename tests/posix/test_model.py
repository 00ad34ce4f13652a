"""Model-based random testing: a cfs mount must behave exactly like tmpfs.

Hypothesis draws programs of file system calls (open/create with assorted flags, writes
at random offsets, reads, truncate, fallocate (allocating, keep-size, punching), rename
with renameat2 flags, link, unlink, mkdir, rmdir, mkfifo, symlink, chmod, chown,
setxattr/removexattr, fsync, close, unmount and mount again, daemon restart) over a few
nested names, so that calls collide and often fail. Each program starts from one of a
few small trees and runs on a fresh directory of a cfs volume with 512-byte blocks (so
small writes cross blocks) and on the same directory of a tmpfs. A call must succeed on
both or fail on both with the same errno, and return the same bytes; after every call
(or pair of calls, see ``Model.do_hold``) the two trees must be identical: names, types,
modes, owners, sizes, link counts, which names are hard links of one file, contents,
symlink targets and xattrs; files still open (unlinked ones too) must agree through
their handles. ``cfs fsck`` is clean at the end.

CI runs a short deterministic run (derandomized, no example database). Long runs draw
new programs every time; a failure prints the shrunk program and a
``@reproduce_failure`` blob::

    CFS_MODEL_EXAMPLES=2000 CFS_MODEL_STEPS=80 .venv/bin/pytest tests/posix/test_model.py
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import itertools
import os
import random
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st

from tests.node import Node
from tests.posix._model_fixtures import assert_fsck_clean, env_int, remount, restart, tmpfs
from tests.posix.calls import fallocate

EXAMPLES = env_int("CFS_MODEL_EXAMPLES", 150)
STEPS = env_int("CFS_MODEL_STEPS", 50)
LONG_RUN = "CFS_MODEL_EXAMPLES" in os.environ
BLOCK_SIZE = 512
VOLUME = "model"

# Paths are picked when a call runs, from what exists then (see Pick): names are
# few and nested three deep at most, so that calls collide and fail too.
NAMES = ("a", "b", "c", "d")
MAX_DEPTH = 3
BOGUS = ("a/a/a/a", "c/x", "nowhere/x")
# Relative targets only. "../x" may leave the program's directory, but only into its
# private parent, which is compared too (see Model.tops).
TARGETS = ("a", "b", "c/x", "../a", "a/b", "nowhere", "b/a")
MODES = (0o644, 0o600, 0o755, 0o000, 0o4755, 0o2775, 0o1777, 0o470)
XATTR_NAMES = (b"user.a", b"user.b", b"trusted.t")
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_KEEP_SIZE, FALLOC_PUNCH = 0x01, 0x03  # the second: PUNCH_HOLE | KEEP_SIZE
OPEN_FLAGS = tuple(f | os.O_NONBLOCK for f in (  # O_NONBLOCK: opening a FIFO must not block
    os.O_RDWR | os.O_CREAT,
    os.O_RDWR,
    os.O_RDONLY,
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    os.O_RDWR | os.O_CREAT | os.O_EXCL,
    os.O_WRONLY | os.O_APPEND | os.O_CREAT,
    os.O_RDWR | os.O_TRUNC,
))
# Starting trees, so that most calls find something to work on: (kind, path, argument).
LAYOUTS = (
    (("dir", "a", 0o755), ("dir", "b", 0o2775), ("dir", "a/a", 0o755), ("file", "c", 1000),
     ("file", "a/b", 600), ("file", "a/a/b", 3000), ("file", "b/c", 1500), ("symlink", "b/a", "../c"),
     ("xattr", "c", b"user.a")),
    (("dir", "a", 0o755), ("dir", "a/a", 0o700), ("file", "b", 513), ("link", "a/b", "b"),
     ("symlink", "c", "a/b"), ("file", "a/a/b", 5000), ("xattr", "a/a", b"trusted.t")),
    (),
)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
AT_FDCWD = -100


def renameat2(src: Path, dst: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass(frozen=True)
class Data:
    """Bytes to write, described compactly so that a failing program prints readably."""

    length: int
    seed: int
    zeros: int  # 0: all zeros (holes on cfs), 1: a run of zeros inside, else random

    def bytes(self) -> bytes:
        if self.zeros == 0:
            return bytes(self.length)
        data = bytearray(random.Random(self.seed).randbytes(self.length))
        if self.zeros == 1 and self.length:
            start = self.seed % self.length
            data[start:start + self.length // 2] = bytes(len(data[start:start + self.length // 2]))
        return bytes(data)

    def __repr__(self) -> str:
        return f"Data({self.length}, {self.seed}, {self.zeros})"


@dataclass(frozen=True)
class Pick:
    """A path chosen when the call runs: the ``index``-th (modulo) of the paths of ``kind``.

    Kinds: ``entry`` (anything that exists), ``file`` (regular files), ``dir``, ``new``
    (a free name in an existing directory) and ``any`` (all those, and paths through
    files and missing directories). Choosing among what exists keeps most calls useful,
    and the choice still shrinks (towards the first path of the first kind).
    """

    kind: str
    index: int

    def __repr__(self) -> str:
        return f"{self.kind}[{self.index}]"


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]

    def __repr__(self) -> str:
        return f"{self.name}{self.args!r}"


def call(name: str, *args: st.SearchStrategy[Any]) -> st.SearchStrategy[Call]:
    return st.tuples(*args).map(lambda a: Call(name, a))


def picks(*kinds: str) -> st.SearchStrategy[Pick]:
    return st.builds(Pick, st.sampled_from(kinds), st.integers(0, 255))


entries = picks("entry", "entry", "any")
files = picks("file", "file", "any")
dirs = picks("dir", "dir", "any")
fresh = picks("new", "new", "any")
dests = picks("new", "new", "entry", "any")
slots = st.integers(0, 1)
modes = st.sampled_from(MODES)
datas = st.builds(Data, st.integers(0, 1600), st.integers(0, 2**16), st.integers(0, 3))
offsets = st.one_of(st.integers(0, 5000), st.sampled_from((511, 512, 513, 4095, 4096, 65536, 100_000)))
xattr_names = st.sampled_from(XATTR_NAMES)

CALLS = st.one_of(
    call("open", slots, files, st.sampled_from(OPEN_FLAGS), modes),
    call("open", slots, files, st.sampled_from(OPEN_FLAGS), modes),
    call("open", slots, fresh, st.sampled_from(OPEN_FLAGS), modes),
    call("close", slots),
    call("hold"),
    call("hold"),
    call("hold"),
    call("pwrite", slots, offsets, datas),
    call("pwrite", slots, offsets, datas),
    call("pwrite", slots, offsets, datas),
    call("write_file", files, offsets, datas),
    call("write_file", files, offsets, datas),
    call("write", slots, datas),
    call("pread", slots, offsets, st.integers(0, 3000)),
    call("read", slots, st.integers(0, 3000)),
    call("ftruncate", slots, offsets),
    call("fallocate", slots, st.sampled_from((0, 0, FALLOC_KEEP_SIZE, FALLOC_PUNCH)), offsets, st.integers(1, 6000)),
    call("fsync", slots, st.booleans()),
    call("truncate", files, offsets),
    call("rename", entries, dests, st.sampled_from((0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE))),
    call("rename", entries, dests, st.just(0)),
    call("rename", dirs, dests, st.just(0)),
    call("link", files, fresh),
    call("unlink", entries),
    call("mkdir", fresh, modes),
    call("mkdir", fresh, modes),
    call("rmdir", dirs),
    call("mkfifo", fresh, modes),
    call("symlink", st.sampled_from(TARGETS), fresh),
    call("chmod", entries, modes),
    call("chown", entries, st.sampled_from((0, 1000)), st.sampled_from((0, 1000, -1)), st.booleans()),
    call("setxattr", entries, xattr_names, st.binary(max_size=64),
         st.sampled_from((0, 0, os.XATTR_CREATE, os.XATTR_REPLACE)), st.booleans()),
    call("removexattr", entries, st.integers(0, 5), st.booleans()),
    call("getxattr", entries, st.integers(0, 5)),
    call("remount", st.sampled_from((False,) * 5 + (True,))),
)
# Lists of lists: about 25 calls on average (a flat list averages about 6), and the
# shrinker can still delete any call.
PROGRAMS = st.lists(st.lists(CALLS, max_size=16), min_size=1, max_size=10).map(
    lambda parts: [c for part in parts for c in part][:STEPS])

# Programs that found bugs, run first in every run.
REGRESSIONS: list[tuple[tuple[Any, ...], list[Call]]] = [
    # fstat on an open FIFO after its unlink gave ENOENT: the kernel opens a FIFO without
    # an open reaching the daemon, which therefore destroyed the inode at once.
    ((), [Call("mkfifo", (Pick("new", 0), 0o644)),
          Call("open", (0, Pick("entry", 0), os.O_RDWR | os.O_NONBLOCK, 0o644)),
          Call("unlink", (Pick("entry", 0),))]),
]


def outcome(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(result, None) or (None, errno name): what the two sides are compared on."""
    try:
        return fn(), None
    except OSError as exc:
        return None, errno.errorcode.get(exc.errno or 0, str(exc.errno))


def read_all(fd: int) -> bytes:
    return os.pread(fd, os.fstat(fd).st_size + 1, 0)


def entry_state(path: str) -> tuple[dict[str, Any], int]:
    """What is compared of one directory entry, and its inode number."""
    st_ = os.lstat(path)
    state: dict[str, Any] = {
        "type": stat.S_IFMT(st_.st_mode), "mode": oct(stat.S_IMODE(st_.st_mode)),
        "uid": st_.st_uid, "gid": st_.st_gid, "nlink": st_.st_nlink,
        "xattrs": sorted((n, os.getxattr(path, n, follow_symlinks=False))
                         for n in os.listxattr(path, follow_symlinks=False)),
    }
    if stat.S_ISREG(st_.st_mode):
        state["size"] = st_.st_size
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            state["content"] = read_all(fd)
        finally:
            os.close(fd)
    elif stat.S_ISLNK(st_.st_mode):
        state["size"] = st_.st_size
        state["target"] = os.readlink(path)
    return state, st_.st_ino


def snapshot(top: Path) -> tuple[dict[str, dict[str, Any]], dict[int, set[str]]]:
    """Every entry under ``top`` by relative path, and the names of each inode."""
    entries: dict[str, dict[str, Any]] = {}
    names: dict[int, set[str]] = {}

    def visit(directory: str, prefix: str) -> None:
        with os.scandir(directory) as listing:
            children = sorted((e.name, e.path) for e in listing)
        for name, path in children:
            rel = prefix + name
            entries[rel], ino = entry_state(path)
            names.setdefault(ino, set()).add(rel)
            if entries[rel]["type"] == stat.S_IFDIR:
                visit(path, rel + "/")

    visit(str(top), "")
    return entries, names


def hard_links(names: dict[int, set[str]]) -> set[frozenset[str]]:
    return {frozenset(group) for group in names.values()}


def describe_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    lines = []
    for rel in sorted(set(a) | set(b)):
        if a.get(rel) == b.get(rel):
            continue
        if rel not in a or rel not in b:
            lines.append(f"  {rel}: only on {'cfs' if rel in a else 'tmpfs'}: {a.get(rel) or b.get(rel)}")
            continue
        for key in sorted(set(a[rel]) | set(b[rel])):
            x, y = a[rel].get(key), b[rel].get(key)
            if x == y:
                continue
            if key == "content" and x is not None and y is not None:
                first = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
                lines.append(f"  {rel}: content differs at byte {first} (cfs {len(x)} bytes, tmpfs {len(y)})")
            else:
                lines.append(f"  {rel}: {key}: cfs {x!r} != tmpfs {y!r}")
    return "\n".join(lines)


def show(result: Any, err: str | None) -> str:
    if err is not None:
        return f"error {err}"
    if isinstance(result, bytes) and len(result) > 40:
        return f"{len(result)} bytes {result[:40]!r}..."
    return repr(result)


class Model:
    """Runs one program on cfs (side 0) and tmpfs (side 1), comparing after every call."""

    def __init__(self, node: Node, cfs_mount: Path, ref_mount: Path, n: int) -> None:
        self.node = node
        self.cfs_mount = cfs_mount
        # top/w is where the program works; top itself catches what "../x" symlinks create.
        self.tops = [cfs_mount / f"e{n}", ref_mount / f"e{n}"]
        self.roots = [top / "w" for top in self.tops]
        self.handles: dict[int, list[int]] = {}
        self.trace: list[str] = []

    def run(self, layout: tuple[tuple[str, str, Any], ...], program: list[Call]) -> None:
        for root in self.roots:
            root.mkdir(parents=True)
        try:
            for side in (0, 1):
                self.populate(side, layout)
            self.check()
            held = False
            for c in program:
                args = tuple(self.resolve(a) if isinstance(a, Pick) else a for a in c.args)
                self.trace.append(f"{c.name}{args!r}")
                getattr(self, "do_" + c.name)(*args)
                if c.name == "hold":
                    held = True
                elif held:
                    held = False
                else:
                    self.check()
            self.check()
        except (AssertionError, OSError) as exc:  # an OSError here: checking failed on one side
            steps = "\n".join(f"  {i}: {t}" for i, t in enumerate(self.trace))
            what = str(exc) if isinstance(exc, AssertionError) else repr(exc)
            raise AssertionError(f"{what}\nafter the last of these calls:\n{steps}") from None
        finally:
            self.close_all()
            for top in self.tops:
                shutil.rmtree(top)

    def populate(self, side: int, layout: tuple[tuple[str, str, Any], ...]) -> None:
        for kind, rel, arg in layout:
            path = self.p(side, rel)
            if kind == "dir":
                path.mkdir()
                path.chmod(arg)
            elif kind == "file":
                path.write_bytes(Data(arg, len(rel), 2).bytes())
            elif kind == "link":
                os.link(self.p(side, arg), path)
            elif kind == "symlink":
                path.symlink_to(arg)
            else:
                os.setxattr(path, arg, b"value")

    def resolve(self, pick: Pick) -> str:
        """The path ``pick`` names now, from the reference tree (the trees are equal)."""
        found: dict[str, list[str]] = {"entry": [], "file": [], "dir": [], "new": []}
        parents = [""]
        for dirpath, dirnames, filenames in os.walk(self.roots[1]):
            rel = os.path.relpath(dirpath, self.roots[1])
            prefix = "" if rel == "." else rel + "/"
            for name in sorted(dirnames + filenames):
                path = prefix + name
                found["entry"].append(path)
                if name in dirnames:
                    found["dir"].append(path)
                    if path.count("/") < MAX_DEPTH - 1:
                        parents.append(path)
                elif stat.S_ISREG(os.lstat(self.roots[1] / path).st_mode):
                    found["file"].append(path)
        existing = set(found["entry"])
        found["new"] = [f"{p}/{n}" if p else n for p in sorted(parents) for n in NAMES
                        if (f"{p}/{n}" if p else n) not in existing]
        found["any"] = found["entry"] + found["new"] + list(BOGUS)
        choices = sorted(found[pick.kind]) or sorted(found["any"])
        return choices[pick.index % len(choices)]

    def p(self, side: int, rel: str) -> Path:
        return self.roots[side] / rel

    def both(self, what: str, fn: Callable[[int], Any], compare: bool = True) -> list[Any]:
        """Make the call on both sides; they must agree. Returns both results on success."""
        (r0, e0), (r1, e1) = results = [outcome(lambda: fn(side)) for side in (0, 1)]
        if e0 != e1 or (compare and r0 != r1):
            if not compare:  # a handle one side opened must not leak
                for r, e in results:
                    if e is None:
                        os.close(r)
            raise AssertionError(f"{what}: cfs gave {show(r0, e0)}, tmpfs {show(r1, e1)}")
        return [r0, r1] if e0 is None else []

    def close_all(self) -> None:
        for fds in self.handles.values():
            for fd in fds:
                os.close(fd)
        self.handles.clear()

    # --- calls on handles ------------------------------------------------------------

    def do_open(self, slot: int, path: str, flags: int, mode: int) -> None:
        self.do_close(slot)
        fds = self.both(f"open({path!r}, {flags:#o}, {mode:#o})",
                        lambda s: os.open(self.p(s, path), flags, mode), compare=False)
        if fds:
            self.handles[slot] = fds

    def do_close(self, slot: int) -> None:
        fds = self.handles.pop(slot, None)
        if fds is not None:
            self.both(f"close(#{slot})", lambda s: os.close(fds[s]))

    def on_handle(self, slot: int, what: str, fn: Callable[[int], Any]) -> None:
        """A call on the handle in ``slot``, or on the other one if that slot is closed."""
        if slot not in self.handles and self.handles:
            slot = min(self.handles)
        fds = self.handles.get(slot)
        if fds is not None:
            self.both(f"{what} on #{slot}", lambda s: fn(fds[s]))

    def do_pwrite(self, slot: int, offset: int, data: Data) -> None:
        buf = data.bytes()
        self.on_handle(slot, f"pwrite({data!r}, {offset})", lambda fd: os.pwrite(fd, buf, offset))

    def do_write(self, slot: int, data: Data) -> None:
        buf = data.bytes()
        self.on_handle(slot, f"write({data!r})", lambda fd: os.write(fd, buf))

    def do_pread(self, slot: int, offset: int, size: int) -> None:
        self.on_handle(slot, f"pread({size}, {offset})", lambda fd: os.pread(fd, size, offset))

    def do_read(self, slot: int, size: int) -> None:
        self.on_handle(slot, f"read({size})", lambda fd: os.read(fd, size))

    def do_ftruncate(self, slot: int, size: int) -> None:
        self.on_handle(slot, f"ftruncate({size})", lambda fd: os.ftruncate(fd, size))

    def do_fallocate(self, slot: int, mode: int, offset: int, length: int) -> None:
        self.on_handle(slot, f"fallocate({mode:#x}, {offset}, {length})",
                       lambda fd: fallocate(fd, mode, offset, length))

    def do_fsync(self, slot: int, data_only: bool) -> None:
        sync = os.fdatasync if data_only else os.fsync
        self.on_handle(slot, sync.__name__, sync)

    # --- calls on names ----------------------------------------------------------------

    def do_write_file(self, path: str, offset: int, data: Data) -> None:
        """open, pwrite, close: the common way to change a file."""
        buf = data.bytes()

        def write_file(side: int) -> int:
            fd = os.open(self.p(side, path), os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644)
            try:
                return os.pwrite(fd, buf, offset)
            finally:
                os.close(fd)

        self.both(f"write_file({path!r}, {data!r}, {offset})", write_file)

    def do_truncate(self, path: str, size: int) -> None:
        self.both(f"truncate({path!r}, {size})", lambda s: os.truncate(self.p(s, path), size))

    def do_rename(self, src: str, dst: str, flags: int) -> None:
        self.both(f"renameat2({src!r}, {dst!r}, {flags})",
                  lambda s: renameat2(self.p(s, src), self.p(s, dst), flags))

    def do_link(self, src: str, dst: str) -> None:
        self.both(f"link({src!r}, {dst!r})",
                  lambda s: os.link(self.p(s, src), self.p(s, dst), follow_symlinks=False))

    def do_unlink(self, path: str) -> None:
        self.both(f"unlink({path!r})", lambda s: os.unlink(self.p(s, path)))

    def do_mkdir(self, path: str, mode: int) -> None:
        self.both(f"mkdir({path!r}, {mode:#o})", lambda s: os.mkdir(self.p(s, path), mode))

    def do_rmdir(self, path: str) -> None:
        self.both(f"rmdir({path!r})", lambda s: os.rmdir(self.p(s, path)))

    def do_mkfifo(self, path: str, mode: int) -> None:
        self.both(f"mkfifo({path!r}, {mode:#o})", lambda s: os.mkfifo(self.p(s, path), mode))

    def do_symlink(self, target: str, path: str) -> None:
        self.both(f"symlink({target!r}, {path!r})", lambda s: os.symlink(target, self.p(s, path)))

    def do_chmod(self, path: str, mode: int) -> None:
        self.both(f"chmod({path!r}, {mode:#o})", lambda s: os.chmod(self.p(s, path), mode))

    def do_chown(self, path: str, uid: int, gid: int, follow: bool) -> None:
        self.both(f"chown({path!r}, {uid}, {gid}, follow={follow})",
                  lambda s: os.chown(self.p(s, path), uid, gid, follow_symlinks=follow))

    def do_setxattr(self, path: str, name: bytes, value: bytes, flags: int, follow: bool) -> None:
        self.both(f"setxattr({path!r}, {name!r}, {value!r}, {flags}, follow={follow})",
                  lambda s: os.setxattr(self.p(s, path), name, value, flags, follow_symlinks=follow))

    def xattr_name(self, path: str, index: int, follow: bool) -> bytes:
        """Mostly a name the file has (on the reference side), else any of XATTR_NAMES."""
        try:
            present = sorted(os.listxattr(self.p(1, path), follow_symlinks=follow))
        except OSError:
            present = []
        return present[index % len(present)] if present and index % 3 else XATTR_NAMES[index % len(XATTR_NAMES)]

    def do_removexattr(self, path: str, index: int, follow: bool) -> None:
        name = self.xattr_name(path, index, follow)
        self.both(f"removexattr({path!r}, {name!r}, follow={follow})",
                  lambda s: os.removexattr(self.p(s, path), name, follow_symlinks=follow))

    def do_getxattr(self, path: str, index: int) -> None:
        name = self.xattr_name(path, index, True)
        self.both(f"getxattr({path!r}, {name!r})", lambda s: os.getxattr(self.p(s, path), name))

    def do_hold(self) -> None:
        """No check after the next call: it and the call after it make one step. A check
        reads and stats every file, and the daemon stores the blocks it has cached for a
        file when asked for its attributes; holding lets cached blocks meet the next call
        (a rename, an unlink, a truncate, another write)."""

    def do_remount(self, restart_daemon: bool) -> None:
        """Close everything (a busy mount cannot be unmounted), then unmount and mount the
        volume again, or restart the daemon: then only what cfs stored is left."""
        self.close_all()
        if restart_daemon:
            restart(self.node, self.cfs_mount)
        else:
            remount(self.node, VOLUME, self.cfs_mount)

    # --- after every call ----------------------------------------------------------------

    def check(self) -> None:
        (a, names_a), (b, names_b) = snapshot(self.tops[0]), snapshot(self.tops[1])
        assert a == b, "trees differ:\n" + describe_difference(a, b)
        assert hard_links(names_a) == hard_links(names_b), \
            f"hard links differ: cfs {hard_links(names_a)}, tmpfs {hard_links(names_b)}"
        for slot, fds in sorted(self.handles.items()):
            st0, st1 = os.fstat(fds[0]), os.fstat(fds[1])
            fields = ("st_mode", "st_nlink", "st_uid", "st_gid") + (() if stat.S_ISDIR(st0.st_mode) else ("st_size",))
            for field in fields:  # a directory's size means something else on each file system
                assert getattr(st0, field) == getattr(st1, field), \
                    f"handle #{slot}: {field}: cfs {getattr(st0, field)} != tmpfs {getattr(st1, field)}"
            assert names_a.get(st0.st_ino, set()) == names_b.get(st1.st_ino, set()), \
                f"handle #{slot} is open on different names"
            readable = fcntl.fcntl(fds[0], fcntl.F_GETFL) & os.O_ACCMODE != os.O_WRONLY
            if stat.S_ISREG(st0.st_mode) and readable:
                assert read_all(fds[0]) == read_all(fds[1]), f"handle #{slot}: content differs"


@pytest.mark.timeout(0 if LONG_RUN else 900)  # shrinking a failure takes minutes
def test_cfs_behaves_like_tmpfs(node: Node, short_tmp: Path) -> None:
    cfs_mount = node.mount(VOLUME, short_tmp / "cfs", block_size=BLOCK_SIZE)
    counter = itertools.count()
    with tmpfs(short_tmp / "ref") as ref_mount:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=not LONG_RUN, database=None,
                  print_blob=True, suppress_health_check=list(HealthCheck),
                  phases=(Phase.explicit, Phase.generate, Phase.shrink))
        @given(layout=st.sampled_from(LAYOUTS), program=PROGRAMS)
        def run(layout: tuple[tuple[str, str, Any], ...], program: list[Call]) -> None:
            Model(node, cfs_mount, ref_mount, next(counter)).run(layout, program)

        for layout, program in REGRESSIONS:
            run = example(layout=layout, program=program)(run)
        run()
    assert_fsck_clean(node)

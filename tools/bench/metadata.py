"""Our metadata benchmark: many small files, and one very large directory.

Every phase starts from cold kernel caches (dentries, inodes and pages dropped), so on a
FUSE mount each operation reaches the daemon at least once (lookup, getattr, readdir)
instead of being answered by the kernel's caches; on the disk, ext4 answers from its
buffer cache or the disk. The load is plain system calls from this process, one at a
time, as ``tar`` or a package manager issues them.
"""

from __future__ import annotations

import os

from tools.bench.context import Context
from tools.bench.procs import BenchError
from tools.bench.report import Row

SMALL_FILE = b"x" * 1024
CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC


def small_files(ctx: Context) -> list[Row]:
    """create (1 KiB each), stat, readdir, rename and unlink of ``meta_files`` files in one directory."""
    n = ctx.plan.meta_files
    d = ctx.work("meta")
    names = [os.path.join(d, f"file-{i:06d}") for i in range(n)]
    rows = []

    ctx.drop_caches()
    with ctx.probe() as p:
        for name in names:
            fd = os.open(name, CREATE_FLAGS, 0o644)
            os.write(fd, SMALL_FILE)
            os.close(fd)
    rows.append(ctx.row("meta-create", "files/s", "ops/s", n / p.seconds, p, files=n))

    ctx.drop_caches()
    with ctx.probe() as p:
        for name in names:
            os.stat(name)
    rows.append(ctx.row("meta-stat", "files/s", "ops/s", n / p.seconds, p, files=n))

    ctx.drop_caches()
    with ctx.probe() as p:
        with os.scandir(d) as it:
            found = sum(1 for _ in it)
    _expect(found, n, "readdir")
    rows.append(ctx.row("meta-readdir", "entries/s", "ops/s", n / p.seconds, p, entries=n))

    ctx.drop_caches()
    with ctx.probe() as p:
        for name in names:
            os.rename(name, name + ".moved")
    rows.append(ctx.row("meta-rename", "files/s", "ops/s", n / p.seconds, p, files=n))

    ctx.drop_caches()
    with ctx.probe() as p:
        for name in names:
            os.unlink(name + ".moved")
    rows.append(ctx.row("meta-unlink", "files/s", "ops/s", n / p.seconds, p, files=n))
    _expect(len(os.listdir(d)), 0, "unlink")
    return rows


def big_directory(ctx: Context) -> list[Row]:
    """Create ``bigdir_files`` empty files in one directory, then list it from cold caches."""
    n = ctx.plan.bigdir_files
    d = ctx.work("bigdir")
    ctx.drop_caches()
    with ctx.probe() as p:
        for i in range(n):
            os.close(os.open(os.path.join(d, f"entry-{i:07d}"), CREATE_FLAGS, 0o644))
    rows = [ctx.row("bigdir-create", "files/s", "ops/s", n / p.seconds, p, files=n)]
    ctx.drop_caches()
    with ctx.probe() as p:
        with os.scandir(d) as it:
            found = sum(1 for _ in it)
    _expect(found, n, "readdir of the large directory")
    rows.append(ctx.row("bigdir-readdir", "entries/s", "ops/s", n / p.seconds, p, entries=n))
    return rows


def _expect(found: int, wanted: int, what: str) -> None:
    if found != wanted:
        raise BenchError(f"{what}: found {found} entries, expected {wanted}")

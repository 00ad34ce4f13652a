"""A read-only mount: everything reads, every change is EROFS.

The read-only view is a second mount of the same filesystem (for cfs: ``cfs mount
--read-only``), so the test prepares files through the read-write mount and then tries
each call through the read-only one.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tests.posix.calls import RENAME_EXCHANGE, UTIME_NOW, age, fails, renameat2, times, utimensat
from tests.posix.conftest import Target


def prepare(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"content")
    os.setxattr(fsdir / "f", "user.x", b"v")
    os.mkdir(fsdir / "d")
    os.mkdir(fsdir / "empty")
    os.symlink("f", fsdir / "link")


def test_reads_work(fsdir: Path, target: Target) -> None:
    prepare(fsdir)
    ro = target.ro(fsdir)
    assert (ro / "f").read_bytes() == b"content"
    assert sorted(os.listdir(ro)) == ["d", "empty", "f", "link"]
    assert os.readlink(ro / "link") == "f"
    assert os.getxattr(ro / "f", "user.x") == b"v"
    assert os.listxattr(ro / "f") == ["user.x"]
    assert os.stat(ro / "f").st_ino == os.stat(fsdir / "f").st_ino
    assert os.statvfs(ro).f_flag & os.ST_RDONLY
    assert not os.statvfs(fsdir).f_flag & os.ST_RDONLY
    fd = os.open(ro / "f", os.O_CREAT | os.O_RDONLY, 0o644)  # exists: nothing to create
    try:
        assert os.read(fd, 3) == b"con"
        os.fsync(fd)
    finally:
        os.close(fd)


def test_every_change_is_erofs(fsdir: Path, target: Target) -> None:
    prepare(fsdir)
    ro = target.ro(fsdir)
    calls = [
        (os.open, ro / "f", os.O_WRONLY),
        (os.open, ro / "f", os.O_RDWR),
        (os.open, ro / "f", os.O_RDONLY | os.O_TRUNC),
        (os.open, ro / "new", os.O_CREAT | os.O_WRONLY, 0o644),
        (os.open, ro / "new", os.O_CREAT | os.O_RDONLY, 0o644),
        (os.truncate, ro / "f", 0),
        (os.mkdir, ro / "new"),
        (os.rmdir, ro / "empty"),
        (os.unlink, ro / "f"),
        (os.link, ro / "f", ro / "new"),
        (os.symlink, "f", ro / "new"),
        (os.mkfifo, ro / "new"),
        (os.mknod, ro / "new", 0o644 | stat.S_IFREG),
        (os.rename, ro / "f", ro / "new"),
        (os.rename, ro / "f", ro / "d" / "f"),
        (renameat2, ro / "f", ro / "d", RENAME_EXCHANGE),
        (os.chmod, ro / "f", 0o600),
        (os.chown, ro / "f", 1, 1),
        (os.utime, ro / "f", None),
        (utimensat, ro / "f", (0, UTIME_NOW), (0, UTIME_NOW)),
        (os.setxattr, ro / "f", "user.x", b"w"),
        (os.removexattr, ro / "f", "user.x"),
    ]
    for fn, *args in calls:
        fails(errno.EROFS, fn, *args)
    assert sorted(os.listdir(fsdir)) == ["d", "empty", "f", "link"]
    assert (fsdir / "f").read_bytes() == b"content"
    assert stat.S_IMODE(os.stat(fsdir / "f").st_mode) == 0o644


def test_exclusive_create_of_an_existing_name_is_eexist(fsdir: Path, target: Target) -> None:
    prepare(fsdir)
    fails(errno.EEXIST, os.open, target.ro(fsdir) / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    fails(errno.EEXIST, os.mkdir, target.ro(fsdir) / "d")


def test_reading_marks_no_atime(fsdir: Path, target: Target) -> None:
    prepare(fsdir)
    age(fsdir / "f")
    before = times(fsdir / "f")
    assert (target.ro(fsdir) / "f").read_bytes() == b"content"
    if target.kind == "cfs":
        # Divergence: a FUSE request does not say through which mount it came, so cfs marks
        # atime as on the read-write mount (the kernel leaves atime of FUSE inodes to the
        # filesystem). The same holds for noatime/nodiratime on a bind mount.
        assert times(fsdir / "f")[0] > before[0]
    else:
        assert times(fsdir / "f") == before

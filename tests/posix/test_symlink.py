"""symlink(2) and readlink(2), and how paths through symbolic links resolve.

A symbolic link holds any bytes up to PATH_MAX - 1 (an empty target is ENOENT); lstat
shows its target length as st_size and mode 0777; readlink of anything else is EINVAL.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tests.posix.calls import GROUP, USER, age, errnos_as, fails, times


def test_symlink_and_readlink(fsdir: Path) -> None:
    age(fsdir)
    before = times(fsdir)
    os.symlink("some/where", fsdir / "link")
    assert os.readlink(fsdir / "link") == "some/where"
    st = os.lstat(fsdir / "link")
    assert stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777
    assert (st.st_size, st.st_nlink, st.st_uid, st.st_gid) == (10, 1, 0, 0)
    after = times(fsdir)
    assert after[0] == before[0] and after[1] == after[2] > before[2]
    assert st.st_ctime_ns == after[2]


def test_targets_are_bytes(fsdir: Path) -> None:
    for i, target in enumerate((b"\xff\xfe not utf-8", b"a" * 4095, b"../../..", b"/abs/path", b" ")):
        os.symlink(target, os.fsencode(fsdir / f"l{i}"))
        assert os.readlink(os.fsencode(fsdir / f"l{i}")) == target
        assert os.lstat(fsdir / f"l{i}").st_size == len(target)


def test_symlink_errors(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.mkdir(fsdir / "d")
    os.symlink("x", fsdir / "link")
    for name in ("f", "d", "link"):
        fails(errno.EEXIST, os.symlink, "t", fsdir / name)
    fails(errno.ENOENT, os.symlink, "", fsdir / "empty")
    fails(errno.ENAMETOOLONG, os.symlink, "a" * 4096, fsdir / "long")
    fails(errno.ENAMETOOLONG, os.symlink, "t", fsdir / ("n" * 256))
    fails(errno.ENOENT, os.symlink, "t", fsdir / "missing" / "l")
    fails(errno.ENOTDIR, os.symlink, "t", fsdir / "f" / "l")
    assert sorted(os.listdir(fsdir)) == ["d", "f", "link"]


def test_readlink_errors(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.mkdir(fsdir / "d")
    os.mkfifo(fsdir / "fifo")
    for name in ("f", "d", "fifo"):
        fails(errno.EINVAL, os.readlink, fsdir / name)
    fails(errno.ENOENT, os.readlink, fsdir / "missing")
    fails(errno.ENOTDIR, os.readlink, fsdir / "f" / "x")


def test_resolution(fsdir: Path) -> None:
    os.makedirs(fsdir / "a" / "b")
    (fsdir / "a" / "b" / "f").write_bytes(b"deep")
    os.symlink("a/b", fsdir / "rel")
    os.symlink(str(fsdir / "a"), fsdir / "abs")
    os.symlink("../b/f", fsdir / "a" / "b" / "up")
    os.symlink("rel", fsdir / "chain")
    assert (fsdir / "rel" / "f").read_bytes() == b"deep"
    assert (fsdir / "abs" / "b" / "f").read_bytes() == b"deep"
    assert (fsdir / "a" / "b" / "up").read_bytes() == b"deep"
    assert (fsdir / "chain" / "f").read_bytes() == b"deep"
    assert os.stat(fsdir / "chain").st_ino == os.stat(fsdir / "a" / "b").st_ino
    assert stat.S_ISLNK(os.lstat(fsdir / "chain").st_mode)
    fails(errno.ENOTDIR, os.stat, fsdir / "a" / "b" / "up" / "x")


def test_calls_that_follow_and_calls_that_do_not(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.chmod(fsdir / "f", 0o644)
    os.symlink("f", fsdir / "link")
    os.chmod(fsdir / "link", 0o600)  # follows
    assert stat.S_IMODE(os.stat(fsdir / "f").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(fsdir / "link").st_mode) == 0o777
    os.chown(fsdir / "link", USER, GROUP, follow_symlinks=False)
    assert (os.lstat(fsdir / "link").st_uid, os.stat(fsdir / "f").st_uid) == (USER, 0)
    os.chown(fsdir / "link", USER, GROUP)
    assert os.stat(fsdir / "f").st_uid == USER
    os.utime(fsdir / "link", ns=(5 * 10**18, 6 * 10**18), follow_symlinks=False)
    st = os.lstat(fsdir / "link")
    assert (st.st_atime_ns, st.st_mtime_ns) == (5 * 10**18, 6 * 10**18)
    assert os.stat(fsdir / "f").st_mtime_ns != 6 * 10**18


def test_symlink_as_user(fsdir: Path) -> None:
    os.mkdir(fsdir / "open")
    os.chmod(fsdir / "open", 0o777)
    got = errnos_as(["os.symlink('t', D + '/l')", "os.symlink('t', D + '/open/l')"], D=str(fsdir))
    assert got == ["EACCES", "success"]
    st = os.lstat(fsdir / "open" / "l")
    assert (st.st_uid, st.st_gid) == (USER, GROUP)

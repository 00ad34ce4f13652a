"""link(2) and unlink(2), including files unlinked while open.

A hard link is a second name for the same inode: one more st_nlink, a new ctime for the
inode, a new mtime and ctime for the directory that gained the name. unlink takes one
name away; the inode lives until its last name is gone and its last descriptor closed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tests.posix.calls import GROUP, OTHER_GROUP, OTHER_USER, USER, age, errnos_as, fails, times
from tests.posix.conftest import Target


def test_link_is_the_same_inode(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"shared")
    os.mkdir(fsdir / "d")
    age(fsdir / "f", fsdir / "d")
    before, dir_before = times(fsdir / "f"), times(fsdir / "d")
    os.link(fsdir / "f", fsdir / "d" / "g")
    a, b = os.stat(fsdir / "f"), os.stat(fsdir / "d" / "g")
    assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
    after = times(fsdir / "f")
    assert after[:2] == before[:2] and after[2] > before[2]
    dir_after = times(fsdir / "d")
    assert dir_after[0] == dir_before[0] and dir_after[1] == dir_after[2] > dir_before[2]
    with open(fsdir / "d" / "g", "r+b") as f:
        f.write(b"SH")
    assert (fsdir / "f").read_bytes() == b"SHared"


def test_link_errors(fsdir: Path, target: Target) -> None:
    (fsdir / "f").write_bytes(b"")
    (fsdir / "g").write_bytes(b"")
    os.mkdir(fsdir / "d")
    os.symlink("nowhere", fsdir / "dangling")
    for name in ("g", "d", "dangling"):
        fails(errno.EEXIST, os.link, fsdir / "f", fsdir / name)
    fails(errno.EPERM, os.link, fsdir / "d", fsdir / "d2")
    fails(errno.ENOENT, os.link, fsdir / "missing", fsdir / "new")
    fails(errno.ENOENT, os.link, fsdir / "f", fsdir / "missing" / "new")
    fails(errno.ENOTDIR, os.link, fsdir / "f", fsdir / "g" / "new")
    fails(errno.ENOTDIR, os.link, fsdir / "g" / "x", fsdir / "new")
    fails(errno.ENAMETOOLONG, os.link, fsdir / "f", fsdir / ("n" * 256))
    fails(errno.EXDEV, os.link, fsdir / "f", target.other_root / f"exdev-{fsdir.name}")
    assert os.stat(fsdir / "f").st_nlink == 1


def test_link_to_a_symlink_links_the_symlink(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.symlink("f", fsdir / "link")
    os.link(fsdir / "link", fsdir / "hard", follow_symlinks=False)
    st = os.lstat(fsdir / "hard")
    assert stat.S_ISLNK(st.st_mode) and st.st_nlink == 2
    assert st.st_ino == os.lstat(fsdir / "link").st_ino
    assert os.readlink(fsdir / "hard") == "f"
    linkat_follow(fsdir / "link", fsdir / "followed")
    assert os.lstat(fsdir / "followed").st_ino == os.stat(fsdir / "f").st_ino


def linkat_follow(source: Path | str, new: Path) -> None:
    """linkat(2) with AT_SYMLINK_FOLLOW (os.link without a dir_fd calls link(2), which
    never follows)."""
    dfd = os.open(new.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(source, new.name, dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


def test_tmpfile_gets_a_name_through_linkat(fsdir: Path) -> None:
    """open(2): an O_TMPFILE file without O_EXCL can be linked into the filesystem
    (linkat with AT_SYMLINK_FOLLOW on /proc/self/fd, or AT_EMPTY_PATH), and is then an
    ordinary file that outlives its descriptor."""
    os.mkdir(fsdir / "d")
    fd = os.open(fsdir / "d", os.O_TMPFILE | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"prepared in private")
        age(fsdir)
        dir_before = times(fsdir)
        linkat_follow(f"/proc/self/fd/{fd}", fsdir / "published")
        assert os.fstat(fd).st_nlink == 1
        dir_after = times(fsdir)
        assert dir_after[1] == dir_after[2] > dir_before[2]      # the directory gained a name
        fails(errno.EEXIST, linkat_follow, f"/proc/self/fd/{fd}", fsdir / "published")
        linkat_follow(f"/proc/self/fd/{fd}", fsdir / "second")   # one more, as any link
        assert os.fstat(fd).st_nlink == 2
    finally:
        os.close(fd)
    assert (fsdir / "published").read_bytes() == b"prepared in private"
    assert os.stat(fsdir / "published").st_ino == os.stat(fsdir / "second").st_ino
    assert sorted(os.listdir(fsdir)) == ["d", "published", "second"] and os.listdir(fsdir / "d") == []


def test_tmpfile_with_o_excl_cannot_be_linked(fsdir: Path) -> None:
    fd = os.open(fsdir, os.O_TMPFILE | os.O_EXCL | os.O_RDWR, 0o644)
    try:
        fails(errno.ENOENT, linkat_follow, f"/proc/self/fd/{fd}", fsdir / "name")
    finally:
        os.close(fd)
    assert os.listdir(fsdir) == []


def test_unlinked_tmpfile_cannot_be_linked_again(fsdir: Path) -> None:
    fd = os.open(fsdir, os.O_TMPFILE | os.O_RDWR, 0o644)
    try:
        linkat_follow(f"/proc/self/fd/{fd}", fsdir / "once")
        os.unlink(fsdir / "once")
        fails(errno.ENOENT, linkat_follow, f"/proc/self/fd/{fd}", fsdir / "twice")
    finally:
        os.close(fd)
    assert os.listdir(fsdir) == []


def test_unlink(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"data")
    os.link(fsdir / "f", fsdir / "g")
    age(fsdir, fsdir / "g")
    before, dir_before = times(fsdir / "g"), times(fsdir)
    os.unlink(fsdir / "f")
    assert not os.path.lexists(fsdir / "f")
    st = os.stat(fsdir / "g")
    assert st.st_nlink == 1
    after = times(fsdir / "g")
    assert after[:2] == before[:2] and after[2] > before[2]
    dir_after = times(fsdir)
    assert dir_after[0] == dir_before[0] and dir_after[1] == dir_after[2] > dir_before[2]
    assert (fsdir / "g").read_bytes() == b"data"
    assert os.listdir(fsdir) == ["g"]


def test_unlink_errors(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.mkdir(fsdir / "d")
    fails(errno.EISDIR, os.unlink, fsdir / "d")
    fails(errno.ENOENT, os.unlink, fsdir / "missing")
    fails(errno.ENOENT, os.unlink, fsdir / "missing" / "x")
    fails(errno.ENOTDIR, os.unlink, fsdir / "f" / "x")
    fails(errno.ENOTDIR, os.unlink, f"{fsdir}/f/")
    fails(errno.ENAMETOOLONG, os.unlink, fsdir / ("n" * 256))


def test_unlink_symlink_removes_only_the_link(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"x")
    os.mkdir(fsdir / "d")
    os.symlink("f", fsdir / "link")
    os.symlink("d", fsdir / "dirlink")
    os.unlink(fsdir / "link")
    os.unlink(fsdir / "dirlink")
    assert sorted(os.listdir(fsdir)) == ["d", "f"]


def test_permissions_as_user(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.chmod(fsdir / "f", 0o644)
    os.mkdir(fsdir / "sticky")
    os.chmod(fsdir / "sticky", 0o1777)
    for name, owner in (("others", OTHER_USER), ("mine", USER)):
        (fsdir / "sticky" / name).write_bytes(b"")
        os.chown(fsdir / "sticky" / name, owner, GROUP)
        os.chmod(fsdir / "sticky" / name, 0o666)
    os.mkdir(fsdir / "mydir")
    os.chown(fsdir / "mydir", USER, GROUP)
    os.chmod(fsdir / "mydir", 0o1777)
    (fsdir / "mydir" / "theirs").write_bytes(b"")
    os.chown(fsdir / "mydir" / "theirs", OTHER_USER, OTHER_GROUP)
    (fsdir / "secret").write_bytes(b"")
    os.chmod(fsdir / "secret", 0o600)
    (fsdir / "own").write_bytes(b"")
    os.chown(fsdir / "own", USER, GROUP)
    got = errnos_as([
        "os.unlink(D + '/f')",
        "os.link(D + '/own', D + '/g')",
        "os.unlink(D + '/sticky/others')",
        "os.unlink(D + '/sticky/mine')",
        "os.unlink(D + '/mydir/theirs')",  # the owner of a sticky directory may
        "os.link(D + '/secret', D + '/mydir/s')",  # protected_hardlinks: not ours, not readable
        "os.link(D + '/f', D + '/mydir/f')",  # not ours, not writable either
        "os.link(D + '/sticky/others', D + '/mydir/o')",  # readable and writable
    ], D=str(fsdir))
    assert got == ["EACCES", "EACCES", "EPERM", "success", "success", "EPERM", "EPERM", "success"]


def test_unlinked_open_file_lives_until_closed(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"still here")
    first = os.open(fsdir / "f", os.O_RDWR)
    second = os.open(fsdir / "f", os.O_RDONLY)
    try:
        ino = os.fstat(first).st_ino
        os.unlink(fsdir / "f")
        assert not os.path.lexists(fsdir / "f") and os.listdir(fsdir) == []
        st = os.fstat(first)
        assert st.st_nlink == 0 and st.st_ino == ino
        os.pwrite(first, b" and growing", 10)
        os.close(first)
        first = -1
        assert os.pread(second, 100, 0) == b"still here and growing"
        assert os.fstat(second).st_size == 22
        (fsdir / "f").write_bytes(b"new file")  # the name is free again
        assert os.pread(second, 5, 0) == b"still"
    finally:
        if first >= 0:
            os.close(first)
        os.close(second)
    assert (fsdir / "f").read_bytes() == b"new file"


def test_unlinked_open_file_cannot_be_linked_again(fsdir: Path) -> None:
    """linkat(2) of an unlinked file (through /proc/self/fd) is ENOENT unless it was opened
    O_TMPFILE: an inode whose last name went does not come back."""
    (fsdir / "f").write_bytes(b"x")
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        os.unlink(fsdir / "f")
        fails(errno.ENOENT, linkat_follow, f"/proc/self/fd/{fd}", fsdir / "back")
    finally:
        os.close(fd)

"""mkdir(2), rmdir(2) and reading directories.

A new directory has two links (its name and its "."), and adds one to its parent (its
".."); rmdir takes both back. Entries come back from readdir once each with the right
type and inode number ("." and ".." are not compared: os.listdir omits them).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tests.posix.calls import GROUP, OTHER_GROUP, OTHER_USER, USER, age, errnos_as, fails, times


def test_mkdir_mode_owner_and_links(fsdir: Path) -> None:
    age(fsdir)
    before = times(fsdir)
    os.mkdir(fsdir / "d", 0o7777)  # only the permission and sticky bits, less the umask
    st = os.stat(fsdir / "d")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o1755
    assert (st.st_uid, st.st_gid, st.st_nlink) == (0, 0, 2)
    assert st.st_atime_ns == st.st_mtime_ns == st.st_ctime_ns > before[2]
    parent = os.stat(fsdir)
    assert parent.st_nlink == 3
    assert parent.st_mtime_ns == parent.st_ctime_ns == st.st_ctime_ns
    assert parent.st_atime_ns == before[0]


def test_mkdir_as_user(fsdir: Path) -> None:
    os.chmod(fsdir, 0o777)
    assert errnos_as(["os.mkdir(D + '/d', 0o777)"], D=str(fsdir)) == ["success"]
    st = os.stat(fsdir / "d")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (USER, GROUP, 0o755)


def test_nested_links(fsdir: Path) -> None:
    for name in ("a", "b", "c"):
        os.mkdir(fsdir / name)
    (fsdir / "file").write_bytes(b"")
    os.mkdir(fsdir / "a" / "x")
    assert os.stat(fsdir).st_nlink == 5  # files do not count
    assert os.stat(fsdir / "a").st_nlink == 3
    os.rmdir(fsdir / "a" / "x")
    os.rmdir(fsdir / "b")
    assert os.stat(fsdir).st_nlink == 4
    assert os.stat(fsdir / "a").st_nlink == 2


def test_mkdir_errors(fsdir: Path) -> None:
    (fsdir / "file").write_bytes(b"")
    os.mkdir(fsdir / "dir")
    os.symlink("nowhere", fsdir / "dangling")
    for name in ("file", "dir", "dangling"):
        fails(errno.EEXIST, os.mkdir, fsdir / name)
    assert not (fsdir / "nowhere").exists()  # mkdir does not follow a last-component link
    fails(errno.ENOENT, os.mkdir, fsdir / "missing" / "d")
    fails(errno.ENOENT, os.mkdir, "")
    fails(errno.ENOTDIR, os.mkdir, fsdir / "file" / "d")
    fails(errno.ENAMETOOLONG, os.mkdir, fsdir / ("d" * 256))
    os.mkdir(fsdir / ("d" * 255))
    os.mkdir(f"{fsdir}/slash/")  # a trailing slash is fine for directories
    assert os.path.isdir(fsdir / "slash")


def test_rmdir(fsdir: Path) -> None:
    os.mkdir(fsdir / "d")
    age(fsdir)
    before = times(fsdir)
    os.rmdir(f"{fsdir}/d/")
    assert not os.path.lexists(fsdir / "d")
    after = times(fsdir)
    assert after[0] == before[0] and after[1] == after[2] > before[2]
    assert os.stat(fsdir).st_nlink == 2


def test_rmdir_errors(fsdir: Path) -> None:
    (fsdir / "file").write_bytes(b"")
    os.mkdir(fsdir / "d")
    os.symlink("d", fsdir / "to-dir")
    for name, content in (("with-file", "f"), ("with-dir", "sub"), ("with-link", "ln")):
        os.mkdir(fsdir / name)
        if content == "f":
            (fsdir / name / content).write_bytes(b"")
        elif content == "sub":
            os.mkdir(fsdir / name / content)
        else:
            os.symlink("nowhere", fsdir / name / content)
        fails(errno.ENOTEMPTY, os.rmdir, fsdir / name)
    fails(errno.ENOTDIR, os.rmdir, fsdir / "file")
    fails(errno.ENOTDIR, os.rmdir, fsdir / "to-dir")  # rmdir does not follow the link
    fails(errno.ENOENT, os.rmdir, fsdir / "missing")
    fails(errno.ENOTDIR, os.rmdir, fsdir / "file" / "x")
    fails(errno.EINVAL, os.rmdir, f"{fsdir}/d/.")  # a string: pathlib would drop the "."
    fails(errno.ENOTEMPTY, os.rmdir, f"{fsdir}/d/..")
    fails(errno.ENAMETOOLONG, os.rmdir, fsdir / ("d" * 256))
    assert os.path.isdir(fsdir / "d")


def test_removed_directory_still_open(fsdir: Path) -> None:
    """A removed directory stays usable as a handle (a process may be in it) but is empty
    for good: nothing can be created in it."""
    os.mkdir(fsdir / "d")
    fd = os.open(fsdir / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rmdir(fsdir / "d")
        assert os.listdir(fd) == []
        assert os.fstat(fd).st_nlink == 0
        fails(errno.ENOENT, os.open, "f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        fails(errno.ENOENT, os.mkdir, "sub", dir_fd=fd)
        fails(errno.ENOENT, os.symlink, "x", "ln", dir_fd=fd)
        fails(errno.ENOENT, os.mkfifo, "fifo", dir_fd=fd)
    finally:
        os.close(fd)


def test_permissions_as_user(fsdir: Path) -> None:
    os.mkdir(fsdir / "closed", 0o755)
    os.mkdir(fsdir / "closed" / "sub")
    os.mkdir(fsdir / "sticky")
    os.chmod(fsdir / "sticky", 0o1777)
    os.mkdir(fsdir / "sticky" / "others")
    os.chown(fsdir / "sticky" / "others", OTHER_USER, OTHER_GROUP)
    os.mkdir(fsdir / "sticky" / "mine")
    os.chown(fsdir / "sticky" / "mine", USER, GROUP)
    os.mkdir(fsdir / "open")
    os.chmod(fsdir / "open", 0o777)
    os.mkdir(fsdir / "open" / "roots")
    got = errnos_as([
        "os.mkdir(D + '/closed/new')",
        "os.rmdir(D + '/closed/sub')",
        "os.rmdir(D + '/sticky/others')",
        "os.rmdir(D + '/sticky/mine')",
        "os.rmdir(D + '/open/roots')",
    ], D=str(fsdir))
    assert got == ["EACCES", "EACCES", "EPERM", "success", "success"]


def test_setgid_directory_hands_on_its_group(fsdir: Path) -> None:
    os.mkdir(fsdir / "shared")
    os.chown(fsdir / "shared", 0, OTHER_GROUP)
    os.chmod(fsdir / "shared", 0o2777)
    got = errnos_as([
        "os.mkdir(D + '/sub', 0o755)",
        "os.close(os.open(D + '/file', os.O_CREAT | os.O_WRONLY, 0o2755))",
        "os.mknod(D + '/fifo', 0o644 | stat.S_IFIFO)",
    ], D=str(fsdir / "shared"))
    assert got == ["success"] * 3
    sub = os.stat(fsdir / "shared" / "sub")
    assert (sub.st_uid, sub.st_gid) == (USER, OTHER_GROUP)
    assert stat.S_IMODE(sub.st_mode) == 0o2755  # directories inherit the bit
    file = os.stat(fsdir / "shared" / "file")
    assert (file.st_uid, file.st_gid) == (USER, OTHER_GROUP)
    assert stat.S_IMODE(file.st_mode) == 0o755  # set-group-ID of a group the creator is not in: dropped
    assert os.stat(fsdir / "shared" / "fifo").st_gid == OTHER_GROUP
    os.mkdir(fsdir / "shared" / "by-root", 0o700)
    assert stat.S_IMODE(os.stat(fsdir / "shared" / "by-root").st_mode) == 0o2700


def test_listing_has_every_entry_once_with_its_type(fsdir: Path) -> None:
    (fsdir / "file").write_bytes(b"x")
    os.mkdir(fsdir / "dir")
    os.symlink("file", fsdir / "link")
    os.mkfifo(fsdir / "fifo")
    os.link(fsdir / "file", fsdir / "hard")
    names = {f"n{i:03d}" for i in range(300)}
    for name in names:
        os.close(os.open(fsdir / name, os.O_CREAT | os.O_WRONLY, 0o644))
    with os.scandir(fsdir) as it:
        entries = {e.name: e for e in it}
    assert set(entries) == names | {"file", "dir", "link", "fifo", "hard"}
    assert sorted(os.listdir(fsdir)) == sorted(entries)
    assert entries["dir"].is_dir(follow_symlinks=False)
    assert entries["file"].is_file(follow_symlinks=False)
    assert entries["link"].is_symlink()
    assert stat.S_ISFIFO(entries["fifo"].stat(follow_symlinks=False).st_mode)
    for name in ("file", "dir", "link", "fifo", "hard", "n000"):
        assert entries[name].inode() == os.lstat(fsdir / name).st_ino, name
    assert entries["hard"].inode() == entries["file"].inode()


def test_listing_reflects_removals(fsdir: Path) -> None:
    for i in range(50):
        (fsdir / f"f{i}").write_bytes(b"")
    for i in range(0, 50, 2):
        os.unlink(fsdir / f"f{i}")
    assert sorted(os.listdir(fsdir)) == sorted(f"f{i}" for i in range(1, 50, 2))


def test_readdir_marks_atime(fsdir: Path) -> None:
    os.mkdir(fsdir / "d")
    (fsdir / "d" / "f").write_bytes(b"")
    age(fsdir / "d")  # atime not newer than mtime: relatime marks it on the next read
    before = times(fsdir / "d")
    assert os.listdir(fsdir / "d") == ["f"]
    after = times(fsdir / "d")
    assert after[0] > before[2] and after[1:] == before[1:]

"""open(2) and creat(2): creation, the flags, and each error a filesystem can give.

From open(2): O_CREAT creates with mode & ~umask, owned by the caller's fsuid and
(without a set-group-ID parent) fsgid; O_EXCL fails with EEXIST if the name exists, even
as a dangling symbolic link; O_TRUNC truncates a regular file and marks its mtime and
ctime; O_APPEND moves every write to the end; O_DIRECTORY fails with ENOTDIR on a
non-directory; O_NOFOLLOW fails with ELOOP on a symbolic link.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from tests.posix.calls import GROUP, USER, age, errnos_as, fails, times


def write_file(path: Path, data: bytes = b"content") -> None:
    path.write_bytes(data)


def test_create_applies_mode_umask_and_caller_ids(fsdir: Path) -> None:
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_WRONLY, 0o4777)
    os.close(fd)
    st = os.stat(fsdir / "f")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert (st.st_uid, st.st_gid, st.st_nlink, st.st_size, st.st_blocks) == (0, 0, 1, 0, 0)


def test_create_as_user_owns_the_file(fsdir: Path) -> None:
    fsdir.chmod(0o777)
    assert errnos_as(["os.close(os.open(P, os.O_CREAT | os.O_WRONLY, 0o666))"], P=fsdir / "f") == ["success"]
    st = os.stat(fsdir / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (USER, GROUP, 0o644)


def test_create_sets_times_and_changes_parent(fsdir: Path) -> None:
    age(fsdir)
    before = times(fsdir)
    os.close(os.open(fsdir / "f", os.O_CREAT | os.O_WRONLY, 0o644))
    atime, mtime, ctime = times(fsdir / "f")
    assert atime == mtime == ctime > before[2]
    after = times(fsdir)
    assert after[0] == before[0]
    assert after[1] == after[2] == ctime


def test_create_existing_opens_it(fsdir: Path) -> None:
    write_file(fsdir / "f", b"keep")
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        assert os.read(fd, 10) == b"keep"
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(fsdir / "f").st_mode) == 0o644  # mode only applies to a new file


def test_creat_truncates_existing(fsdir: Path) -> None:
    write_file(fsdir / "f", b"x" * 10000)
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)  # creat(2)
    os.close(fd)
    st = os.stat(fsdir / "f")
    assert (st.st_size, st.st_blocks) == (0, 0)
    assert (fsdir / "f").read_bytes() == b""


def test_excl_refuses_every_existing_name(fsdir: Path) -> None:
    write_file(fsdir / "file")
    (fsdir / "dir").mkdir()
    os.symlink("nowhere", fsdir / "dangling")
    os.symlink("file", fsdir / "link")
    for name in ("file", "dir", "dangling", "link"):
        fails(errno.EEXIST, os.open, fsdir / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    assert not (fsdir / "nowhere").exists()  # O_EXCL never follows the link


def test_excl_creates_new(fsdir: Path) -> None:
    os.close(os.open(fsdir / "f", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    assert stat.S_IMODE(os.stat(fsdir / "f").st_mode) == 0o600


def test_create_through_dangling_symlink_creates_target(fsdir: Path) -> None:
    os.symlink("target", fsdir / "link")
    os.close(os.open(fsdir / "link", os.O_CREAT | os.O_WRONLY, 0o600))
    assert stat.S_ISREG(os.lstat(fsdir / "target").st_mode)
    assert os.readlink(fsdir / "link") == "target"


def test_directory_cannot_be_opened_for_writing(fsdir: Path) -> None:
    (fsdir / "d").mkdir()
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_CREAT | os.O_WRONLY,
                  os.O_CREAT | os.O_RDONLY):  # O_CREAT on an existing directory, even read-only
        fails(errno.EISDIR, os.open, fsdir / "d", flags, 0o644)
    os.close(os.open(fsdir / "d", os.O_RDONLY))


def test_create_with_trailing_slash_is_eisdir(fsdir: Path) -> None:
    fails(errno.EISDIR, os.open, f"{fsdir}/new/", os.O_CREAT | os.O_WRONLY, 0o644)
    assert not (fsdir / "new").exists()


def test_missing_names_are_enoent(fsdir: Path) -> None:
    os.symlink("nowhere", fsdir / "dangling")
    fails(errno.ENOENT, os.open, fsdir / "missing", os.O_RDONLY)
    fails(errno.ENOENT, os.open, fsdir / "missing" / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    fails(errno.ENOENT, os.open, fsdir / "dangling", os.O_RDONLY)
    fails(errno.ENOENT, os.open, "", os.O_RDONLY)


def test_file_used_as_directory_is_enotdir(fsdir: Path) -> None:
    write_file(fsdir / "f")
    (fsdir / "d").mkdir()
    os.symlink("f", fsdir / "to-file")
    os.symlink("d", fsdir / "to-dir")
    fails(errno.ENOTDIR, os.open, fsdir / "f" / "x", os.O_RDONLY)
    fails(errno.ENOTDIR, os.open, fsdir / "f" / "x", os.O_CREAT | os.O_WRONLY, 0o644)
    fails(errno.ENOTDIR, os.open, f"{fsdir}/f/", os.O_RDONLY)
    fails(errno.ENOTDIR, os.open, fsdir / "f", os.O_RDONLY | os.O_DIRECTORY)
    fails(errno.ENOTDIR, os.open, fsdir / "to-file", os.O_RDONLY | os.O_DIRECTORY)
    os.close(os.open(fsdir / "to-dir", os.O_RDONLY | os.O_DIRECTORY))
    os.close(os.open(f"{fsdir}/d/", os.O_RDONLY))


def test_directory_with_create_is_einval(fsdir: Path) -> None:
    # Linux 6.4 and later: O_CREAT | O_DIRECTORY is refused outright.
    fails(errno.EINVAL, os.open, fsdir / "new", os.O_CREAT | os.O_DIRECTORY | os.O_RDONLY, 0o755)
    assert not (fsdir / "new").exists()


def test_nofollow(fsdir: Path) -> None:
    write_file(fsdir / "f", b"data")
    (fsdir / "d").mkdir()
    write_file(fsdir / "d" / "g", b"inner")
    os.symlink("f", fsdir / "link")
    os.symlink("d", fsdir / "dirlink")
    fails(errno.ELOOP, os.open, fsdir / "link", os.O_RDONLY | os.O_NOFOLLOW)
    fails(errno.ELOOP, os.open, fsdir / "link", os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644)
    fd = os.open(fsdir / "dirlink" / "g", os.O_RDONLY | os.O_NOFOLLOW)  # only the last component
    assert os.read(fd, 10) == b"inner"
    os.close(fd)
    fd = os.open(fsdir / "link", os.O_PATH | os.O_NOFOLLOW)
    try:
        assert stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def test_symlink_loops_are_eloop(fsdir: Path) -> None:
    os.symlink("b", fsdir / "a")
    os.symlink("a", fsdir / "b")
    os.symlink("self", fsdir / "self")
    fails(errno.ELOOP, os.open, fsdir / "a", os.O_RDONLY)
    fails(errno.ELOOP, os.open, fsdir / "self", os.O_CREAT | os.O_WRONLY, 0o644)
    fails(errno.ELOOP, os.stat, fsdir / "a")
    fails(errno.ELOOP, os.open, fsdir / "self" / "x", os.O_RDONLY)


def test_forty_symlinks_resolve_and_forty_one_do_not(fsdir: Path) -> None:
    write_file(fsdir / "l0", b"end")
    for i in range(1, 42):
        os.symlink(f"l{i - 1}", fsdir / f"l{i}")
    assert (fsdir / "l40").read_bytes() == b"end"  # MAXSYMLINKS is 40
    fails(errno.ELOOP, os.open, fsdir / "l41", os.O_RDONLY)


def test_long_names_are_enametoolong(fsdir: Path) -> None:
    os.close(os.open(fsdir / ("n" * 255), os.O_CREAT | os.O_WRONLY, 0o644))
    fails(errno.ENAMETOOLONG, os.open, fsdir / ("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644)
    fails(errno.ENAMETOOLONG, os.open, fsdir / ("n" * 256), os.O_RDONLY)
    fails(errno.ENAMETOOLONG, os.open, fsdir / ("n" * 256) / "x", os.O_RDONLY)
    deep = str(fsdir) + "/" + "/".join(["d" * 200] * 21)  # longer than PATH_MAX (4096)
    fails(errno.ENAMETOOLONG, os.open, deep, os.O_RDONLY)


def test_append_writes_at_end(fsdir: Path) -> None:
    write_file(fsdir / "f", b"0123")
    fd = os.open(fsdir / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"ab")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6
        os.pwrite(fd, b"cd", 0)  # Linux appends pwrite on O_APPEND descriptors too (open(2) BUGS)
    finally:
        os.close(fd)
    assert (fsdir / "f").read_bytes() == b"0123abcd"


def test_truncate_flag_marks_mtime_and_ctime(fsdir: Path) -> None:
    write_file(fsdir / "full", b"x" * 5000)
    write_file(fsdir / "empty", b"")
    for name in ("full", "empty"):
        age(fsdir / name)
        before = times(fsdir / name)
        os.close(os.open(fsdir / name, os.O_WRONLY | os.O_TRUNC))
        after = times(fsdir / name)
        assert os.stat(fsdir / name).st_size == 0
        assert after[0] == before[0], name
        assert after[1] > before[1] and after[2] > before[2], name


def test_truncate_flag_with_read_only_access(fsdir: Path) -> None:
    """Linux truncates on O_RDONLY | O_TRUNC too (POSIX leaves it unspecified), once the
    caller has passed the write permission check O_TRUNC implies."""
    write_file(fsdir / "f", b"x" * 5000)
    fd = os.open(fsdir / "f", os.O_RDONLY | os.O_TRUNC)
    try:
        assert os.read(fd, 100) == b""
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
    os.chmod(fsdir / "f", 0o644)
    write_file(fsdir / "f", b"y" * 10)
    assert errnos_as(["os.open(P, os.O_RDONLY | os.O_TRUNC)"], P=fsdir / "f") == ["EACCES"]
    assert (fsdir / "f").read_bytes() == b"y" * 10


def test_truncate_flag_leaves_special_files(fsdir: Path) -> None:
    os.mkfifo(fsdir / "fifo")
    fd = os.open(fsdir / "fifo", os.O_RDWR | os.O_TRUNC | os.O_NONBLOCK)
    os.close(fd)
    assert stat.S_ISFIFO(os.stat(fsdir / "fifo").st_mode)


def test_permission_errors_as_user(fsdir: Path) -> None:
    write_file(fsdir / "secret")
    os.chmod(fsdir / "secret", 0o600)
    write_file(fsdir / "readable")
    os.chmod(fsdir / "readable", 0o644)
    (fsdir / "closed").mkdir(mode=0o700)
    write_file(fsdir / "closed" / "f")
    (fsdir / "listonly").mkdir()
    os.chmod(fsdir / "listonly", 0o744)  # r without x: names can be read, not reached
    write_file(fsdir / "listonly" / "f")
    got = errnos_as([
        "os.open(D + '/secret', os.O_RDONLY)",
        "os.open(D + '/secret', os.O_WRONLY)",
        "os.open(D + '/readable', os.O_WRONLY)",
        "os.open(D + '/readable', os.O_RDWR)",
        "os.open(D + '/readable', os.O_RDONLY | os.O_TRUNC)",
        "os.close(os.open(D + '/readable', os.O_RDONLY))",
        "os.open(D + '/new', os.O_CREAT | os.O_WRONLY, 0o644)",
        "os.open(D + '/readable', os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)",
        "os.close(os.open(D + '/readable', os.O_CREAT | os.O_RDONLY, 0o644))",
        "os.open(D + '/closed/f', os.O_RDONLY)",
        "os.open(D + '/closed/new', os.O_CREAT | os.O_WRONLY, 0o644)",
        "os.open(D + '/listonly/f', os.O_RDONLY)",
        "os.listdir(D + '/listonly')",
        "os.open(D + '/readable', os.O_RDONLY | os.O_NOATIME)",
    ], D=str(fsdir))
    assert got == [
        "EACCES", "EACCES", "EACCES", "EACCES", "EACCES", "success", "EACCES", "EEXIST", "success",
        "EACCES", "EACCES", "EACCES", "success", "EPERM",
    ]
    assert not (fsdir / "new").exists()


def test_noatime_for_owner(fsdir: Path) -> None:
    write_file(fsdir / "f", b"abc")
    age(fsdir / "f")
    before = times(fsdir / "f")
    fd = os.open(fsdir / "f", os.O_RDONLY | os.O_NOATIME)
    try:
        assert os.read(fd, 10) == b"abc"
    finally:
        os.close(fd)
    assert times(fsdir / "f") == before


def test_tmpfile(fsdir: Path) -> None:
    """O_TMPFILE: a regular file without a name, gone when closed; the directory does not
    change (no entry, no times)."""
    age(fsdir)
    before = times(fsdir)
    fd = os.open(fsdir, os.O_TMPFILE | os.O_RDWR, 0o640)
    try:
        assert os.write(fd, b"anonymous") == 9
        assert os.pread(fd, 20, 0) == b"anonymous"
        st = os.fstat(fd)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
        assert (st.st_nlink, st.st_size, st.st_uid, st.st_gid) == (0, 9, os.getuid(), os.getgid())
        assert os.listdir(fsdir) == []
        assert times(fsdir)[1:] == before[1:]                  # listing it marks atime, nothing more
    finally:
        os.close(fd)
    assert os.listdir(fsdir) == [] and times(fsdir)[1:] == before[1:]


def test_tmpfile_errors(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    fails(errno.ENOTDIR, os.open, fsdir / "f", os.O_TMPFILE | os.O_RDWR, 0o600)
    fails(errno.ENOENT, os.open, fsdir / "missing", os.O_TMPFILE | os.O_RDWR, 0o600)
    fails(errno.EINVAL, os.open, fsdir, os.O_TMPFILE | os.O_RDONLY, 0o600)  # it must be writable
    os.chmod(fsdir, 0o555)
    try:
        assert errnos_as(["os.close(os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600))"], d=fsdir) == ["EACCES"]
    finally:
        os.chmod(fsdir, 0o755)

"""Extended attributes: setxattr(2), getxattr(2), listxattr(2), removexattr(2).

user.* attributes live on regular files and directories, under the file's permission
bits; trusted.* ones need CAP_SYS_ADMIN and are invisible to others. XATTR_CREATE fails
with EEXIST on an existing attribute, XATTR_REPLACE with ENODATA on a missing one.
Values are at most 64 KiB (E2BIG beyond), names at most 255 bytes (ERANGE beyond). A
change marks ctime only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from tests.posix.calls import GROUP, OTHER_USER, USER, age, errnos_as, fails, run_as, times
from tests.posix.conftest import Target

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def test_set_get_list_remove(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"content")
    os.mkdir(fsdir / "d")
    for path in (fsdir / "f", fsdir / "d"):
        os.setxattr(path, "user.a", b"1")
        os.setxattr(path, "user.binary", bytes(range(256)))
        os.setxattr(path, "user.empty", b"")
        assert os.getxattr(path, "user.a") == b"1"
        assert os.getxattr(path, "user.binary") == bytes(range(256))
        assert os.getxattr(path, "user.empty") == b""
        assert sorted(os.listxattr(path)) == ["user.a", "user.binary", "user.empty"]
        os.setxattr(path, "user.a", b"replaced, and longer")
        assert os.getxattr(path, "user.a") == b"replaced, and longer"
        os.removexattr(path, "user.a")
        fails(errno.ENODATA, os.getxattr, path, "user.a")
        assert sorted(os.listxattr(path)) == ["user.binary", "user.empty"]
    assert (fsdir / "f").read_bytes() == b"content"


def test_create_and_replace_flags(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.setxattr(fsdir / "f", "user.x", b"first", os.XATTR_CREATE)
    fails(errno.EEXIST, os.setxattr, fsdir / "f", "user.x", b"second", os.XATTR_CREATE)
    fails(errno.ENODATA, os.setxattr, fsdir / "f", "user.y", b"second", os.XATTR_REPLACE)
    os.setxattr(fsdir / "f", "user.x", b"third", os.XATTR_REPLACE)
    assert os.getxattr(fsdir / "f", "user.x") == b"third"
    assert os.listxattr(fsdir / "f") == ["user.x"]
    fails(errno.EINVAL, os.setxattr, fsdir / "f", "user.x", b"v", 4)


def test_missing_attributes_are_enodata(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    fails(errno.ENODATA, os.getxattr, fsdir / "f", "user.missing")
    fails(errno.ENODATA, os.removexattr, fsdir / "f", "user.missing")
    fails(errno.ENOENT, os.getxattr, fsdir / "missing", "user.x")
    fails(errno.ENOENT, os.listxattr, fsdir / "missing")


def test_size_limits(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    big = os.urandom(65536)
    os.setxattr(fsdir / "f", "user.big", big)
    assert os.getxattr(fsdir / "f", "user.big") == big
    fails(errno.E2BIG, os.setxattr, fsdir / "f", "user.bigger", big + b"x")
    name = "user." + "n" * 250  # 255 bytes
    os.setxattr(fsdir / "f", name, b"v")
    assert os.getxattr(fsdir / "f", name) == b"v"
    fails(errno.ERANGE, os.setxattr, fsdir / "f", name + "n", b"v")
    fails(errno.ERANGE, os.getxattr, fsdir / "f", name + "n")
    fails(errno.ERANGE, os.setxattr, fsdir / "f", "", b"v")
    assert sorted(os.listxattr(fsdir / "f")) == sorted(["user.big", name])


def test_small_buffers_are_erange(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.setxattr(fsdir / "f", "user.value", b"0123456789")
    path = os.fsencode(fsdir / "f")
    buf = ctypes.create_string_buffer(100)
    assert _libc.getxattr(path, b"user.value", None, 0) == 10  # size 0 asks for the size
    assert _libc.getxattr(path, b"user.value", buf, 4) == -1
    assert ctypes.get_errno() == errno.ERANGE
    assert _libc.getxattr(path, b"user.value", buf, 10) == 10 and buf.raw[:10] == b"0123456789"
    assert _libc.listxattr(path, None, 0) == len(b"user.value\0")
    assert _libc.listxattr(path, buf, 3) == -1
    assert ctypes.get_errno() == errno.ERANGE


def test_unknown_namespace_is_eopnotsupp(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    fails(errno.EOPNOTSUPP, os.setxattr, fsdir / "f", "nonsense.x", b"v")
    fails(errno.EOPNOTSUPP, os.getxattr, fsdir / "f", "nonsense.x")
    fails(errno.EOPNOTSUPP, os.setxattr, fsdir / "f", "noprefix", b"v")
    fails(errno.EINVAL, os.setxattr, fsdir / "f", "user.", b"v")  # a namespace, no name
    fails(errno.EINVAL, os.getxattr, fsdir / "f", "trusted.")
    assert os.listxattr(fsdir / "f") == []


def test_user_attributes_only_on_files_and_directories(fsdir: Path) -> None:
    os.symlink("nowhere", fsdir / "link")
    os.mkfifo(fsdir / "fifo")
    for name in ("link", "fifo"):
        fails(errno.EPERM, os.setxattr, fsdir / name, "user.x", b"v", follow_symlinks=False)
        fails(errno.ENODATA, os.getxattr, fsdir / name, "user.x", follow_symlinks=False)
    os.setxattr(fsdir / "link", "trusted.x", b"v", follow_symlinks=False)  # other namespaces may
    assert os.getxattr(fsdir / "link", "trusted.x", follow_symlinks=False) == b"v"


def test_trusted_attributes(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.chmod(fsdir / "f", 0o666)
    os.setxattr(fsdir / "f", "trusted.secret", b"root only")
    os.setxattr(fsdir / "f", "user.public", b"anyone")
    assert sorted(os.listxattr(fsdir / "f")) == ["trusted.secret", "user.public"]
    got = run_as([
        "os.getxattr(P, 'trusted.secret')",
        "os.setxattr(P, 'trusted.mine', b'v')",
        "os.removexattr(P, 'trusted.secret')",
        "os.getxattr(P, 'user.public')",
        "sorted(os.listxattr(P))",
    ], P=fsdir / "f")
    assert [code for code, _ in got] == [errno.ENODATA, errno.EPERM, errno.EPERM, 0, 0]
    assert got[3][1] == b"anyone"
    assert got[4][1] == ["user.public"]  # trusted.* names are hidden from other users
    assert os.getxattr(fsdir / "f", "trusted.secret") == b"root only"


def test_permissions_as_user(fsdir: Path) -> None:
    for name, mode, owner in (("readable", 0o644, 0), ("private", 0o600, 0), ("writable", 0o666, 0),
                              ("mine", 0o400, USER)):
        (fsdir / name).write_bytes(b"")
        os.setxattr(fsdir / name, "user.x", b"v")
        os.chmod(fsdir / name, mode)
        os.chown(fsdir / name, owner, GROUP if owner else 0)
    os.mkdir(fsdir / "sticky")
    os.chmod(fsdir / "sticky", 0o1777)
    os.chown(fsdir / "sticky", OTHER_USER, GROUP)
    got = errnos_as([
        "os.getxattr(D + '/readable', 'user.x')",
        "os.setxattr(D + '/readable', 'user.x', b'w')",
        "os.getxattr(D + '/private', 'user.x')",
        "os.listxattr(D + '/private')",  # listing needs no permission
        "os.setxattr(D + '/writable', 'user.x', b'w')",
        "os.removexattr(D + '/readable', 'user.x')",
        "os.setxattr(D + '/mine', 'user.x', b'w')",  # the owner too needs write permission
        "os.setxattr(D + '/sticky', 'user.x', b'w')",  # a sticky directory: only its owner
    ], D=str(fsdir))
    assert got == ["success", "EACCES", "EACCES", "success", "success", "EACCES", "EACCES", "EPERM"]
    assert os.getxattr(fsdir / "writable", "user.x") == b"w"


def test_change_marks_ctime_only(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    for call in (lambda: os.setxattr(fsdir / "f", "user.x", b"v"),
                 lambda: os.setxattr(fsdir / "f", "user.x", b"other"),
                 lambda: os.removexattr(fsdir / "f", "user.x")):
        age(fsdir / "f")
        before = times(fsdir / "f")
        call()
        after = times(fsdir / "f")
        assert after[:2] == before[:2] and after[2] > before[2]


def test_attributes_belong_to_the_inode(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.setxattr(fsdir / "f", "user.x", b"v")
    os.link(fsdir / "f", fsdir / "g")
    os.rename(fsdir / "f", fsdir / "h")
    assert os.getxattr(fsdir / "g", "user.x") == b"v"
    assert os.getxattr(fsdir / "h", "user.x") == b"v"
    fd = os.open(fsdir / "g", os.O_RDONLY)
    try:
        os.unlink(fsdir / "g")
        os.unlink(fsdir / "h")
        os.setxattr(fd, "user.y", b"w")
        assert sorted(os.listxattr(fd)) == ["user.x", "user.y"]
    finally:
        os.close(fd)
    (fsdir / "f").write_bytes(b"")  # a new inode under an old name has none
    assert os.listxattr(fsdir / "f") == []


def test_posix_acls(fsdir: Path, target: Target) -> None:
    (fsdir / "f").write_bytes(b"")
    acl = bytes.fromhex("02000000" "01000600ffffffff" "04000400ffffffff" "20000400ffffffff")  # u::rw-,g::r--,o::r--
    if target.kind == "cfs":
        # Divergence: cfs does not implement POSIX ACLs (the kernel would not enforce them:
        # the adapter does not enable FUSE ACL support), so their names are refused.
        fails(errno.EOPNOTSUPP, os.setxattr, fsdir / "f", "system.posix_acl_access", acl)
        return
    os.setxattr(fsdir / "f", "system.posix_acl_access", acl)

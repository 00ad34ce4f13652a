"""Extended attributes without FUSE: create and replace flags, ENODATA, size limits, the
namespaces Linux knows, trusted names, the node root."""

from __future__ import annotations

import errno
import os

import pytest

from cfs.errors import Exists, FsError, NoAttribute, NotFound, NotPermitted, NotSupported
from cfs.types import NODE_ROOT, InodeId, volume_root

from unit_support import OLD, Vol, age


def test_xattr_create_and_replace_flags(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"f")
    age(vol, ino)
    fs.setxattr(ino, b"user.a", b"1", os.XATTR_CREATE)
    assert vol.inode(ino).ctime_ns > OLD
    with pytest.raises(Exists):
        fs.setxattr(ino, b"user.a", b"2", os.XATTR_CREATE)
    with pytest.raises(NoAttribute) as caught:
        fs.setxattr(ino, b"user.b", b"2", os.XATTR_REPLACE)
    assert caught.value.errno == errno.ENODATA
    assert fs.getxattr(ino, b"user.a") == b"1"
    fs.setxattr(ino, b"user.a", b"3", os.XATTR_REPLACE)
    fs.setxattr(ino, b"user.empty", b"", 0)
    assert fs.getxattr(ino, b"user.a") == b"3"
    assert fs.getxattr(ino, b"user.empty") == b""
    assert fs.listxattr(ino) == [b"user.a", b"user.empty"]


def test_xattr_missing_is_enodata(vol: Vol) -> None:
    ino = vol.create(b"f")
    for call in (lambda: vol.fs.getxattr(ino, b"user.none"), lambda: vol.fs.removexattr(ino, b"user.none")):
        with pytest.raises(NoAttribute) as caught:
            call()
        assert caught.value.errno == errno.ENODATA
    vol.fs.setxattr(ino, b"user.x", b"v", 0)
    vol.fs.removexattr(ino, b"user.x")
    assert vol.fs.listxattr(ino) == []
    with pytest.raises(NoAttribute):
        vol.fs.getxattr(ino, b"user.x")


def test_xattr_size_limits(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"f")
    fs.setxattr(ino, b"user." + b"n" * 250, b"v" * 65536, 0)
    assert fs.getxattr(ino, b"user." + b"n" * 250) == b"v" * 65536
    for name, value, code in [(b"user." + b"n" * 251, b"v", errno.ERANGE),
                              (b"", b"v", errno.ERANGE),
                              (b"user.big", b"v" * 65537, errno.E2BIG)]:
        with pytest.raises(FsError) as caught:
            fs.setxattr(ino, name, value, 0)
        assert caught.value.errno == code
    assert fs.listxattr(ino) == [b"user." + b"n" * 250]


def test_system_xattrs_are_not_supported(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"f")
    for call in (lambda: fs.setxattr(ino, b"system.posix_acl_access", b"\x02", 0),
                 lambda: fs.getxattr(ino, b"system.posix_acl_access"),
                 lambda: fs.removexattr(ino, b"system.posix_acl_default")):
        with pytest.raises(NotSupported) as caught:
            call()
        assert caught.value.errno == errno.EOPNOTSUPP
    assert fs.listxattr(ino) == []


def test_xattrs_of_missing_inodes_are_not_found(vol: Vol) -> None:
    with pytest.raises(NotFound):
        vol.fs.getxattr(InodeId(volume_root(vol.slot) + 999), b"user.a")


def test_node_root_exists_for_xattr_calls(vol: Vol) -> None:
    """ls -l and getfattr on the FUSE mount point ask for attributes of the node root."""
    assert vol.fs.listxattr(NODE_ROOT) == []
    with pytest.raises(NoAttribute):
        vol.fs.getxattr(NODE_ROOT, b"security.selinux")
    with pytest.raises(NotPermitted):
        vol.fs.setxattr(NODE_ROOT, b"user.a", b"b", 0)


# --- found by the POSIX suite (tests/posix), where cfs differed from tmpfs ----------------------

def test_xattr_names_outside_linux_namespaces_are_not_supported(vol: Vol) -> None:
    ino = vol.create(b"f")
    for name, code in ((b"nonsense.x", errno.EOPNOTSUPP), (b"noprefix", errno.EOPNOTSUPP),
                       (b"user.", errno.EINVAL), (b"trusted.", errno.EINVAL)):
        with pytest.raises(FsError) as caught:
            vol.fs.setxattr(ino, name, b"v", 0)
        assert caught.value.errno == code, name
    vol.fs.setxattr(ino, b"security.x", b"v", 0)
    assert vol.fs.listxattr(ino) == [b"security.x"]


def test_listxattr_leaves_out_trusted_names_for_unprivileged_callers(vol: Vol) -> None:
    ino = vol.create(b"f")
    vol.fs.setxattr(ino, b"trusted.t", b"v", 0)
    vol.fs.setxattr(ino, b"user.u", b"v", 0)
    assert vol.fs.listxattr(ino) == [b"trusted.t", b"user.u"]
    assert vol.fs.listxattr(ino, trusted=False) == [b"user.u"]

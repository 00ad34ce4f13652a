"""Extended attributes, stored per inode under ``ino + name``.

The kernel enforces the namespace rules (trusted.* needs CAP_SYS_ADMIN, user.* only on
regular files and directories); this module enforces sizes, the create/replace flags and
the namespaces themselves: FUSE passes every name on, where Linux's own filesystems know
only user., trusted., security. and system. and answer EOPNOTSUPP to anything else.
POSIX ACL names (system.*) are refused with EOPNOTSUPP because cfs does not implement
ACLs: storing them would pretend to enforce permissions that nobody enforces.
"""

from __future__ import annotations

import errno
import os

from cfs.codec import ino_key, ino_name_key, pack_u64
from cfs.errors import Exists, FsError, InvalidArgument, NameTooLong, NoAttribute, NotSupported
from cfs.store import Op, Table, View
from cfs.types import InodeId

XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
NAMESPACES = (b"user.", b"trusted.", b"security.")
TRUSTED = b"trusted."


def _check_name(name: bytes) -> None:
    if not name:
        raise FsError("empty attribute name", errno=errno.ERANGE)  # as Linux answers
    if len(name) > XATTR_NAME_MAX:
        raise NameTooLong("attribute name longer than 255 bytes", errno=errno.ERANGE)
    if not name.startswith(NAMESPACES):
        raise NotSupported(f"attribute namespace of {name!r} is not supported")
    if name in NAMESPACES:
        raise InvalidArgument(f"attribute name {name!r} is a namespace alone")


def get(view: View, ino: InodeId, name: bytes) -> bytes:
    _check_name(name)
    value = view.get(Table.XATTRS, ino_name_key(ino, name))
    if value is None:
        raise NoAttribute(f"no attribute {name!r}")
    return bytes(value)


def put(op: Op, ino: InodeId, name: bytes, value: bytes, flags: int) -> None:
    _check_name(name)
    if len(value) > XATTR_SIZE_MAX:
        raise FsError("attribute value larger than 64 KiB", errno=errno.E2BIG)
    key = ino_name_key(ino, name)
    present = op.get(Table.XATTRS, key) is not None
    if flags & os.XATTR_CREATE and present:
        raise Exists(f"attribute {name!r} exists")
    if flags & os.XATTR_REPLACE and not present:
        raise NoAttribute(f"no attribute {name!r}")
    op.put(Table.XATTRS, key, value)


def remove(op: Op, ino: InodeId, name: bytes) -> None:
    _check_name(name)
    if not op.delete(Table.XATTRS, ino_name_key(ino, name)):
        raise NoAttribute(f"no attribute {name!r}")


def names(view: View, ino: InodeId) -> list[bytes]:
    return [bytes(key[8:]) for key, _ in view.range(Table.XATTRS, ino_key(ino), pack_u64(ino + 1))]

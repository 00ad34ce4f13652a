"""Directory entries the kernel lists without making inodes of them.

pyfuse3 answers every listing with READDIRPLUS (it turns the kernel's
``FUSE_CAP_READDIRPLUS_AUTO`` off), so for each entry the kernel builds a dentry and an
inode and holds a lookup that cfs must count, and cfs loads and encodes all the
entry's attributes. That is what makes ``ls -l`` cheap; a plain listing (``ls``,
``os.scandir``, ``find`` going by d_type) pays it for nothing: listing a 100,000-entry
directory took 14–17 µs per entry here (11–15 in the daemon, 2–3 in the kernel),
where bindfs, answering plain READDIR, takes 1–2.

The FUSE protocol has an answer: a READDIRPLUS entry whose node id is 0 is listed
(name, d_ino, d_type) but not linked, "the filesystem did not want to return
attributes for this entry" (``fuse_direntplus_link`` in the kernel; libfuse's
high-level API sends such entries). pyfuse3's ``EntryAttributes`` sets the node id
and ``st_ino`` together; ``NameOnlyEntries`` writes the node id of one long-lived
instance back to 0 after setting ``st_ino``. Where that field lies inside the object
is found once, by writing two marker values through the public setters and searching
the object's bytes for them in the order ``fuse_entry_param`` has them (``ino``,
then ``generation``), and checked by reading ``st_ino`` back as 0 while the marker
is still found at ``attr.st_ino``. If anything is not as expected, ``NameOnlyEntries.
create`` returns None and every listing stays READDIRPLUS.

Which replies get names only follows the kernel's own ``READDIRPLUS_AUTO`` rule
(``fuse_use_readdirplus``), a little more eagerly: the first reply of a listing has
attributes, and so does every later one once a lookup in that directory came in since
the listing began (a program that stats what it lists, ``ls -l``; the kernel's rule
would alternate, since the entries of a reply with attributes need no lookup).
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Iterable

import pyfuse3

log = logging.getLogger(__name__)

_INO_MARK = 0x1BAD_C0DE_5EED_0001
_GENERATION_MARK = 0x0DDB_A11C_AFE0_0002


def node_id_offset(kind: type = pyfuse3.EntryAttributes) -> int | None:
    """Where ``fuse_param.ino`` lies in a ``kind`` object, or None if not found."""
    probe = kind()
    probe.st_ino = _INO_MARK
    probe.generation = _GENERATION_MARK
    size = type(probe).__basicsize__
    ino = _INO_MARK.to_bytes(8, sys.byteorder)
    pair = ino + _GENERATION_MARK.to_bytes(8, sys.byteorder)
    raw = ctypes.string_at(id(probe), size)
    at = raw.find(pair)
    if at < 0 or at % 8 or raw.count(pair) != 1 or raw.count(ino) != 2:
        return None
    ctypes.c_uint64.from_address(id(probe) + at).value = 0
    after = ctypes.string_at(id(probe), size)
    if probe.st_ino != 0 or after.count(ino) != 1 or after.find(ino) <= at:
        return None
    return at


class NameOnlyEntries:
    """Entries for ``readdir_reply`` that carry a name, d_ino and d_type, and no node id.

    One ``EntryAttributes`` is reused: ``readdir_reply`` copies it into the reply
    buffer at once.
    """

    def __init__(self, offset: int) -> None:
        self._entry = pyfuse3.EntryAttributes()
        self._node_id = ctypes.c_uint64.from_address(id(self._entry) + offset)

    @classmethod
    def create(cls) -> "NameOnlyEntries | None":
        offset = node_id_offset()
        if offset is None:
            log.warning("pyfuse3's EntryAttributes is not laid out as expected: "
                        "every listing returns attributes (READDIRPLUS)")
            return None
        return cls(offset)

    def reply(self, token: pyfuse3.ReaddirToken, entries: Iterable[tuple[bytes, int, int, int]],
              shift: int = 0) -> None:
        """Hand (name, ino, mode, cookie) entries to ``readdir_reply``, each at offset
        cookie + ``shift``, until the kernel's buffer is full; only the file type of
        ``mode`` reaches the kernel."""
        entry, node_id, add = self._entry, self._node_id, pyfuse3.readdir_reply
        for name, ino, mode, cookie in entries:
            entry.st_ino = ino
            entry.st_mode = mode
            node_id.value = 0
            if not add(token, name, entry, cookie + shift):
                return

    def __call__(self, ino: int, mode: int) -> pyfuse3.EntryAttributes:
        """The shared entry, set to ``ino`` and ``mode`` (with node id 0): one entry at a
        time, where ``reply`` does the same inline for a whole listing."""
        entry = self._entry
        entry.st_ino = ino
        entry.st_mode = mode
        self._node_id.value = 0
        return entry

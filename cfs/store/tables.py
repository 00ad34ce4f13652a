"""The sub-databases of a node's LMDB environment (see docs/DESIGN.md, "On-disk layout").

Per-volume tables are keyed by a node inode number (8 bytes, big-endian) first, so one
volume's rows are one contiguous key range (its slot) and every change to them is
recorded in the volume's change log. Node tables are not logged.
"""

from __future__ import annotations

import enum


class Table(enum.IntEnum):
    # per-volume tables: the value is the id used in change-log rows
    INODES = 1      # ino -> Inode record
    DIRENTS = 2     # parent ino + name -> local child ino + cookie
    DIRORDER = 3    # parent ino + cookie -> name (readdir order)
    BLOCKS = 4      # ino + block number -> chunk id + stored length
    XATTRS = 5      # ino + name -> value
    SYMLINKS = 6    # ino -> target
    # node tables: never logged
    META = 20       # b"schema", b"node_id", b"next_slot"
    VOLUMES = 21    # volume name (utf-8) -> VolumeRecord
    VOLSLOTS = 22   # slot -> volume name
    VOLSTATE = 23   # slot -> VolumeState
    ORPHANS = 24    # ino -> b"" : unlinked inodes still open when last committed
    CHUNKS = 25     # chunk id -> header + bytes
    CHUNKREFS = 26  # chunk id -> refcount + length
    CHANGELOG = 27  # slot + sequence number -> Change
    MOUNTS = 28     # mount point (bytes) -> volume name: what this node should have mounted
    PLUGIN_HOLDS = 29  # volume name -> the Docker mount IDs holding it (the plugin's reference counts)
    VOLIDS = 30     # volume id (16 bytes) -> volume name: find a peer's volume by its cluster identity
    VOLREPL = 31    # slot -> ReplState: fencing epoch, whether replicas hold the checkpoint back
    REMOTE = 32     # chunk id -> b"": referenced here but its bytes live on replicas (fetch on read)
    STAGED = 33     # chunk id -> time_ns: pushed by a peer ahead of the log record that references it
    FENCES = 34     # volume id -> epoch: fences seen for volumes this node holds no copy of (yet)
    REMOVALS = 35   # volume name -> JSON: a removal begun and not finished (finished at the next start)
    PUBLICATIONS = 36  # volume name -> replicas: a snapshot or clone made here, not yet in the catalog

    @property
    def per_volume(self) -> bool:
        return self in PER_VOLUME


PER_VOLUME = frozenset(t for t in Table if t.value < 20)
"""The per-volume tables; a set lookup, where the hot write path asks (an enum property
costs ~0.8 us, and a changing operation asks for every row it writes)."""


SCHEMA_VERSION = 4
"""2: readdir-order rows hold the child's number and type before the name
(``codec.encode_order``). 3: block rows may carry patches (``codec.encode_block``,
version-2 rows). 4: the catalog may hold snapshots (``volume@snapshot``, read-only:
``cfs.store.snapshots``), and block rows may reserve their block (fallocate, version-3
rows). A store of schema 1 to 3 is taken as it is and marked 4: its rows are still
read, and new ones are written in the new layouts. The mark is what makes a cfs older
than a schema refuse the store instead of reporting rows of a newer layout as damaged,
or writing into a snapshot it takes for a volume."""

UPGRADABLE_SCHEMAS = frozenset({1, 2, 3})

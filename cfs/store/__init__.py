"""The storage layer: the only package that imports lmdb.

``Store`` owns the LMDB environment and its write batch; ``Op`` is one filesystem
operation's unit of work inside it, ``View`` a read of it; ``chunks`` keeps
content-addressed chunks with reference counts; ``catalog`` keeps the volume records;
``changelog`` the per-volume change logs; ``replica`` replays change logs received
from peers. ``NodeRecords`` is the daemon's one door into all of it.
"""

from cfs.store.store import Op, Store, StoreConfig, View
from cfs.store.tables import Table
from cfs.store import catalog, changelog, chunks, replica, snapshots  # noqa: E402  (they import Op from above)
from cfs.store.node import CopySource, NodeRecords, Removal  # noqa: E402  (it imports the modules above)

__all__ = ["CopySource", "NodeRecords", "Op", "Removal", "Store", "StoreConfig", "Table", "View", "catalog",
           "changelog", "chunks", "replica", "snapshots"]

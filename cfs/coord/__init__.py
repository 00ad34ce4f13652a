"""Cluster coordination: node membership, the volume catalog, volume leases with epochs.

``api`` defines the interface and its data types; ``etcd`` implements it on etcd (a
cluster), ``local`` in a JSON file (a single node, the default without ``--etcd``).
This package imports neither lmdb nor pyfuse3: it sits beside the store, below the
filesystem and replication layers that use it.
"""

from cfs.coord.api import (
    Attachment,
    Coordinator,
    Holder,
    Lease,
    NodeId,
    NodeInfo,
    NodeSession,
    NodeState,
    NodeStatus,
    VolumeSpec,
)
from cfs.coord.etcd import EtcdCoordinator
from cfs.coord.local import LocalCoordinator

__all__ = [
    "Attachment", "Coordinator", "EtcdCoordinator", "Holder", "Lease", "LocalCoordinator", "NodeId", "NodeInfo",
    "NodeSession", "NodeState", "NodeStatus", "VolumeSpec",
]

"""The coordination interface: node membership, the volume catalog, volume leases.

Two implementations share it: ``cfs.coord.etcd`` (a cluster, state in etcd) and
``cfs.coord.local`` (one node, state in a JSON file: the embedded default without
``--etcd``). Callers see the same semantics from both:

* **Membership.** ``Coordinator.register(node)`` returns a ``NodeSession``; its
  ``run_keepalive`` task (started in the caller's nursery) keeps the registration
  alive. A node whose registration is lost (etcd unreachable for longer than the TTL,
  or the lease expired) sees ``session.lost`` set: its volume leases are gone and it
  must stop writing. ``Coordinator.session(node)`` does register, keepalive and a clean
  unregister in one ``async with``. ``nodes()`` lists every node ever registered: up,
  down since its last sign of life, or draining.
* **Catalog.** Volume specs by name; ``create_volume`` is atomic (``VolumeExists``),
  ``update_volume`` replaces a spec (a size limit raised) if it is still the one read.
* **Attachments** (CSI's ControllerPublishVolume): which node may mount a volume, and
  whether read-only. A volume is attached to one live node at a time, whatever the mode
  (a cfs mount, read-only or not, takes the volume's lease): ``attach`` to a second live
  node raises ``AttachedElsewhere``; attachments of nodes that are down do not count and
  go with the next ``attach``. They are persistent (no etcd lease): a node that restarts
  finds its attachments, and the orchestrator removes them (``detach``).
* **Volume leases with fencing epochs.** ``session.acquire(name)`` makes this node the
  volume's only writer and returns a ``Lease`` whose ``epoch`` is higher than every
  epoch handed out for that name before (epochs survive restarts and volume deletion).
  A live other holder makes it fail with ``LeaseHeld`` naming the holder, unless
  ``takeover=True``. A holder that dies loses its leases with its registration. The
  data plane fences writes by epoch; ``lease_lost``/``wait_lease_lost`` tell a holder
  that someone else took over.

Error handling: transient failures of the coordination store are retried with backoff
until a deadline, then raised as ``EtcdUnavailable`` (an ``Unavailable``); replies that
make no sense raise ``CoordError``; a session that lost its registration raises
``RegistrationLost`` from every call that needs it. No call waits without a bound.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Self

import trio

from cfs.errors import Unavailable
from cfs.types import NodeId as NodeId, VolumeId  # NodeId re-exported: part of the coordinator API

log = logging.getLogger(__name__)


NODE_ID_LEN = 16
VOLUME_ID_LEN = 16


class NodeState(enum.Enum):
    UP = "up"
    DOWN = "down"
    DRAINING = "draining"


@dataclass(frozen=True)
class NodeInfo:
    """What a node announces when it registers."""

    node_id: NodeId
    address: str
    """Where peers reach its data plane, ``host:port``."""
    capacity: int = 0
    """Bytes the node can store."""
    chunks: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.node_id) != NODE_ID_LEN:
            raise ValueError(f"node id must be {NODE_ID_LEN} bytes, got {len(self.node_id)}")


@dataclass(frozen=True)
class NodeStatus:
    """A node as ``Coordinator.nodes()`` sees it.

    ``last_seen_ns`` is wall-clock time of the node's last stats refresh (the keepalive
    task writes it every few seconds), so for a node that is down it says since when,
    to within that interval.
    """

    node_id: NodeId
    address: str
    capacity: int
    chunks: int
    labels: Mapping[str, str]
    alive: bool
    draining: bool
    registered_ns: int
    last_seen_ns: int

    @property
    def state(self) -> NodeState:
        if not self.alive:
            return NodeState.DOWN
        return NodeState.DRAINING if self.draining else NodeState.UP

    @property
    def down_since_ns(self) -> int | None:
        return None if self.alive else self.last_seen_ns


@dataclass(frozen=True)
class VolumeSpec:
    """A volume's cluster-wide definition, as stored in the catalog."""

    volume_id: VolumeId
    block_size: int
    replicas: int
    options: Mapping[str, str]
    created_ns: int

    def __post_init__(self) -> None:
        if len(self.volume_id) != VOLUME_ID_LEN:
            raise ValueError(f"volume id must be {VOLUME_ID_LEN} bytes, got {len(self.volume_id)}")
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {self.replicas}")

    def to_json(self) -> dict[str, object]:
        return {"volume_id": self.volume_id.hex(), "block_size": self.block_size,
                "replicas": self.replicas, "options": dict(self.options), "created_ns": self.created_ns}

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> VolumeSpec:
        """Raises KeyError/TypeError/ValueError on a malformed record; callers wrap them."""
        options = raw["options"]
        if not isinstance(options, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
            raise ValueError("options must map strings to strings")
        return cls(volume_id=VolumeId(bytes.fromhex(_str(raw["volume_id"]))),
                   block_size=_int(raw["block_size"]), replicas=_int(raw["replicas"]),
                   options=dict(options), created_ns=_int(raw["created_ns"]))


@dataclass(frozen=True)
class Attachment:
    """Volume ``volume`` attached to node ``node_id``: that node may mount it."""

    volume: str
    node_id: NodeId
    read_only: bool
    attached_ns: int

    def to_json(self) -> dict[str, object]:
        return {"read_only": self.read_only, "attached_ns": self.attached_ns}

    @classmethod
    def from_json(cls, volume: str, node_hex: str, raw: object) -> Attachment:
        """Raises KeyError/TypeError/ValueError on a malformed record; callers wrap them."""
        if not isinstance(raw, Mapping):
            raise TypeError(f"attachment of {volume!r} to {node_hex} is not an object")
        read_only = raw["read_only"]
        if not isinstance(read_only, bool):
            raise TypeError(f"read_only of the attachment of {volume!r} to {node_hex} is not a boolean")
        node_id = NodeId(bytes.fromhex(node_hex))
        if len(node_id) != NODE_ID_LEN:
            raise ValueError(f"node id {node_hex!r} is not {NODE_ID_LEN} bytes")
        return cls(volume, node_id, read_only, _int(raw["attached_ns"]))


@dataclass(frozen=True)
class Lease:
    """The right of ``node_id`` to write ``volume``, fenced by ``epoch``."""

    volume: str
    node_id: NodeId
    epoch: int


@dataclass(frozen=True)
class Holder:
    """Who holds a volume's lease, as ``Coordinator.holder`` sees it.

    ``alive`` is False for a lease recorded by a holder that is gone (a previous run of
    the node, or a node whose registration has not expired yet although it registered
    again since): such a lease is taken without ``takeover``.
    """

    lease: Lease
    address: str
    alive: bool


class NodeSession(abc.ABC):
    """One registration of one node, and the volume leases it holds.

    Resource handling: ``run_keepalive`` must run (in the caller's nursery) for the
    registration to stay alive; cancelling it stops the keepalive without unregistering,
    as a crash would. ``unregister`` ends the registration at once and releases every
    lease the session holds.
    """

    node: NodeInfo
    lost: trio.Event
    """Set when the registration is gone (expired, or etcd unreachable for a TTL)."""

    @abc.abstractmethod
    async def run_keepalive(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the registration alive until cancelled; on loss set ``lost`` and return."""

    @abc.abstractmethod
    async def update_stats(self, *, capacity: int, chunks: int) -> None:
        """Publish the node's capacity and chunk count (``nodes()`` shows them)."""

    @abc.abstractmethod
    async def acquire(self, volume: str, *, takeover: bool = False) -> Lease:
        """Become the volume's writer with a new, higher epoch.

        Raises ``VolumeNotFound``; ``LeaseHeld`` if another live node holds the lease
        and ``takeover`` is False; ``RegistrationLost``. If this session holds the lease
        already, returns that lease unchanged.
        """

    @abc.abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Give the lease up; False (and nothing changes) if it is not held any more."""

    @abc.abstractmethod
    async def lease_lost(self, lease: Lease) -> bool:
        """True once ``lease`` is no longer the volume's current lease."""

    @abc.abstractmethod
    async def unregister(self) -> None:
        """Leave: the node shows down and its leases are released. Best effort: if the
        store is unreachable, the registration expires on its own after the TTL."""

    async def wait_lease_lost(self, lease: Lease, *, interval: float = 1.0) -> None:
        """Return once ``lease`` is lost (taken over, released, or the registration lost).

        Polls every ``interval`` seconds. A poll that fails with ``Unavailable`` is not
        an answer: the loss of the registration ends the wait in that case.
        """
        while not self.lost.is_set():
            try:
                if await self.lease_lost(lease):
                    return
            except Unavailable as exc:
                log.debug("lease poll for %s failed: %s", lease.volume, exc)
            with trio.move_on_after(interval):
                await self.lost.wait()


class Coordinator(abc.ABC):
    """Cluster-wide state shared by the nodes; one instance per process."""

    @abc.abstractmethod
    async def register(self, node: NodeInfo) -> NodeSession:
        """Announce ``node``; run the returned session's ``run_keepalive`` right away."""

    @asynccontextmanager
    async def session(self, node: NodeInfo) -> AsyncIterator[NodeSession]:
        """Register ``node``, keep it alive in a nursery of our own, unregister on exit.

        The body is not cancelled when the registration is lost: watch ``lost``.
        """
        session = await self.register(node)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run_keepalive)
                try:
                    yield session
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await session.unregister()

    @abc.abstractmethod
    async def nodes(self) -> list[NodeStatus]:
        """Every node ever registered, ordered by node id."""

    @abc.abstractmethod
    async def set_draining(self, node_id: NodeId, draining: bool) -> None:
        """Mark a node as draining (or not). Raises ``NodeNotFound``."""

    @abc.abstractmethod
    async def create_volume(self, name: str, spec: VolumeSpec) -> None:
        """Add ``name`` to the catalog; ``VolumeExists`` if it is there already."""

    @abc.abstractmethod
    async def get_volume(self, name: str) -> VolumeSpec | None:
        ...

    @abc.abstractmethod
    async def list_volumes(self) -> dict[str, VolumeSpec]:
        ...

    @abc.abstractmethod
    async def update_volume(self, name: str, spec: VolumeSpec, *, expected: VolumeSpec) -> bool:
        """Replace the catalog entry of ``name`` with ``spec`` if it is still ``expected``
        (the entry the caller read and changed); False, and nothing changes, if it is
        neither that nor ``spec`` already (True: a retried update is done).

        Raises ``VolumeNotFound`` if there is no entry, or ``spec`` is of another volume
        (another id): an update never turns one volume into another.
        """

    @abc.abstractmethod
    async def delete_volume(self, name: str) -> None:
        """Remove ``name`` from the catalog, with its attachments.

        Raises ``VolumeNotFound``, and ``VolumeBusy`` while a live node holds its lease
        (release it first) or is attached to it (detach it first). The volume's epoch
        counter stays, so a volume created again under the name continues above every
        epoch the old one handed out.
        """

    @abc.abstractmethod
    async def attach(self, name: str, node_id: NodeId, *, read_only: bool) -> Attachment:
        """Attach volume ``name`` to node ``node_id``; idempotent: the same attachment
        again returns the one recorded.

        Raises ``VolumeNotFound``; ``NodeNotFound`` for a node never registered;
        ``AttachmentMismatch`` if the node is attached in the other mode; ``AttachedElsewhere``
        if another live node is attached. Attachments of nodes that are down are dropped
        in the same change: the volume moves.
        """

    @abc.abstractmethod
    async def detach(self, name: str, node_id: NodeId | None = None) -> int:
        """Drop the attachment of ``name`` to ``node_id`` (None: to every node); how many
        went. Nothing to drop, or no such volume, is no error: 0."""

    @abc.abstractmethod
    async def attachments(self, name: str | None = None) -> list[Attachment]:
        """The attachments of volume ``name``, or of every volume, by volume and node."""

    @abc.abstractmethod
    async def holder(self, name: str) -> Holder | None:
        """The volume's recorded lease holder, if any."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release the coordinator's resources (connections, file locks)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value

"""The embedded coordinator: one node, no etcd, state in a JSON file.

A node started without ``--etcd`` runs the same code paths as a cluster node against
this implementation of ``cfs.coord.api``. There is one node and it is always up while
it is registered; a volume's lease is never held by anyone else, so ``acquire`` never
raises ``LeaseHeld``, but epochs still only increase, across restarts too: a lease
recorded by a previous run of the node is dead and the next ``acquire`` bumps it.

The state file ``coord.json`` in ``directory`` (version 1) holds the nodes ever
registered, the volume specs, the last epoch of every volume name, the current holders,
and the volumes' attachments (added later: a file without them has none). Every change
writes a new file and renames it over the old one (write, fsync, rename, fsync of the
directory), so after a crash the file is the old state or the new, whole. A lock file
(``flock``) keeps a second process from opening the same directory.

Concurrency: the state changes only on the trio thread and without an ``await``
between reading the state and writing it, so calls are atomic with respect to each
other. The file is small; its write and fsync run on the trio thread like the store's
commits. A change is built on a copy and becomes the current state only once written,
so a failed write (ENOSPC) leaves the state as it was.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import trio

from cfs.coord.api import (
    Attachment,
    Coordinator,
    Holder,
    Lease,
    NodeId,
    NodeInfo,
    NodeSession,
    NodeStatus,
    VolumeSpec,
)
from cfs.errors import (
    AttachedElsewhere,
    AttachmentMismatch,
    CoordError,
    NodeNotFound,
    RegistrationLost,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from cfs.names import validate_catalog_name

log = logging.getLogger(__name__)

STATE_FILE = "coord.json"
LOCK_FILE = "coord.lock"
VERSION = 1


class LocalCoordinator(Coordinator):
    """Coordination state of a single node, kept in ``directory``.

    Resource handling: the constructor takes the directory's lock (``CoordError`` if
    another process holds it); ``aclose`` releases it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / STATE_FILE
        self._lock = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise CoordError(f"{self.directory} is in use by another cfs process") from None
        try:
            self._state = self._read()
        except BaseException:
            os.close(self._lock)
            raise
        self._session: LocalSession | None = None

    async def aclose(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    # --- the state file -----------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"version": VERSION, "nodes": {}, "volumes": {}, "epochs": {}, "holders": {},
                    "attachments": {}}
        try:
            state = json.loads(raw)
            if not isinstance(state, dict):
                raise TypeError("not a JSON object")
            if state.get("version") != VERSION:
                raise ValueError(f"unknown version {state.get('version')!r}")
            for part in ("nodes", "volumes", "epochs", "holders"):
                if not isinstance(state[part], dict):
                    raise TypeError(f"{part} is not an object")
            for name, spec in state["volumes"].items():
                VolumeSpec.from_json(spec)
            for name, epoch in state["epochs"].items():
                if not isinstance(epoch, int) or epoch < 0:
                    raise ValueError(f"epoch of {name!r} is {epoch!r}")
            for hexid, rec in state["nodes"].items():
                bytes.fromhex(hexid)
                _fields(rec, address=str, labels=dict, capacity=int, chunks=int, draining=bool,
                        registered_ns=int, last_seen_ns=int)
            for name, rec in state["holders"].items():
                bytes.fromhex(_fields(rec, node=str, address=str, epoch=int, incarnation=str)["node"])
            state.setdefault("attachments", {})
            for name, nodes in _fields(state, attachments=dict)["attachments"].items():
                for hexid, rec in _fields(nodes).items():
                    Attachment.from_json(name, hexid, rec)
        except (KeyError, TypeError, ValueError) as exc:
            raise CoordError(f"{self.path} is damaged ({exc}); it holds the volume catalog and "
                             "lease epochs of this node") from None
        return state

    def _write(self, state: dict[str, Any]) -> None:
        """Make ``state`` current, durably: write, fsync, rename, fsync the directory."""
        tmp = self.path.with_name(STATE_FILE + ".tmp")
        data = json.dumps(state, sort_keys=True, indent=1).encode()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, self.path)
        dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        self._state = state

    def _copy(self) -> dict[str, Any]:
        if self._lock < 0:
            raise CoordError("the coordinator is closed")
        return copy.deepcopy(self._state)

    # --- membership ---------------------------------------------------------------------

    async def register(self, node: NodeInfo) -> LocalSession:
        await trio.lowlevel.checkpoint()
        active = self._session
        if active is not None and not active.lost.is_set():
            raise CoordError(f"the embedded coordinator serves one node and node {active.node.node_id.hex()} "
                             "is registered; run a cluster with --etcd for more")
        state = self._copy()
        now = time.time_ns()
        old = state["nodes"].get(node.node_id.hex(), {})
        state["nodes"][node.node_id.hex()] = {
            "address": node.address, "labels": dict(node.labels), "capacity": node.capacity,
            "chunks": node.chunks, "draining": bool(old.get("draining", False)),
            "registered_ns": now, "last_seen_ns": now}
        self._write(state)
        self._session = LocalSession(self, node)
        return self._session

    def _alive(self, hexid: str) -> bool:
        session = self._session
        return session is not None and not session.lost.is_set() and session.node.node_id.hex() == hexid

    async def nodes(self) -> list[NodeStatus]:
        await trio.lowlevel.checkpoint()
        return [NodeStatus(node_id=NodeId(bytes.fromhex(hexid)), address=rec["address"],
                           capacity=rec["capacity"], chunks=rec["chunks"], labels=dict(rec["labels"]),
                           alive=self._alive(hexid), draining=rec["draining"],
                           registered_ns=rec["registered_ns"],
                           last_seen_ns=time.time_ns() if self._alive(hexid) else rec["last_seen_ns"])
                for hexid, rec in sorted(self._state["nodes"].items())]

    async def set_draining(self, node_id: NodeId, draining: bool) -> None:
        await trio.lowlevel.checkpoint()
        state = self._copy()
        rec = state["nodes"].get(node_id.hex())
        if rec is None:
            raise NodeNotFound(f"no node {node_id.hex()} here")
        rec["draining"] = draining
        self._write(state)

    # --- catalog ------------------------------------------------------------------------

    async def create_volume(self, name: str, spec: VolumeSpec) -> None:
        await trio.lowlevel.checkpoint()
        validate_catalog_name(name)
        state = self._copy()
        if name in state["volumes"]:
            raise VolumeExists(f"volume {name!r} already exists")
        state["volumes"][name] = spec.to_json()
        self._write(state)

    async def get_volume(self, name: str) -> VolumeSpec | None:
        await trio.lowlevel.checkpoint()
        raw = self._state["volumes"].get(name)
        return None if raw is None else VolumeSpec.from_json(raw)

    async def list_volumes(self) -> dict[str, VolumeSpec]:
        await trio.lowlevel.checkpoint()
        return {name: VolumeSpec.from_json(raw) for name, raw in sorted(self._state["volumes"].items())}

    async def update_volume(self, name: str, spec: VolumeSpec, *, expected: VolumeSpec) -> bool:
        await trio.lowlevel.checkpoint()
        state = self._copy()
        raw = state["volumes"].get(name)
        if raw is None or VolumeSpec.from_json(raw).volume_id != spec.volume_id:
            raise VolumeNotFound(f"no volume {name!r} with id {spec.volume_id.hex()} here")
        current = VolumeSpec.from_json(raw)
        if current == spec:
            return True  # already so
        if current != expected:
            return False
        state["volumes"][name] = spec.to_json()
        self._write(state)
        return True

    async def delete_volume(self, name: str) -> None:
        await trio.lowlevel.checkpoint()
        state = self._copy()
        if name not in state["volumes"]:
            raise VolumeNotFound(f"no volume {name!r} here")
        holder = self._holder(name)
        if holder is not None and holder.alive:
            raise VolumeBusy(f"volume {name!r} is in use on node {holder.lease.node_id.hex()} "
                             f"at {holder.address}")
        for attachment in self._attachments(name):
            if self._alive(attachment.node_id.hex()):
                raise VolumeBusy(f"volume {name!r} is attached to node {attachment.node_id.hex()}; "
                                 "detach it first")
        del state["volumes"][name]
        state["holders"].pop(name, None)
        state["attachments"].pop(name, None)
        self._write(state)

    # --- attachments --------------------------------------------------------------------

    async def attach(self, name: str, node_id: NodeId, *, read_only: bool) -> Attachment:
        await trio.lowlevel.checkpoint()
        state = self._copy()
        if name not in state["volumes"]:
            raise VolumeNotFound(f"no volume {name!r} here")
        if node_id.hex() not in state["nodes"]:
            raise NodeNotFound(f"no node {node_id.hex()} here")
        for attachment in self._attachments(name):
            if attachment.node_id == node_id:
                if attachment.read_only != read_only:
                    raise AttachmentMismatch(
                        f"volume {name!r} is attached to node {node_id.hex()} "
                        f"{'read-only' if attachment.read_only else 'read-write'} already")
                return attachment
            if self._alive(attachment.node_id.hex()):
                raise AttachedElsewhere(name, attachment.node_id, attachment.read_only)
            log.info("volume %r: dropping its attachment to node %s, which is down", name, attachment.node_id.hex())
        attachment = Attachment(name, node_id, read_only, time.time_ns())
        state["attachments"][name] = {node_id.hex(): attachment.to_json()}  # any other was down: gone
        self._write(state)
        return attachment

    async def detach(self, name: str, node_id: NodeId | None = None) -> int:
        await trio.lowlevel.checkpoint()
        state = self._copy()
        nodes = state["attachments"].get(name, {})
        gone = [hexid for hexid in nodes if node_id is None or hexid == node_id.hex()]
        if not gone:
            return 0
        for hexid in gone:
            del nodes[hexid]
        if not nodes:
            del state["attachments"][name]
        self._write(state)
        return len(gone)

    async def attachments(self, name: str | None = None) -> list[Attachment]:
        await trio.lowlevel.checkpoint()
        names = sorted(self._state["attachments"]) if name is None else [name]
        return [attachment for volume in names for attachment in self._attachments(volume)]

    def _attachments(self, name: str) -> list[Attachment]:
        return [Attachment.from_json(name, hexid, rec)
                for hexid, rec in sorted(self._state["attachments"].get(name, {}).items())]

    # --- leases -------------------------------------------------------------------------

    async def holder(self, name: str) -> Holder | None:
        await trio.lowlevel.checkpoint()
        return self._holder(name)

    def _holder(self, name: str) -> Holder | None:
        rec = self._state["holders"].get(name)
        if rec is None:
            return None
        session = self._session
        alive = (session is not None and not session.lost.is_set()
                 and rec["incarnation"] == session.incarnation)
        return Holder(Lease(name, NodeId(bytes.fromhex(rec["node"])), rec["epoch"]), rec["address"], alive)


class LocalSession(NodeSession):
    """The one node's registration; ``incarnation`` tells its leases from a previous run's."""

    def __init__(self, coord: LocalCoordinator, node: NodeInfo) -> None:
        self.coord = coord
        self.node = node
        self.lost = trio.Event()
        self.incarnation = secrets.token_hex(8)

    def _check(self) -> None:
        if self.lost.is_set():
            raise RegistrationLost(f"node {self.node.node_id.hex()} is not registered any more")

    async def run_keepalive(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to keep alive: the registration lasts until ``unregister``."""
        task_status.started()
        await trio.sleep_forever()

    async def update_stats(self, *, capacity: int, chunks: int) -> None:
        await trio.lowlevel.checkpoint()
        self._check()
        state = self.coord._copy()
        rec = state["nodes"][self.node.node_id.hex()]
        if (rec["capacity"], rec["chunks"]) == (capacity, chunks):
            return
        rec.update(capacity=capacity, chunks=chunks, last_seen_ns=time.time_ns())
        self.coord._write(state)

    async def unregister(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.lost.is_set():
            return
        self.lost.set()
        if self.coord._lock < 0:
            return  # closed: the next run finds our leases dead anyway
        state = self.coord._copy()
        state["nodes"][self.node.node_id.hex()]["last_seen_ns"] = time.time_ns()
        state["holders"] = {name: rec for name, rec in state["holders"].items()
                            if rec["incarnation"] != self.incarnation}
        try:
            self.coord._write(state)
        except OSError as exc:
            log.warning("could not record that node %s left: %s", self.node.node_id.hex(), exc)

    async def acquire(self, volume: str, *, takeover: bool = False) -> Lease:
        await trio.lowlevel.checkpoint()
        self._check()
        state = self.coord._copy()
        if volume not in state["volumes"]:
            raise VolumeNotFound(f"no volume {volume!r} here")
        held = state["holders"].get(volume)
        me = self.node.node_id
        if held is not None and held["incarnation"] == self.incarnation:
            return Lease(volume, me, held["epoch"])
        # Any other holder is a previous run of this node (the only node): dead.
        epoch = state["epochs"].get(volume, 0) + 1
        state["epochs"][volume] = epoch
        state["holders"][volume] = {"node": me.hex(), "address": self.node.address, "epoch": epoch,
                                    "incarnation": self.incarnation, "acquired_ns": time.time_ns()}
        self.coord._write(state)
        log.info("node %s holds volume %r with epoch %d", me.hex(), volume, epoch)
        return Lease(volume, me, epoch)

    async def release(self, lease: Lease) -> bool:
        await trio.lowlevel.checkpoint()
        if not self._holds(lease):
            return False
        state = self.coord._copy()
        del state["holders"][lease.volume]
        self.coord._write(state)
        return True

    async def lease_lost(self, lease: Lease) -> bool:
        await trio.lowlevel.checkpoint()
        return self.lost.is_set() or not self._holds(lease)

    def _holds(self, lease: Lease) -> bool:
        held = self.coord._state["holders"].get(lease.volume)
        return (held is not None and held["incarnation"] == self.incarnation
                and held["epoch"] == lease.epoch and held["node"] == lease.node_id.hex())


def _fields(rec: object, **types: type) -> dict[str, Any]:
    """``rec`` as a dict whose named fields have the given types; TypeError if not."""
    if not isinstance(rec, dict):
        raise TypeError(f"{rec!r} is not an object")
    for name, kind in types.items():
        if not isinstance(rec.get(name), kind):
            raise TypeError(f"field {name!r} of {rec!r} is not a {kind.__name__}")
    return rec

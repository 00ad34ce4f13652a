"""Coordination in etcd, through its v3 JSON gateway (etcd 3.4: ``POST /v3/<service>/<call>``).

HTTP client: a small HTTP/1.1 client on h11 over ``trio.open_tcp_stream``, with a pool
of kept-alive connections. Why not httpx: the gateway needs only POST with a JSON body
and a JSON reply; h11 is already a dependency (the Docker plugin server speaks HTTP/1.1
through it), while httpx would bring httpx, httpcore, anyio, sniffio, certifi and idna,
and put anyio's cancellation between us and trio's. With our own client every request
runs under a ``trio.fail_after`` we set, each connection is owned by one request at a
time, and a cancelled request closes its connection instead of leaving it half-read.
Why not an etcd client library: the maintained ones are gRPC (threads, no trio), and
running one off the event loop would put every lease and keepalive behind a thread pool.

Keys (all under ``prefix``, default ``/cfs/``, so several clusters can share an etcd):

=====================================  ========================================  =========
key                                    value                                     lease
=====================================  ========================================  =========
``nodes/<node hex>/info``              JSON address, labels, registered_ns       none
``nodes/<node hex>/stats``             JSON capacity, chunks, last_seen_ns       none
``nodes/<node hex>/draining``          ``1`` while draining                      none
``nodes/<node hex>/alive``             JSON since_ns                             the node's
``volumes/<name>``                     JSON ``VolumeSpec``                        none
``epochs/<name>``                      decimal: the last epoch handed out        none
``holders/<name>``                     JSON node, address, epoch, acquired_ns    the holder's
``attachments/<name>``                 JSON node hex -> read_only, attached_ns   none
=====================================  ========================================  =========

Each key has one writer (``stats`` and ``alive`` the node, ``draining`` an operator,
``epochs``/``holders`` acquirers under compare-and-swap), so no read-modify-write races;
``volumes`` (``update_volume``) and ``attachments`` are changed by whoever asks, always
under a compare of the revision read. A node's liveness is its ``alive`` key: bound to
its etcd lease, it disappears with it, as do the ``holders`` keys of the volumes the
node holds. A holder key whose etcd lease differs from its node's current ``alive``
lease was written by a previous run of that node (restarted within the TTL): it counts
as dead.

Fencing epochs: ``acquire`` reads the volume, its epoch and its holder in one snapshot,
then writes ``epoch + 1`` and the holder key in one transaction that compares the
revisions it read; of two racing acquirers one transaction fails and that acquirer
starts over from a fresh snapshot. Epochs are never decremented or deleted.

Error handling: connection errors (refused, reset, closed early), requests without an
answer within ``request_timeout``, HTTP 5xx and gRPC "unavailable" replies are retried
with exponential backoff until ``retry_deadline``, then raised as ``EtcdUnavailable``
naming the URL. A request retried after a lost reply may have been applied once
already: every write we send is either idempotent (puts, deletes, keepalives), or
guarded by a compare whose failure we recheck (``create_volume`` accepts finding its own
spec; ``acquire`` accepts finding itself the holder; ``attach`` finding its attachment;
``update_volume`` finding the spec it wrote). Other error replies raise
``EtcdError``; "requested lease not found" means the registration is gone
(``RegistrationLost``).

Concurrency: any number of tasks may call one ``EtcdCoordinator`` and one session at a
time. Each request takes a connection from the idle pool (or opens one) and owns it
until its reply is read; a connection whose request failed or was cancelled is closed,
never returned. No state of the coordinator or session is shared across an ``await``
except the pool list (appended and popped without awaiting), the session's expiry time
(moved forward by the keepalive task only) and its ``lost`` event (set, never cleared).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
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
    EtcdUnavailable,
    LeaseHeld,
    NodeNotFound,
    RegistrationLost,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from cfs.names import validate_catalog_name

log = logging.getLogger(__name__)

API_PREFIX = "/v3"
"""etcd 3.4 serves the gateway at /v3/ (and the older /v3beta/); 3.3 had /v3beta/ only."""

MAX_BODY = 16 << 20
MAX_IDLE = 4
"""Connections kept open between requests; more can be open while requests run."""
MAX_CAS_ATTEMPTS = 32

_GRPC_UNAVAILABLE = 14
_GRPC_DEADLINE = 4
_GRPC_EXHAUSTED = 8
_LEASE_NOT_FOUND = "requested lease not found"


class EtcdError(CoordError):
    """etcd answered with an error that retrying will not fix."""

    def __init__(self, message: str, *, status: int, code: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""


# --- the HTTP client --------------------------------------------------------------------

class _Connection:
    """One kept-alive HTTP/1.1 connection; used by one request at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 << 10)
        self.reused = False

    async def roundtrip(self, host: str, target: str, payload: bytes) -> tuple[int, bytes]:
        request = h11.Request(method="POST", target=target, headers=[
            ("Host", host), ("Content-Type", "application/json"), ("Accept", "application/json"),
            ("Content-Length", str(len(payload)))])
        await self.stream.send_all(
            self.h11.send(request) + self.h11.send(h11.Data(data=payload)) + self.h11.send(h11.EndOfMessage()))
        status = 0
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise CoordError(f"etcd reply to {target} is larger than {MAX_BODY} bytes")
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise _Transient("connection closed before the reply was complete")
            # InformationalResponse: keep reading

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.reused = True
            return True
        return False


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


class EtcdClient:
    """The etcd v3 JSON gateway at ``url`` (``http://host:port``).

    Resource handling: connections are opened on demand in whatever trio run calls,
    and closed by ``aclose`` (idle ones) or when their request fails. An instance must
    be used from one trio run.
    """

    def __init__(self, url: str, *, request_timeout: float = 5.0, retry_deadline: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"etcd URL must look like http://HOST:PORT, got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or 2379
        self.request_timeout = request_timeout
        self.retry_deadline = retry_deadline
        self._idle: list[_Connection] = []

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await trio.aclose_forcefully(conn.stream)

    async def call(self, endpoint: str, body: Mapping[str, Any], *, deadline: float | None = None) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<endpoint>`` and return the decoded reply.

        Retries transient failures with backoff until ``deadline`` (trio time; default
        ``retry_deadline`` from now), each attempt bounded by ``request_timeout``.
        """
        start = trio.current_time()
        if deadline is None:
            deadline = start + self.retry_deadline
        target = f"{API_PREFIX}/{endpoint}"
        payload = json.dumps(body).encode()
        delay = 0.05
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - trio.current_time()
            try:
                if remaining <= 0:
                    raise _Transient("deadline passed")
                with trio.fail_after(min(self.request_timeout, remaining)):
                    status, raw = await self._request(target, payload)
                return _decode(target, status, raw)
            except _Transient as exc:
                last = str(exc)
            except trio.TooSlowError:
                last = f"no answer within {min(self.request_timeout, remaining):.1f} s"
            except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            pause = delay * random.uniform(0.5, 1.0)
            if trio.current_time() + pause >= deadline:
                raise EtcdUnavailable(
                    f"etcd at {self.url} is unavailable ({target}: {last}; "
                    f"{attempts} attempts in {trio.current_time() - start:.1f} s)") from None
            log.debug("etcd %s %s failed (%s), retrying", self.url, target, last)
            await trio.sleep(pause)
            delay = min(delay * 2, 1.0)

    async def _request(self, target: str, payload: bytes) -> tuple[int, bytes]:
        while self._idle:
            conn = self._idle.pop()
            try:
                return await self._on(conn, target, payload)
            except (_Transient, OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
                continue  # the server closed it while idle: try the next one, then a new one
        stream = await trio.open_tcp_stream(self.host, self.port)
        return await self._on(_Connection(stream), target, payload)

    async def _on(self, conn: _Connection, target: str, payload: bytes) -> tuple[int, bytes]:
        keep = False
        try:
            reply = await conn.roundtrip(f"{self.host}:{self.port}", target, payload)
            keep = conn.reusable() and len(self._idle) < MAX_IDLE
            return reply
        finally:
            if keep:
                self._idle.append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)

    # --- the calls we use ---------------------------------------------------------------

    async def range(self, key: bytes, *, prefix: bool = False, deadline: float | None = None) -> list[KeyValue]:
        reply = await self.call("kv/range", range_request(key, prefix=prefix), deadline=deadline)
        return _kvs(reply)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0, deadline: float | None = None) -> None:
        await self.call("kv/put", put_request(key, value, lease), deadline=deadline)

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        reply = await self.call("kv/deleterange", range_request(key, prefix=prefix))
        return int(reply.get("deleted", 0))

    async def txn(self, compare: Sequence[dict[str, Any]], success: Sequence[dict[str, Any]],
                  failure: Sequence[dict[str, Any]] = ()) -> tuple[bool, list[dict[str, Any]]]:
        reply = await self.call("kv/txn", {"compare": list(compare), "success": list(success),
                                           "failure": list(failure)})
        return bool(reply.get("succeeded", False)), list(reply.get("responses", []))

    async def grant(self, ttl: int) -> tuple[int, int]:
        """A new etcd lease: (id, granted TTL in seconds; etcd may raise it to its minimum)."""
        reply = await self.call("lease/grant", {"TTL": str(ttl)})
        return int(reply["ID"]), int(reply["TTL"])

    async def keepalive(self, lease: int, *, deadline: float | None = None) -> int:
        """Refresh ``lease``; its remaining TTL, 0 if etcd no longer has it."""
        reply = await self.call("lease/keepalive", {"ID": str(lease)}, deadline=deadline)
        return int(reply.get("result", reply).get("TTL", 0))

    async def revoke(self, lease: int, *, deadline: float | None = None) -> None:
        await self.call("lease/revoke", {"ID": str(lease)}, deadline=deadline)


def _decode(target: str, status: int, raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        if status >= 500:
            raise _Transient(f"HTTP {status}") from None
        raise EtcdError(f"etcd {target}: HTTP {status} with a reply that is not JSON: {raw[:200]!r}",
                        status=status, code=None) from None
    if not isinstance(doc, dict):
        raise EtcdError(f"etcd {target}: unexpected reply {raw[:200]!r}", status=status, code=None)
    error = doc.get("error")
    if 200 <= status < 300 and error is None:
        return doc
    if isinstance(error, dict):  # streaming calls (keepalive) wrap the error
        message, code = str(error.get("message", error)), error.get("grpc_code", error.get("code"))
    else:
        message, code = str(doc.get("message") or error or f"HTTP {status}"), doc.get("code")
    if status >= 500 or code in (_GRPC_UNAVAILABLE, _GRPC_DEADLINE, _GRPC_EXHAUSTED):
        raise _Transient(f"HTTP {status}: {message}")
    raise EtcdError(f"etcd {target}: {message}", status=status, code=code if isinstance(code, int) else None)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd: every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


def range_request(key: bytes, *, prefix: bool = False) -> dict[str, Any]:
    request = {"key": _b64(key)}
    if prefix:
        request["range_end"] = _b64(prefix_end(key))
    return request


def put_request(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    request = {"key": _b64(key), "value": _b64(value)}
    if lease:
        request["lease"] = str(lease)
    return request


def op_put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    return {"request_put": put_request(key, value, lease)}


def op_range(key: bytes, *, prefix: bool = False) -> dict[str, Any]:
    return {"request_range": range_request(key, prefix=prefix)}


def op_delete(key: bytes) -> dict[str, Any]:
    return {"request_delete_range": {"key": _b64(key)}}


def cmp_created(key: bytes, revision: int, result: str = "EQUAL") -> dict[str, Any]:
    """``create_revision`` of ``key`` compares to ``revision`` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "CREATE", "result": result, "create_revision": str(revision)}


def cmp_modified(key: bytes, revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def _kvs(range_reply: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=_unb64(kv["key"]), value=_unb64(kv.get("value", "")),
                     create_revision=int(kv.get("create_revision", 0)),
                     mod_revision=int(kv.get("mod_revision", 0)), lease=int(kv.get("lease", 0)))
            for kv in range_reply.get("kvs", [])]


def _range_results(responses: list[dict[str, Any]]) -> list[KeyValue | None]:
    """The single key each ``op_range`` of a transaction found, or None."""
    found: list[KeyValue | None] = []
    for response in responses:
        kvs = _kvs(response.get("response_range", {}))
        found.append(kvs[0] if kvs else None)
    return found


# --- the coordinator --------------------------------------------------------------------

@dataclass(frozen=True)
class _HolderRecord:
    node_id: NodeId
    address: str
    epoch: int
    lease: int
    """The holder's etcd lease (the key's own lease field)."""
    mod_revision: int


class EtcdCoordinator(Coordinator):
    """The coordination interface on etcd at ``url``.

    ``ttl``: seconds a node stays registered without a keepalive (etcd's minimum is
    about 2). ``stats_interval``: how often a live node refreshes its ``last_seen``.
    """

    def __init__(self, url: str, *, prefix: str = "/cfs/", ttl: int = 10, stats_interval: float = 5.0,
                 request_timeout: float = 5.0, retry_deadline: float = 10.0) -> None:
        self.client = EtcdClient(url, request_timeout=request_timeout, retry_deadline=retry_deadline)
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.ttl = ttl
        self.stats_interval = stats_interval

    def key(self, *parts: str) -> bytes:
        return (self.prefix + "/".join(parts)).encode()

    async def aclose(self) -> None:
        await self.client.aclose()

    # --- membership ---------------------------------------------------------------------

    async def register(self, node: NodeInfo) -> EtcdSession:
        started = trio.current_time()
        lease, ttl = await self.client.grant(self.ttl)
        now = time.time_ns()
        hexid = node.node_id.hex()
        info = {"address": node.address, "labels": dict(node.labels), "registered_ns": now}
        try:
            await self.client.txn([], [
                op_put(self.key("nodes", hexid, "info"), _json(info)),
                op_put(self.key("nodes", hexid, "stats"), _stats(node.capacity, node.chunks, now)),
                op_put(self.key("nodes", hexid, "alive"), _json({"since_ns": now}), lease)])
        except EtcdError as exc:
            if _LEASE_NOT_FOUND in str(exc):
                raise RegistrationLost(f"node {hexid}: etcd lease expired while registering") from None
            raise
        log.info("node %s registered at %s (etcd lease %x, TTL %d s)", hexid, self.client.url, lease, ttl)
        return EtcdSession(self, node, lease, ttl, expires_at=started + ttl)

    async def nodes(self) -> list[NodeStatus]:
        base = self.key("nodes") + b"/"
        records: dict[str, dict[str, KeyValue]] = {}
        for kv in await self.client.range(base, prefix=True):
            hexid, _, kind = kv.key[len(base):].decode().partition("/")
            records.setdefault(hexid, {})[kind] = kv
        statuses = []
        for hexid, keys in sorted(records.items()):
            if "info" not in keys:
                continue  # not a node record of ours
            info, stats = _load(keys["info"]), _load(keys["stats"]) if "stats" in keys else {}
            try:
                statuses.append(NodeStatus(
                    node_id=NodeId(bytes.fromhex(hexid)), address=str(info["address"]),
                    capacity=int(stats.get("capacity", 0)), chunks=int(stats.get("chunks", 0)),
                    labels=dict(info.get("labels", {})), alive="alive" in keys, draining="draining" in keys,
                    registered_ns=int(info["registered_ns"]),
                    last_seen_ns=int(stats.get("last_seen_ns", info["registered_ns"]))))
            except (KeyError, TypeError, ValueError) as exc:
                raise CoordError(f"node record {hexid} in etcd is malformed: {exc!r}") from None
        return statuses

    async def set_draining(self, node_id: NodeId, draining: bool) -> None:
        hexid = node_id.hex()
        key = self.key("nodes", hexid, "draining")
        change = op_put(key, b"1") if draining else op_delete(key)
        ok, _ = await self.client.txn([cmp_created(self.key("nodes", hexid, "info"), 0, "GREATER")], [change])
        if not ok:
            raise NodeNotFound(f"no node {hexid} in the cluster")

    # --- catalog ------------------------------------------------------------------------

    async def create_volume(self, name: str, spec: VolumeSpec) -> None:
        key = self.key("volumes", validate_catalog_name(name))
        ok, responses = await self.client.txn([cmp_created(key, 0)], [op_put(key, _json(spec.to_json()))],
                                              [op_range(key)])
        if ok:
            return
        (existing,) = _range_results(responses)
        if existing is not None and _spec(existing) == spec:
            return  # our own create, applied by an attempt whose reply was lost
        raise VolumeExists(f"volume {name!r} already exists")

    async def get_volume(self, name: str) -> VolumeSpec | None:
        kvs = await self.client.range(self.key("volumes", name))
        return _spec(kvs[0]) if kvs else None

    async def list_volumes(self) -> dict[str, VolumeSpec]:
        base = self.key("volumes") + b"/"
        return {kv.key[len(base):].decode(): _spec(kv) for kv in await self.client.range(base, prefix=True)}

    async def update_volume(self, name: str, spec: VolumeSpec, *, expected: VolumeSpec) -> bool:
        key = self.key("volumes", name)
        for _ in range(MAX_CAS_ATTEMPTS):
            kvs = await self.client.range(key)
            current = _spec(kvs[0]) if kvs else None
            if current is None or current.volume_id != spec.volume_id:
                raise VolumeNotFound(f"no volume {name!r} with id {spec.volume_id.hex()} in the cluster")
            if current == spec:
                return True  # already so: our own update, applied by an attempt whose reply was lost
            if current != expected:
                return False
            ok, _ = await self.client.txn([cmp_modified(key, kvs[0].mod_revision)],
                                          [op_put(key, _json(spec.to_json()))])
            if ok:
                return True
        raise CoordError(f"volume {name!r} changed under every attempt to update it")

    async def delete_volume(self, name: str) -> None:
        vkey, hkey, akey = self.key("volumes", name), self.key("holders", name), self.key("attachments", name)
        for _ in range(MAX_CAS_ATTEMPTS):
            _, responses = await self.client.txn([], [op_range(vkey), op_range(hkey), op_range(akey)])
            volume, held, attached = _range_results(responses)
            if volume is None:
                raise VolumeNotFound(f"no volume {name!r} in the cluster")
            compare = [cmp_modified(vkey, volume.mod_revision)]
            remove = [op_delete(vkey)]
            if held is None:
                compare.append(cmp_created(hkey, 0))
            else:
                holder = _holder(held)
                if await self._incarnation_alive(holder):
                    raise VolumeBusy(f"volume {name!r} is in use on node {holder.node_id.hex()} "
                                     f"at {holder.address}")
                compare.append(cmp_modified(hkey, holder.mod_revision))
                remove.append(op_delete(hkey))
            if attached is None:
                compare.append(cmp_created(akey, 0))
            else:
                for attachment in _attachments(name, attached):
                    if await self._node_alive(attachment.node_id):
                        raise VolumeBusy(f"volume {name!r} is attached to node {attachment.node_id.hex()}; "
                                         "detach it first")
                compare.append(cmp_modified(akey, attached.mod_revision))
                remove.append(op_delete(akey))
            ok, _ = await self.client.txn(compare, remove)
            if ok:
                return
        raise CoordError(f"volume {name!r} changed under every attempt to delete it")

    # --- attachments --------------------------------------------------------------------

    async def attach(self, name: str, node_id: NodeId, *, read_only: bool) -> Attachment:
        vkey, akey = self.key("volumes", name), self.key("attachments", name)
        for _ in range(MAX_CAS_ATTEMPTS):
            _, responses = await self.client.txn([], [op_range(vkey), op_range(akey),
                                                      op_range(self.key("nodes", node_id.hex(), "info"))])
            volume, attached, node = _range_results(responses)
            if volume is None:
                raise VolumeNotFound(f"no volume {name!r} in the cluster")
            if node is None:
                raise NodeNotFound(f"no node {node_id.hex()} in the cluster")
            for attachment in _attachments(name, attached) if attached else []:
                if attachment.node_id == node_id:
                    if attachment.read_only != read_only:
                        raise AttachmentMismatch(
                            f"volume {name!r} is attached to node {node_id.hex()} "
                            f"{'read-only' if attachment.read_only else 'read-write'} already")
                    return attachment  # also our own attach, applied by an attempt whose reply was lost
                if await self._node_alive(attachment.node_id):
                    raise AttachedElsewhere(name, attachment.node_id, attachment.read_only)
                log.info("volume %r: dropping its attachment to node %s, which is down", name,
                         attachment.node_id.hex())
            attachment = Attachment(name, node_id, read_only, time.time_ns())
            compare = [cmp_modified(vkey, volume.mod_revision),
                       cmp_modified(akey, attached.mod_revision) if attached else cmp_created(akey, 0)]
            ok, _ = await self.client.txn(compare, [op_put(akey, _json({node_id.hex(): attachment.to_json()}))])
            if ok:
                return attachment
            await trio.sleep(random.uniform(0, 0.02))  # lost a race: look again
        raise CoordError(f"the attachments of volume {name!r} changed under {MAX_CAS_ATTEMPTS} attempts")

    async def detach(self, name: str, node_id: NodeId | None = None) -> int:
        akey = self.key("attachments", name)
        for _ in range(MAX_CAS_ATTEMPTS):
            kvs = await self.client.range(akey)
            if not kvs:
                return 0
            current = _attachments(name, kvs[0])
            gone = [a for a in current if node_id is None or a.node_id == node_id]
            if not gone:
                return 0
            rest = {a.node_id.hex(): a.to_json() for a in current if a not in gone}
            change = op_put(akey, _json(rest)) if rest else op_delete(akey)
            ok, _ = await self.client.txn([cmp_modified(akey, kvs[0].mod_revision)], [change])
            if ok:
                return len(gone)
        raise CoordError(f"the attachments of volume {name!r} changed under {MAX_CAS_ATTEMPTS} attempts")

    async def attachments(self, name: str | None = None) -> list[Attachment]:
        if name is not None:
            kvs = await self.client.range(self.key("attachments", name))
            return _attachments(name, kvs[0]) if kvs else []
        base = self.key("attachments") + b"/"
        return [attachment for kv in await self.client.range(base, prefix=True)
                for attachment in _attachments(kv.key[len(base):].decode(), kv)]

    async def _node_alive(self, node_id: NodeId) -> bool:
        return bool(await self.client.range(self.key("nodes", node_id.hex(), "alive")))

    # --- leases -------------------------------------------------------------------------

    async def holder(self, name: str) -> Holder | None:
        kvs = await self.client.range(self.key("holders", name))
        if not kvs:
            return None
        record = _holder(kvs[0])
        return Holder(Lease(name, record.node_id, record.epoch), record.address,
                      await self._incarnation_alive(record))

    async def _incarnation_alive(self, record: _HolderRecord) -> bool:
        """Whether the holder's etcd lease is its node's current registration."""
        kvs = await self.client.range(self.key("nodes", record.node_id.hex(), "alive"))
        return bool(kvs) and kvs[0].lease == record.lease


class EtcdSession(NodeSession):
    """A node's registration: the etcd lease ``lease_id`` and the keys bound to it."""

    def __init__(self, coord: EtcdCoordinator, node: NodeInfo, lease_id: int, ttl: int, *,
                 expires_at: float) -> None:
        self.coord = coord
        self.client = coord.client
        self.node = node
        self.lease_id = lease_id
        self.ttl = ttl
        self.lost = trio.Event()
        self._expires_at = expires_at
        """Trio time by which etcd drops the lease unless a keepalive reaches it."""
        self._capacity = node.capacity
        self._chunks = node.chunks

    @property
    def _hex(self) -> str:
        return self.node.node_id.hex()

    def _lose(self, why: str) -> None:
        if not self.lost.is_set():
            log.warning("node %s lost its cluster registration: %s; its volume leases are gone, "
                        "it must stop writing", self._hex, why)
            self.lost.set()

    def _check(self) -> None:
        if self.lost.is_set():
            raise RegistrationLost(f"node {self._hex} is no longer registered in etcd at {self.client.url}")

    async def run_keepalive(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh the etcd lease every TTL/3 and ``last_seen`` every ``stats_interval``.

        Returns with ``lost`` set when etcd says the lease is gone, or when no keepalive
        got through for a whole TTL (etcd has then expired it, or will at any moment).
        """
        task_status.started()
        interval = self.ttl / 3
        next_stats = trio.current_time() + self.coord.stats_interval
        while not self.lost.is_set():
            sent = trio.current_time()
            try:
                remaining = await self.client.keepalive(self.lease_id, deadline=self._expires_at)
            except EtcdUnavailable as exc:
                self._lose(f"no keepalive reached etcd for {self.ttl} s ({exc})")
                return
            except EtcdError as exc:
                self._lose(f"keepalive refused: {exc}")
                return
            if remaining <= 0:
                self._lose("etcd expired the lease")
                return
            self._expires_at = sent + remaining
            if trio.current_time() >= next_stats:
                next_stats = trio.current_time() + self.coord.stats_interval
                await self._write_stats(deadline=min(self._expires_at, trio.current_time() + interval))
            await trio.sleep(interval)

    async def _write_stats(self, *, deadline: float | None = None) -> None:
        """Best effort: a missed refresh only makes ``last_seen`` a little older."""
        try:
            await self.client.put(self.coord.key("nodes", self._hex, "stats"),
                                  _stats(self._capacity, self._chunks, time.time_ns()), deadline=deadline)
        except (EtcdUnavailable, EtcdError) as exc:
            log.debug("stats of node %s not written: %s", self._hex, exc)

    async def update_stats(self, *, capacity: int, chunks: int) -> None:
        self._check()
        self._capacity, self._chunks = capacity, chunks
        await self.client.put(self.coord.key("nodes", self._hex, "stats"),
                              _stats(capacity, chunks, time.time_ns()))

    async def unregister(self) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        deadline = trio.current_time() + min(self.client.retry_deadline, 5.0)
        await self._write_stats(deadline=deadline)
        try:
            await self.client.revoke(self.lease_id, deadline=deadline)
        except (EtcdUnavailable, EtcdError) as exc:
            log.warning("node %s: revoking its etcd lease failed (%s); it expires in %d s",
                        self._hex, exc, self.ttl)
        else:
            log.info("node %s unregistered", self._hex)

    async def acquire(self, volume: str, *, takeover: bool = False) -> Lease:
        c = self.coord
        vkey, ekey, hkey = c.key("volumes", volume), c.key("epochs", volume), c.key("holders", volume)
        me = self.node.node_id
        for _ in range(MAX_CAS_ATTEMPTS):
            self._check()
            _, responses = await self.client.txn([], [op_range(vkey), op_range(ekey), op_range(hkey)])
            vol_kv, epoch_kv, held = _range_results(responses)
            if vol_kv is None:
                raise VolumeNotFound(f"no volume {volume!r} in the cluster")
            epoch = _epoch(epoch_kv)
            compare = [cmp_modified(vkey, vol_kv.mod_revision),
                       cmp_modified(ekey, epoch_kv.mod_revision) if epoch_kv else cmp_created(ekey, 0)]
            if held is None:
                compare.append(cmp_created(hkey, 0))
            else:
                holder = _holder(held)
                if holder.node_id == me and holder.lease == self.lease_id:
                    return Lease(volume, me, holder.epoch)
                if (not takeover and holder.node_id != me and await c._incarnation_alive(holder)):
                    raise LeaseHeld(volume, holder.node_id, holder.address, holder.epoch)
                compare.append(cmp_modified(hkey, holder.mod_revision))
            record = {"node": me.hex(), "address": self.node.address, "epoch": epoch + 1,
                      "acquired_ns": time.time_ns()}
            try:
                ok, _ = await self.client.txn(compare, [op_put(ekey, str(epoch + 1).encode()),
                                                        op_put(hkey, _json(record), self.lease_id)])
            except EtcdError as exc:
                if _LEASE_NOT_FOUND in str(exc):
                    self._lose("etcd no longer has its lease")
                    self._check()
                raise
            if ok:
                log.info("node %s holds volume %r with epoch %d", self._hex, volume, epoch + 1)
                return Lease(volume, me, epoch + 1)
            await trio.sleep(random.uniform(0, 0.02))  # lost a race: look again
        raise CoordError(f"the lease of volume {volume!r} changed under {MAX_CAS_ATTEMPTS} attempts to take it")

    async def release(self, lease: Lease) -> bool:
        hkey = self.coord.key("holders", lease.volume)
        kvs = await self.client.range(hkey)
        if not kvs:
            return False
        holder = _holder(kvs[0])
        if (holder.node_id, holder.epoch, holder.lease) != (lease.node_id, lease.epoch, self.lease_id):
            return False
        ok, _ = await self.client.txn([cmp_modified(hkey, holder.mod_revision)], [op_delete(hkey)])
        return ok

    async def lease_lost(self, lease: Lease) -> bool:
        if self.lost.is_set():
            return True
        kvs = await self.client.range(self.coord.key("holders", lease.volume))
        if not kvs:
            return True
        holder = _holder(kvs[0])
        return (holder.node_id, holder.epoch, holder.lease) != (lease.node_id, lease.epoch, self.lease_id)


# --- records ----------------------------------------------------------------------------

def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _stats(capacity: int, chunks: int, last_seen_ns: int) -> bytes:
    return _json({"capacity": capacity, "chunks": chunks, "last_seen_ns": last_seen_ns})


def _load(kv: KeyValue) -> dict[str, Any]:
    try:
        value = json.loads(kv.value)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CoordError(f"etcd key {kv.key.decode(errors='replace')} holds no JSON object: {kv.value[:100]!r}")
    return value


def _spec(kv: KeyValue) -> VolumeSpec:
    try:
        return VolumeSpec.from_json(_load(kv))
    except (KeyError, TypeError, ValueError) as exc:
        raise CoordError(f"volume record {kv.key.decode(errors='replace')} is malformed: {exc!r}") from None


def _attachments(name: str, kv: KeyValue) -> list[Attachment]:
    try:
        return [Attachment.from_json(name, hexid, raw) for hexid, raw in sorted(_load(kv).items())]
    except (KeyError, TypeError, ValueError) as exc:
        raise CoordError(f"attachment record {kv.key.decode(errors='replace')} is malformed: {exc!r}") from None


def _holder(kv: KeyValue) -> _HolderRecord:
    raw = _load(kv)
    try:
        return _HolderRecord(node_id=NodeId(bytes.fromhex(raw["node"])), address=str(raw["address"]),
                             epoch=int(raw["epoch"]), lease=kv.lease, mod_revision=kv.mod_revision)
    except (KeyError, TypeError, ValueError) as exc:
        raise CoordError(f"holder record {kv.key.decode(errors='replace')} is malformed: {exc!r}") from None


def _epoch(kv: KeyValue | None) -> int:
    if kv is None:
        return 0
    try:
        return int(kv.value)
    except ValueError:
        raise CoordError(f"epoch record {kv.key.decode(errors='replace')} is not a number: {kv.value[:40]!r}") from None

"""What Docker's volume plugin calls mean on a cfs node.

Docker names a volume in every call, and for Mount and Unmount also the ID of one
container's use of it. A volume that any container uses is bound once, at
``<mount root>/<volume>``; the IDs holding it are its reference count, kept in the store
(``NodeRecords.plugin_holders``) so that they survive a restart of the daemon. The bind
itself is an ordinary ``NodeService`` mount: recorded, restored after a restart,
listed by ``cfs volume inspect``, and a reason for ``cfs volume rm`` to refuse.

Volumes are the node's volumes: one made by ``cfs volume create`` is a Docker volume of
this driver, and one made by Docker is listed by ``cfs volume ls``.

Concurrency: the handlers that change holders or binds (Create, Remove, Mount, Unmount)
hold ``_lock`` across their awaits (the mount system calls run in worker threads), so
two containers starting at once cannot both bind the volume and an Unmount never
interleaves with a Mount. List, Get and Path read the store without awaiting in between.

Crash safety: Mount binds (NodeService records and commits the bind) before it records
the ID; Unmount forgets the ID before it unbinds. A crash in between leaves a recorded
bind nobody holds, which ``restore`` takes away at the next start; the Docker call that
was cut short failed, so Docker does not count on it.

Error handling: ``handle`` never raises. A malformed request gets 400, an unknown path
404, a refused operation (``CfsError``) 500; each with ``{"Err": message}`` meant for a
person, which Docker prints. A bug gets 500 naming the daemon log, and a traceback there.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import trio

from cfs.durability import OPTION as DURABILITY, parse_durability
from cfs.errors import CfsError, UserError, VolumeNotFound
from cfs.fs.quota import parse_size
from cfs.names import validate_volume_name
from cfs.store import NodeRecords
from mountd import mounts

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.docker.plugins.v1+json"
SCOPE = "global"
"""A volume is reachable from every node of a cluster (it moves to the node that mounts
it), so Docker keeps one name for one volume across a swarm."""

Request = dict[str, Any]
Reply = dict[str, Any]


class BadRequest(Exception):
    """A request that does not follow the plugin protocol (not JSON, no Name, ...)."""


class Backend(Protocol):
    """The part of ``mountd.service.NodeService`` the driver uses."""

    records: NodeRecords

    async def volume_create(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]: ...
    async def volume_info(self, name: str) -> dict[str, Any]: ...
    async def volume_ls(self) -> list[dict[str, Any]]: ...
    async def volume_rm(self, name: str) -> dict[str, Any]: ...
    async def mount(self, name: str, path: str, read_only: bool = False) -> dict[str, Any]: ...
    async def umount(self, path: str, lazy: bool = False) -> dict[str, Any]: ...


class VolumeDriver:
    """Docker's VolumeDriver endpoints over a node's volumes; owns the plugin's holder records."""

    def __init__(self, backend: Backend, mount_root: Path) -> None:
        self.backend = backend
        self.records = backend.records
        self.mount_root = Path(os.path.abspath(mount_root))
        self._lock = trio.Lock()
        self._endpoints: dict[str, Callable[[Request], Awaitable[Reply]]] = {
            "/Plugin.Activate": self._activate,
            "/VolumeDriver.Create": self._create,
            "/VolumeDriver.Remove": self._remove,
            "/VolumeDriver.Mount": self._mount,
            "/VolumeDriver.Path": self._path,
            "/VolumeDriver.Unmount": self._unmount,
            "/VolumeDriver.Get": self._get,
            "/VolumeDriver.List": self._list,
            "/VolumeDriver.Capabilities": self._capabilities,
        }

    # --- the protocol ----------------------------------------------------------------

    async def handle(self, path: str, body: bytes) -> tuple[int, Reply]:
        """Answer one call: an HTTP status and the JSON reply. Never raises."""
        endpoint = self._endpoints.get(path.split("?", 1)[0])
        if endpoint is None:
            return 404, {"Err": f"unknown endpoint {path!r}: this is the cfs volume plugin "
                                f"(it answers {', '.join(sorted(self._endpoints))})"}
        try:
            return 200, await endpoint(decode_request(body))
        except BadRequest as exc:
            return 400, {"Err": f"bad request to {path}: {exc}"}
        except CfsError as exc:
            return 500, {"Err": str(exc)}
        except OSError as exc:
            return 500, {"Err": f"{path} failed: {exc}"}
        except Exception as exc:
            log.exception("bug while serving %s", path)
            return 500, {"Err": f"internal error in cfs while serving {path}: {exc!r} (see the cfs daemon's log)"}

    async def _activate(self, _request: Request) -> Reply:
        return {"Implements": ["VolumeDriver"]}

    async def _create(self, request: Request) -> Reply:
        await self.create(_name(request), _options(request))
        return {"Err": ""}

    async def _remove(self, request: Request) -> Reply:
        await self.remove(_name(request))
        return {"Err": ""}

    async def _mount(self, request: Request) -> Reply:
        return {"Mountpoint": str(await self.mount(_name(request), _mount_id(request))), "Err": ""}

    async def _path(self, request: Request) -> Reply:
        return {"Mountpoint": await self.path(_name(request)), "Err": ""}

    async def _unmount(self, request: Request) -> Reply:
        await self.unmount(_name(request), _mount_id(request))
        return {"Err": ""}

    async def _get(self, request: Request) -> Reply:
        return {"Volume": await self.get(_name(request)), "Err": ""}

    async def _list(self, _request: Request) -> Reply:
        return {"Volumes": await self.list(), "Err": ""}

    async def _capabilities(self, _request: Request) -> Reply:
        return {"Capabilities": {"Scope": SCOPE}}

    # --- the operations ----------------------------------------------------------------

    async def create(self, name: str, options: dict[str, str]) -> None:
        """Make the volume; asking again for an existing one (with no other options) is fine."""
        async with self._lock:
            try:
                info = await self.backend.volume_info(name)
            except VolumeNotFound:
                await self.backend.volume_create(name, options)
                return
            differ = _differences(options, info)
            if differ:
                raise UserError(f"volume {name!r} already exists with other options: {'; '.join(differ)}")

    async def remove(self, name: str) -> None:
        """Remove the volume (refused by NodeService while it is mounted outside the plugin).

        Docker calls Remove only when none of its containers uses the volume (it counts
        references itself), so IDs still held then are ones whose Unmount never arrived,
        e.g. because this daemon was down when the container stopped: they are dropped.
        A volume already gone (``cfs volume rm``) is removed as far as Docker is concerned.
        """
        async with self._lock:
            holders = self._holders(name)
            if holders:
                log.warning("volume %s: dropping mount IDs %s that Docker no longer uses", name, sorted(holders))
                self._save(name, set())
                await self._unbind(name)
            try:
                await self.backend.volume_rm(name)
            except VolumeNotFound:
                log.info("Docker removes volume %s, which was already gone", name)
            _rmdir(self.mountpoint(name))

    async def mount(self, name: str, mount_id: str) -> Path:
        """Bind the volume if nobody holds it yet, and count ``mount_id`` as holding it."""
        async with self._lock:
            await self.backend.volume_info(name)
            path = await self._bind(name)
            holders = self._holders(name)
            if mount_id in holders:
                log.info("volume %s: mount ID %s already holds it", name, mount_id)
            else:
                self._save(name, holders | {mount_id})
            return path

    async def unmount(self, name: str, mount_id: str) -> None:
        """Stop counting ``mount_id``; unbind with the last one. Unknown IDs change nothing."""
        async with self._lock:
            holders = self._holders(name)
            if mount_id not in holders:
                log.warning("volume %s: unmount for mount ID %s, which does not hold it (ignored)", name, mount_id)
                return
            holders.discard(mount_id)
            self._save(name, holders)
            if not holders:
                await self._unbind(name)

    async def path(self, name: str) -> str:
        await self.backend.volume_info(name)
        return str(self.mountpoint(name)) if self._holders(name) else ""

    async def get(self, name: str) -> dict[str, Any]:
        info = await self.backend.volume_info(name)
        holders = self._holders(name)
        status: dict[str, Any] = {"id": info["id"], "block_size": info["block_size"], "containers": len(holders),
                                  "used_bytes": info["used_bytes"]}
        if info["size_bytes"]:
            status["size_bytes"] = info["size_bytes"]
        return {"Name": name, "Mountpoint": str(self.mountpoint(name)) if holders else "",
                "CreatedAt": info["created"], "Status": status}

    async def list(self) -> list[dict[str, str]]:
        held = self.records.all_plugin_holders()
        return [{"Name": v["name"], "Mountpoint": str(self.mountpoint(v["name"])) if held.get(v["name"]) else ""}
                for v in await self.backend.volume_ls()]

    # --- holders and binds ---------------------------------------------------------------

    def mountpoint(self, name: str) -> Path:
        return self.mount_root / validate_volume_name(name)

    def holders(self) -> dict[str, set[str]]:
        """Every volume the plugin holds, with the mount IDs holding it."""
        return self.records.all_plugin_holders()

    def _holders(self, name: str) -> set[str]:
        return self.records.plugin_holders(name)

    def _save(self, name: str, holders: set[str]) -> None:
        self.records.set_plugin_holders(name, holders)

    async def _bind(self, name: str) -> Path:
        """Make sure the volume is bound at its mount point; return the mount point."""
        path = self.mountpoint(name)
        recorded = str(path) in (await self.backend.volume_info(name))["mountpoints"]
        if recorded and await trio.to_thread.run_sync(mounts.is_mount_point, path):
            return path
        if recorded:  # recorded, but its bind is gone (restoring it failed, or someone unmounted it)
            await self.backend.umount(str(path), lazy=True)
        path.mkdir(parents=True, exist_ok=True)
        await self.backend.mount(name, str(path))
        return path

    async def _unbind(self, name: str) -> None:
        path = self.mountpoint(name)
        try:
            mountpoints = (await self.backend.volume_info(name))["mountpoints"]
        except VolumeNotFound:
            mountpoints = []
        if str(path) in mountpoints:
            # Lazy: the containers are gone; a host process still inside keeps its view.
            await self.backend.umount(str(path), lazy=True)
        _rmdir(path)

    async def restore(self) -> None:
        """Make binds agree with the holder records after a start, clean or not.

        Volumes held are bound (NodeService has already rebound recorded mounts; this
        catches any it could not); binds under the mount root nobody holds are taken
        away; records of volumes that no longer exist are dropped.
        """
        self.mount_root.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.mount_root = Path(os.path.realpath(self.mount_root))  # as NodeService records mount points
        async with self._lock:
            volumes = {v["name"]: v for v in await self.backend.volume_ls()}
            held = self.holders()
            for name, ids in sorted(held.items()):
                try:
                    if name not in volumes:
                        log.warning("dropping plugin mount IDs of volume %s, which no longer exists", name)
                        self._save(name, set())
                    else:
                        await self._bind(name)
                        log.info("volume %s is held for Docker by %d mount ID(s)", name, len(ids))
                except (CfsError, OSError) as exc:
                    log.error("could not bind volume %s for its Docker containers: %s", name, exc)
            for name, info in sorted(volumes.items()):
                if name not in held and str(self.mountpoint(name)) in info["mountpoints"]:
                    try:
                        await self.backend.umount(str(self.mountpoint(name)), lazy=True)
                        log.info("unbound volume %s, which no Docker container holds", name)
                    except (CfsError, OSError) as exc:
                        log.error("could not unbind volume %s: %s", name, exc)


# --- decoding requests ---------------------------------------------------------------------

def decode_request(body: bytes) -> Request:
    """The JSON object of a request body; an empty body is an empty request (Activate, List)."""
    if not body.strip():
        return {}
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({exc})") from None
    if not isinstance(request, dict):
        raise BadRequest("the body must be a JSON object")
    return request


def _name(request: Request) -> str:
    name = request.get("Name")
    if not isinstance(name, str) or not name:
        raise BadRequest("the request has no volume Name")
    return validate_volume_name(name)


def _mount_id(request: Request) -> str:
    mount_id = request.get("ID")
    if not isinstance(mount_id, str) or not mount_id:
        raise BadRequest("the request has no mount ID (Docker 1.13 or newer sends one)")
    return mount_id


def _options(request: Request) -> dict[str, str]:
    opts = request.get("Opts") or {}
    if not isinstance(opts, dict):
        raise BadRequest("Opts must be a JSON object of option names to values")
    for key, value in opts.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise BadRequest(f"option {key} must have a string value")
    return {str(k): str(v) for k, v in opts.items()}


def _differences(requested: dict[str, str], info: dict[str, Any]) -> list[str]:
    """The requested options an existing volume does not have, compared by what they mean
    (``size=1G`` is ``size=1073741824``, ``mode=0750`` is ``mode=750``)."""
    have = {"block_size": str(info["block_size"]), "replicas": str(info["replicas"]),
            DURABILITY: info[DURABILITY], **info["options"]}
    differ = []
    for key, value in sorted(requested.items()):
        if key not in have or _meaning(key, have[key]) != _meaning(key, value):
            differ.append(f"{key}={value} (it has {have[key] if key in have else 'none'})")
    return differ


def _meaning(key: str, raw: str) -> object:
    """An option's value as the node reads it; the raw text when it does not read."""
    try:
        if key == "size":
            return parse_size(raw)
        if key == "mode":
            return int(raw, 8)
        if key in ("block_size", "uid", "gid", "replicas"):
            return int(raw)
        if key == DURABILITY:
            return parse_durability(raw)
    except (UserError, ValueError):
        pass
    return raw


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # still mounted (lazily detached elsewhere) or not there: the next Mount copes

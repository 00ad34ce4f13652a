"""What the node does when asked: the operations behind the control API.

``NodeService`` owns the node's mount table (which volume is bound where); the store
and the filesystem core are handed in. Its methods run on the trio thread; the ones
that touch host paths await worker threads for the system calls (see mountd.mounts).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Callable

import trio

from cfs import check
from cfs.errors import UserError, VolumeBusy
from cfs.fs import DEFAULT_BLOCK_SIZE, Filesystem
from cfs.names import validate_volume_name
from cfs.store import catalog
from mountd import mounts
from mountd.config import DaemonConfig

log = logging.getLogger(__name__)

CREATE_OPTIONS = {"block_size", "uid", "gid", "mode", "size"}
"""``size`` is a limit recorded with the volume (bytes, or 10G, 512M, ...); nothing enforces it yet."""


class NodeService:
    def __init__(self, config: DaemonConfig, fs: Filesystem) -> None:
        self.config = config
        self.fs = fs
        self.store = fs.store
        self.started = time.time()
        self._mount_lock = trio.Lock()

    # --- volumes -------------------------------------------------------------------

    async def volume_create(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        validate_volume_name(name)
        opts = dict(options or {})
        unknown = sorted(set(opts) - CREATE_OPTIONS)
        if unknown:
            raise UserError(f"unknown volume option(s): {', '.join(unknown)} (known: {', '.join(sorted(CREATE_OPTIONS))})")
        block_size = _int_option(opts, "block_size", DEFAULT_BLOCK_SIZE)
        uid, gid = _int_option(opts, "uid", 0), _int_option(opts, "gid", 0)
        mode = int(str(opts.get("mode", "755")), 8) if _octal(opts.get("mode", "755")) else None
        if mode is None:
            raise UserError(f"option mode={opts['mode']!r} is not an octal permission like 755")
        if "size" in opts:
            opts["size"] = str(parse_size(opts["size"]))
        record = self.fs.create_volume(name, block_size=block_size, uid=uid, gid=gid, mode=mode,
                                       options={k: str(v) for k, v in opts.items()})
        log.info("created volume %s (block size %d)", name, record.block_size)
        return self._describe(record.name)

    async def volume_ls(self) -> list[dict[str, Any]]:
        return [self._describe(record.name) for record in self.fs.volumes()]

    async def volume_inspect(self, name: str) -> dict[str, Any]:
        info = self._describe(name)
        info["usage"] = self.fs.volume_usage(name)
        return info

    async def volume_info(self, name: str) -> dict[str, Any]:
        """What ``volume_inspect`` says without the usage scan (cheap enough for every Docker ``Get``)."""
        return self._describe(name)

    async def volume_rm(self, name: str) -> dict[str, Any]:
        self.fs.volume(name)
        where = self._mounted_at(name)
        if where:
            raise VolumeBusy(f"volume {name!r} is mounted at {', '.join(where)}; unmount it first")
        self.fs.remove_volume(name)
        log.info("removed volume %s", name)
        return {"removed": name}

    def _describe(self, name: str) -> dict[str, Any]:
        record = self.fs.volume(name)
        return {
            "name": record.name, "id": record.volume_id.hex(), "block_size": record.block_size,
            "created": _iso(record.created_ns / 1e9), "options": record.options,
            "mountpoints": self._mounted_at(name),
        }

    def _recorded(self) -> dict[str, tuple[str, bool]]:
        with self.store.op() as op:
            return catalog.recorded_mounts(op)

    def _mounted_at(self, name: str) -> list[str]:
        return sorted(path for path, (volume, _ro) in self._recorded().items() if volume == name)

    # --- mounts --------------------------------------------------------------------

    async def mount(self, name: str, path: str, read_only: bool = False) -> dict[str, Any]:
        async with self._mount_lock:
            self.fs.volume(name)
            target = await trio.to_thread.run_sync(mounts.check_target, path)
            await trio.to_thread.run_sync(mounts.bind, self.config.fuse_root / name, target, read_only)
            with self.store.op() as op:
                catalog.record_mount(op, str(target), name, read_only)
            self.store.commit()
        log.info("mounted volume %s at %s%s", name, target, " (read-only)" if read_only else "")
        return {"volume": name, "mountpoint": str(target), "read_only": read_only}

    async def umount(self, path: str, lazy: bool = False) -> dict[str, Any]:
        """Unmount and forget a mount; ``lazy`` detaches it even while a process still uses it."""
        async with self._mount_lock:
            target = Path(os.path.abspath(path))
            recorded = self._recorded()
            key = str(target) if str(target) in recorded else str(target.resolve()) if target.exists() else str(target)
            if key not in recorded:
                raise UserError(f"{target} is not a cfs mount of this node")
            name = recorded[key][0]
            if await trio.to_thread.run_sync(mounts.is_mount_point, Path(key)):
                try:
                    await trio.to_thread.run_sync(mounts.unmount, Path(key), bool(lazy))
                except OSError as exc:
                    raise UserError(f"cannot unmount {key}: {exc.strerror} (is a process using it?)") from None
            with self.store.op() as op:
                catalog.drop_mount(op, key)
            self.store.commit()
        log.info("unmounted volume %s from %s", name, key)
        return {"volume": name, "mountpoint": key}

    async def restore_mounts(self) -> None:
        """Bind again every recorded mount (after a restart, clean or not)."""
        for path, (name, read_only) in sorted(self._recorded().items()):
            try:
                target = await trio.to_thread.run_sync(mounts.check_target, path)
                await trio.to_thread.run_sync(mounts.bind, self.config.fuse_root / name, target, read_only)
                log.info("remounted volume %s at %s", name, path)
            except (UserError, OSError) as exc:
                log.error("could not remount volume %s at %s: %s", name, path, exc)

    async def unbind_all(self) -> None:
        """Detach every volume mount before the FUSE session ends, keeping the records."""
        for path in sorted(self._recorded()):
            target = Path(path)
            try:
                if await trio.to_thread.run_sync(mounts.is_mount_point, target):
                    await trio.to_thread.run_sync(mounts.unmount, target, True)
            except OSError as exc:
                log.error("could not unmount %s: %s", path, exc)

    # --- node ----------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        volumes = self.fs.volumes()
        st = self.store.statvfs()
        return {
            "pid": os.getpid(), "data_dir": str(self.config.data_dir),
            "uptime_seconds": round(time.time() - self.started, 1),
            "volumes": len(volumes), "mounts": {p: v for p, (v, _ro) in self._recorded().items()},
            "store": {
                "path": str(self.store.path), "disk_bytes": st.f_blocks * st.f_frsize,
                "free_bytes": self.store.free_bytes(), "commits": self.store.commits,
                "pending_bytes": self.store.pending_bytes, "low_space": self.store.low_space,
            },
            "kernel_lookups": len(self.fs.lookups),
        }

    async def fsck(self, volume: str | None, repair: bool,
                   progress: Callable[[str, int, int], None]) -> dict[str, Any]:
        if volume is not None:
            self.fs.volume(volume)
        self.fs.sync()
        if repair:
            if volume is not None and self._mounted_at(volume):
                raise VolumeBusy(f"volume {volume!r} is mounted; unmount it before --repair")
            report = check.check(self.store, volume, repair=True, progress=progress)
        else:
            report = await trio.to_thread.run_sync(
                lambda: check.check_snapshot(self.store, volume, progress=progress))
        return report.to_json()


def _int_option(opts: dict[str, Any], key: str, default: int) -> int:
    raw = opts.get(key, default)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise UserError(f"option {key}={raw!r} is not a whole number") from None


_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?", re.IGNORECASE)


def parse_size(raw: Any) -> int:
    """Bytes from ``10G``, ``512m``, ``1.5GiB`` or ``4096`` (binary units, as Docker reads sizes)."""
    match = _SIZE.fullmatch(str(raw).strip())
    if match is None or float(match.group(1)) <= 0:
        raise UserError(f"option size={raw!r} is not a size like 10G, 512M or 1073741824")
    return int(float(match.group(1)) * 1024 ** " kmgtp".index(match.group(2).lower() or " "))


def _octal(raw: Any) -> bool:
    return isinstance(raw, (str, int)) and all(c in "01234567" for c in str(raw)) and 0 < len(str(raw)) <= 4


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

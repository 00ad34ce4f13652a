"""``mount.cfs``: the helper mount(8) runs for ``mount -t cfs`` and ``-t fuse.cfs`` (fstab).

mount(8) runs ``/sbin/mount.TYPE SPEC DIR [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]``
(util-linux looks for ``mount.fuse.cfs`` before fuse3's ``mount.fuse``, which would run a
program named ``cfs`` with other arguments). Both names are links to this one script
(tools/bootstrap.sh installs them). It asks the node's daemon to mount the volume SPEC at
DIR, as ``cfs mount`` does, and prints nothing on success, one line on failure; its
exit status is mount(8)'s: 1 for a wrong invocation, 32 when the mount failed.

Nothing is mounted by this process: the daemon binds the volume, and forgets the mount
when ``umount DIR`` takes it away (mountd.service.NodeService.watch_unmounts), so no
umount helper is needed.

``parse`` is a pure function of the arguments (tests/unit/test_mount_helper.py).
"""

from __future__ import annotations

import getopt
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cfs.errors import CfsError
from cfs.names import is_snapshot_name, validate_catalog_name
from mountd.config import DaemonConfig, default_data_dir
from tools.client import call

USAGE_ERROR = 1
MOUNT_FAILURE = 32
"""mount(8)'s exit statuses (its man page, "RETURN CODES")."""

TYPES = {"cfs", "fuse.cfs"}

IGNORED = {
    "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail",
    "exec", "async", "loud", "silent",
    "atime", "noatime", "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime",
    "diratime", "nodiratime",
}
"""Options for mount(8) itself (when and who may mount), or ones that change nothing here:
what they ask for is what a volume does anyway (cfs keeps its own times)."""

IGNORED_PREFIXES = ("x-", "comment=", "user=", "uhelper=", "helper=")
"""Userspace options for mount(8), systemd (x-systemd.*) and the like, and what mount(8)
adds itself (user=NAME for a user mount)."""

IN_FORCE = {"nosuid", "nodev"}
"""What every cfs mount is already: the node's FUSE session is mounted nosuid,nodev and its
volumes are bind mounts of it."""

REFUSED = {
    "suid": "set-user-ID bits are never honoured on cfs (its FUSE session is nosuid)",
    "dev": "device files are never opened on cfs (its FUSE session is nodev)",
    "noexec": "cfs cannot make a volume's mount noexec yet",
    "sync": "cfs cannot make a volume's writes synchronous; fsync them",
    "dirsync": "cfs cannot make a volume's directory changes synchronous; fsync them",
    "remount": "cfs cannot remount a volume; umount it and mount it again",
    "bind": "bind mounts of a cfs mount are made with mount --bind",
    "rbind": "bind mounts of a cfs mount are made with mount --bind",
}
"""Options mount(8) knows that cfs cannot keep: refused with the reason, never dropped in silence."""


class UsageError(CfsError):
    """The helper was called wrongly (mount(8)'s status 1)."""


@dataclass(frozen=True)
class Request:
    volume: str
    mountpoint: str
    read_only: bool = False
    data_dir: Path | None = None
    fake: bool = False
    """-f: check everything, mount nothing (mount -f)."""
    verbose: bool = False


def parse(argv: list[str]) -> Request:
    """What ``mount.cfs SPEC DIR [-sfnvrw] [-N NS] [-o OPTIONS] [-t TYPE]`` asks for."""
    try:
        flags, args = getopt.gnu_getopt(argv, "sfnvrwo:t:N:")
    except getopt.GetoptError as exc:
        raise UsageError(str(exc)) from None
    if len(args) != 2:
        raise UsageError("usage: mount.cfs VOLUME DIR [-sfnv] [-o OPTIONS]")
    volume, mountpoint = _volume_name(args[0], os.getcwd()), args[1]
    try:
        validate_catalog_name(volume)
    except CfsError as exc:
        raise UsageError(f"{volume!r} is not a volume name: {exc}") from None
    sloppy = ("-s", "") in flags
    read_only, data_dir = False, None
    for flag, value in flags:
        if flag in ("-r", "-w"):
            read_only = flag == "-r"
        elif flag == "-t" and value not in TYPES:
            raise UsageError(f"file system type {value!r} is not cfs's (cfs or fuse.cfs)")
        elif flag == "-N":
            raise UsageError("-N (another mount namespace) is not supported: the node's daemon mounts in its own")
        elif flag == "-o":
            for key, option_value in _options(value, sloppy):
                if key == "data_dir":
                    data_dir = Path(option_value)
                else:
                    read_only = key == "ro"
    return Request(volume, mountpoint, read_only=read_only, data_dir=data_dir,
                   fake=("-f", "") in flags, verbose=("-v", "") in flags)


def _volume_name(spec: str, cwd: str) -> str:
    """The volume that SPEC names. mount(8) makes a SPEC that is the name of an existing
    path canonical, for every type it does not know as a network or pseudo file system:
    ``mount -t cfs data /m`` run in / passes /data if /data exists (at boot, systemd runs
    mount(8) in /). A volume name has no '/', so an absolute SPEC is undone: the entry of
    mount(8)'s working directory (ours) that resolves to it, its last component first."""
    if not spec.startswith("/"):
        return spec
    names = [os.path.basename(spec)]
    try:
        names += sorted(os.listdir(cwd))  # a symbolic link there resolves to another name
    except OSError:
        pass
    for name in names:
        if name and os.path.realpath(os.path.join(cwd, name)) == spec:
            return name
    return spec


def _options(text: str, sloppy: bool) -> list[tuple[str, str]]:
    """The options of ``-o`` that mean something to cfs (ro, rw, data_dir), in order, as
    (key, value); the others are checked and dropped. Unknown ones are an error unless
    ``sloppy`` (-s)."""
    kept = []
    for option in text.split(","):
        key, has_value, value = option.partition("=")
        if not option or option in IGNORED or option in IN_FORCE or option.startswith(IGNORED_PREFIXES):
            continue
        if option in ("ro", "rw"):
            kept.append((option, ""))
        elif key == "data_dir" and has_value:
            if not value:
                raise UsageError("option data_dir= needs a directory")
            kept.append((key, value))
        elif option in REFUSED:
            raise UsageError(f"option {option}: {REFUSED[option]}")
        elif not sloppy:
            raise UsageError(f"unknown option {option!r} (cfs takes ro, rw and data_dir=DIR, and mount(8)'s "
                             "defaults, _netdev, nofail, noauto, user, x-*)")
    return kept


def mount(request: Request) -> None:
    """Ask the daemon of the request's data directory to mount (nothing, for -f)."""
    config = DaemonConfig(data_dir=(request.data_dir or default_data_dir()).absolute())
    if request.fake:
        call(config.socket_path, "volume.info", {"name": request.volume})
        return
    path = os.path.realpath(request.mountpoint)
    if _mounted_there(config.socket_path, request, path):
        return
    call(config.socket_path, "mount", {"name": request.volume, "path": path, "read_only": request.read_only})


def _mounted_there(socket_path: Path, request: Request, path: str) -> bool:
    """Whether the daemon has the volume mounted at ``path`` already, as asked: then there
    is nothing to do. mount(8) does not see it (its table shows cfs's FUSE session,
    ``cfs /VOLUME``, where fstab says ``VOLUME``), so a second ``mount -a`` calls the helper
    again for every cfs line; it must succeed, as it does for the other file systems."""
    for mount in call(socket_path, "mount.ls"):
        if mount["path"] != path or not mount["mounted"]:
            continue
        read_only = request.read_only or is_snapshot_name(request.volume)  # a snapshot is always read-only
        if mount["volume"] != request.volume or bool(mount["read_only"]) != read_only:
            raise CfsError(f"{path} is already a mount point (of {mount['volume']}"
                           f"{', read-only' if mount['read_only'] else ''})")
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        request = parse(args)
    except UsageError as exc:
        print(f"mount.cfs: {exc}", file=sys.stderr)
        return USAGE_ERROR
    try:
        mount(request)
    except CfsError as exc:
        print(f"mount.cfs: cannot mount {request.volume} on {request.mountpoint}: {exc}", file=sys.stderr)
        return MOUNT_FAILURE
    if request.verbose:
        print(f"mount.cfs: mounted volume {request.volume} on {request.mountpoint}"
              f"{' (read-only)' if request.read_only else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a CSI request may ask of cfs, checked before anything is done (sans I/O).

Every function here reads a request's fields and returns what cfs makes of them, or
raises ``Abort`` with the gRPC code the CSI specification (v1.9.0) names and a message
for a person. Nothing here talks to the daemon, so a malformed request is refused
before it can change anything, and these rules are tested without a server.

* **Access.** cfs serves filesystems (``mount`` access) to one node at a time: a
  volume is written by one node (its lease), so the single-node modes are taken and the
  multi-node ones refused, as are block volumes, each with INVALID_ARGUMENT and why.
* **Capacity** is the volume's size limit: ``required_bytes`` (or ``limit_bytes`` when
  only that is given) becomes the limit; neither: no limit (capacity 0, "unknown").
* **Ids.** A volume's id is its cfs name, a snapshot's ``volume@snapshot``; an id that
  cannot be a cfs name names nothing (NOT_FOUND where the spec asks for an existing
  object, OK where it asks for one to be gone).
* **Pagination tokens** are the name to start at, marked and encoded so that a token
  cfs did not hand out is refused with ABORTED, as the spec asks.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc

from cfs.durability import OPTION as DURABILITY, Durability, parse_durability
from cfs.errors import InvalidName, UserError
from cfs.names import split_snapshot_name, validate_volume_name
from tools.csi.generated import csi_pb2

Mode = csi_pb2.VolumeCapability.AccessMode.Mode

SINGLE_NODE_MODES = frozenset({Mode.SINGLE_NODE_WRITER, Mode.SINGLE_NODE_READER_ONLY,
                               Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER})
"""The access modes cfs serves: every mode of one node."""
READER_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY})
SHARED_ON_NODE = frozenset({Mode.SINGLE_NODE_MULTI_WRITER})
"""Modes in which the volume may be published at several target paths of its node (the
spec's table for a second NodePublishVolume): any other single-node mode allows one."""

FS_TYPES = frozenset({"", "cfs", "fuse.cfs"})
PARAMETERS = frozenset({"replicas", "block_size", "durability"})
IGNORED_PARAMETER_PREFIX = "csi.storage.k8s.io/"
"""Parameters the Kubernetes external-provisioner adds (--extra-create-metadata: the PV's
and PVC's names): information for the driver, not options of the volume."""

TOKEN_PREFIX = "cfs1."
MAX_INT64 = 2**63 - 1


class Abort(Exception):
    """End the call with a gRPC status: ``code`` as the spec names it, and why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> Abort:
    return Abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def required(value: str, field: str) -> str:
    """A REQUIRED string field: empty is missing (proto3 cannot tell the two apart)."""
    if not value:
        raise invalid(f"{field} is required")
    return value


# --- capabilities --------------------------------------------------------------------

def capability(cap: csi_pb2.VolumeCapability, field: str = "volume_capability") -> int:
    """The access mode of a capability cfs serves; INVALID_ARGUMENT saying why it cannot."""
    kind = cap.WhichOneof("access_type")
    if kind == "block":
        raise invalid(f"{field}: cfs volumes are filesystems (mount access); block volumes are not served")
    if kind != "mount":
        raise invalid(f"{field}: access_type is required (mount)")
    if cap.mount.fs_type not in FS_TYPES:
        raise invalid(f"{field}: fs_type {cap.mount.fs_type!r}: a cfs volume is a cfs filesystem "
                      "(leave fs_type empty)")
    if cap.mount.mount_flags:
        raise invalid(f"{field}: cfs volumes take no mount flags (they are bound nosuid,nodev; "
                      "read-only comes from the access mode or readonly)")
    if cap.mount.volume_mount_group:
        raise invalid(f"{field}: volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)")
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        raise invalid(f"{field}: access_mode is required")
    mode = cap.access_mode.mode
    if mode not in SINGLE_NODE_MODES:
        raise invalid(f"{field}: access mode {Mode.Name(mode)} is not served: a cfs volume is written by "
                      "one node at a time (its lease, with fencing, is how cfs avoids split brain), so only "
                      "single-node modes are")
    return mode


def capabilities(caps: Iterable[csi_pb2.VolumeCapability], field: str = "volume_capabilities") -> list[int]:
    """Every capability of a REQUIRED list checked; their modes."""
    modes = [capability(cap, f"{field}[{i}]") for i, cap in enumerate(caps)]
    if not modes:
        raise invalid(f"{field} is required")
    return modes


def unsupported(cap: csi_pb2.VolumeCapability) -> str | None:
    """Why cfs cannot serve a capability, or None (ValidateVolumeCapabilities answers
    with a message, not an error)."""
    try:
        capability(cap)
    except Abort as exc:
        return exc.message
    return None


# --- capacity and parameters -----------------------------------------------------------

def capacity(rng: csi_pb2.CapacityRange | None) -> tuple[int, int]:
    """(the size limit to give, the most the request allows; 0: none) of a capacity range."""
    if rng is None:
        return 0, 0
    if rng.required_bytes < 0 or rng.limit_bytes < 0:
        raise invalid("capacity_range: required_bytes and limit_bytes are not negative")
    if rng.limit_bytes and rng.required_bytes > rng.limit_bytes:
        raise Abort(grpc.StatusCode.OUT_OF_RANGE, f"capacity_range: required_bytes {rng.required_bytes} is "
                    f"above limit_bytes {rng.limit_bytes}")
    return rng.required_bytes or rng.limit_bytes, rng.limit_bytes


def fits(limit: int, rng: csi_pb2.CapacityRange | None) -> bool:
    """Whether a volume whose size limit is ``limit`` (0: none) satisfies a capacity range:
    at least ``required_bytes``, at most ``limit_bytes`` (an unlimited volume is at least
    anything, and not at most anything)."""
    want, most = capacity(rng)
    if most and (limit == 0 or limit > most):
        return False
    return limit == 0 or limit >= want


def parameters(params: Mapping[str, str]) -> dict[str, str]:
    """The volume options the StorageClass parameters ask for (``replicas``,
    ``block_size``, ``durability``: cfs.durability, by its mode's name); other keys are
    refused, but Kubernetes' own metadata."""
    unknown = sorted(k for k in params if k not in PARAMETERS and not k.startswith(IGNORED_PARAMETER_PREFIX))
    if unknown:
        raise invalid(f"unknown parameter(s) {', '.join(unknown)}: cfs takes {', '.join(sorted(PARAMETERS))}")
    out = {}
    for key in sorted(PARAMETERS & set(params)):
        value = params[key].strip()
        if key == DURABILITY:
            try:
                value = parse_durability(value).value
            except UserError:
                raise invalid(f"parameter durability={params[key]!r} is not a durability mode: use "
                              f"{' or '.join(mode.value for mode in Durability)}") from None
        elif not value.isdigit():
            raise invalid(f"parameter {key}={params[key]!r} is not a whole number")
        out[key] = value
    return out


# --- ids --------------------------------------------------------------------------------

def volume_name(volume_id: str) -> str | None:
    """The cfs volume a CSI volume id names; None if it cannot name one."""
    try:
        return validate_volume_name(volume_id)
    except InvalidName:
        return None


def snapshot_parts(snapshot_id: str) -> tuple[str, str] | None:
    """(volume, snapshot) a CSI snapshot id (``volume@snapshot``) names; None if it cannot."""
    try:
        return split_snapshot_name(snapshot_id)
    except InvalidName:
        return None


def new_name(name: str, what: str) -> str:
    """A CSI name (CreateVolume's, CreateSnapshot's) as a cfs name: REQUIRED, and in the
    alphabet cfs shares with Docker (INVALID_ARGUMENT saying so)."""
    required(name, "name")
    try:
        return validate_volume_name(name)
    except InvalidName as exc:
        raise invalid(f"{what} name: {exc}") from None


# --- pagination -------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    """Where a listing starts (a name; "" from the first) and how many it may return (0: all)."""

    start: str
    size: int


def page(max_entries: int, starting_token: str) -> Page:
    if max_entries < 0:
        raise invalid(f"max_entries must not be negative, got {max_entries}")
    if not starting_token:
        return Page("", max_entries)
    if starting_token.startswith(TOKEN_PREFIX):
        try:
            start = base64.urlsafe_b64decode(starting_token[len(TOKEN_PREFIX):].encode("ascii")).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeError):
            start = ""
        if start:
            return Page(start, max_entries)
    raise Abort(grpc.StatusCode.ABORTED, f"starting_token {starting_token!r} was not handed out by this plugin; "
                "list again from the start")


def token(next_name: str) -> str:
    """The token that starts a listing at ``next_name``: it stays good if that entry goes."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(next_name.encode("utf-8")).decode("ascii")


def paginate(names: list[str], where: Page) -> tuple[list[str], str]:
    """The sorted ``names`` from the page's start, at most its size of them, and the token
    of the rest ("" when none is left)."""
    rest = [n for n in sorted(names) if n >= where.start]
    if where.size and len(rest) > where.size:
        return rest[:where.size], token(rest[where.size])
    return rest, ""

"""The error taxonomy of cfs, in one place.

Every error cfs raises on purpose is a ``CfsError``, of one of these kinds, never mixed up:

* ``FsError``: what a filesystem call answers, with the errno the FUSE adapter reports.
  Most are expected outcomes (not found, exists, not empty, ...). Among them:

  - ``Corrupted``: stored bytes that fail validation (bad record header, chunk hash
    mismatch, a chunk that is referenced and missing: ``MissingChunk``). EIO, and
    logged with what was damaged; never answered as "not found" and never papered over
    with wrong bytes.
  - ``ChunkNotHere``: a chunk's bytes are not on this node: ``MissingChunk`` (damage)
    or ``RemoteChunk`` (held by replicas, not damage). The adapter fetches the chunk
    from a peer and runs the call again.
  - ``NoSpace``: the disk, the store map or the volume's size limit is full. The
    operation that hit it is rolled back and the caller gets ENOSPC; the store stays
    usable once space is freed.
  - ``ReadOnly`` (EROFS: a volume this node may not change), ``VolumeLost`` (EIO:
    an fsync this node can no longer vouch for) and ``NotReplicated`` (EIO: an fsync of
    a ``durability=strict`` volume that too few replicas acknowledged).

* ``UserError``: bad input to the command line, the control API or the Docker plugin
  (names, paths, options, unknown volumes), with a message meant for a person.
* ``ReplicationError``: a replication step failed (stale epoch, a gap or a trimmed log).
* ``Unavailable``: transient, a service cfs depends on did not answer in time, after
  retries with backoff; ``CoordError``: the coordinator answered something unusable.
* ``ProtocolError``: a peer broke the peer protocol; its connection is dropped.

Anything else (TypeError, KeyError, ...) is a bug and propagates.
"""

from __future__ import annotations

import errno as _errno


class CfsError(Exception):
    """Base of every error cfs raises on purpose."""


class FsError(CfsError):
    """A filesystem call failed with a well-defined errno."""

    errno: int = _errno.EIO

    def __init__(self, message: str = "", errno: int | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if errno is not None:
            self.errno = errno


class NotFound(FsError):
    errno = _errno.ENOENT


class Exists(FsError):
    errno = _errno.EEXIST


class NotADirectory(FsError):
    errno = _errno.ENOTDIR


class IsADirectory(FsError):
    errno = _errno.EISDIR


class NotEmpty(FsError):
    errno = _errno.ENOTEMPTY


class InvalidArgument(FsError):
    errno = _errno.EINVAL


class NameTooLong(FsError):
    errno = _errno.ENAMETOOLONG


class NotPermitted(FsError):
    errno = _errno.EPERM


class AccessDenied(FsError):
    errno = _errno.EACCES


class NoAttribute(FsError):
    errno = _errno.ENODATA


class TooManyLinks(FsError):
    errno = _errno.EMLINK


class FileTooBig(FsError):
    errno = _errno.EFBIG


class NotSupported(FsError):
    errno = _errno.EOPNOTSUPP


class NoDevice(FsError):
    """fallocate on what is neither a regular file nor a directory."""

    errno = _errno.ENODEV


class ReadOnly(FsError):
    errno = _errno.EROFS


class VolumeLost(FsError):
    """This node no longer writes the volume (fenced, taken over, or closed): an fsync or
    a close after writing cannot vouch for what was written through it, so it fails
    with EIO, never with success (mountd.cluster.writer)."""

    errno = _errno.EIO


class NotReplicated(FsError):
    """A volume with ``durability=strict``: fewer than its ``replicas`` nodes acknowledged
    what was written within the replication timeout, so an fsync or a close after
    writing cannot claim it durable and fails with EIO. The data stays stored here and
    goes to the replicas when they answer (cfs.durability)."""

    errno = _errno.EIO


class CrossDevice(FsError):
    errno = _errno.EXDEV


class NoSpace(FsError):
    """The disk or the LMDB map is full; the operation was rolled back."""

    errno = _errno.ENOSPC


class Corrupted(FsError):
    """Stored bytes failed validation. Always surfaced as EIO, never as wrong data."""

    errno = _errno.EIO


class CorruptRecord(Corrupted):
    """A metadata record has an unknown version or a bad length."""


class CorruptChunk(Corrupted):
    """A chunk's bytes do not hash to its key."""

    def __init__(self, chunk_hex: str, where: str = "") -> None:
        super().__init__(f"chunk {chunk_hex} failed hash verification{where}")
        self.chunk_hex = chunk_hex


class ChunkNotHere(FsError):
    """The bytes of a chunk that a block map names are not on this node. ``chunk_id``
    says which, so that a node of a cluster can fetch them from a peer. Its kinds:
    ``MissingChunk`` (damage) and ``RemoteChunk`` (not damage)."""

    errno = _errno.EIO

    def __init__(self, message: str, chunk_id: bytes | None = None) -> None:
        super().__init__(message)
        self.chunk_id = chunk_id


class MissingChunk(ChunkNotHere, Corrupted):
    """A block map names a chunk the store neither holds nor knows to be on replicas:
    damage."""


class UserError(CfsError):
    """Bad input from a person or a script; the message is shown as is."""


class VolumeNotFound(UserError):
    pass


class VolumeExists(UserError):
    pass


class VolumeBusy(UserError):
    pass


class InvalidName(UserError):
    pass


# --- replication ----------------------------------------------------------------------

class ReplicationError(CfsError):
    """A replication step failed; the message says which volume and why."""


class StaleEpoch(ReplicationError):
    """A write carried a lease epoch older than one this node has seen: its writer was fenced."""

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


class LogGap(ReplicationError):
    """Log records arrived out of order: the receiver needs them from ``expected`` on."""

    def __init__(self, message: str, expected: int) -> None:
        super().__init__(message)
        self.expected = expected


class LogTrimmed(ReplicationError):
    """The records asked for were trimmed from the log: the volume must be copied whole."""


class RemoteChunk(ChunkNotHere):
    """The chunk's bytes are on replicas, not here: fetch them, then retry the operation.
    Not damage: a replica replays block rows without the bytes (cfs.store.chunks)."""

    def __init__(self, chunk_id: bytes, where: str = "") -> None:
        super().__init__(f"chunk {chunk_id.hex()} is held by replicas only{where}", chunk_id)


# --- cluster coordination (cfs.coord) -------------------------------------------------

class NodeNotFound(UserError):
    pass


class LeaseHeld(VolumeBusy):
    """Another live node holds the volume's read-write lease (``cfs.coord``)."""

    def __init__(self, volume: str, node_id: bytes, address: str, epoch: int) -> None:
        super().__init__(f"volume {volume!r} is in use on node {node_id.hex()} at {address} "
                         f"(lease epoch {epoch})")
        self.volume = volume
        self.node_id = node_id
        self.address = address
        self.epoch = epoch


class AttachedElsewhere(VolumeBusy):
    """The volume is attached to another live node (``Coordinator.attach``): a volume is
    attached to one node at a time, as one node at a time writes it."""

    def __init__(self, volume: str, node_id: bytes, read_only: bool) -> None:
        mode = "read-only" if read_only else "read-write"
        super().__init__(f"volume {volume!r} is attached to node {node_id.hex()} ({mode}); "
                         "detach it there first")
        self.volume = volume
        self.node_id = node_id


class AttachmentMismatch(VolumeBusy):
    """The volume is attached to this node already, in the other mode (read-only or not)."""


class Unavailable(CfsError):
    """Transient: a service cfs depends on did not answer. Raised once retries with
    backoff have run out their deadline; the caller may try again later."""


class EtcdUnavailable(Unavailable):
    pass


class CoordError(CfsError):
    """The coordination store answered something unusable (an etcd error reply, a
    damaged record), or was used against its rules (a second node on the embedded one)."""


class RegistrationLost(CoordError):
    """This node's cluster registration expired or was revoked: the volume leases it
    held are gone and it must stop writing."""


# --- peer protocol (cfs.repl) ---------------------------------------------------------

class ProtocolError(CfsError):
    """A peer broke the peer protocol (bad frame, bad MAC, bad message, wrong state).

    The connection is dropped: nothing of the offending frame, and nothing after it, is
    used. Not transient: reconnecting to a peer that does this again fails again.
    """


class AuthFailed(ProtocolError):
    """The peer could not prove it knows the cluster secret, or is not who it should be."""

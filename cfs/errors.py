"""The error taxonomy of cfs, in one place.

Four kinds, never mixed up:

* ``FsError`` subclasses: what a filesystem call answers (not found, exists, ...). Each
  carries the errno the FUSE adapter reports; they are expected outcomes, not faults.
* ``Corrupted``: stored bytes that fail validation (bad record header, chunk hash
  mismatch). Reported as EIO to the caller and logged with what was damaged; never
  answered as "not found" and never papered over with wrong bytes.
* ``NoSpace``: the disk or the store map is full. The operation that hit it is rolled
  back and the caller gets ENOSPC; the store stays usable once space is freed.
* ``UserError``: bad input to the command line or the control API (names, paths,
  unknown volumes), with a message meant for a person.

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


class ReadOnly(FsError):
    errno = _errno.EROFS


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


class MissingChunk(Corrupted):
    """A block map names a chunk the store does not hold."""


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

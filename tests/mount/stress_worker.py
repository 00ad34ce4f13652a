"""One process of the stress workload (tests/mount/test_stress.py), fsstress's kind.

Usage: stress_worker.py ROOT SEED SECONDS REPORT

Until SECONDS have passed, takes random operations on a tree under ROOT that other
workers change at the same time: files created, written at random offsets (across
block boundaries, now and then a MiB at once), appended, truncated, read, renamed
(across directories, with RENAME_NOREPLACE and RENAME_EXCHANGE too), linked, unlinked,
fsync'd; directories made, listed, removed, renamed; symlinks; extended attributes;
modes and times. With others racing, an operation may fail with the errnos a racing
program can expect (ENOENT, EEXIST, ...); any other errno is a finding. Writes JSON to
REPORT: operation counts and the unexpected failures (operation, path, errno).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable

RACES = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.ENODATA,
         errno.EINVAL, errno.ELOOP}
"""What a racing program can expect: the path changed under it or is of another type now
(ENOENT, EEXIST, ENOTDIR, EISDIR, ELOOP: a symlink opened with O_NOFOLLOW), a directory
gained an entry (ENOTEMPTY), a rename into its own subtree (EINVAL), an attribute
another worker removed (ENODATA)."""
EXPECTED = {"link": {errno.EPERM}, "xattr": {errno.EPERM}}
"""And per operation: a hard link to a directory, user.* attributes on a symlink."""

DIRS = 6
NAMES = 24
BLOCK = 4096

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD = -100


def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class Worker:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.counts: dict[str, int] = {}
        self.unexpected: list[tuple[str, str, int]] = []

    def path(self, depth: int = 2) -> Path:
        """A random path in the shared namespace: a few directories, a few names each."""
        parts = [f"d{self.rng.randrange(DIRS)}" for _ in range(self.rng.randrange(depth))]
        return self.root.joinpath(*parts, f"n{self.rng.randrange(NAMES)}")

    def data(self) -> bytes:
        size = self.rng.choice((0, 1, 511, BLOCK - 1, BLOCK + 1, 3 * BLOCK + 7, 20_000, 1 << 20))
        return self.rng.randbytes(size)

    def run(self, seconds: float) -> None:
        ops: list[tuple[int, Callable[[], None]]] = [
            (8, self.create), (10, self.pwrite), (4, self.append), (5, self.truncate), (8, self.read),
            (8, self.rename), (2, self.rename2), (3, self.link), (6, self.unlink), (4, self.mkdir),
            (3, self.rmdir), (2, self.symlink), (3, self.xattr), (2, self.chmod), (2, self.utime),
            (3, self.fsync), (4, self.listdir), (4, self.stat),
        ]
        choices = [op for weight, op in ops for _ in range(weight)]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            op = self.rng.choice(choices)
            name = op.__name__
            self.counts[name] = self.counts.get(name, 0) + 1
            try:
                op()
            except OSError as exc:
                if exc.errno not in RACES and exc.errno not in EXPECTED.get(name, ()):
                    self.unexpected.append((name, str(exc.filename or ""), exc.errno or 0))

    # --- the operations ---------------------------------------------------------------

    def create(self) -> None:
        fd = os.open(self.path(), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, self.data())
        finally:
            os.close(fd)

    def _open(self, flags: int) -> int:
        return os.open(self.path(), flags | os.O_NOFOLLOW)

    def pwrite(self) -> None:
        fd = self._open(os.O_WRONLY)
        try:
            os.pwrite(fd, self.data(), self.rng.randrange(4 * BLOCK * 16))
        finally:
            os.close(fd)

    def append(self) -> None:
        fd = self._open(os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, self.data())
        finally:
            os.close(fd)

    def truncate(self) -> None:
        os.truncate(self.path(), self.rng.choice((0, 1, BLOCK, 5 * BLOCK + 3, 100_000, 2 << 20)))

    def read(self) -> None:
        fd = self._open(os.O_RDONLY)
        try:
            os.pread(fd, 1 << 20, self.rng.randrange(os.fstat(fd).st_size + 1))
        finally:
            os.close(fd)

    def rename(self) -> None:
        os.rename(self.path(), self.path())

    def rename2(self) -> None:
        renameat2(self.path(), self.path(), self.rng.choice((1, 2)))  # NOREPLACE, EXCHANGE

    def link(self) -> None:
        os.link(self.path(), self.path(), follow_symlinks=False)

    def unlink(self) -> None:
        os.unlink(self.path())

    def mkdir(self) -> None:
        os.mkdir(self.root / f"d{self.rng.randrange(DIRS)}", 0o755)

    def rmdir(self) -> None:
        os.rmdir(self.root / f"d{self.rng.randrange(DIRS)}")

    def symlink(self) -> None:
        os.symlink(f"n{self.rng.randrange(NAMES)}", self.path())

    def xattr(self) -> None:
        path, key = self.path(), f"user.k{self.rng.randrange(4)}"
        action = self.rng.randrange(3)
        if action == 0:
            os.setxattr(path, key, self.rng.randbytes(self.rng.randrange(200)), follow_symlinks=False)
        elif action == 1:
            os.getxattr(path, key, follow_symlinks=False)
        else:
            os.removexattr(path, key, follow_symlinks=False)

    def chmod(self) -> None:
        os.chmod(self.path(), self.rng.choice((0o600, 0o644, 0o755)))

    def utime(self) -> None:
        os.utime(self.path(), ns=(self.rng.randrange(1 << 40), self.rng.randrange(1 << 40)), follow_symlinks=False)

    def fsync(self) -> None:
        fd = self._open(os.O_RDONLY)
        try:
            (os.fsync if self.rng.randrange(2) else os.fdatasync)(fd)
        finally:
            os.close(fd)

    def listdir(self) -> None:
        with os.scandir(self.root / f"d{self.rng.randrange(DIRS)}" if self.rng.randrange(2) else self.root) as it:
            for entry in it:
                entry.is_dir(follow_symlinks=False)

    def stat(self) -> None:
        os.stat(self.path(), follow_symlinks=False)


def main() -> None:
    root, seed, seconds, report = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
    worker = Worker(root, seed)
    worker.run(seconds)
    report.write_text(json.dumps({"counts": worker.counts, "unexpected": worker.unexpected}))


if __name__ == "__main__":
    main()

"""fsx-style data test: one file, thousands of random operations, checked after each.

Random overlapping writes, reads, truncates that grow and shrink, fallocate (allocating,
with and without KEEP_SIZE, punching holes, zeroing ranges), and writes and reads
through a shared writable mmap (MAP_SHARED, msync, munmap) go to one file on a cfs
mount, and the same changes to a bytearray. After every operation the whole file must
equal the bytearray, read twice: through the page cache (what the kernel remembers) and
with O_DIRECT (what the daemon answers, its write-back cache included). Some operations
are bursts of writes and truncates with nothing read between them (see ``Fsx.burst``),
so that blocks the daemon caches meet the next write or truncate; stat comes at random
moments, and now and then the kernel's cached pages are dropped. The file is also
closed and reopened, the volume unmounted and mounted again, and at the end the daemon
restarted.

A failure names the seed, the operation number and the last operations. The run is
deterministic for a seed; a different seed or a longer run::

    CFS_FSX_SEED=1234 CFS_FSX_OPS=100000 .venv/bin/pytest tests/posix/test_fsx.py
"""

from __future__ import annotations

import mmap
import os
import random
from collections import deque
from pathlib import Path

import pytest

from tests.node import Node
from tests.posix._model_fixtures import assert_fsck_clean, env_int, remount, restart
from tests.posix.calls import fallocate

SEED = env_int("CFS_FSX_SEED", 20261122)
OPS = env_int("CFS_FSX_OPS", 4000)
MAX_SIZE = 256 * 1024
MAX_IO = 64 * 1024
PAGE = mmap.PAGESIZE
VOLUME = "fsx"
KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10


class Fsx:
    """The file under test and its model; ``step`` runs one random operation."""

    def __init__(self, node: Node, mnt: Path, rng: random.Random) -> None:
        self.node = node
        self.mnt = mnt
        self.path = mnt / "fsx.data"
        self.rng = rng
        self.model = bytearray()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        # Kept open: a close would make the daemon store its cached blocks (FUSE flush).
        self.direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
        self.direct_buf = mmap.mmap(-1, MAX_SIZE + 2 * MAX_IO)  # page aligned, as O_DIRECT wants
        self.log: deque[str] = deque(maxlen=30)

    # --- random choices ------------------------------------------------------------------

    def _range(self, within: int | None = None) -> tuple[int, int]:
        """An offset and a length: mostly small, sometimes large, often unaligned."""
        limit = MAX_SIZE if within is None else within
        offset = self.rng.randrange(limit) if limit else 0
        if self.rng.random() < 0.25:
            offset -= offset % self.rng.choice((512, 4096))  # block and page aligned too
        length = self.rng.choice((self.rng.randrange(1, 600), self.rng.randrange(1, MAX_IO)))
        return offset, max(0, min(length, limit - offset))

    def _data(self, length: int) -> bytes:
        kind = self.rng.random()
        if kind < 0.1:
            return bytes(length)  # zeros: holes, and chunks with trailing zeros cut off
        data = bytearray(self.rng.randbytes(length))
        if kind < 0.3 and length > 2:
            a, b = sorted(self.rng.sample(range(length), 2))
            data[a:b] = bytes(b - a)
        return bytes(data)

    # --- operations ------------------------------------------------------------------

    def write(self) -> str:
        offset, length = self._range()
        data = self._data(length)
        assert os.pwrite(self.fd, data, offset) == length
        self._model_write(offset, data)
        return f"write {offset}+{length}"

    def read(self) -> str:
        offset, length = self._range()
        expected = bytes(self.model[offset:offset + length])
        got = os.pread(self.fd, length, offset)
        assert got == expected, self._first_difference(offset, got, expected)
        return f"read {offset}+{length}"

    def truncate(self) -> str:
        size = self.rng.choice((self.rng.randrange(MAX_SIZE + 1), self.rng.randrange(4 * PAGE), 0))
        os.ftruncate(self.fd, size)
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))
        return f"truncate {size}"

    def punch_hole(self) -> str:
        offset, length = self._range()
        if length == 0:
            return "punch_hole nothing"
        fallocate(self.fd, PUNCH_HOLE | KEEP_SIZE, offset, length)
        end = min(offset + length, len(self.model))
        if offset < end:
            self.model[offset:end] = bytes(end - offset)
        return f"punch_hole {offset}+{length}"

    def zero_range(self) -> str:
        return self._fallocate(ZERO_RANGE, "zero_range")

    def allocate(self) -> str:
        return self._fallocate(0, "allocate")

    def _fallocate(self, mode: int, name: str) -> str:
        """Allocate or zero, growing the file or (KEEP_SIZE) not."""
        offset, length = self._range()
        if length == 0:
            return f"{name} nothing"
        keep = self.rng.random() < 0.5
        fallocate(self.fd, mode | (KEEP_SIZE if keep else 0), offset, length)
        end = offset + length
        if not keep and end > len(self.model):
            self.model.extend(bytes(end - len(self.model)))
        if mode == ZERO_RANGE:
            hi = min(end, len(self.model))
            if offset < hi:
                self.model[offset:hi] = bytes(hi - offset)
        return f"{name}{' keep_size' if keep else ''} {offset}+{length}"

    def map_write(self) -> str:
        """Write through a shared mapping; the file is first extended, as fsx does (a
        mapping cannot grow a file)."""
        offset, length = self._range()
        if length == 0:
            return "map_write nothing"
        if offset + length > len(self.model):
            os.ftruncate(self.fd, offset + length)
            self.model.extend(bytes(offset + length - len(self.model)))
        data = self._data(length)
        start = offset - offset % PAGE
        with mmap.mmap(self.fd, offset + length - start, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE, offset=start) as m:
            m[offset - start:offset - start + length] = data
            m.flush()  # msync(MS_SYNC)
        self._model_write(offset, data)
        return f"map_write {offset}+{length}"

    def map_read(self) -> str:
        if not self.model:
            return "map_read nothing"
        offset, length = self._range(len(self.model))
        if length == 0:
            return "map_read nothing"
        start = offset - offset % PAGE
        with mmap.mmap(self.fd, offset + length - start, mmap.MAP_SHARED, mmap.PROT_READ, offset=start) as m:
            got = m[offset - start:offset - start + length]
        expected = bytes(self.model[offset:offset + length])
        assert got == expected, self._first_difference(offset, got, expected)
        return f"map_read {offset}+{length}"

    def fsync(self) -> str:
        os.fsync(self.fd)
        return "fsync"

    def reopen(self) -> str:
        self.close()
        self.open()
        return "close and reopen"

    def remount(self) -> str:
        self.close()
        remount(self.node, VOLUME, self.mnt)
        self.open()
        return "unmount and mount"

    def restart(self) -> str:
        self.close()
        restart(self.node, self.mnt)
        self.open()
        return "restart the daemon"

    def burst(self) -> str:
        """Writes and truncates with no check between them. Any read or stat makes the
        kernel ask the daemon for the file's attributes (auto_inval_data), and that makes
        the daemon store its cached blocks; only in a burst do cached blocks meet the next
        write or truncate."""
        ops = self.rng.choices((Fsx.write, Fsx.truncate, Fsx.punch_hole, Fsx.zero_range), (8, 2, 1, 1),
                               k=self.rng.randrange(2, 12))
        for op in ops[:-1]:
            self.log.append(op(self) + " (in a burst)")
        return ops[-1](self) + " (last of a burst)"

    OPERATIONS = ((write, 30), (read, 15), (truncate, 8), (map_write, 15), (map_read, 10),
                  (punch_hole, 4), (zero_range, 3), (allocate, 3),
                  (burst, 8), (fsync, 3), (reopen, 3), (remount, 1))

    def step(self) -> None:
        ops, weights = zip(*self.OPERATIONS)
        op = self.rng.choices(ops, weights)[0]
        self.log.append(op(self))

    # --- checking ----------------------------------------------------------------------

    def _model_write(self, offset: int, data: bytes) -> None:
        if offset > len(self.model):
            self.model.extend(bytes(offset - len(self.model)))
        self.model[offset:offset + len(data)] = data

    def _first_difference(self, offset: int, got: bytes, expected: bytes) -> str:
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        return (f"bytes differ at file offset {offset + first}: read {len(got)} bytes, expected "
                f"{len(expected)}; got {got[first:first + 16].hex()}, expected {expected[first:first + 16].hex()}")

    def check(self, stat: bool, drop_pages: bool) -> None:
        """Compare the whole file. ``stat``: also ask the daemon for the size, and read
        past the end (which makes the kernel ask too); both make it store cached blocks."""
        expected = bytes(self.model)
        length = len(expected) + 1 if stat else len(expected)
        got = self._read_direct(length)
        assert got == expected, "read with O_DIRECT: " + self._first_difference(0, got, expected)
        if drop_pages:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        got = os.pread(self.fd, length, 0)
        assert got == expected, "read through the page cache: " + self._first_difference(0, got, expected)
        if stat:
            size = os.fstat(self.fd).st_size
            assert size == len(expected), f"stat gives size {size}, expected {len(expected)}"

    def _read_direct(self, length: int) -> bytes:
        """Read with O_DIRECT: the daemon's answer, not the page cache's."""
        n = os.preadv(self.direct_fd, [memoryview(self.direct_buf)[:length]], 0)
        return self.direct_buf[:n]

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR)
        self.direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.direct_fd)


@pytest.mark.parametrize("block_size", [512, 65536])
def test_fsx(node: Node, short_tmp: Path, block_size: int) -> None:
    seed = SEED + block_size
    print(f"fsx seed {seed} (set CFS_FSX_SEED={SEED} to repeat), {OPS} operations")
    mnt = node.mount(VOLUME, short_tmp / "mnt", block_size=block_size)
    fsx = Fsx(node, mnt, random.Random(seed))
    i = -1
    try:
        for i in range(OPS):
            fsx.step()
            fsx.check(stat=fsx.rng.random() < 0.2, drop_pages=i % 50 == 49)
        fsx.restart()
        fsx.check(stat=True, drop_pages=True)
    except AssertionError as exc:
        trail = "\n".join(f"  {line}" for line in fsx.log)
        raise AssertionError(f"fsx seed {seed} (CFS_FSX_SEED={SEED}), operation {i}: {exc}\n"
                             f"last operations:\n{trail}") from None
    finally:
        fsx.close()
        fsx.direct_buf.close()
    assert_fsck_clean(node)

"""O_DIRECT writes, and what buffered readers and mappings of the file see after them.

Databases mix the two: direct writes, buffered reads or a mapping of the same file
(through another descriptor, another process). Once a write has completed, a read of
its range must return the written bytes, however it reads. On FUSE that is the
filesystem's business as much as the kernel's: an asynchronous direct write (Linux
AIO here; io_uring takes the same path in the FUSE module) leaves the page cache as it
was when it started, and a read answered while it waited in the kernel's queue leaves
the old bytes there (docs/CONFORMANCE.md, "Direct I/O"). The write below is large
(32 MiB in 1 MiB requests, where the kernel queues at most 12 in the background), and a
reader faults in the last page of a mapping all the while, so that such a read happens
in every round.

Buffers for O_DIRECT are anonymous mappings: page-aligned, as O_DIRECT wants them.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from pathlib import Path

from tests.posix.calls import Aio

PAGE = mmap.PAGESIZE


def _filled(size: int, byte: bytes) -> mmap.mmap:
    buf = mmap.mmap(-1, size)
    buf.write(byte * size)
    return buf


def _address(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def test_a_direct_write_is_read_through_another_descriptor_and_a_mapping(fsdir: Path) -> None:
    path = fsdir / "f"
    path.write_bytes(b"a" * 4 * PAGE)
    reader = os.open(path, os.O_RDONLY)
    direct = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        view = mmap.mmap(reader, 4 * PAGE, prot=mmap.PROT_READ)
        assert os.pread(reader, 4 * PAGE, 0) == b"a" * 4 * PAGE and view[PAGE] == ord("a")  # cached
        with _filled(2 * PAGE, b"b") as buf:
            assert os.pwritev(direct, [buf], PAGE) == 2 * PAGE
        assert os.pread(reader, 4 * PAGE, 0) == b"a" * PAGE + b"b" * 2 * PAGE + b"a" * PAGE
        assert view[:] == b"a" * PAGE + b"b" * 2 * PAGE + b"a" * PAGE
        view.close()
    finally:
        os.close(direct)
        os.close(reader)


def test_an_asynchronous_direct_write_is_read_once_it_completed(fsdir: Path) -> None:
    size = 32 << 20
    path = fsdir / "f"
    for round_ in range(3):
        old, new = bytes([ord("a") + 2 * round_]), bytes([ord("b") + 2 * round_])
        path.write_bytes(old * size)
        reader = os.open(path, os.O_RDONLY)
        direct = os.open(path, os.O_RDWR | os.O_DIRECT)
        view = mmap.mmap(reader, size, prot=mmap.PROT_READ)
        view.madvise(mmap.MADV_RANDOM)  # a fault reads its page alone, ahead of queued writes
        aio = Aio(1)
        done = threading.Event()

        def fault_in_the_last_page() -> None:
            while not done.is_set():
                view[size - PAGE]

        faulting = threading.Thread(target=fault_in_the_last_page)
        try:
            with _filled(size, new) as buf:
                faulting.start()
                aio.write(direct, _address(buf), size, 0)
                assert aio.wait() == size
                done.set()
                faulting.join()
            stale_in_view = [n for n in range(0, size, PAGE) if view[n] != new[0]]
            read = os.pread(reader, size, 0)
            stale_in_read = [n for n in range(0, size, PAGE) if read[n] != new[0]]
            assert (stale_in_view, stale_in_read) == ([], []), f"round {round_}: old bytes at these offsets"
        finally:
            done.set()
            if faulting.is_alive():
                faulting.join()
            aio.close()
            view.close()
            os.close(direct)
            os.close(reader)

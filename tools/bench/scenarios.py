"""Three container-like scenarios: unpack a tree, write the same data twice, patch a large file.

Each one ends by making its writes durable (fsync of the file; for the unpacked tree
``Target.durable``: syncfs on the disk and below a passthrough mount, fsyncdir on cfs,
which commits the daemon's batch), and the time includes that, so a filesystem cannot
look fast by keeping data in memory.
"""

from __future__ import annotations

import os
import random
import struct
import sysconfig
import tarfile
import time
from pathlib import Path

from tools.bench import procs
from tools.bench.context import Context, MiB
from tools.bench.report import Row

TARBALL = "tree.tar"
_BASE = random.Random(0x0C_F5).randbytes(MiB)


def unique_mib(index: int) -> bytes:
    """1 MiB of incompressible data, the same for the same ``index``, with no 4 KiB-aligned
    piece repeated anywhere else: every 4 KiB carries the MiB's index and its own."""
    buf = bytearray(_BASE)
    for k in range(0, MiB, 4096):
        struct.pack_into(">QQ", buf, k, index, k)
    return bytes(buf)


def build_tarball(dest: Path, max_files: int | None) -> dict[str, int]:
    """A tarball of this interpreter's site-packages (the first ``max_files`` files)."""
    root = Path(sysconfig.get_paths()["purelib"])
    files = size = 0
    with tarfile.open(dest, "w") as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if not path.is_file() or path.is_symlink():
                    continue
                tar.add(path, arcname=str(path.relative_to(root.parent)), recursive=False)
                files += 1
                size += path.stat().st_size
                if max_files is not None and files >= max_files:
                    return {"files": files, "bytes": size}
    return {"files": files, "bytes": size}


def untar(ctx: Context) -> list[Row]:
    """Unpack the site-packages tarball with GNU tar, then make it durable."""
    tarball, facts = ctx.inputs / TARBALL, ctx.tree
    d = ctx.work("untar")
    ctx.drop_caches()
    with ctx.probe() as p:
        procs.run(["tar", "-xf", str(tarball), "-C", str(d)], timeout=600)
        ctx.target.durable(d)
    return [ctx.row("untar", "seconds", "s", p.seconds, p, higher_is_better=False,
                    files=facts["files"], mib=round(facts["bytes"] / MiB, 1),
                    files_per_s=round(facts["files"] / p.seconds))]


def _write_copy(path: Path, mib: int) -> None:
    with open(path, "wb", buffering=0) as f:
        for i in range(mib):
            f.write(unique_mib(i))
        os.fsync(f.fileno())


def dedup(ctx: Context) -> list[Row]:
    """Write the same data to two files; report the rates and what the second copy added."""
    mib = ctx.plan.dedup_size // MiB
    d = ctx.work("dedup")
    before = ctx.target.store_usage(d)
    with ctx.probe() as p1:
        _write_copy(d / "copy-1.bin", mib)
    after_first = ctx.target.store_usage(d / "copy-1.bin")
    with ctx.probe() as p2:
        _write_copy(d / "copy-2.bin", mib)
    after_second = ctx.target.store_usage(d / "copy-2.bin")
    rows = [ctx.row("dedup-copy1", "MiB/s", "MiB/s", mib / p1.seconds, p1),
            ctx.row("dedup-copy2", "MiB/s", "MiB/s", mib / p2.seconds, p2)]
    if "store_used_bytes" in after_second:  # cfs: what the store grew by
        grew = after_second["store_used_bytes"] - after_first["store_used_bytes"]
        detail = {
            "first_copy_store_growth_bytes": after_first["store_used_bytes"] - before["store_used_bytes"],
            "second_copy_store_growth_bytes": grew,
            "second_copy_store_file_growth_bytes": after_second["store_file_bytes"] - after_first["store_file_bytes"],
            "second_copy_chunk_growth_bytes": after_second["chunk_bytes"] - after_first["chunk_bytes"],
        }
    else:  # a plain filesystem: the second copy's own blocks
        grew = after_second["allocated_bytes"]
        detail = {"second_copy_allocated_bytes": grew}
    rows.append(ctx.row("dedup-growth", "% of copy", "%", 100 * grew / ctx.plan.dedup_size,
                        higher_is_better=False, **detail))
    return rows


def overwrite(ctx: Context) -> list[Row]:
    """Overwrite 4 KiB ranges at random 512-byte-aligned offsets of a large file, then fsync.

    A database or a log-structured store inside a container does this. The offsets are
    not block-aligned, so some writes straddle two of cfs's blocks.
    """
    size = ctx.plan.overwrite_size
    path = ctx.work("overwrite") / "large.bin"
    _write_copy(path, size // MiB)
    rng = random.Random(4)
    offsets = [rng.randrange(0, (size - 4096) // 512) * 512 for _ in range(ctx.plan.overwrite_writes)]
    payload = bytearray(_BASE[:4096])
    ctx.drop_caches()
    done = 0
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        with ctx.probe() as p:
            deadline = time.monotonic() + ctx.plan.job_cap
            for offset in offsets:
                struct.pack_into(">QQ", payload, 0, offset, done)  # no two writes alike
                os.pwrite(fd, payload, offset)
                done += 1
                if done % 256 == 0 and time.monotonic() > deadline:
                    break
            os.fsync(fd)
    finally:
        os.close(fd)
    return [ctx.row("overwrite-4k", "IOPS", "IOPS", done / p.seconds, p, writes=done,
                    file_mib=size // MiB)]

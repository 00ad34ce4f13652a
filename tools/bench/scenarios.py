"""Container-like scenarios: unpack a tree, write the same data twice, delete everything
and see the space come back, patch a large file.

Each one ends by making its writes durable (fsync of the file; for the unpacked tree
``Target.durable``: syncfs on the disk and below a passthrough mount, fsyncdir on cfs,
which commits the daemon's batch), and the time includes that, so a filesystem cannot
look fast by keeping data in memory.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import sysconfig
import tarfile
import time
from pathlib import Path

from tools.bench import procs, targets
from tools.bench.context import Context, MiB
from tools.bench.report import Row
from tools.bench.targets import Target

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


def write_unique(path: Path, mib: int, first: int = 0) -> None:
    """``mib`` MiB of ``unique_mib`` from index ``first`` on, then fsync."""
    with open(path, "wb", buffering=0) as f:
        for i in range(mib):
            f.write(unique_mib(first + i))
        os.fsync(f.fileno())


def dedup(ctx: Context) -> list[Row]:
    """Write the same data to two files; report the rates and what the second copy added."""
    mib = ctx.plan.dedup_size // MiB
    d = ctx.work("dedup")
    before = ctx.target.store_usage(d)
    with ctx.probe() as p1:
        write_unique(d / "copy-1.bin", mib)
    after_first = ctx.target.store_usage(d / "copy-1.bin")
    with ctx.probe() as p2:
        write_unique(d / "copy-2.bin", mib)
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
                        None, higher_is_better=False, **detail))  # probe given, or mypy matches **detail to it
    return rows


RECLAIM_FIRST = 1 << 32
"""First ``unique_mib`` index of reclaim's data: none of it matches dedup's (indices from 0),
so on cfs it adds to the store whatever ran before."""
RECLAIM_SMALL_FILES = 300
"""Small files reclaim writes besides its large one: inodes, names, partial blocks."""


def space_in_use(target: Target) -> dict[str, int]:
    """What the target's storage holds for everything below its path, with ``used_bytes``.

    cfs: the whole store (``Cfs.store_usage``), where the data and the metadata of every
    volume live: ``used_bytes`` is ``store_used_bytes``, LMDB's pages in use, its free
    pages counted as free. That figure is the file's size less the free pages, which the
    daemon reports only added to the disk's free space, so another writer on the disk in
    the same milliseconds shifts a reading; an empty store is a few dozen KiB, where that
    shows, so the median of three readings is kept.

    Elsewhere: the allocated blocks of the tree, the directory's own and those of every
    entry below it, each as ``store_usage`` reports it (on the backing directory of a
    passthrough mount), the same figure dedup-growth reports for a plain filesystem.
    Symbolic links are left out and a hard-linked file counts once per name; the suite
    writes neither.
    """
    usage = target.store_usage(target.path)
    if "store_used_bytes" in usage:
        readings = [usage, target.store_usage(target.path), target.store_usage(target.path)]
        usage = sorted(readings, key=lambda u: u["store_used_bytes"])[1]
        return {**usage, "used_bytes": usage["store_used_bytes"]}
    total = usage["allocated_bytes"]
    for dirpath, dirnames, filenames in os.walk(target.path):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += target.store_usage(path)["allocated_bytes"]
    return {"allocated_bytes": total, "used_bytes": total}


def _write_small_files(d: Path, count: int, first: int) -> int:
    """``count`` files of 1 to 12 KiB in ten directories, no 4 KiB of them alike; the bytes written."""
    written = 0
    source = b""
    for k in range(count):
        if k % 64 == 0:  # 64 slices of 16 KiB per MiB of unique data
            source = unique_mib(first + k // 64)
        size = 1024 + (k * 2731) % (11 * 1024)
        sub = d / f"dir-{k % 10:02d}"
        sub.mkdir(exist_ok=True)
        offset = (k % 64) * 16384
        (sub / f"small-{k:04d}").write_bytes(source[offset:offset + size])
        written += size
    return written


def reclaim(ctx: Context) -> list[Row]:
    """Write a data set, delete everything the run wrote, and report how close to its
    empty size the target's storage came back (issue #4: within 10% of empty, LMDB's
    free pages counted as free; cfs has no separate GC to run, see below).

    Empty: what the target held when it started, before any job wrote (the runner
    records it in ``ctx.empty`` when this job is selected). For cfs that is a fresh node
    with one empty volume. When no such record exists the job measures at its start, but
    only if the target's directory is empty; otherwise the figure would not be one of
    an empty target, and it refuses.

    Full: after writing ``plan.dedup_size`` of unique data (distinct from dedup's) and
    ``RECLAIM_SMALL_FILES`` small files, on top of whatever earlier jobs left.

    After: every entry below the target's path removed (all work dirs, also those of
    earlier jobs, so later jobs start from an empty volume), then ``Target.durable``.
    cfs frees a chunk in the transaction that drops its last reference and a file's
    inode when its last name goes and no handle is open, so the deletes themselves are
    the GC; chunks staged for replication but never referenced are swept after a grace
    period, and a single node stages none. LMDB reuses a freed page only a commit or two
    later, but ``store_used_bytes`` counts it free at once (file size less LMDB's free
    pages), so the durable commit is there to measure what is on disk, not to free. The
    file does not shrink (``store_file_bytes_after``). Whatever cfs still holds counts as
    used; ``chunk_bytes_after`` shows whether any of it is data. (A replicated volume
    would also keep its last ``changelog_retain`` change records for its replicas; the
    bench's single node keeps none.)

    The figure is after / empty in per cent: 100 is back to empty, at most 110 meets
    the target; lower is better. The row's time (and the daemon's CPU) is the deletion
    and its commit.
    """
    target = ctx.target
    empty = ctx.empty
    if empty is None:
        if any(target.path.iterdir()):
            raise procs.BenchError(f"reclaim: {target.path} is not empty and its empty size was not "
                                   "recorded when the target started")
        empty = space_in_use(target)
    mib = ctx.plan.dedup_size // MiB
    d = ctx.work("reclaim")
    write_unique(d / "large.bin", mib, RECLAIM_FIRST)
    small = _write_small_files(d, RECLAIM_SMALL_FILES, RECLAIM_FIRST + mib)
    target.durable(d)
    full = space_in_use(target)
    files = dirs = 0
    for _dirpath, dirnames, filenames in os.walk(target.path):
        files += len(filenames)
        dirs += len(dirnames)
    with ctx.probe() as p:
        for entry in list(target.path.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        target.durable(target.path)
    after = space_in_use(target)
    used_empty, used_after = empty["used_bytes"], after["used_bytes"]
    if used_empty <= 0:
        if used_after > 0:
            raise procs.BenchError(f"reclaim: the empty target held 0 bytes, after deleting {used_after}")
        value = 100.0  # nothing before, nothing after (a tmpfs directory has no blocks)
    else:
        value = 100 * used_after / used_empty
    detail: dict[str, int] = {
        "empty_bytes": used_empty, "full_bytes": full["used_bytes"], "after_bytes": used_after,
        "after_over_empty_bytes": used_after - used_empty,
        "written_bytes": mib * MiB + small, "files_removed": files, "dirs_removed": dirs,
    }
    if "store_used_bytes" in after:  # cfs: what is left, and whether any of it is data
        detail.update(store_file_bytes_empty=empty["store_file_bytes"],
                      store_file_bytes_after=after["store_file_bytes"],
                      chunk_bytes_after=after["chunk_bytes"], referenced_bytes_after=after["referenced_bytes"])
    return [ctx.row("reclaim", "% of empty", "%", value, p, higher_is_better=False, **detail)]


def overwrite(ctx: Context) -> list[Row]:
    """Overwrite 4 KiB ranges at random 512-byte-aligned offsets of a large file, then fsync.

    A database or a log-structured store inside a container does this. The offsets are
    not block-aligned, so some writes straddle two of cfs's blocks.
    """
    size = ctx.plan.overwrite_size
    path = ctx.work("overwrite") / "large.bin"
    write_unique(path, size // MiB)
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


def snapshot(ctx: Context) -> list[Row]:
    """cfs only: fill a volume with ``snap_files`` files of ``snap_size`` bytes in all (no
    two 4 KiB alike: nothing deduplicates), make it durable, then time a snapshot of it
    and a clone of that snapshot. Both copy the volume's metadata and no chunk, so their
    time follows the files and blocks, not the bytes."""
    if ctx.target.name != "cfs":
        return []
    target = ctx.target
    assert isinstance(target, targets.Cfs)
    d = ctx.work("snapshot")
    per_file = max(1, ctx.plan.snap_size // ctx.plan.snap_files)
    written = 0
    with ctx.probe() as fill:
        for n in range(ctx.plan.snap_files):
            directory = d / f"d{n // 1000}"
            if n % 1000 == 0:
                directory.mkdir(exist_ok=True)
            data = unique_mib(n)[:per_file] if per_file <= MiB else b"".join(
                unique_mib(n * 1024 + k) for k in range(-(-per_file // MiB)))[:per_file]
            with open(directory / f"f{n}", "wb") as f:
                f.write(data)
            written += per_file
        target.durable(d)
    inspect = target.api("volume.inspect", name=targets.CFS_VOLUME)["usage"]
    with ctx.probe() as snap:
        target.api("snapshot.create", volume=targets.CFS_VOLUME, name="bench")
    with ctx.probe() as clone:
        target.api("volume.create", name="bench-clone", options={"from": f"{targets.CFS_VOLUME}@bench"})
    with ctx.probe() as remove:
        target.api("volume.rm", name="bench-clone")
        target.api("snapshot.rm", name=f"{targets.CFS_VOLUME}@bench")
    facts = {"files": ctx.plan.snap_files, "bytes": written, "inodes": inspect["inodes"],
             "chunks": inspect["chunks"], "fill_seconds": round(fill.seconds, 1)}
    return [ctx.row("snapshot", "seconds", "s", snap.seconds, snap, higher_is_better=False, **facts),
            ctx.row("snapshot-clone", "seconds", "s", clone.seconds, clone, higher_is_better=False, **facts),
            ctx.row("snapshot-remove", "seconds", "s", remove.seconds, remove, higher_is_better=False, **facts)]

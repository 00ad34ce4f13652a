"""Concurrent writers and namespace changes on one cfs volume.

* Several processes write disjoint, interleaved ranges of one file through their own
  handles; the ranges are not block aligned, so neighbouring writers share blocks and
  the daemon must merge their partial writes. Every byte is checked, also after the
  volume is mounted again and after the daemon restarts.
* Many threads create, write, rename, link and delete files in one directory, and rename
  files onto a few shared names, while another thread lists the directory over and over.
  No call may fail; every listing must show each untouched file exactly once; the final
  set of names and every file's content must be what the operations imply.

``cfs fsck`` must be clean afterwards.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from pathlib import Path

from tests.node import Node
from tests.posix._model_fixtures import assert_fsck_clean, remount, restart

WRITERS = 4
STRIPE = 3000  # not a multiple of the 4 KiB block: neighbouring stripes share blocks
STRIPES = 96 * WRITERS

# One writer process: waits for "go" on stdin, then writes its stripes (every WRITERS-th,
# in random order, some in two pieces) and fsyncs.
WRITER = r"""
import os, random, sys
path, me, writers, stripe, stripes = sys.argv[1], *map(int, sys.argv[2:6])
fd = os.open(path, os.O_WRONLY)
mine = [i for i in range(stripes) if i % writers == me]
random.Random(me).shuffle(mine)
sys.stdin.read(1)
for i in mine:
    data = random.Random(i).randbytes(stripe)
    if i % 3 == 0:
        cut = i % stripe
        os.pwrite(fd, data[cut:], i * stripe + cut)
        os.pwrite(fd, data[:cut], i * stripe)
    else:
        assert os.pwrite(fd, data, i * stripe) == stripe
os.fsync(fd)
os.close(fd)
"""


def expected_stripe(i: int) -> bytes:
    return random.Random(i).randbytes(STRIPE)


def check_stripes(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) == STRIPE * STRIPES, f"size {len(data)}, expected {STRIPE * STRIPES}"
    bad = [i for i in range(STRIPES) if data[i * STRIPE:(i + 1) * STRIPE] != expected_stripe(i)]
    assert not bad, f"stripes with wrong bytes (writer = stripe % {WRITERS}): {bad[:20]}"


def test_processes_write_disjoint_ranges_of_one_file(node: Node, short_tmp: Path) -> None:
    mnt = node.mount("conc", short_tmp / "mnt", block_size=4096)
    path = mnt / "shared.data"
    path.write_bytes(b"")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(k), str(WRITERS), str(STRIPE),
                               str(STRIPES)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in range(WRITERS)]
    try:
        for proc in procs:  # all start writing at once
            assert proc.stdin is not None
            proc.stdin.write(b"g")
            proc.stdin.close()
        for k, proc in enumerate(procs):
            assert proc.stderr is not None
            err = proc.stderr.read()
            assert proc.wait(timeout=120) == 0, f"writer {k} failed: {err.decode(errors='replace')}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    check_stripes(path)
    remount(node, "conc", mnt)
    check_stripes(path)
    restart(node, mnt)
    check_stripes(path)
    assert_fsck_clean(node)


THREADS = 8
ROUNDS = 60
SHARED = 3
STABLE = 50


class Worker(threading.Thread):
    """One thread's share of the namespace: files named t<k>-<i>, and the shared names.

    Round i: create t<k>-<i> and write it, rename it to t<k>-<i>.r; then by i: delete it
    (i % 4 == 0), or add a hard link t<k>-<i>.l and delete the .r name (i % 4 == 1), or
    rename it onto shared-<i % SHARED> (i % 4 == 2), or keep it.
    """

    def __init__(self, k: int, directory: Path) -> None:
        super().__init__(name=f"worker-{k}")
        self.k = k
        self.dir = directory
        self.error: BaseException | None = None
        self.kept: dict[str, bytes] = {}
        self.shared: dict[str, set[bytes]] = {}

    def run(self) -> None:
        try:
            for i in range(ROUNDS):
                self.round(i)
        except BaseException as exc:  # reported by the test, with the thread's name
            self.error = exc

    def round(self, i: int) -> None:
        name = f"t{self.k}-{i}"
        data = f"{name} ".encode() * (1 + (i * 37) % 300)
        fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(self.dir / name, self.dir / f"{name}.r")
        kind = i % 4
        if kind == 0:
            os.unlink(self.dir / f"{name}.r")
        elif kind == 1:
            os.link(self.dir / f"{name}.r", self.dir / f"{name}.l")
            os.unlink(self.dir / f"{name}.r")
            self.kept[f"{name}.l"] = data
        elif kind == 2:
            target = f"shared-{i % SHARED}"
            os.rename(self.dir / f"{name}.r", self.dir / target)
            self.shared.setdefault(target, set()).add(data)
        else:
            self.kept[f"{name}.r"] = data


class Lister(threading.Thread):
    """Lists the directory until stopped; the untouched files must appear once each time."""

    def __init__(self, directory: Path, stable: set[str]) -> None:
        super().__init__(name="lister")
        self.dir = directory
        self.stable = stable
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.listings = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                names = os.listdir(self.dir)
                seen = [n for n in names if n in self.stable]
                assert sorted(seen) == sorted(self.stable), (
                    f"listing {self.listings}: {len(seen)} entries of the {len(self.stable)} untouched files "
                    f"(missing {sorted(self.stable - set(seen))[:5]}, repeated "
                    f"{sorted({n for n in seen if seen.count(n) > 1})[:5]})")
                self.listings += 1
        except BaseException as exc:
            self.error = exc


def test_threads_create_rename_delete_in_one_directory(node: Node, short_tmp: Path) -> None:
    mnt = node.mount("names", short_tmp / "mnt", block_size=4096)
    directory = mnt / "dir"
    directory.mkdir()
    stable = {f"stable-{j:03}" for j in range(STABLE)}
    for name in stable:
        (directory / name).write_bytes(name.encode())
    workers = [Worker(k, directory) for k in range(THREADS)]
    lister = Lister(directory, stable)
    lister.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    lister.stop.set()
    lister.join(timeout=60)
    for thread in (*workers, lister):
        assert not thread.is_alive(), f"{thread.name} is stuck"
        assert thread.error is None, f"{thread.name} failed: {thread.error!r}"
    assert lister.listings > 0

    expected: dict[str, bytes] = {name: name.encode() for name in stable}
    for w in workers:
        expected.update(w.kept)
    shared: dict[str, set[bytes]] = {}
    for w in workers:
        for target, datas in w.shared.items():
            shared.setdefault(target, set()).update(datas)
    names = sorted(os.listdir(directory))
    assert names == sorted([*expected, *shared]), (
        f"unexpected {sorted(set(names) - set(expected) - set(shared))[:10]}, "
        f"missing {sorted((set(expected) | set(shared)) - set(names))[:10]}")
    for name, data in expected.items():
        assert (directory / name).read_bytes() == data, name
        assert os.stat(directory / name).st_nlink == 1, name
    for target, datas in shared.items():
        assert (directory / target).read_bytes() in datas, f"{target} holds none of the files renamed onto it"
    assert os.stat(directory).st_nlink == 2
    assert_fsck_clean(node)

"""A damaged chunk gives EIO and a log line naming it, never wrong bytes; fsck names it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from cfs.codec import Inode, decode_block, ino_key, ino_u64_key
from cfs.store import Store, Table, catalog
from cfs.types import make_ino
from tests.node import Node


def flip_chunk_of(store_dir: Path, volume: str, local_ino: int, block: int, *, flip: bool = True) -> str:
    """Flip bytes inside the stored chunk of one block, keeping its key: silent disk damage.
    Returns the chunk's id (hex); ``flip`` False only names it."""
    store = Store(store_dir)
    try:
        with store.op() as op:
            record = catalog.get(op, volume)
            raw = op.get(Table.BLOCKS, ino_u64_key(make_ino(record.slot, local_ino), block))
            assert raw is not None
            cid = decode_block(raw).chunk
            if not flip:
                return cid.hex()
            value = bytearray(op.get(Table.CHUNKS, cid))
            value[-1] ^= 0xFF
            value[len(value) // 2] ^= 0x55
            op.put(Table.CHUNKS, cid, bytes(value), logged=False)
        store.commit()
    finally:
        store.close()
    return cid.hex()


def test_flipped_chunk_reads_eio_and_fsck_names_it(node: Node, short_tmp: Path) -> None:
    mnt = node.mount("v", short_tmp / "m", block_size=4096)
    victim = os.urandom(3 * 4096)
    (mnt / "victim").write_bytes(victim)
    (mnt / "bystander").write_bytes(os.urandom(10_000))
    ino = os.stat(mnt / "victim").st_ino & ((1 << 40) - 1)
    bystander = (mnt / "bystander").read_bytes()
    assert node.stop() == 0
    chunk = flip_chunk_of(node.data_dir / "store", "v", ino, 1)
    node.start()
    with pytest.raises(OSError) as exc:
        (mnt / "victim").read_bytes()
    assert exc.value.errno == errno.EIO
    with open(mnt / "victim", "rb") as f:
        assert f.read(4096) == victim[:4096]  # undamaged blocks still read
    assert (mnt / "bystander").read_bytes() == bystander
    log = node.log()
    assert chunk in log and "/victim" in log
    result = node.cli("fsck", check=False)
    assert result.returncode == 1
    assert chunk in result.stdout and "/victim" in result.stdout


def set_nlink(store_dir: Path, volume: str, local_ino: int, nlink: int) -> None:
    """Write a wrong link count into an inode record, as a lost write would leave it."""
    store = Store(store_dir)
    try:
        with store.op() as op:
            record = catalog.get(op, volume)
            key = ino_key(make_ino(record.slot, local_ino))
            inode = Inode.decode(op.get(Table.INODES, key))
            inode.nlink = nlink
            op.put(Table.INODES, key, inode.encode(), logged=False)
        store.commit()
    finally:
        store.close()


def test_fsck_repair_through_the_daemon_repairs_while_it_serves(node: Node, short_tmp: Path) -> None:
    """cfs fsck --repair asks the running daemon: it checks a snapshot in a worker
    thread, then repairs on its own thread; the other volume stays mounted and served."""
    mnt = node.mount("v", short_tmp / "m", block_size=4096)
    other = node.mount("w", short_tmp / "w", block_size=4096)
    (mnt / "f").write_bytes(b"x" * 10_000)
    (other / "g").write_bytes(b"still served")
    ino = os.stat(mnt / "f").st_ino & ((1 << 40) - 1)
    node.cli("umount", str(mnt))
    assert node.stop() == 0
    set_nlink(node.data_dir / "store", "v", ino, 3)
    node.start()
    found = node.cli("fsck", "v", check=False, json_out=False)
    assert found.returncode == 1 and "nlink" in found.stdout
    repaired = node.cli("fsck", "v", "--repair", "--json", check=False)
    report = json.loads(repaired.stdout)
    assert [(p["kind"], p["repaired"]) for p in report["problems"]] == [("nlink", True)], report["lines"]
    assert node.cli("fsck", json_out=True)["clean"]
    assert (other / "g").read_bytes() == b"still served"
    mnt = node.mount("v", short_tmp / "m", create=False)
    assert os.stat(mnt / "f").st_nlink == 1 and (mnt / "f").read_bytes() == b"x" * 10_000

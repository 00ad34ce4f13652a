"""Volume size limits (``-o size=``) and the bytes-in-use counter they are held to.

The counter (``VolumeState.used_bytes``) must always equal st_blocks * 512 summed over
the volume's inodes, whatever changes them; a volume with a size refuses growth past it
with ENOSPC at write() time, cached or not, and never refuses shrinking. 512-byte blocks,
so a few KiB make a full volume. Every test ends with a clean fsck.
"""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest

from cfs import check
from cfs.codec import Inode, VolumeState, ino_key, pack_u64, stored_bytes, usage_delta
from cfs.errors import CorruptRecord, NoSpace, ReadOnly, UserError
from cfs.fs import Filesystem, SetAttr
from cfs.fs.quota import parse_size, size_limit
from cfs.store import Store, Table, catalog
from cfs.types import InodeId

from unit_support import Vol, rows

BS = 512
KiB = 1024


def used(vol: Vol) -> int:
    return vol.fs.volume_space(vol.record.name)["used_bytes"]


def counted(vol: Vol) -> int:
    """The counter's definition: st_blocks * 512 over the volume's inode rows."""
    lo, hi = catalog.slot_range(vol.slot)
    return sum(Inode.decode(raw).stored_units * 512 for _key, raw in rows(vol.store, Table.INODES, lo, hi))


def assert_clean(vol: Vol) -> None:
    vol.fs.sync()
    assert used(vol) == counted(vol)
    report = check.check(vol.store)
    assert report.clean, report.lines()


def sized(store: Store, size: str, *, cache: int = 0, name: str = "sized") -> Vol:
    fs = Filesystem(store, dirty_limit=cache)
    return Vol(store, fs, fs.create_volume(name, block_size=BS, options={"size": size}))


def fill(vol: Vol, name: bytes, piece: int, rng: random.Random) -> tuple[InodeId, bytes]:
    """Append random pieces (nothing to deduplicate, no zeros to trim) until ENOSPC."""
    ino = vol.create(name, keep_open=True)
    written = b""
    while True:
        chunk = rng.randbytes(piece)
        try:
            vol.fs.write(ino, len(written), chunk)
        except NoSpace:
            return ino, written
        written += chunk
        assert len(written) < 1 << 20, "the limit never came"


# --- the size option ------------------------------------------------------------------

@pytest.mark.parametrize("raw, expect", [
    ("4096", 4096), (4096, 4096), ("0", 0), ("512b", 512), ("10k", 10 * KiB), ("10K", 10 * KiB),
    ("10M", 10 << 20), ("1G", 1 << 30), ("1GiB", 1 << 30), ("1gb", 1 << 30), ("1.5G", 3 << 29),
    ("2 T", 2 << 40), (" 64M ", 64 << 20),
])
def test_sizes_are_bytes_or_binary_units(raw: object, expect: int) -> None:
    assert parse_size(raw) == expect


@pytest.mark.parametrize("raw", ["lots", "", "-1", "10X", "10ib", "1e9", "G", "1..5G", "0x10"])
def test_bad_sizes_are_refused_with_a_readable_message(raw: str) -> None:
    with pytest.raises(UserError, match="is not a size like 10G"):
        parse_size(raw)


def test_the_size_is_recorded_in_bytes_and_0_or_none_is_no_limit(store: Store) -> None:
    fs = Filesystem(store)
    assert fs.create_volume("a", options={"size": "1M"}).options == {"size": str(1 << 20)}
    assert size_limit(fs.volume("a")) == 1 << 20
    assert size_limit(fs.create_volume("b", options={"size": "0"})) == 0
    assert size_limit(fs.create_volume("c")) == 0
    with pytest.raises(UserError):
        fs.create_volume("d", options={"size": "big"})
    assert [v.name for v in fs.volumes()] == ["a", "b", "c"]


# --- the counter --------------------------------------------------------------------------

def test_usage_delta_reads_st_blocks_of_inode_records() -> None:
    a = Inode(stat.S_IFREG | 0o644, 0, 0, 1, stored_units=3).encode()
    b = Inode(stat.S_IFREG | 0o644, 0, 0, 1, stored_units=10).encode()
    assert stored_bytes(a) == 3 * 512 and stored_bytes(None) == 0
    assert usage_delta(None, a) == 1536 and usage_delta(a, b) == 3584 and usage_delta(b, None) == -5120
    assert stored_bytes(b"\x09garbage") == 0  # a damaged record holds nothing, for fsck too


def test_volume_state_version_1_decodes_as_count_again() -> None:
    v1 = bytes([1]) + (5).to_bytes(8, "big") + (7).to_bytes(8, "big") + (6).to_bytes(8, "big")
    assert VolumeState.decode(v1) == VolumeState(5, 7, 6, None)
    assert VolumeState.decode(VolumeState(5, 7, 6, 4096).encode()) == VolumeState(5, 7, 6, 4096)
    with pytest.raises(CorruptRecord):
        VolumeState.decode(v1[:-1])
    with pytest.raises(ValueError):
        VolumeState(5, 7, 6, None).encode()


@pytest.mark.parametrize("cache", [0, 64 * KiB])
@pytest.mark.parametrize("seed", range(3))
def test_counter_follows_every_change_of_st_blocks(store: Store, seed: int, cache: int) -> None:
    fs = Filesystem(store, dirty_limit=cache)
    vol = Vol(store, fs, fs.create_volume("v", block_size=BS))
    other = Vol(store, fs, fs.create_volume("w", block_size=BS))
    rng = random.Random(seed)
    files: list[bytes] = []
    for step in range(120):
        action = rng.randrange(8)
        if action == 0 or not files:
            name = b"f%d" % step
            vol.create(name, rng.randbytes(rng.randrange(3 * BS)))
            files.append(name)
            continue
        name = rng.choice(files)
        ino = vol.find(vol.root, name)
        size = vol.inode(ino).size
        if action == 1:
            fs.write(ino, rng.randrange(size + BS), rng.randbytes(rng.randrange(1, 2 * BS)))
        elif action == 2:
            fs.write(ino, rng.randrange(size + 1), bytes(rng.randrange(1, 2 * BS)))  # zeros: holes
        elif action == 3:
            fs.setattr(ino, SetAttr(size=rng.randrange(size + 2 * BS)))
        elif action == 4:
            fs.unlink(vol.root, name)
            files.remove(name)
        elif action == 5:
            fs.forget(fs.link(ino, vol.root, b"l%d" % step).ino, 1)
            files.append(b"l%d" % step)
        elif action == 6 and len(files) > 1:
            target = rng.choice([f for f in files if f != name])
            fs.rename(vol.root, name, vol.root, target)
            files.remove(name)
        other.create(b"o%d" % step, rng.randbytes(rng.randrange(BS)))  # another volume's noise
        if step % 10 == 0:
            fs.flush_all()
            assert used(vol) == counted(vol), step
    assert_clean(vol)
    assert used(other) == counted(other)
    fs.remove_volume("v")
    assert used(other) == counted(other)
    assert check.check(store).clean


def test_an_open_unlinked_file_counts_until_it_is_released(store: Store) -> None:
    vol = sized(store, "0")
    ino = vol.create(b"f", b"x" * 3 * BS, keep_open=True)
    vol.fs.unlink(vol.root, b"f")
    assert used(vol) == 3 * BS
    vol.fs.release(ino)
    assert used(vol) == 0
    assert_clean(vol)


def test_a_version_1_state_is_counted_again_and_written_as_version_2(store: Store, fs: Filesystem) -> None:
    vol = Vol(store, fs, fs.create_volume("v", block_size=BS))
    vol.create(b"f", b"y" * (2 * BS + 1))
    key = pack_u64(vol.slot)
    state = VolumeState.decode(store.batch.get(key, db=store.db(Table.VOLSTATE)))
    v1 = bytes([1]) + b"".join(n.to_bytes(8, "big") for n in (state.next_local, state.next_seq, state.checkpoint_seq))
    store.batch.put(key, v1, db=store.db(Table.VOLSTATE))
    assert check.check(store).clean  # an old record is not damage
    assert used(vol) == 3 * 512
    vol.create(b"g", b"z" * BS)  # the first change writes the counted record back
    raw = store.batch.get(key, db=store.db(Table.VOLSTATE))
    assert raw[0] == 2 and VolumeState.decode(raw).used_bytes == 4 * 512
    assert_clean(vol)


def test_fsck_finds_a_wrong_counter_and_repair_counts_again(store: Store, fs: Filesystem) -> None:
    vol = Vol(store, fs, fs.create_volume("v", block_size=BS))
    f = vol.create(b"f", b"q" * 5 * BS)
    key = pack_u64(vol.slot)
    state = VolumeState.decode(store.batch.get(key, db=store.db(Table.VOLSTATE)))
    state.used_bytes = 123
    store.batch.put(key, state.encode(), db=store.db(Table.VOLSTATE))
    # a second fault a repair also changes st_blocks for: the counter must end up right
    inode = Inode.decode(store.batch.get(ino_key(f), db=store.db(Table.INODES)))
    inode.stored_units = 1
    store.batch.put(ino_key(f), inode.encode(), db=store.db(Table.INODES))
    report = check.check(store)
    assert report.kinds() == {"volume-state", "stored-units"}
    assert "123 bytes in use" in next(p.message for p in report.problems if p.kind == "volume-state")
    assert check.check(store, repair=True).unrepaired == []
    assert used(vol) == 5 * BS
    assert_clean(vol)


# --- the limit ----------------------------------------------------------------------------

@pytest.mark.parametrize("cache", [0, 64 * KiB], ids=["write-through", "cached"])
@pytest.mark.parametrize("piece", [100, BS, 3 * BS + 7])
def test_growth_stops_at_the_size_with_enospc_and_keeps_what_was_written(store: Store, cache: int,
                                                                          piece: int) -> None:
    vol = sized(store, "8K", cache=cache)
    rng = random.Random(piece)
    keep = vol.create(b"keep", rng.randbytes(2 * BS))
    ino, written = fill(vol, b"big", piece, rng)
    assert 8 * KiB - piece - BS < used(vol) + vol.fs.dirty.volume_bytes(vol.slot) <= 8 * KiB
    assert vol.inode(ino).size == len(written)  # the refused write left no trace
    vol.fs.flush(ino)  # close(2): nothing left that could fail now
    assert used(vol) <= 8 * KiB
    assert vol.read_all(ino) == written
    assert len(vol.read_all(keep)) == 2 * BS
    with pytest.raises(NoSpace):
        vol.fs.write(ino, len(written), rng.randbytes(piece))
    vol.fs.release(ino)
    assert_clean(vol)


def test_a_cached_write_that_would_not_fit_fails_at_write_not_at_close(store: Store) -> None:
    vol = sized(store, "4K", cache=1 << 20)
    a = vol.create(b"a", keep_open=True)
    b = vol.create(b"b", keep_open=True)
    vol.fs.write(a, 0, b"a" * 3 * BS)  # cached: 3 blocks held in reserve
    assert vol.fs.dirty.volume_bytes(vol.slot) == 3 * BS and used(vol) == 0
    vol.fs.write(b, 0, b"b" * BS)       # 4 of 8 blocks: still fits
    with pytest.raises(NoSpace):
        vol.fs.write(b, BS, b"b" * 5 * BS)
    for ino in (a, b):
        vol.fs.flush(ino)               # close(2) never reports the limit
        vol.fs.release(ino)
    assert used(vol) == 4 * BS
    assert vol.read_all(a) == b"a" * 3 * BS and vol.read_all(b) == b"b" * BS
    assert_clean(vol)


def test_the_reserve_is_conservative_but_near_the_limit_writes_are_measured_exactly(store: Store) -> None:
    """A cached block is reserved whole; a write it would not fit beside goes to the store,
    which counts only what is stored: trailing zeros and rewritten blocks cost nothing."""
    vol = sized(store, "2K", cache=1 << 20)
    f = vol.create(b"f", keep_open=True)
    for n in range(4):
        vol.fs.write(f, n * BS, b"t" + bytes(BS - 1))  # a byte per block: 512 bytes stored each
    assert used(vol) + vol.fs.dirty.volume_bytes(vol.slot) == 4 * BS
    vol.fs.write(f, 0, b"again")                      # a rewrite in place fits at the limit
    vol.fs.write(f, 4 * BS, bytes(BS))                # so do zeros past the end: a hole
    assert vol.inode(f).size == 5 * BS
    with pytest.raises(NoSpace):
        vol.fs.write(f, 5 * BS, b"!")
    vol.fs.release(f)
    assert used(vol) == 4 * BS
    assert_clean(vol)


def test_shrinking_always_works_and_frees_room_for_new_writes(store: Store) -> None:
    vol = sized(store, "2K")
    rng = random.Random(7)
    a = vol.create(b"a", rng.randbytes(4 * BS))
    with pytest.raises(NoSpace):
        vol.create(b"b", b"x")
    assert vol.exists(vol.root, b"b")  # the file was made, its write refused: names cost nothing
    vol.fs.write(a, 0, bytes(BS))                      # zeros over data: a hole
    assert used(vol) == 3 * BS
    vol.fs.write(a, 0, rng.randbytes(BS))              # and the room is there again
    vol.fs.setattr(a, SetAttr(size=BS + 10))           # truncate down
    assert used(vol) == 2 * BS
    vol.fs.setattr(a, SetAttr(size=1 << 30))           # truncate up: holes, no bytes
    assert used(vol) == 2 * BS
    vol.fs.unlink(vol.root, b"a")
    assert used(vol) == 0
    b = vol.find(vol.root, b"b")
    vol.fs.write(b, 0, rng.randbytes(4 * BS))
    assert used(vol) == 4 * BS
    assert_clean(vol)


def test_deduplicated_bytes_count_in_every_file_as_st_blocks_does(store: Store) -> None:
    vol = sized(store, "4K")
    same = b"s" * 3 * BS
    vol.create(b"one", same)
    vol.create(b"two", same)
    with pytest.raises(NoSpace):
        vol.create(b"three", same)  # stored once, but the volume would hold 9 blocks of 8
    assert used(vol) == 6 * BS
    assert_clean(vol)


def test_the_limit_of_one_volume_leaves_others_alone(store: Store) -> None:
    vol = sized(store, "1K", cache=1 << 20)
    free = Vol(store, vol.fs, vol.fs.create_volume("free", block_size=BS))
    big = random.Random(3).randbytes(16 * KiB)
    with pytest.raises(NoSpace):
        vol.create(b"f", big)
    free.create(b"f", big)
    vol.fs.sync()
    assert vol.fs.volume_space("free") == {"used_bytes": 16 * KiB, "size_bytes": 0}
    assert vol.fs.volume_space("sized") == {"used_bytes": 0, "size_bytes": 1 * KiB}
    assert_clean(vol)


@pytest.mark.parametrize("cache", [0, 1 << 20], ids=["write-through", "cached"])
def test_a_raised_limit_holds_from_the_next_write_and_survives_a_reopen(store: Store, store_path: Path,
                                                                          cache: int) -> None:
    """Expansion (CSI's ControllerExpandVolume, taken by the writer node): the full volume
    takes more at once, the limit is recorded durably, and lowering it below what the
    volume holds refuses growth only."""
    vol = sized(store, "2K", cache=cache)
    rng = random.Random(11)
    ino, written = fill(vol, b"f", BS, rng)
    assert len(written) == 4 * BS
    record = vol.fs.set_size_limit("sized", 8 * KiB)
    assert size_limit(record) == 8 * KiB and vol.fs.volume_space("sized")["size_bytes"] == 8 * KiB
    more = rng.randbytes(4 * BS)
    vol.fs.write(ino, len(written), more)  # the room is there at once: no remount
    assert vol.fs.set_size_limit("sized", 8 * KiB) == record  # the same limit again: nothing to do
    vol.fs.set_size_limit("sized", 1 * KiB)  # below what it holds, as a full disk: growth refused
    with pytest.raises(NoSpace):
        vol.fs.write(ino, 8 * BS, b"x")
    vol.fs.setattr(ino, SetAttr(size=BS))  # shrinking works
    assert vol.fs.set_size_limit("sized", 0).options.get("size") is None  # 0: no limit
    vol.fs.write(ino, BS, rng.randbytes(16 * BS))
    vol.fs.set_size_limit("sized", 64 * KiB)
    vol.fs.release(ino)
    assert_clean(vol)
    store.close()
    again = Store(store_path)
    try:
        assert Filesystem(again).volume_space("sized")["size_bytes"] == 64 * KiB
    finally:
        again.close()


def test_a_snapshot_has_no_limit_to_raise(store: Store) -> None:
    vol = sized(store, "2K")
    vol.fs.snapshot("sized", "s")
    with pytest.raises(ReadOnly):
        vol.fs.set_size_limit("sized@s", 4 * KiB)
    with pytest.raises(ValueError):
        vol.fs.set_size_limit("sized", -1)
    assert vol.fs.volume_space("sized@s")["size_bytes"] == 2 * KiB
    assert_clean(vol)


def test_inodes_are_counted_with_the_numbers_left(store: Store) -> None:
    vol = sized(store, "0")
    assert vol.fs.volume_inodes("sized") == (1, (1 << 40) - 2)  # the root; numbers from 2 on
    for n in range(5):
        vol.create(b"f%d" % n, b"x")
    vol.fs.unlink(vol.root, b"f0")
    used, left = vol.fs.volume_inodes("sized")
    assert used == 5 and left == (1 << 40) - 7  # an unlinked file's number is not given again
    assert_clean(vol)

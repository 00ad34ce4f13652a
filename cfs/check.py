"""The invariant checker of a node's store: ``cfs fsck``, and the last step of core tests.

What it checks, per volume, walking the tree from the volume root (local inode 1):
directory entries name existing inodes and agree with the readdir-order table; link
counts (files: their names; directories: 2 + subdirectories); inodes reachable from the
root, unless they are open unlinked files (``ORPHANS``); ``stored_units`` against the
block map (reserved blocks counting in full); no block storing bytes at or beyond the
end of a file (reserved holes may lie there: fallocate's KEEP_SIZE), and no stored bytes
past it in the last block; every referenced chunk stored and hashing to its key; the volume's counters
(next inode, change-log position, and bytes in use, which size limits are held to, as
the sum of its inodes' st_blocks * 512). Per node: reference
counts recomputed from the block maps of *all* volumes (chunks are shared), chunks that
nothing references, count rows without data, rows of slots that hold no volume.

A volume whose whole-volume copy from a peer was interrupted (``cfs.store.replica``:
marked incomplete until the copy finishes) is not checked as a tree: it is counted in
``incomplete_copies`` and named on a line of its own, not as a problem, since the next
copy replaces it whole; its block rows still count toward the chunks' references.

How it reads. Each table is swept once, in key order, by range scans; the only point
reads are one per distinct chunk (to hash it) and a few per volume. Memory grows with
the inodes and directory entries of the volume being checked and with the number of
distinct chunks, never with the number of blocks, so a node with millions of blocks is
checked in one sweep. It reads through a ``View`` only, so a non-repairing check can
run in a worker thread on ``Store.reading()`` (``check_snapshot``) while the trio thread
keeps writing.

What it repairs (``repair=True``): only what needs no guessing. Problems are collected
first, each with the fix that would cure it; fixes then run in stages inside one
``Store.op``: chunk counts first (so later reference drops start from the truth), then
removal of dangling and stray rows, readdir order, counters, and last the linking of
unreachable inodes into ``/lost+found``. Counter fixes are deltas and row fixes re-read
what they change, so fixes of one inode compose in any order. Damaged or missing chunk
bytes are reported, never "fixed": a replica has the real bytes. Volume tables change
through logged ``Op`` writes (replicas must see the repair); node tables are not logged.
A repairing check must run on the thread that owns the store (the LMDB thread rule).
"""

from __future__ import annotations

import enum
import logging
import stat
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import groupby
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from cfs.codec import (
    BlockRow, Inode, VolumeRecord, VolumeState, decode_block, decode_chunkref, decode_dirent, decode_order,
    encode_chunkref, encode_dirent, encode_order, encode_row, ino_key, ino_name_key, ino_u64_key,
    pack_u64,
)
from cfs.errors import CorruptChunk, Corrupted, CorruptRecord, NotFound, VolumeNotFound
from cfs.fs import data as filedata
from cfs.fs import dirs, inodes
from cfs.store import Op, Store, Table, View, catalog, changelog, chunks, replica
from cfs.store.changelog import log_key
from cfs.types import (
    LOCAL_BITS, LOCAL_MASK, VOLUME_ROOT_LOCAL, InodeId, LocalIno, Slot, make_ino,
    slot_of, volume_root,
)

_ALL_HI = b"\xff" * 512
"""Above every key: LMDB keys are at most 511 bytes."""

LOST_FOUND = b"lost+found"
_MISSING = -1
_CORRUPT = -2
_REMOTE = -3  # not stored here, held by replicas (cfs.store.chunks.reference)
_TICK = 4096

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""progress(phase, done, total): phases "volumes", "blocks", "chunks"; total 0 = unknown."""


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    pass




# --- results ------------------------------------------------------------------------

@dataclass
class Problem:
    """One broken invariant: a kind code for scripts, a sentence for people.

    ``path`` is the file's path inside the volume when known, ``<inode N>`` when the
    inode has no path; ``ino`` its volume-local inode number.
    """

    kind: str
    message: str
    volume: str | None = None
    path: str | None = None
    ino: int | None = None
    fixable: bool = False
    """A fix needing no guess exists (``repair`` applies it)."""
    repaired: bool = False


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    volumes: int = 0
    inodes: int = 0
    directories: int = 0
    files: int = 0
    blocks: int = 0
    chunks: int = 0
    bytes_verified: int = 0
    remote_chunks: int = 0
    """Referenced chunks whose bytes are held by replicas only (fetched when read)."""
    staged_chunks: int = 0
    """Chunks a writer pushed ahead of the log record that will reference them."""
    incomplete_copies: list[str] = field(default_factory=list)
    """Volumes whose whole-volume copy from a peer was interrupted: not checked, not
    served; the next copy replaces them."""
    damaged_chunks: set[bytes] = field(default_factory=set)
    """Chunks whose bytes failed their check (reported, never repaired)."""

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def repairable(self) -> bool:
        """Whether ``repair`` would change anything."""
        return any(p.fixable and not p.repaired for p in self.problems)

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if not p.repaired]

    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def counts(self) -> dict[str, int]:
        return {"volumes": self.volumes, "inodes": self.inodes, "directories": self.directories,
                "files": self.files, "blocks": self.blocks, "chunks": self.chunks,
                "bytes_verified": self.bytes_verified, "remote_chunks": self.remote_chunks,
                "staged_chunks": self.staged_chunks, "incomplete_copies": len(self.incomplete_copies)}

    def lines(self) -> list[str]:
        """One line per problem, then a summary: what ``cfs fsck`` prints."""
        out = [f"{p.kind}: {p.message}" + (" [repaired]" if p.repaired else "") for p in self.problems]
        out.append(f"checked {_n(self.volumes, 'volume')}, {_n(self.inodes, 'inode')} "
                   f"({_n(self.directories, 'directory', 'directories')}, {_n(self.files, 'file')}), "
                   f"{_n(self.blocks, 'block')}, {_n(self.chunks, 'chunk')} "
                   f"({self.bytes_verified} bytes hashed): " + self._verdict())
        if self.remote_chunks:
            out.append(f"{_n(self.remote_chunks, 'chunk')} held by replicas only (fetched when read)")
        for name in self.incomplete_copies:
            out.append(f"volume {name}: incomplete copy (a whole-volume copy from a peer was interrupted; "
                       "not checked, not served; the next copy replaces it)")
        return out

    def _verdict(self) -> str:
        if self.clean:
            return "no problems"
        fixed = len(self.problems) - len(self.unrepaired)
        return f"{_n(len(self.problems), 'problem')}, {fixed} repaired"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: what the daemon answers and ``cfs fsck --json`` prints."""
        return {"clean": self.clean, "counts": self.counts(),
                "problems": [asdict(p) for p in self.problems],
                "unrepaired": len(self.unrepaired), "lines": self.lines()}


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


# --- collected problems and their fixes -----------------------------------------------

_Fix = Callable[[Op], bool]
"""Cures one problem inside the repair op; answers whether it did."""


class _Stage(enum.IntEnum):
    CHUNKS = 0   # reference counts first: later reference drops start from the truth
    ROWS = 1     # drop dangling and stray rows; fix allocation counters
    ORDER = 2    # re-add readdir rows (after the cookie counters are right)
    COUNTS = 3   # nlink, stored_units, block lengths: deltas
    LINK = 4     # link unreachable inodes into lost+found, last


class _Findings:
    def __init__(self) -> None:
        self.report = Report()
        self._fixes: list[tuple[_Stage, int, Problem, _Fix]] = []

    def add(self, kind: str, text: str, *, volume: str | None = None, path: str | None = None,
            ino: int | None = None, fix: _Fix | None = None, stage: _Stage = _Stage.ROWS) -> None:
        where = "".join(f"{part}: " for part in (volume and f"volume {volume}", path) if part)
        problem = Problem(kind, where + text, volume, path, ino, fixable=fix is not None)
        self.report.problems.append(problem)
        if fix is not None:
            self._fixes.append((stage, len(self._fixes), problem, fix))

    def apply(self, op: Op) -> None:
        """Run the fixes by stage. One that meets damaged bytes is skipped, not the rest."""
        for _stage, _n, problem, fix in sorted(self._fixes, key=lambda f: (f[0], f[1])):
            try:
                problem.repaired = fix(op)
            except Corrupted as exc:
                log.error("cannot repair (%s): %s", problem.message, exc)


# --- entry points -------------------------------------------------------------------

def check(store: Store, volume: str | None = None, *, repair: bool = False,
          progress: Progress | None = None, damaged: set[bytes] | None = None) -> Report:
    """Check the store as the filesystem sees it now (its batch); repair if asked.

    Runs on the store's thread. ``volume`` limits the per-volume checks and the hashing
    to one volume; reference counts are still recomputed over every volume.

    ``damaged``: the chunks a check of a recent snapshot found damaged
    (``Report.damaged_chunks``). Then no chunk is hashed, only its header and length
    read, and those are taken as damaged: the rest of a full check, at the cost of a
    walk of the metadata (the daemon's ``fsck --repair``, which must run on the store's
    thread, hashes in a worker thread first).
    """
    with store.op(adds_data=False) as op:
        found = _Scan(op, volume, progress, damaged).run()
        if repair:
            found.apply(op)
    if repair:
        store.commit()
    return found.report


def check_snapshot(store: Store, volume: str | None = None, *,
                   progress: Progress | None = None) -> Report:
    """A read-only check of the last commit, safe in a worker thread while the store is live."""
    with store.reading() as view:
        return check_view(view, volume, progress=progress)


def check_view(view: View, volume: str | None = None, *,
               progress: Progress | None = None) -> Report:
    """A read-only check through any ``View`` (an ``Op``, a snapshot's)."""
    return _Scan(view, volume, progress).run().report


# --- small helpers ------------------------------------------------------------------

def _local(key: bytes) -> int:
    return int.from_bytes(key[:8], "big") & LOCAL_MASK


def _slot(key: bytes) -> int:
    return int.from_bytes(key[:8], "big") >> LOCAL_BITS


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _ino_range(ino: InodeId) -> tuple[bytes, bytes]:
    return pack_u64(ino), pack_u64(ino + 1)


def _gaps(ranges: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The key ranges not covered by ``ranges`` (sorted, disjoint)."""
    out, lo = [], b""
    for start, end in ranges:
        if lo < start:
            out.append((lo, start))
        lo = end
    out.append((lo, _ALL_HI))
    return out


def _outer_join(rows: Iterator[tuple[bytes, bytes]], keys: Iterator[bytes]
                ) -> Iterator[tuple[bytes, bytes | None, bool]]:
    """Merge CHUNKREFS rows with CHUNKS keys (both in key order): (id, count row, stored)."""
    row, key = next(rows, None), next(keys, None)
    while row is not None or key is not None:
        if key is None or (row is not None and row[0] < key):
            assert row is not None
            yield row[0], row[1], False
            row = next(rows, None)
        elif row is None or key < row[0]:
            yield key, None, True
            key = next(keys, None)
        else:
            yield key, row[1], True
            row, key = next(rows, None), next(keys, None)


# --- the node-wide scan -------------------------------------------------------------

class _Scan:
    """One check: the catalog, each volume, the rows outside volumes, then the chunks."""

    def __init__(self, view: View, volume: str | None, progress: Progress | None,
                 damaged: set[bytes] | None = None) -> None:
        self.view = view
        self.damaged = damaged
        """Chunks known damaged; when given, no chunk is hashed (``check``)."""
        self.only = volume
        self.progress = progress or _no_progress
        self.found = _Findings()
        self.report = self.found.report
        self.refs: dict[bytes, int] = {}
        """chunk -> block-map entries naming it, over every volume."""
        self.state: dict[bytes, int] = {}
        """hashed chunk -> its length, or _MISSING / _CORRUPT."""
        self.block_len: dict[bytes, int] = {}
        """missing chunk -> the length block maps record, to rebuild its count row."""
        self.blocks_total = view.entries(Table.BLOCKS)
        self.blocks_swept = 0

    def run(self) -> _Findings:
        records, live = self._catalog()
        chosen = []
        for record in self._choose(records):
            if self._incomplete(record):
                self.report.incomplete_copies.append(record.name)
            else:
                chosen.append(record)
        for n, record in enumerate(chosen):
            self.progress("volumes", n, len(chosen))
            _VolumeCheck(self, record).run()
        self.progress("volumes", len(chosen), len(chosen))
        self._outside([catalog.slot_range(r.slot) for r in chosen], live)
        self._chunks()
        return self.found

    def _incomplete(self, record: VolumeRecord) -> bool:
        try:
            return replica.incomplete(self.view, record.slot)
        except CorruptRecord as exc:
            self.found.add("corrupt-record", f"replication state of volume {record.name}: {exc}")
            return False

    def _choose(self, records: list[VolumeRecord]) -> list[VolumeRecord]:
        if self.only is None:
            return sorted(records, key=lambda r: r.slot)
        chosen = [r for r in records if r.name == self.only]
        if not chosen:
            raise VolumeNotFound(f"no volume named {self.only!r}")
        return chosen

    def tick_block(self, checked: bool = True) -> None:
        self.report.blocks += int(checked)
        self.blocks_swept += 1
        if self.blocks_swept % _TICK == 0:
            self.progress("blocks", self.blocks_swept, self.blocks_total)

    # --- catalog -----------------------------------------------------------------

    def _catalog(self) -> tuple[list[VolumeRecord], set[int]]:
        """Volume records, and every slot whose rows belong to a volume (even a damaged one)."""
        records: list[VolumeRecord] = []
        for key, raw in self.view.range(Table.VOLUMES, b"", _ALL_HI):
            try:
                record = VolumeRecord.decode(raw)
            except CorruptRecord as exc:
                self.found.add("corrupt-record", f"catalog entry of volume {_show(key)}: {exc}")
                continue
            records.append(record)
            if self.view.get(Table.VOLSLOTS, pack_u64(record.slot)) != key:
                self.found.add("catalog", f"volume {record.name}: slot {record.slot} does not name it back",
                               fix=partial(_fix_volslot, record.slot, bytes(key)))
        live: set[int] = {r.slot for r in records}
        for key, name in self.view.range(Table.VOLSLOTS, b"", _ALL_HI):
            live.add(int.from_bytes(key, "big"))
            if self.view.get(Table.VOLUMES, name) is None:
                self.found.add("catalog", f"slot {int.from_bytes(key, 'big')} names volume "
                               f"{_show(name)}, which has no catalog entry")
        self._check_next_slot(max(live, default=0))
        return records, live

    def _check_next_slot(self, top: int) -> None:
        """A new volume takes ``next_slot``: if that is in use, it lands on another's rows."""
        raw = self.view.get(Table.META, b"next_slot")
        next_slot = int.from_bytes(raw, "big") if raw is not None and len(raw) == 8 else 0
        if next_slot <= top:
            self.found.add("catalog", f"the next volume slot is {next_slot}, but slot {top} is in use",
                           fix=partial(_put_next_slot, top + 1))

    # --- rows outside the checked volumes -------------------------------------------

    def _outside(self, checked: list[tuple[bytes, bytes]], live: set[int]) -> None:
        """Count the references of every other block row; in a full check, find stray slots."""
        strays: Counter[tuple[Table, int]] = Counter()
        for lo, hi in _gaps(checked):
            for key, raw in self.view.range(Table.BLOCKS, lo, hi):
                self.tick_block(checked=False)
                self.count_ref(raw)
                if _slot(key) not in live:
                    strays[Table.BLOCKS, _slot(key)] += 1
            for table in (Table.INODES, Table.DIRENTS, Table.DIRORDER, Table.XATTRS,
                          Table.SYMLINKS, Table.ORPHANS):
                if self.only is None:
                    for key in self.view.keys(table, lo, hi):
                        if _slot(key) not in live:
                            strays[table, _slot(key)] += 1
        if self.only is not None:
            return
        self._stray_logs(live, strays)
        for (table, slot), n in sorted(strays.items()):
            self.found.add("stray-rows", f"{_n(n, 'row')} of table {table.name.lower()} belong to slot "
                           f"{slot}, which holds no volume", fix=partial(_drop_slot_rows, table, Slot(slot)))

    def _stray_logs(self, live: set[int], strays: Counter[tuple[Table, int]]) -> None:
        """Change logs and counters of slots without a volume: keyed by the slot itself."""
        for table in (Table.CHANGELOG, Table.VOLSTATE):
            for key in self.view.keys(table, b"", _ALL_HI):
                slot = int.from_bytes(key[:8], "big")
                if slot not in live:
                    strays[table, slot] += 1

    def count_ref(self, raw: bytes) -> BlockRow | None:
        """Count the references of one block row (one per chunk it names); the decoded
        row, None if damaged."""
        try:
            row = decode_block(raw)
        except CorruptRecord:
            return None
        for cid, _length in row.chunks():
            self.refs[cid] = self.refs.get(cid, 0) + 1
        return row

    # --- chunks ------------------------------------------------------------------

    def verify(self, cid: bytes, recorded: int) -> int:
        """The chunk's true length, or _MISSING / _CORRUPT; each chunk is hashed once."""
        state = self.state.get(cid)
        if state is None:
            state = self.state[cid] = self._hash(cid)
            if state in (_MISSING, _REMOTE):
                self.block_len[cid] = recorded
        return state

    def _hash(self, cid: bytes) -> int:
        raw = self.view.get(Table.CHUNKS, cid)
        if raw is None:
            return _REMOTE if self.view.get(Table.REMOTE, cid) is not None else _MISSING
        self.report.chunks += 1
        try:
            if self.damaged is not None:  # hashed by a check of a snapshot before this one
                if cid in self.damaged:
                    raise CorruptChunk(cid.hex())
                return len(chunks.payload(cid, raw))
            payload = chunks.verify(cid, raw)
        except Corrupted:
            self.report.damaged_chunks.add(cid)
            return _CORRUPT
        self.report.bytes_verified += len(payload)
        return len(payload)

    def _chunks(self) -> None:
        """One merged sweep of CHUNKREFS and CHUNKS' keys against the recomputed counts."""
        total, done = self.view.entries(Table.CHUNKREFS), 0
        rows = iter(self.view.range(Table.CHUNKREFS, b"", _ALL_HI))
        keys = iter(self.view.keys(Table.CHUNKS, b"", _ALL_HI))
        for cid, raw, stored in _outer_join(rows, keys):
            self._chunk(bytes(cid), raw, stored)
            done += 1
            if done % _TICK == 0:
                self.progress("chunks", done, total)
        for cid in list(self.refs):
            self._chunk(cid, None, False)
        self.progress("chunks", done, total)

    def _chunk(self, cid: bytes, raw: bytes | None, stored: bool) -> None:
        expected = self.refs.pop(cid, 0)
        row = self._ref_row(cid, raw)
        if expected == 0:
            self._unreferenced(cid, row, stored)
            return
        if not stored and self.view.get(Table.REMOTE, cid) is not None:
            self.report.remote_chunks += 1  # held by replicas; a read fetches it
        elif not stored and cid not in self.state:
            self.found.add("missing-chunk", f"chunk {cid.hex()} is named by "
                           f"{_n(expected, 'block-map entry', 'block-map entries')} but is not stored")
        length = self._true_length(cid, row, stored)
        fix = None if length is None else partial(_put_ref, cid, expected, length)
        if row is None:
            self.found.add("refcount", f"chunk {cid.hex()} has no reference count; "
                           f"{_n(expected, 'block-map entry', 'block-map entries')} name it",
                           fix=fix, stage=_Stage.CHUNKS)
        elif row[0] != expected:
            self.found.add("refcount", f"chunk {cid.hex()} has reference count {row[0]}, but "
                           f"{_n(expected, 'block-map entry', 'block-map entries')} name it",
                           fix=fix, stage=_Stage.CHUNKS)
        if row is not None and length is not None and row[1] != length:
            self.found.add("chunk-length", f"chunk {cid.hex()} is recorded as {row[1]} bytes "
                           f"long, it holds {length}", fix=fix, stage=_Stage.CHUNKS)

    def _ref_row(self, cid: bytes, raw: bytes | None) -> tuple[int, int] | None:
        if raw is None:
            return None
        try:
            return decode_chunkref(raw)
        except CorruptRecord as exc:
            self.found.add("corrupt-record", f"reference count of chunk {cid.hex()}: {exc}")
            return None

    def _true_length(self, cid: bytes, row: tuple[int, int] | None, stored: bool) -> int | None:
        """The chunk's payload length from the best source at hand; None when none knows."""
        state = self.state.get(cid, _MISSING)
        if state >= 0:
            return state
        if row is not None:
            return row[1]
        if stored:
            raw = self.view.get(Table.CHUNKS, cid)
            return None if raw is None else len(raw) - 2
        return self.block_len.get(cid)

    def _unreferenced(self, cid: bytes, row: tuple[int, int] | None, stored: bool) -> None:
        counted = "" if row is None else f" (reference count {row[0]})"
        if stored and row is None and self.view.get(Table.STAGED, cid) is not None:
            self.report.staged_chunks += 1  # pushed by a writer ahead of its log record
            return
        if stored:
            self.found.add("leaked-chunk", f"chunk {cid.hex()} is stored{counted} but no block "
                           "map names it", fix=partial(_drop_chunk, cid), stage=_Stage.CHUNKS)
        else:
            self.found.add("refcount-without-chunk", f"chunk {cid.hex()} has a reference count row"
                           f"{counted} but neither data nor references", fix=partial(_drop_chunk, cid),
                           stage=_Stage.CHUNKS)


# --- one volume ---------------------------------------------------------------------

class _Info(NamedTuple):
    """What the checker keeps of an inode; fmt 0 means its record is damaged."""

    fmt: int
    nlink: int
    size: int
    units: int
    next_cookie: int


_DAMAGED = _Info(0, 0, 0, 0, 0)


class _Pending(NamedTuple):
    kind: str
    text: str
    local: int | None
    name: bytes | None
    fix: _Fix | None
    stage: _Stage


class _VolumeCheck:
    """The checks of one volume. Problems wait in ``pending`` until the walk knows paths."""

    def __init__(self, scan: _Scan, record: VolumeRecord) -> None:
        self.scan = scan
        self.view = scan.view
        self.record = record
        self.slot = record.slot
        self.lo, self.hi = catalog.slot_range(record.slot)
        self.inodes: dict[int, _Info] = {}
        self.entries: dict[int, dict[bytes, tuple[int, int]]] = {}
        """parent -> name -> (child, cookie), for parents that may hold entries."""
        self.names: Counter[int] = Counter()
        self.subdirs: Counter[int] = Counter()
        self.where: dict[int, tuple[int, bytes]] = {}
        """inode -> (parent, name) of the name the walk reached it by."""
        self.lost: set[int] = set()
        """unreachable inodes that head an unreachable subtree: they go to lost+found."""
        self.orphans: set[int] = set()
        self.stray_parents: set[int] = set()
        self.has_root = False
        self.pending: list[_Pending] = []

    def ino(self, local: int) -> InodeId:
        return make_ino(self.slot, LocalIno(local))

    def add(self, kind: str, text: str, local: int | None = None, name: bytes | None = None,
            fix: _Fix | None = None, stage: _Stage = _Stage.ROWS) -> None:
        self.pending.append(_Pending(kind, text, local, name, fix, stage))

    def is_dir(self, local: int) -> bool:
        info = self.inodes.get(local)
        return info is not None and info.fmt == stat.S_IFDIR

    def run(self) -> None:
        self.scan.report.volumes += 1
        self._load_inodes()
        self._load_orphans()
        self._load_entries()
        self._count_names()
        self._walk()
        self._check_order()
        self._check_blocks()
        self._check_side_rows()
        self._check_links()
        self._check_orphans()
        self._check_state()
        self._flush()

    def _flush(self) -> None:
        for p in self.pending:
            path = None if p.local is None else self.path(p.local, p.name)
            self.scan.found.add(p.kind, p.text, volume=self.record.name, path=path, ino=p.local,
                                fix=p.fix, stage=p.stage)

    def path(self, local: int, name: bytes | None = None) -> str:
        """The inode's path (plus ``name`` below it); ``<inode N>`` where no path leads."""
        parts = [] if name is None else [name]
        for _ in range(4096):
            if local == VOLUME_ROOT_LOCAL and self.has_root:
                return "/" + "/".join(_show(p) for p in reversed(parts))
            link = self.where.get(local)
            if link is None or local in self.lost:
                break
            local = link[0]
            parts.append(link[1])
        head = f"<inode {local}>"
        return "/".join([head] + [_show(p) for p in reversed(parts)])

    # --- loading -----------------------------------------------------------------

    def _load_inodes(self) -> None:
        report = self.scan.report
        for key, raw in self.view.range(Table.INODES, self.lo, self.hi):
            local = _local(key)
            report.inodes += 1
            try:
                if len(key) != 8:
                    raise CorruptRecord(f"inode key of {len(key)} bytes")
                inode = Inode.decode(raw)
            except CorruptRecord as exc:
                self.add("corrupt-record", f"inode record is damaged: {exc}", local)
                self.inodes[local] = _DAMAGED
                continue
            fmt = stat.S_IFMT(inode.mode)
            self.inodes[local] = _Info(fmt, inode.nlink, inode.size, inode.stored_units, inode.next_cookie)
            report.directories += int(fmt == stat.S_IFDIR)
            report.files += int(fmt == stat.S_IFREG)

    def _load_orphans(self) -> None:
        self.orphans = {_local(key) for key in self.view.keys(Table.ORPHANS, self.lo, self.hi)}

    def _load_entries(self) -> None:
        for key, raw in self.view.range(Table.DIRENTS, self.lo, self.hi):
            parent, name = _local(key), bytes(key[8:])
            try:
                child, cookie = decode_dirent(raw)
            except CorruptRecord as exc:
                self.add("corrupt-record", f"directory entry is damaged: {exc}", parent, name)
                continue
            self.entries.setdefault(parent, {})[name] = (child, cookie)
        for parent in [p for p in self.entries if self._not_a_parent(p)]:
            self._stray_parent(parent, _n(len(self.entries.pop(parent)), "directory entry", "directory entries"))

    def _not_a_parent(self, local: int) -> bool:
        """Missing, or known not to be a directory (a damaged record might still be one)."""
        info = self.inodes.get(local)
        return info is None or info.fmt not in (0, stat.S_IFDIR)

    def _stray_parent(self, parent: int, what: str) -> None:
        self.stray_parents.add(parent)
        owner = "a missing inode" if parent not in self.inodes else "an inode that is not a directory"
        self.add("stray-entry", f"{what} belong to {owner} ({parent})",
                 fix=partial(_drop_dir_rows, self.ino(parent)))

    def _count_names(self) -> None:
        """Names per inode and subdirectories per directory, over every real directory."""
        for parent, entries in self.entries.items():
            for name, (child, _cookie) in entries.items():
                if child not in self.inodes:
                    self.add("dangling-entry", f"entry names inode {child}, which does not exist",
                             parent, name, partial(_drop_entry, self.ino(parent), name))
                    continue
                self.names[child] += 1
                if self.is_dir(child):
                    self.subdirs[parent] += 1

    # --- reachability ------------------------------------------------------------

    def _walk(self) -> None:
        root = VOLUME_ROOT_LOCAL
        if root not in self.inodes:
            self.add("missing-root", "the root directory (inode 1) is missing")
            return
        if not self.is_dir(root):
            self.add("root-not-directory", "inode 1 is not a directory", root)
            return
        self.has_root = True
        self.where[root] = (root, b"")
        self._reach(root)
        for local in sorted(self.inodes):
            if local not in self.where and not self._free_orphan(local):
                self.lost.add(local)
                self._reach(local)
        for local in sorted(self.lost):
            self._report_unreachable(local)

    def _free_orphan(self, local: int) -> bool:
        """Unlinked while open: no names, listed in ORPHANS. Not lost, just waiting."""
        return local in self.orphans and self.names[local] == 0

    def _reach(self, start: int) -> None:
        """Breadth-first from ``start``; an earlier lost head met again stops heading."""
        queue = deque([start])
        while queue:
            parent = queue.popleft()
            for name, (child, _cookie) in self.entries.get(parent, {}).items():
                if child not in self.inodes or child == start:
                    continue
                if child in self.lost:
                    self.lost.discard(child)  # walked already; now it hangs below ``start``
                    self.where[child] = (parent, name)
                elif child not in self.where:
                    self.where[child] = (parent, name)
                    if self.is_dir(child):
                        queue.append(child)

    def _report_unreachable(self, local: int) -> None:
        info = self.inodes[local]
        what = {stat.S_IFDIR: "directory", stat.S_IFREG: "file", 0: "damaged inode"}.get(info.fmt, "inode")
        fix = None if info.fmt == 0 else partial(_link_lost, self.slot, local, info.fmt == stat.S_IFDIR)
        self.add("unreachable-inode", f"{what} {local} is not reachable from the root and not "
                 "an open unlinked file", local, fix=fix, stage=_Stage.LINK)

    # --- readdir order -------------------------------------------------------------

    def _check_order(self) -> None:
        """DIRORDER against DIRENTS, one directory at a time (both are keyed parent first)."""
        done = set()
        rows = self.view.range(Table.DIRORDER, self.lo, self.hi)
        for prefix, group in groupby(rows, key=lambda row: bytes(row[0][:8])):
            parent = _local(prefix)
            done.add(parent)
            order: dict[int, tuple[bytes, int | None, int]] = {}
            for key, raw in group:
                if len(key) != 16:
                    self.add("corrupt-record", f"readdir-order key of {len(key)} bytes", parent)
                    continue
                cookie = int.from_bytes(key[8:16], "big")
                try:
                    child, kind, name = decode_order(raw)
                except CorruptRecord as exc:
                    self.add("corrupt-record", f"readdir position {cookie} is damaged: {exc}", parent,
                             fix=partial(_drop_damaged_order, self.ino(parent), cookie))
                    continue
                order[cookie] = (name, child, kind)
            self._compare_order(parent, order)
        for parent in self.entries:
            if parent not in done:
                self._compare_order(parent, {})

    def _compare_order(self, parent: int, order: dict[int, tuple[bytes, int | None, int]]) -> None:
        if self._not_a_parent(parent):
            if parent not in self.stray_parents:
                self._stray_parent(parent, _n(len(order), "readdir-order row"))
            return
        entries = self.entries.get(parent, {})
        ino = self.ino(parent)
        for cookie, (name, _child, _kind) in order.items():
            entry = entries.get(name)
            if entry is None or entry[1] != cookie:
                self.add("dir-order", f"readdir position {cookie} names {_show(name)!r}, which has "
                         "no entry at that position", parent, fix=partial(_drop_order, ino, cookie, name))
        for name, (child, cookie) in entries.items():
            if child not in self.inodes:
                continue
            held = order.get(cookie)
            if held is None or held[0] != name:
                self.add("dir-order", "entry has no readdir position: readdir does not list it",
                         parent, name, partial(_restore_order, ino, name), _Stage.ORDER)
            elif held[1] is not None and (held[1] != child or self.inodes[child].fmt not in (0, held[2] << 12)):
                self.add("dir-order", "readdir position describes another inode than the entry names: "
                         "listings show the wrong number or type", parent, name,
                         partial(_restore_order, ino, name), _Stage.ORDER)
        self._check_cookie(parent, max([*order, *(c for _ch, c in entries.values())], default=0))

    def _check_cookie(self, parent: int, top: int) -> None:
        info = self.inodes[parent]
        if info.fmt == stat.S_IFDIR and top >= info.next_cookie:
            self.add("dir-cookie", f"next readdir position {info.next_cookie} is not above the "
                     f"highest in use ({top})", parent, fix=partial(_raise_cookie, self.ino(parent), top + 1))

    # --- block maps ----------------------------------------------------------------

    def _check_blocks(self) -> None:
        with_blocks = set()
        rows = self.view.range(Table.BLOCKS, self.lo, self.hi)
        for prefix, group in groupby(rows, key=lambda row: bytes(row[0][:8])):
            local = _local(prefix)
            with_blocks.add(local)
            info = self.inodes.get(local)
            if info is None or info.fmt not in (0, stat.S_IFREG):
                self._stray_blocks(local, info, group)
            else:
                _FileBlocks(self, local, info).check(group)
        for local, info in self.inodes.items():
            if local not in with_blocks and info.fmt and info.units:
                self._bad_units(local, info.units, 0)

    def _stray_blocks(self, local: int, info: _Info | None, rows: Iterable[tuple[bytes, bytes]]) -> None:
        n = 0
        for _key, raw in rows:
            self.scan.tick_block()
            self.scan.count_ref(raw)
            n += 1
        owner = "missing inode" if info is None else "inode that is not a regular file"
        self.add("dangling-block", f"{_n(n, 'block-map entry', 'block-map entries')} belong to a {owner} ({local})",
                 local, fix=partial(_drop_blocks, self.ino(local), 0, False))

    def _bad_units(self, local: int, recorded: int, actual: int) -> None:
        self.add("stored-units", f"st_blocks is {recorded}, its blocks take {actual} units of 512 bytes",
                 local, fix=partial(_adjust_units, self.ino(local), actual - recorded), stage=_Stage.COUNTS)

    # --- extended attributes, symlinks, orphans, counters ----------------------------

    def _check_side_rows(self) -> None:
        """XATTRS and SYMLINKS rows must hang off an inode that takes them."""
        self._side_rows(Table.XATTRS, lambda info: True)
        targets = self._side_rows(Table.SYMLINKS, lambda info: info.fmt in (0, stat.S_IFLNK))
        for local, info in self.inodes.items():
            if info.fmt == stat.S_IFLNK and local not in targets:
                self.add("symlink-target", "symbolic link has no target", local)

    def _side_rows(self, table: Table, takes: Callable[[_Info], bool]) -> set[int]:
        """Report rows of inodes that are missing or cannot have them; the owners seen."""
        owners = set()
        keys = self.view.keys(table, self.lo, self.hi)
        for prefix, group in groupby(keys, key=lambda key: bytes(key[:8])):
            local = _local(prefix)
            owners.add(local)
            info = self.inodes.get(local)
            if info is None or not takes(info):
                self.add("stray-row", f"{_n(sum(1 for _ in group), table.name.lower() + ' row')} belong to "
                         f"a missing or unsuitable inode ({local})", local,
                         fix=partial(_drop_rows, table, self.ino(local)))
        return owners

    def _check_links(self) -> None:
        for local, info in self.inodes.items():
            if info.fmt == 0:
                continue
            want = self._wanted_links(local, info)
            if want != info.nlink:
                self.add("nlink", f"link count is {info.nlink}, should be {want} "
                         f"({self._link_reason(local, info)})", local,
                         fix=partial(_adjust_nlink, self.ino(local), want - info.nlink), stage=_Stage.COUNTS)
            allowed = 0 if local == VOLUME_ROOT_LOCAL else 1
            if info.fmt == stat.S_IFDIR and self.names[local] > allowed:
                self.add("dir-names", f"directory has {_n(self.names[local], 'name')}, allowed {allowed}", local)

    def _wanted_links(self, local: int, info: _Info) -> int:
        """The link count once repaired: a lost head gains its name in lost+found."""
        if info.fmt == stat.S_IFDIR:
            if self._free_orphan(local) and local != VOLUME_ROOT_LOCAL:
                return 0
            return 2 + self.subdirs[local]
        return self.names[local] + int(local in self.lost)

    def _link_reason(self, local: int, info: _Info) -> str:
        if info.fmt == stat.S_IFDIR:
            return f"{self.subdirs[local]} subdirectories"
        extra = ", plus one in lost+found" if local in self.lost else ""
        return f"{self.names[local]} directory entries name it{extra}"

    def _check_orphans(self) -> None:
        for local in sorted(self.orphans):
            if local not in self.inodes:
                self.add("stray-orphan", f"open-unlinked list names inode {local}, which does not exist",
                         fix=partial(_drop_orphan, self.ino(local)))
            elif self.names[local]:
                self.add("orphan-linked", "listed as unlinked while open, but has names: a restart "
                         "would destroy it", local, fix=partial(_drop_orphan, self.ino(local)))

    def _check_state(self) -> None:
        """The volume's counters must lie above what is used, or new rows overwrite old
        ones; its bytes in use, which size limits are held to, must be the sum of its
        inodes' st_blocks * 512 (a version 1 record has none: it is counted when used)."""
        top_ino = max(self.inodes, default=1)
        used = 512 * sum(info.units for info in self.inodes.values())
        last_seq = 0
        for key in self.view.keys(Table.CHANGELOG, log_key(self.slot, 0), log_key(Slot(self.slot + 1), 0)):
            last_seq = int.from_bytes(key[8:16], "big")
        raw = self.view.get(Table.VOLSTATE, pack_u64(self.slot))
        try:
            state = None if raw is None else VolumeState.decode(raw)
        except CorruptRecord:
            state = None
        if (state is None or state.next_local <= top_ino or state.next_seq <= last_seq
                or state.used_bytes not in (None, used)):
            have = "missing or damaged" if state is None else \
                f"next inode {state.next_local}, next change {state.next_seq}, {state.used_bytes} bytes in use"
            self.add("volume-state", f"volume counters are {have}; in use: inode {top_ino}, "
                     f"change {last_seq}, {used} bytes",
                     fix=partial(_rebuild_state, self.slot, top_ino + 1, last_seq + 1))


class _FileBlocks:
    """The block rows of one regular file, streamed: references, hashes, EOF, st_blocks."""

    def __init__(self, vol: _VolumeCheck, local: int, info: _Info) -> None:
        self.vol = vol
        self.local = local
        self.info = info
        self.block_size = vol.record.block_size
        self.eof = -(-info.size // self.block_size) if info.fmt else None
        self.units = 0
        self.damaged = False
        self.beyond: list[int] = []
        self.missing: list[tuple[int, bytes]] = []
        self.corrupt: list[tuple[int, bytes]] = []

    def check(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        for key, raw in rows:
            self.vol.scan.tick_block()
            row = self.vol.scan.count_ref(raw)
            if row is None or len(key) != 16:
                self.vol.add("corrupt-record", "a block-map entry is damaged", self.local)
                self.damaged = True
                continue
            self.block(int.from_bytes(key[8:16], "big"), row)
        self.report()

    def block(self, n: int, row: BlockRow) -> None:
        """Each chunk of the row: stored, intact, as long as recorded; then the block's end."""
        self.units += row.units
        if row.chunk is None:
            return  # a reserved hole: nothing stored, anywhere in the file or past its end
        if self.eof is not None and n >= self.eof:
            self.beyond.append(n)
            return
        end: int | None = 0  # where the block's bytes end, None when a chunk cannot tell
        for piece, (cid, length) in enumerate(row.chunks()):
            at = row.patches[piece - 1].at if piece else 0
            state = self.vol.scan.verify(cid, length)
            if state == _MISSING:
                self.missing.append((n, cid))
            elif state == _CORRUPT:
                self.corrupt.append((n, cid))
            elif state != _REMOTE:
                self.check_length(n, piece, cid, length, state)
                if end is not None:
                    end = max(end, at + state)
                continue
            end = None
        keep = self.info.size - n * self.block_size
        if end is not None and self.eof is not None and n == self.eof - 1 and end > keep:
            self.vol.add("tail-beyond-eof", f"block {n} stores {end - keep} bytes past the end "
                         f"of the file (size {self.info.size})", self.local,
                         fix=partial(_trim_tail, self.vol.ino(self.local), n, keep), stage=_Stage.COUNTS)

    def check_length(self, n: int, piece: int, cid: bytes, recorded: int, actual: int) -> None:
        """``piece`` 0 is the block's base, 1 on its patches."""
        if actual != recorded:
            what = f"patch {piece} of block {n}" if piece else f"block {n}"
            self.vol.add("block-length", f"{what} is recorded as {recorded} bytes, its chunk "
                         f"holds {actual}", self.local,
                         fix=partial(_fix_block_length, self.vol.ino(self.local), n, piece, cid, recorded, actual),
                         stage=_Stage.COUNTS)

    def report(self) -> None:
        vol, local = self.vol, self.local
        for kind, blocks, what in (("missing-chunk", self.missing, "chunks that are not stored"),
                                   ("corrupt-chunk", self.corrupt, "chunks that fail hash verification")):
            if blocks:
                named = [f"{n} (chunk {cid.hex()})" for n, cid in blocks]
                vol.add(kind, f"blocks {_numbers(named)} name {what}", local)
        if self.beyond:
            vol.add("block-beyond-eof", f"blocks {_numbers(self.beyond)} lie at or beyond the end of "
                    f"the file (size {self.info.size})", local,
                    fix=partial(_drop_blocks, vol.ino(local), self.eof or 0, True, keep_reserved_holes=True))
        if self.info.fmt and not self.damaged and self.units != self.info.units:
            vol._bad_units(local, self.info.units, self.units)


def _numbers(blocks: list[int] | list[str]) -> str:
    shown = ", ".join(map(str, blocks[:8]))
    return shown + (f" and {len(blocks) - 8} more" if len(blocks) > 8 else "")


# --- fixes: each cures one problem inside the repair op ---------------------------------

def _fix_volslot(slot: Slot, name: bytes, op: Op) -> bool:
    op.put(Table.VOLSLOTS, pack_u64(slot), name)
    return True


def _put_next_slot(slot: int, op: Op) -> bool:
    op.put(Table.META, b"next_slot", pack_u64(slot))
    return True


def _drop_slot_rows(table: Table, slot: Slot, op: Op) -> bool:
    """Rows of a slot without a volume: unlogged (there is no log to add to)."""
    if table in (Table.CHANGELOG, Table.VOLSTATE):
        lo, hi = pack_u64(slot), pack_u64(slot + 1)
    else:
        lo, hi = catalog.slot_range(slot)
    for key, raw in list(op.range(table, lo, hi)):
        op.delete(table, key, logged=False)
        if table is Table.BLOCKS:
            _release(op, raw)
    return True


def _release(op: Op, raw: bytes) -> int:
    """Drop the references a deleted block row held; its units, 0 when damaged."""
    try:
        row = decode_block(raw)
    except CorruptRecord:
        return 0
    filedata.release(op, None, row)
    return row.units


def _put_ref(cid: bytes, count: int, length: int, op: Op) -> bool:
    op.put(Table.CHUNKREFS, cid, encode_chunkref(count, length))
    return True


def _drop_chunk(cid: bytes, op: Op) -> bool:
    op.delete(Table.CHUNKS, cid)
    op.delete(Table.CHUNKREFS, cid)
    return True


def _drop_dir_rows(parent: InodeId, op: Op) -> bool:
    lo, hi = _ino_range(parent)
    for table in (Table.DIRENTS, Table.DIRORDER):
        for key, _value in list(op.range(table, lo, hi)):
            op.delete(table, key)
    return True


def _drop_entry(parent: InodeId, name: bytes, op: Op) -> bool:
    """Remove an entry and its readdir row (only if that row is really its own)."""
    raw = op.get(Table.DIRENTS, ino_name_key(parent, name))
    if raw is None:
        return True
    _child, cookie = decode_dirent(raw)
    op.delete(Table.DIRENTS, ino_name_key(parent, name))
    if _order_name(op, parent, cookie) == name:
        op.delete(Table.DIRORDER, ino_u64_key(parent, cookie))
    return True


def _order_name(op: Op, parent: InodeId, cookie: int) -> bytes | None:
    """The name the readdir row at ``cookie`` holds: None if there is none or it is damaged."""
    raw = op.get(Table.DIRORDER, ino_u64_key(parent, cookie))
    if raw is None:
        return None
    try:
        return decode_order(raw)[2]
    except CorruptRecord:
        return None


def _drop_order(parent: InodeId, cookie: int, name: bytes, op: Op) -> bool:
    if _order_name(op, parent, cookie) == name:
        op.delete(Table.DIRORDER, ino_u64_key(parent, cookie))
    return True


def _drop_damaged_order(parent: InodeId, cookie: int, op: Op) -> bool:
    raw = op.get(Table.DIRORDER, ino_u64_key(parent, cookie))
    if raw is not None:
        try:
            decode_order(raw)
        except CorruptRecord:
            op.delete(Table.DIRORDER, ino_u64_key(parent, cookie))
    return True


def _restore_order(parent: InodeId, name: bytes, op: Op) -> bool:
    """Give an entry its readdir row, describing its child rightly: at its own cookie if
    free or its own, else at a fresh one. A child whose inode cannot be read gets a
    name-only row (schema 1), which listings resolve through DIRENTS."""
    raw = op.get(Table.DIRENTS, ino_name_key(parent, name))
    if raw is None:
        return False
    child, cookie = decode_dirent(raw)
    held = _order_name(op, parent, cookie)  # None: no row, or a damaged one to write over
    if held is not None and held != name:
        directory = inodes.load(op, parent)
        cookie = directory.next_cookie
        directory.next_cookie += 1
        inodes.save(op, parent, directory)
        op.put(Table.DIRENTS, ino_name_key(parent, name), encode_dirent(child, cookie))
    try:
        row = encode_order(child, inodes.load(op, make_ino(slot_of(parent), child)).mode, name)
    except (NotFound, CorruptRecord):
        row = name
    op.put(Table.DIRORDER, ino_u64_key(parent, cookie), row)
    return True


def _raise_cookie(parent: InodeId, at_least: int, op: Op) -> bool:
    directory = inodes.load(op, parent)
    if directory.next_cookie < at_least:
        directory.next_cookie = at_least
        inodes.save(op, parent, directory)
    return True


def _drop_blocks(ino: InodeId, first: int, owner_counts: bool, op: Op, *, keep_reserved_holes: bool = False) -> bool:
    """Delete block rows from ``first`` on, releasing chunks; the file's st_blocks follow.
    ``keep_reserved_holes``: leave rows that store nothing (they may lie past the end)."""
    units = 0
    for key, raw in list(op.range(Table.BLOCKS, ino_u64_key(ino, first), pack_u64(ino + 1))):
        if keep_reserved_holes and _stores_nothing(raw):
            continue
        op.delete(Table.BLOCKS, key)
        units += _release(op, raw)
    if owner_counts:
        inode = inodes.load(op, ino)
        inode.stored_units -= units
        inodes.save(op, ino, inode)
    return True


def _stores_nothing(raw: bytes) -> bool:
    """Whether a block row is a reserved hole."""
    try:
        return decode_block(raw).chunk is None
    except CorruptRecord:
        return False


def _fix_block_length(ino: InodeId, n: int, piece: int, cid: bytes, recorded: int, actual: int,
                      op: Op) -> bool:
    raw = op.get(Table.BLOCKS, ino_u64_key(ino, n))
    if raw is None:
        return True
    row = decode_block(raw)
    if piece > len(row.patches) or row.chunks()[piece] != (cid, recorded):
        return True
    patches = list(row.patches)
    if piece:
        patches[piece - 1] = patches[piece - 1]._replace(length=actual)
        fixed = row._replace(patches=tuple(patches))
    else:
        fixed = row._replace(length=actual)
    op.put(Table.BLOCKS, ino_u64_key(ino, n), encode_row(fixed))
    return _adjust_units(ino, fixed.units - row.units, op)


def _trim_tail(ino: InodeId, n: int, keep: int, op: Op) -> bool:
    """Zero the bytes past the end of file in the last block, as truncate would have."""
    if op.get(Table.BLOCKS, ino_u64_key(ino, n)) is None:
        return True
    content = filedata.load_block(op, ino, n)[:keep]
    inode = inodes.load(op, ino)
    filedata.store_block(op, ino, inode, n, content)
    inodes.save(op, ino, inode)
    return True


def _adjust_units(ino: InodeId, delta: int, op: Op) -> bool:
    inode = inodes.load(op, ino)
    inode.stored_units += delta
    inodes.save(op, ino, inode)
    return True


def _adjust_nlink(ino: InodeId, delta: int, op: Op) -> bool:
    inode = inodes.load(op, ino)
    inode.nlink += delta
    inodes.save(op, ino, inode)
    return True


def _drop_rows(table: Table, ino: InodeId, op: Op) -> bool:
    lo, hi = _ino_range(ino)
    for key, _value in list(op.range(table, lo, hi)):
        op.delete(table, key)
    return True


def _drop_orphan(ino: InodeId, op: Op) -> bool:
    op.delete(Table.ORPHANS, ino_key(ino))
    return True


def _rebuild_state(slot: Slot, next_local: int, next_seq: int, op: Op) -> bool:
    """Counters from what is in use; never lowered, so nothing handed out is handed out again.
    Bytes in use are counted again, as they stand before the repair's own inode changes
    (which the op adds when it finishes)."""
    raw = op.get(Table.VOLSTATE, pack_u64(slot))
    try:
        state = VolumeState() if raw is None else VolumeState.decode(raw)
    except CorruptRecord:
        state = VolumeState()
    state.next_local = max(state.next_local, next_local)
    state.next_seq = max(state.next_seq, next_seq)
    state.checkpoint_seq = min(state.checkpoint_seq, state.next_seq - 1)
    state.used_bytes = changelog.count_used(op, slot) - op.usage_change(slot)
    op.put(Table.VOLSTATE, pack_u64(slot), state.encode())
    return True


def _link_lost(slot: Slot, local: int, is_dir: bool, op: Op) -> bool:
    """Name an unreachable inode ``/lost+found/<local ino>``; its link count is fixed apart."""
    found = _lost_found(op, slot)
    if found is None:
        return False
    directory = inodes.load(op, found)
    name = base = str(local).encode()
    n = 0
    while dirs.lookup(op, found, name) is not None:
        n += 1
        name = base + b"." + str(n).encode()
    child = make_ino(slot, LocalIno(local))
    dirs.add(op, found, directory, name, child, inodes.load(op, child).mode)
    directory.nlink += int(is_dir)
    directory.mtime_ns = directory.ctime_ns = op.time_ns
    inodes.save(op, found, directory)
    return True


def _lost_found(op: Op, slot: Slot) -> InodeId | None:
    """The volume's lost+found, made if needed; None if the name is taken by a non-directory."""
    root = volume_root(slot)
    found = dirs.lookup(op, root, LOST_FOUND)
    if found is not None:
        return found if stat.S_ISDIR(inodes.load(op, found).mode) else None
    found = inodes.allocate(op, root)
    now = op.time_ns
    inodes.save(op, found, Inode(stat.S_IFDIR | 0o700, 0, 0, 2, atime_ns=now, mtime_ns=now, ctime_ns=now))
    root_inode = inodes.load(op, root)
    dirs.add(op, root, root_inode, LOST_FOUND, found, stat.S_IFDIR)
    root_inode.nlink += 1
    root_inode.mtime_ns = root_inode.ctime_ns = now
    inodes.save(op, root, root_inode)
    return found

"""The benchmark suite on its FUSE targets: a real bindfs and a real cfs daemon, each
started by the suite, measured side by side in one table, and stopped and unmounted
by it afterwards. (tests/unit/test_bench.py runs the suite on the disk target.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.node import mounts_under
from tools import cli

JOBS = ("seqwrite", "randwrite", "meta-create", "meta-readdir")


def processes_naming(path: Path) -> list[str]:
    """Command lines of running processes that mention ``path`` (the targets' daemons do)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        if str(path) in argv:
            found.append(f"{pid}: {argv}")
    return found


def test_bindfs_and_cfs_side_by_side(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # bindfs comes with tools/bootstrap.sh --test; without it the bindfs target fails here.
    where = short_tmp / "run"
    saved = short_tmp / "bench.json"
    status = cli.main(["bench", "--quick", "--targets", "bindfs,cfs",
                       "--only", "seqwrite,randwrite,dedup,reclaim,metadata",
                       "--dir", str(where), "--save", str(saved), "--no-drop-caches"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert not mounts_under(short_tmp), "a target left a mount behind"
    assert not processes_naming(where), "a target's daemon is still running"
    assert not where.exists() or not list(where.iterdir()), "the run directory was not removed"

    doc = json.loads(saved.read_text())
    assert [t["name"] for t in doc["targets"]] == ["bindfs", "cfs"]
    assert all(t["error"] is None for t in doc["targets"]), doc["targets"]
    results = {r["job"]: r for r in doc["results"]}
    for job in JOBS:
        row = results[job]
        assert row["values"]["bindfs"] > 0 and row["values"]["cfs"] > 0, row
        assert row["ratios"]["cfs/bindfs"] == pytest.approx(row["values"]["cfs"] / row["values"]["bindfs"],
                                                             rel=0.01), row
        assert row["daemon_cpu"]["cfs"] >= 0 and row["daemon_rss"]["cfs"] > 0, row
    # CPU time comes in clock ticks: a listing of 200 entries may take less than one.
    assert results["seqwrite"]["daemon_cpu"]["cfs"] > 0, results["seqwrite"]
    # The space targets, on cfs's store: a second copy adds under 1%, and
    # deleting everything returns the store to within 10% of empty.
    assert results["dedup-growth"]["values"]["cfs"] < 1.0, results["dedup-growth"]
    assert results["dedup-growth"]["values"]["bindfs"] > 90.0, results["dedup-growth"]
    assert results["reclaim"]["values"]["cfs"] <= 110.0, results["reclaim"]
    assert "cfs/bindfs" in out

"""The bench's reclaim job: where it runs, what it measures, when it refuses.

On the disk target only (no FUSE, no daemon): the job's own figures for cfs come from
the daemon's ``status`` and are checked by running ``cfs bench --only reclaim``, never here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tools import cli
from tools.bench import procs, runner, scenarios
from tools.bench.context import Context, Plan
from tools.bench.targets import Disk

MiB = 1 << 20


def disk_context(tmp_path: Path) -> Context:
    target = Disk(tmp_path / "disk")
    target.start()
    return Context(target, Plan.quick(MiB), tmp_path / "inputs", None, False, {})


def allocated(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_reclaim_runs_right_after_dedup_in_the_scenarios() -> None:
    jobs = runner.registry(Plan.quick())
    assert [j.name for j in runner.select(jobs, ["scenarios"])] == ["untar", "dedup", "reclaim", "overwrite"]
    assert [j.name for j in runner.select(jobs, ["reclaim"])] == ["reclaim"]


def test_space_in_use_sums_the_whole_tree(tmp_path: Path) -> None:
    ctx = disk_context(tmp_path)
    root = ctx.target.path
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"x" * 100_000)
    (root / "g").write_bytes(b"y" * 5000)
    os.symlink("g", root / "link")
    paths = [root, root / "a", root / "a" / "b", root / "a" / "b" / "f", root / "g"]
    usage = scenarios.space_in_use(ctx.target)
    assert usage["used_bytes"] == usage["allocated_bytes"] == sum(map(allocated, paths))
    assert usage["used_bytes"] >= 105_000


def test_reclaim_deletes_everything_and_comes_back_to_empty(tmp_path: Path) -> None:
    ctx = disk_context(tmp_path)
    ctx.empty = scenarios.space_in_use(ctx.target)
    (ctx.work("dedup") / "copy-1.bin").write_bytes(scenarios.unique_mib(0))  # an earlier job's file
    [row] = scenarios.reclaim(ctx)
    assert not list(ctx.target.path.iterdir())
    assert (row.job, row.metric, row.unit, row.higher_is_better) == ("reclaim", "% of empty", "%", False)
    assert row.detail["after_bytes"] == row.detail["empty_bytes"] == ctx.empty["used_bytes"]
    assert row.value == 100.0
    assert row.detail["full_bytes"] >= row.detail["written_bytes"] > MiB
    assert row.detail["files_removed"] == scenarios.RECLAIM_SMALL_FILES + 2
    assert row.detail["dirs_removed"] == 2 + 10


def test_reclaim_without_a_recorded_empty_size(tmp_path: Path) -> None:
    ctx = disk_context(tmp_path)
    [row] = scenarios.reclaim(ctx)  # an empty directory: measured at the start
    assert row.value == 100.0
    ctx.work("untar")
    with pytest.raises(procs.BenchError, match="not empty"):
        scenarios.reclaim(ctx)


def test_bench_records_the_empty_size_when_the_target_starts(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "bench.json"
    status = cli.main(["bench", "--quick", "--size", "1M", "--only", "untar,reclaim", "--targets", "disk",
                       "--dir", str(tmp_path / "run"), "--save", str(saved), "--no-drop-caches"])
    assert status == 0, capsys.readouterr().err
    entry = next(e for e in json.loads(saved.read_text())["results"] if e["job"] == "reclaim")
    detail = entry["detail"]["disk"]
    assert entry["values"]["disk"] == 100.0
    assert detail["files_removed"] > scenarios.RECLAIM_SMALL_FILES + 1  # untar's tree went too

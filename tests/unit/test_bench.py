"""The benchmark suite's own code: fio parsing, the report, job selection; and a tiny run.

The suite itself is never run by the tests (``cfs bench``); the smoke test runs it in
``--quick`` mode on a tmpfs directory only (no FUSE, a few seconds), when fio is there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from tools import cli
from tools.bench import fio_jobs, runner, scenarios
from tools.bench.context import Plan
from tools.bench.report import Report, Row, TargetSummary

MiB = 1 << 20

CANNED = """fio: this platform does not support process shared mutexes, forcing use of threads
{
  "fio version" : "fio-3.33",
  "timestamp" : 1732237000,
  "jobs" : [
    {
      "jobname" : "randread",
      "groupid" : 0,
      "error" : 0,
      "read" : {
        "io_bytes" : 4194304,
        "bw_bytes" : 1398101333,
        "iops" : 341333.333333,
        "runtime" : 3,
        "clat_ns" : {"min" : 1200, "max" : 90000, "mean" : 2500.5, "N" : 1024,
                     "percentile" : {"50.000000" : 2304, "99.000000" : 10048}}
      },
      "write" : {"io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0, "runtime" : 0,
                 "clat_ns" : {"min" : 0, "max" : 0, "mean" : 0.0, "N" : 0}},
      "job_runtime" : 3
    }
  ]
}
"""


def job(name: str) -> fio_jobs.FioJob:
    return {j.name: j for j in fio_jobs.jobs(16 * MiB, 1, 2 * MiB)}[name]


def test_parse_reads_the_figures_after_fio_warnings() -> None:
    figures = fio_jobs.parse(CANNED, job("randread"))
    assert figures["value"] == pytest.approx(341333.333333)
    assert figures["bw_mib"] == pytest.approx(1398101333 / MiB)
    assert figures["io_bytes"] == 4194304
    assert figures["clat_p50_us"] == pytest.approx(2.304)
    assert figures["clat_p99_us"] == pytest.approx(10.048)
    assert figures["fio_version"] == "fio-3.33"


def test_parse_whole_run_jobs_use_the_wall_time() -> None:
    doc = json.loads(CANNED[CANNED.index("{"):])
    doc["jobs"][0]["write"] = dict(doc["jobs"][0]["read"], io_bytes=2 * MiB)
    figures = fio_jobs.parse(json.dumps(doc), job("verify"), wall_seconds=0.5)
    assert figures["value"] == pytest.approx(4.0)
    with pytest.raises(fio_jobs.FioError):
        fio_jobs.parse(json.dumps(doc), job("verify"))


@pytest.mark.parametrize("text", ["", "fio: engine psync not loadable", '{"jobs": []}'])
def test_parse_refuses_what_is_not_a_result(text: str) -> None:
    with pytest.raises(fio_jobs.FioError):
        fio_jobs.parse(text, job("seqread"))


def test_parse_reports_a_failed_job() -> None:
    doc = json.loads(CANNED[CANNED.index("{"):])
    doc["jobs"][0]["error"] = 84
    with pytest.raises(fio_jobs.FioError, match="error 84"):
        fio_jobs.parse(json.dumps(doc), job("randread"))


def test_commands_are_capped_buffered_and_single_process() -> None:
    argv = fio_jobs.command("fio", job("randwrite"), Path("/mnt/x"))
    assert "--filename=/mnt/x/fio.dat" in argv
    for option in ("--thread=1", "--direct=0", "--end_fsync=1", "--runtime=1", "--output-format=json"):
        assert option in argv
    assert "--verify=crc32c" in fio_jobs.command("fio", job("verify"), Path("/d"))


def report() -> Report:
    r = Report({"command": "cfs bench"})
    for name in ("disk", "bindfs", "cfs"):
        r.add_target(TargetSummary(name, f"the {name}"))
    r.add("disk", Row("seqwrite", "MiB/s", "MiB/s", 1000.0))
    r.add("bindfs", Row("seqwrite", "MiB/s", "MiB/s", 400.0, daemon_cpu=1.0))
    r.add("cfs", Row("seqwrite", "MiB/s", "MiB/s", 200.0, daemon_cpu=3.5, daemon_rss=100 * MiB,
                       daemon_anon=60 * MiB))
    r.add("bindfs", Row("untar", "seconds", "s", 2.0, higher_is_better=False))
    r.add("cfs", Row("untar", "seconds", "s", 8.0, higher_is_better=False))
    r.add("bindfs", Row("dedup-growth", "% of copy", "%", 100.0, higher_is_better=False))
    r.add("cfs", Row("dedup-growth", "% of copy", "%", 0.3, higher_is_better=False))
    return r


def test_ratios_say_how_cfs_compares_whichever_way_a_figure_runs() -> None:
    r = report()
    assert r.ratio(("seqwrite", "MiB/s"), "bindfs") == pytest.approx(0.5)
    assert r.ratio(("untar", "seconds"), "bindfs") == pytest.approx(0.25)  # 4 times as long
    assert r.ratio(("dedup-growth", "% of copy"), "bindfs") is None
    assert r.ratio(("seqwrite", "MiB/s"), "passthrough_hp") is None


def test_table_and_json_show_every_target_and_the_ratio() -> None:
    r = report()
    lines = r.table().splitlines()
    assert lines[0].split() == ["job", "metric", "disk", "bindfs", "cfs", "cfs/bindfs", "cfs", "CPU", "s",
                                "cfs", "anon", "MiB", "cfs", "RSS", "MiB"]
    seq = next(line for line in lines if line.startswith("seqwrite"))
    assert seq.split() == ["seqwrite", "MiB/s", "1,000", "400.0", "200.0", "0.50", "3.5", "60", "100"]
    doc = r.to_json()
    entry = next(e for e in doc["results"] if e["job"] == "seqwrite")
    assert entry["values"] == {"disk": 1000.0, "bindfs": 400.0, "cfs": 200.0}
    assert entry["ratios"] == {"cfs/bindfs": 0.5}
    assert entry["daemon_rss"] == {"cfs": 100 * MiB}
    assert [t["name"] for t in doc["targets"]] == ["disk", "bindfs", "cfs"]
    json.dumps(doc)


def test_rounds_report_medians_and_the_spread_of_the_ratios() -> None:
    r = Report({"command": "cfs bench --rounds 3"})
    figures = {1: (400.0, 100.0), 2: (200.0, 180.0), 3: (300.0, 240.0)}  # bindfs, cfs per round
    for n, (theirs, mine) in figures.items():
        r.add_target(TargetSummary("bindfs", "the bindfs", round=n))
        r.add_target(TargetSummary("cfs", "the cfs", round=n))
        r.add("bindfs", Row("seqwrite", "MiB/s", "MiB/s", theirs, round=n))
        r.add("cfs", Row("seqwrite", "MiB/s", "MiB/s", mine, daemon_cpu=float(n), round=n))
    r.add("bindfs", Row("untar", "seconds", "s", 2.0, higher_is_better=False, round=1))
    r.add("cfs", Row("untar", "seconds", "s", 8.0, higher_is_better=False, round=2))  # never the same round
    key = ("seqwrite", "MiB/s")
    assert r.target_names() == ["bindfs", "cfs"]
    assert r.find("cfs", key).value == 180.0 and r.find("cfs", key).daemon_cpu == 2.0  # the median round's costs
    assert r.ratios(key, "bindfs") == pytest.approx([0.25, 0.9, 0.8])
    assert r.ratio(key, "bindfs") == pytest.approx(0.8)  # not 180 / 300, a ratio across rounds
    assert r.ratio(("untar", "seconds"), "bindfs") is None
    lines = r.table().splitlines()
    assert lines[0].split()[:6] == ["job", "metric", "bindfs", "cfs", "cfs/bindfs", "range"]
    seq = next(line for line in lines if line.startswith("seqwrite"))
    assert seq.split()[:6] == ["seqwrite", "MiB/s", "300.0", "180.0", "0.80", "0.25-0.90"]
    assert any(line.startswith("3 rounds:") for line in lines)
    assert any(line.startswith("cfs (round 2):") for line in lines)
    entry = next(e for e in r.to_json()["results"] if e["job"] == "seqwrite")
    assert entry["rounds"] == {"bindfs": [400.0, 200.0, 300.0], "cfs": [100.0, 180.0, 240.0]}
    assert entry["round_ratios"] == {"cfs/bindfs": [0.25, 0.9, 0.8]}


def test_only_selects_jobs_and_groups_in_run_order() -> None:
    jobs = runner.registry(Plan.quick())
    assert [j.name for j in runner.select(jobs, ["meta", "seqread"])] == ["seqread", "metadata", "bigdir"]
    assert [j.name for j in runner.select(jobs, ["dedup,untar"])] == ["untar", "dedup"]
    assert runner.select(jobs, None) == [j for j in jobs if j.name not in ("bigwrite", "snapshot")]
    assert [j.name for j in runner.select(jobs, ["memory"])] == ["bigwrite"]
    assert [j.name for j in runner.select(jobs, ["snapshot"])] == ["snapshot"]
    with pytest.raises(runner.procs.BenchError, match="nosuchjob"):
        runner.select(jobs, ["nosuchjob"])


@pytest.mark.parametrize("text, size", [("1G", 1 << 30), ("512M", 512 * MiB), ("64KiB", 64 << 10), ("4096", 4096)])
def test_sizes(text: str, size: int) -> None:
    assert runner._size(text) == size


def test_dedup_data_repeats_only_where_it_should() -> None:
    a, b = scenarios.unique_mib(0), scenarios.unique_mib(1)
    assert len(a) == MiB and a == scenarios.unique_mib(0)
    pieces = {a[k:k + 4096] for k in range(0, MiB, 4096)} | {b[k:k + 4096] for k in range(0, MiB, 4096)}
    assert len(pieces) == 2 * MiB // 4096


def test_quick_suite_on_tmpfs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole suite, tiny, on the disk target only, where a tmpfs is at hand."""
    shm = Path("/dev/shm")
    where = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path / "run"
    saved = tmp_path / "bench.json"
    try:
        status = cli.main(["bench", "--quick", "--targets", "disk", "--dir", str(where), "--save", str(saved),
                           "--no-drop-caches"])
        assert status == 0, capsys.readouterr().err
        assert not list(where.iterdir()), "the run directory was not removed"
    finally:
        shutil.rmtree(where, ignore_errors=True)
    doc = json.loads(saved.read_text())
    jobs = {e["job"] for e in doc["results"] if e["values"].get("disk", 0) > 0}
    assert {"seqwrite", "seqread", "randread", "randwrite", "verify", "untar", "dedup-copy2", "overwrite-4k",
            "meta-create", "meta-stat", "meta-readdir", "meta-rename", "meta-unlink", "bigdir-readdir"} <= jobs
    assert "seqwrite" in capsys.readouterr().out


def test_rounds_run_every_target_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "bench.json"
    status = cli.main(["bench", "--quick", "--targets", "disk", "--rounds", "2", "--only", "seqwrite,metadata",
                       "--dir", str(tmp_path / "run"), "--save", str(saved), "--no-drop-caches"])
    assert status == 0, capsys.readouterr().err
    doc = json.loads(saved.read_text())
    assert [(t["name"], t["round"]) for t in doc["targets"]] == [("disk", 1), ("disk", 2)]
    create = next(e for e in doc["results"] if e["job"] == "meta-create")
    assert len(create["rounds"]["disk"]) == 2 and all(v > 0 for v in create["rounds"]["disk"])
    assert sorted(create["rounds"]["disk"])[0] == create["values"]["disk"]  # the lower middle of two
    assert "2 rounds:" in capsys.readouterr().out
    assert cli.main(["bench", "--rounds", "0"]) == 1

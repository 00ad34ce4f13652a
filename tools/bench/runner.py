"""``cfs bench``: run the suite on every target, in one invocation, and print one table.

The run lives in a fresh directory on the real disk (``--dir``, default /var/tmp); every
target gets a part of it, is started, runs the selected jobs in order, and is stopped
and removed before the next one starts, so the targets never compete for the machine.
With ``--rounds N`` the targets take turns N times, each time started afresh, and the
report shows medians and the spread of the ratios (``tools/bench/report.py``).

Resource handling: each target's daemons and mounts are stopped by PID in a
``finally`` (also on SIGINT and SIGTERM, both turned into ``KeyboardInterrupt``),
and the run directory is removed only when nothing is mounted below it.

Error handling: a job that fails (a fio verification error, a daemon that answers EIO)
is recorded and shown; the run goes on with the next job, or the next target when the
daemon is gone. The exit status is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cfs
from tools.bench import fio_jobs, memory, metadata, procs, scenarios
from tools.bench.context import Context, Plan
from tools.bench.report import Report, Row, TargetSummary
from tools.bench.targets import Bindfs, Cfs, Disk, PassthroughHp, Target

MiB = 1 << 20


@dataclass(frozen=True)
class Job:
    name: str
    group: str
    run: Callable[[Context], list[Row]]
    default: bool = True
    """Part of a run without ``--only``; the others run only when named."""


def _fio_job(spec: fio_jobs.FioJob) -> Callable[[Context], list[Row]]:
    def run(ctx: Context) -> list[Row]:
        if ctx.fio is None:
            raise procs.BenchError("fio is not installed (apt-get install fio, or tools/bootstrap.sh --bench)")
        directory = ctx.work("fio")
        path = directory / spec.file
        if spec.remove_first:
            path.unlink(missing_ok=True)
        elif spec.file == fio_jobs.DATA_FILE:
            _ensure_data_file(ctx, directory)
        if spec.drop_caches:
            ctx.drop_caches()
        with ctx.probe() as p:
            result = procs.run(fio_jobs.command(ctx.fio, spec, directory), timeout=ctx.plan.job_cap + 300,
                               check=False, cwd=directory)  # fio leaves state files in its cwd
        if result.returncode != 0:
            raise procs.BenchError(f"fio {spec.name} exited {result.returncode}: "
                                   f"{(result.stderr or result.stdout).strip()[-1500:]}")
        figures = fio_jobs.parse(result.stdout, spec, p.seconds)
        value = figures.pop("value")
        return [ctx.row(spec.name, spec.metric, spec.metric, value, p, **figures)]
    return run


def _ensure_data_file(ctx: Context, directory: Path) -> None:
    """The read and random jobs need seqwrite's file: write it, unmeasured, when it is missing."""
    path = directory / fio_jobs.DATA_FILE
    if path.exists() and path.stat().st_size >= ctx.plan.seq_size:
        return
    assert ctx.fio is not None
    seqwrite = fio_jobs.jobs(ctx.plan.seq_size, ctx.plan.rand_runtime, ctx.plan.verify_size, ctx.plan.job_cap)[0]
    procs.run(fio_jobs.command(ctx.fio, seqwrite, directory), timeout=ctx.plan.job_cap + 300, cwd=directory)


def registry(plan: Plan) -> list[Job]:
    """Every job, in the order a run takes them (the large directory last of the default
    ones: it is the slowest to build; then the jobs that run only when named)."""
    fio = [Job(spec.name, "fio", _fio_job(spec))
           for spec in fio_jobs.jobs(plan.seq_size, plan.rand_runtime, plan.verify_size, plan.job_cap)]
    return [
        *fio,
        Job("untar", "scenarios", scenarios.untar),
        Job("dedup", "scenarios", scenarios.dedup),
        Job("reclaim", "scenarios", scenarios.reclaim),
        Job("overwrite", "scenarios", scenarios.overwrite),
        Job("metadata", "meta", metadata.small_files),
        Job("bigdir", "meta", metadata.big_directory),
        Job("bigwrite", "memory", memory.big_write, default=False),
        Job("snapshot", "snapshot", scenarios.snapshot, default=False),
    ]


def select(jobs: list[Job], only: list[str] | None) -> list[Job]:
    """Jobs named by ``--only`` (job names or groups: fio, scenarios, meta, memory), in run
    order; without it, the default jobs."""
    if not only:
        return [j for j in jobs if j.default]
    wanted = {name.strip() for item in only for name in item.split(",") if name.strip()}
    known = {j.name for j in jobs} | {j.group for j in jobs}
    unknown = sorted(wanted - known)
    if unknown:
        raise procs.BenchError(f"unknown job(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [j for j in jobs if j.name in wanted or j.group in wanted]


TARGETS = ("disk", "bindfs", "passthrough_hp", "cfs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the suite, measures little")
    parser.add_argument("--only", action="append", metavar="JOB",
                        help="run only these jobs (comma-separated, repeatable): "
                             "seqwrite seqread randread randwrite verify untar dedup reclaim overwrite metadata "
                             "bigdir, or the groups fio, scenarios, meta (reclaim deletes everything "
                             "the jobs before it wrote); bigwrite (group memory) and snapshot (cfs only: "
                             "100,000 files, 10 GiB, then a snapshot and a clone) run only when named")
    parser.add_argument("--size", type=_size, default=None, metavar="BYTES",
                        help="size of the sequential file, of each dedup copy and of reclaim's large file "
                             "(e.g. 512M; default 1G)")
    parser.add_argument("--big-size", type=_size, default=None, metavar="BYTES",
                        help="size of the file bigwrite writes while it watches the daemon's memory "
                             "(default 10G; 32M with --quick)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the run's directory goes, on the disk under test (default /var/tmp)")
    parser.add_argument("--targets", default=None,
                        help=f"comma-separated, from {', '.join(TARGETS)} "
                             "(default: disk,bindfs,cfs, and passthrough_hp with --passthrough-hp)")
    parser.add_argument("--passthrough-hp", type=Path, default=None, metavar="BINARY",
                        help="a passthrough_hp built from libfuse (see docs/PERFORMANCE.md)")
    parser.add_argument("--cfs-source", type=Path, default=None, metavar="DIR",
                        help="run the cfs daemon from this source tree (e.g. another commit's checkout)")
    parser.add_argument("--block-size", type=int, default=None, help="block size of the cfs volume")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="run the targets in turn N times and report medians, with the range of the "
                             "ratios (default 1; 3 or more on a machine whose speed varies)")
    parser.add_argument("--save", type=Path, default=None, metavar="FILE", help="also write the JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (for inspection)")
    parser.add_argument("--no-drop-caches", action="store_true",
                        help="never drop the page cache (reads may then be served from memory)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of the table")


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cfs bench``."""
    try:
        return Bench(args).run()
    except procs.BenchError as exc:
        print(f"cfs bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cfs bench: interrupted; everything it started was stopped", file=sys.stderr)
        return 130


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if not 1 <= args.rounds <= 20:
            raise procs.BenchError("--rounds must be between 1 and 20")
        self.plan = (Plan.quick if args.quick else Plan.full)(args.size, args.big_size)
        self.jobs = select(registry(self.plan), args.only)
        self.target_names = self._target_names()
        self.fio = shutil.which("fio")
        self.is_root = os.geteuid() == 0
        self.drop_caches = self.is_root and not args.no_drop_caches
        self.failures: list[dict[str, str]] = []
        self.round = 1

    def _target_names(self) -> list[str]:
        if self.args.targets:
            names = [n.strip() for n in self.args.targets.split(",") if n.strip()]
        else:
            names = ["disk", "bindfs", *(["passthrough_hp"] if self.args.passthrough_hp else []), "cfs"]
        for name in names:
            if name not in TARGETS:
                raise procs.BenchError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
        if "passthrough_hp" in names and not self.args.passthrough_hp:
            raise procs.BenchError("target passthrough_hp needs --passthrough-hp BINARY")
        return names

    def run(self) -> int:
        self._preflight()
        parent = self.args.dir or Path("/var/tmp")
        parent.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="cfs-bench-", dir=parent)).resolve()
        base.chmod(0o755)
        previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            report = Report(self._meta(base))
            inputs = base / "inputs"
            inputs.mkdir()
            tree = self._inputs(inputs)
            for round_ in range(1, self.args.rounds + 1):
                self.round = round_
                for name in self.target_names:
                    where = base / (name if self.args.rounds == 1 else f"{name}-{self.round}")
                    self._run_target(self._make_target(name, where), inputs, tree, report)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            procs.unmount_all_under(base)
            if not self.args.keep and not procs.mountpoints_under(base):
                shutil.rmtree(base, ignore_errors=True)
        report.meta["failures"] = self.failures
        report.meta["machine"]["load_average_after"] = _load()
        doc = report.to_json()
        if self.args.save:
            self.args.save.write_text(json.dumps(doc, indent=2) + "\n")
        if getattr(self.args, "json", False):
            print(json.dumps(doc, indent=2))
        else:
            print(report.table())
            for failure in self.failures:
                when = f" (round {failure['round']})" if "round" in failure else ""
                print(f"FAILED {failure['target']} {failure['job']}{when}: {failure['error']}")
        return 1 if self.failures else 0

    def _preflight(self) -> None:
        if any(j.group == "fio" for j in self.jobs) and self.fio is None:
            raise procs.BenchError("fio is not installed (apt-get install fio, or tools/bootstrap.sh --bench)")
        if "bindfs" in self.target_names and shutil.which("bindfs") is None:
            raise procs.BenchError("bindfs is not installed (apt-get install bindfs, or tools/bootstrap.sh --bench); "
                                   "or leave it out with --targets")
        if not self.drop_caches:
            _say("page caches are not dropped between jobs (not root, or --no-drop-caches): "
                 "reads may be served from memory")

    def _inputs(self, inputs: Path) -> dict[str, int]:
        if not any(j.name == "untar" for j in self.jobs):
            return {}
        tree = scenarios.build_tarball(inputs / scenarios.TARBALL, self.plan.tree_max_files)
        _say(f"untar input: {tree['files']} files, {tree['bytes'] / MiB:.0f} MiB of site-packages")
        return tree

    def _make_target(self, name: str, base: Path) -> Target:
        if name == "disk":
            return Disk(base)
        if name == "bindfs":
            return Bindfs(base)
        if name == "passthrough_hp":
            return PassthroughHp(base, self.args.passthrough_hp.resolve())
        options = {"block_size": str(self.args.block_size)} if self.args.block_size else {}
        return Cfs(base, source=self.args.cfs_source.resolve() if self.args.cfs_source else None,
                   volume_options=options)

    def _run_target(self, target: Target, inputs: Path, tree: dict[str, int], report: Report) -> None:
        summary = TargetSummary(target.name, target.description, round=self.round)
        report.add_target(summary)
        started = time.monotonic()
        peak = peak_anon = 0
        try:
            target.start()
            summary.description = target.description  # start may have learnt more
            _say(f"[{target.name}] {target.description} at {target.path}")
            ctx = Context(target, self.plan, inputs, self.fio, self.drop_caches, tree)
            if any(j.name == "reclaim" for j in self.jobs):
                # before the first job writes: the empty size reclaim must come back to
                try:
                    ctx.empty = scenarios.space_in_use(target)
                except OSError as exc:  # reclaim then measures at its start, or refuses
                    _say(f"[{target.name}] could not measure the empty target: {exc}")
            for job in self.jobs:
                if not target.alive():
                    raise procs.BenchError("the target's daemon is gone")
                for row in self._run_job(ctx, job):
                    row.round = self.round
                    report.add(target.name, row)
                    peak = max(peak, row.daemon_rss or 0)
                    peak_anon = max(peak_anon, row.daemon_anon or 0)
            usage = [u for u in map(procs.usage, target.pids()) if u is not None]
            if usage:
                summary.daemon_cpu = sum(u.cpu_seconds for u in usage)
                summary.daemon_peak_rss = max(peak, sum(u.peak_rss for u in usage))
                summary.daemon_peak_anon = peak_anon
        except procs.BenchError as exc:
            summary.error = str(exc)
            self._failed(target.name, "-", str(exc))
            _say(f"[{target.name}] FAILED: {exc}")
            if isinstance(target, Cfs) and target.log_tail().strip():
                _say("the daemon's log ends with:\n" + target.log_tail())
        finally:
            target.stop()
            summary.seconds = time.monotonic() - started
            if not self.args.keep:
                target.clean()

    def _failed(self, target: str, job: str, error: str) -> None:
        self.failures.append({"target": target, "job": job, "error": error,
                              **({"round": str(self.round)} if self.args.rounds > 1 else {})})

    def _run_job(self, ctx: Context, job: Job) -> Iterator[Row]:
        name = ctx.target.name
        try:
            rows = job.run(ctx)
        except (procs.BenchError, fio_jobs.FioError, OSError, subprocess.TimeoutExpired) as exc:
            self._failed(name, job.name, str(exc))
            _say(f"[{name}] {job.name} FAILED: {exc}")
            return
        for row in rows:
            cost = f", daemon CPU {row.daemon_cpu:.1f} s" if row.daemon_cpu is not None else ""
            _say(f"[{name}] {row.job}: {row.value:,.1f} {row.metric} ({row.seconds:.1f} s{cost})")
            yield row

    def _meta(self, base: Path) -> dict[str, Any]:
        return {
            "command": _command_line(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(base),
            "versions": versions(self.args.cfs_source, self.fio),
            "plan": asdict(self.plan),
            "targets": self.target_names,
            "rounds": self.args.rounds,
            "jobs": [j.name for j in self.jobs],
            "page_cache_dropped": self.drop_caches,
        }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _command_line() -> str:
    argv = list(sys.argv)
    if Path(argv[0]).name == "cfs":
        argv[0] = "cfs"
    return " ".join(shlex.quote(a) for a in argv)


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} bench: {message}", file=sys.stderr, flush=True)


def machine(path: Path) -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPUs, memory, kernel, the disk."""
    info: dict[str, Any] = {"nproc": os.cpu_count(), "kernel": platform.release(), "load_average_before": _load()}
    try:
        with open("/proc/meminfo") as f:
            total = next(line for line in f if line.startswith("MemTotal:"))
        info["memory_gib"] = round(int(total.split()[1]) / (1 << 20), 1)
        with open("/proc/cpuinfo") as f:
            model = next((line for line in f if line.startswith("model name")), "")
        info["cpu"] = model.partition(":")[2].strip()
    except (OSError, StopIteration):
        pass
    df = subprocess.run(["df", "-hT", str(path)], capture_output=True, text=True).stdout.splitlines()
    if len(df) > 1:
        device, fstype, size, used, avail = df[1].split()[:5]
        info["disk"] = f"{device} {fstype}, {size} ({avail} free)"
    return info


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    return [round(x, 2) for x in os.getloadavg()]


def versions(cfs_source: Path | None, fio: str | None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("pyfuse3", "trio", "lmdb", "xxhash"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for tool, argv in (("fio", [fio or "fio", "--version"]), ("bindfs", ["bindfs", "--version"])):
        try:
            out[tool] = subprocess.run(argv, capture_output=True, text=True).stdout.split("\n")[0].strip()
        except OSError:
            pass
    source = cfs_source.resolve() if cfs_source else Path(cfs.__file__).resolve().parent.parent
    out["cfs_source"] = str(source)
    git = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    if git.returncode == 0:
        out["cfs_commit"] = git.stdout.strip()
    return out

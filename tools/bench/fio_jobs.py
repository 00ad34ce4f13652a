"""The fio jobs of the suite, their command lines, and the parsing of fio's JSON.

All jobs are buffered (``direct=0``: what containers do), synchronous (``psync``, one
job, one thread: ``thread=1`` keeps fio in one process, so stopping it by PID stops
everything), and capped by ``runtime`` so none runs over a minute. Writes end with an
fsync (``end_fsync=1``), which fio counts in the job's runtime: a write rate is a
durable write rate. Reads start from a dropped page cache (the runner drops it).

The jobs share one data file: ``seqwrite`` writes it, ``seqread``, ``randread`` and
``randwrite`` use it, so nothing is laid out twice. Random jobs keep fio's random map:
each 4 KiB block is visited at most once, so no read is served from the cache that an
earlier read of the job filled. fio's default ``scramble_buffers`` stamps every 512
bytes it writes, so no block deduplicates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
DATA_FILE = "fio.dat"
VERIFY_FILE = "fio-verify.dat"

COMMON = {"ioengine": "psync", "thread": "1", "fallocate": "none", "direct": "0", "invalidate": "1"}


class FioError(Exception):
    pass


@dataclass(frozen=True)
class FioJob:
    name: str
    metric: str
    """What the table shows: ``MiB/s`` or ``IOPS``, of ``direction``."""
    direction: str
    """``read`` or ``write``: the section of fio's JSON the figure comes from."""
    file: str
    options: dict[str, str] = field(default_factory=dict)
    drop_caches: bool = False
    remove_first: bool = False
    """Delete the file before the job, so a write job creates it."""
    whole_run: bool = False
    """The figure is bytes over the wall time of the whole fio run (write, fsync and the
    verification read), not fio's rate of the write phase."""
    description: str = ""


def jobs(seq_size: int, rand_runtime: int, verify_size: int, cap: int = 50) -> list[FioJob]:
    """The suite's fio jobs; ``cap`` seconds bounds every job (fio's ``runtime``)."""
    size = str(seq_size)
    return [
        FioJob("seqwrite", "MiB/s", "write", DATA_FILE,
               {"rw": "write", "bs": "1M", "size": size, "end_fsync": "1", "runtime": str(cap)},
               remove_first=True, description="sequential write, 1 MiB blocks, fsync at the end"),
        FioJob("seqread", "MiB/s", "read", DATA_FILE,
               {"rw": "read", "bs": "1M", "size": size, "runtime": str(cap)},
               drop_caches=True, description="sequential read, 1 MiB blocks, cold cache"),
        FioJob("randread", "IOPS", "read", DATA_FILE,
               {"rw": "randread", "bs": "4k", "size": size, "runtime": str(rand_runtime)},
               drop_caches=True, description="random 4 KiB reads, cold cache"),
        FioJob("randwrite", "IOPS", "write", DATA_FILE,
               {"rw": "randwrite", "bs": "4k", "size": size, "runtime": str(rand_runtime), "end_fsync": "1"},
               description="random 4 KiB writes into the existing file, fsync at the end"),
        FioJob("verify", "MiB/s", "write", VERIFY_FILE,
               {"rw": "randwrite", "bs": "4k", "size": str(verify_size), "verify": "crc32c",
                "do_verify": "1", "verify_fatal": "1", "verify_state_save": "0", "end_fsync": "1",
                "runtime": str(cap)},
               remove_first=True, whole_run=True,
               description="random 4 KiB writes, then every block read back and checked (crc32c); "
                           "MiB/s of the whole run"),
    ]


def command(fio: str, job: FioJob, directory: Path) -> list[str]:
    argv = [fio, f"--name={job.name}", f"--filename={directory / job.file}", "--output-format=json"]
    for key, value in {**COMMON, **job.options}.items():
        argv.append(f"--{key}={value}")
    return argv


def parse(output: str, job: FioJob, wall_seconds: float | None = None) -> dict[str, Any]:
    """The figures of one job from fio's JSON output; ``FioError`` when the job failed.

    fio may print warnings before the JSON document: it starts at the first ``{``.
    ``wall_seconds`` (how long fio ran) is needed for ``whole_run`` jobs.
    """
    start = output.find("{")
    if start < 0:
        raise FioError(f"{job.name}: no JSON in fio's output: {output.strip()[:500]}")
    try:
        doc = json.loads(output[start:])
        result = doc["jobs"][0]
        section = result[job.direction]
    except (json.JSONDecodeError, KeyError, IndexError) as exc:
        raise FioError(f"{job.name}: unexpected fio output ({exc})") from None
    if result.get("error"):
        raise FioError(f"{job.name}: fio reports error {result['error']}")
    clat = section.get("clat_ns", {}).get("percentile", {})
    figures = {
        "bw_mib": section["bw_bytes"] / MiB,
        "iops": float(section["iops"]),
        "io_bytes": int(section["io_bytes"]),
        "runtime_s": int(section["runtime"]) / 1000,
        "clat_p50_us": clat.get("50.000000", 0) / 1000,
        "clat_p99_us": clat.get("99.000000", 0) / 1000,
        "fio_version": doc.get("fio version", ""),
    }
    if job.whole_run:
        if not wall_seconds:
            raise FioError(f"{job.name}: the figure needs fio's wall time")
        figures["value"] = figures["io_bytes"] / MiB / wall_seconds
    else:
        figures["value"] = figures["bw_mib"] if job.metric == "MiB/s" else figures["iops"]
    return figures

"""kill -9 of the daemon at several points of a workload loses nothing that was fsync'd."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.node import Node

WRITER = Path(__file__).with_name("writer.py")


def logged_facts(log: Path) -> list[dict]:
    facts = []
    for line in log.read_text().splitlines():
        try:
            facts.append(json.loads(line))
        except ValueError:
            break  # a torn last line was not fsync'd: it promises nothing
    return facts


def verify(mnt: Path, facts: list[dict]) -> int:
    files: dict[str, dict] = {}
    may_be_gone: set[str] = set()  # an unlink was issued, not yet made durable by the writer
    rewriting: dict[str, dict] = {}  # a write was issued, not yet made durable by the writer
    journal = None
    for fact in facts:
        if "file" in fact:
            files[fact["file"]] = fact
            rewriting.pop(fact["file"], None)
        elif "rewriting" in fact:
            rewriting[fact["rewriting"]] = fact
        elif "deleting" in fact:
            may_be_gone.add(fact["deleting"])
        elif "deleted" in fact:
            files.pop(fact["deleted"], None)
            assert not (mnt / fact["deleted"]).exists(), f"{fact['deleted']} came back after a durable unlink"
        elif "append" in fact:
            journal = fact
    for name, fact in files.items():
        if name in may_be_gone and not (mnt / name).exists():
            continue
        data = (mnt / name).read_bytes()
        maybe = rewriting.get(name)
        if maybe is not None and hashlib.sha256(data).hexdigest() == maybe["sha256"]:
            continue
        assert len(data) == fact["size"], name
        assert hashlib.sha256(data).hexdigest() == fact["sha256"], name
    if journal is not None:
        data = (mnt / "journal").read_bytes()
        assert len(data) >= journal["size"]
        assert hashlib.sha256(data[:journal["size"]]).hexdigest() == journal["sha256"]
    return len(files) + (journal is not None)


@pytest.mark.parametrize("kill_after", [3, 40, 150])
def test_kill9_loses_nothing_fsynced(node: Node, short_tmp: Path, kill_after: int) -> None:
    mnt = node.mount("crash", short_tmp / "m", block_size=4096)
    log = short_tmp / "writer.log"
    writer = subprocess.Popen([sys.executable, str(WRITER), str(mnt), str(log), str(kill_after)])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and writer.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= kill_after:
                break
            time.sleep(0.01)
        assert writer.poll() is None, "the writer stopped before the kill point"
        node.kill()
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    facts = logged_facts(log)
    assert len(facts) >= kill_after
    node.start()
    assert str(mnt) in node.cli("status", json_out=True)["mounts"], node.log()
    assert os.path.ismount(mnt), f"the restarted daemon did not mount {mnt} again:\n{node.log()}"
    try:
        assert verify(mnt, facts) > 0
    except (AssertionError, OSError) as exc:
        raise AssertionError(f"{exc}\n--- daemon log ---\n{node.log()}") from exc
    report = node.cli("fsck", json_out=True)
    assert report["clean"], report

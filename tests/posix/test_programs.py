"""Real programs on a cfs mount: SQLite, git, and tar of a large tree.

* SQLite (Python's sqlite3 module) in rollback-journal and WAL mode (WAL maps its
  ``-shm`` file shared): 100,000 rows inserted in transactions, then updates and
  deletes; ``PRAGMA integrity_check`` is ``ok`` and the rows are what was written, also
  after the volume is mounted again.
* git: init, add, commit, change, commit, gc, ``git fsck --full --strict``, and a local
  clone (which hard-links objects) that is checked too.
* tar: the venv's site-packages plus a tree of awkward entries (symlinks, hard links,
  FIFOs, odd modes and owners, long and non-ASCII names, a sparse file) are unpacked on
  cfs, packed again from there and unpacked on the local disk; both copies must match
  the source in every file's hash, type, mode, owner, mtime, symlink target and hard
  links.

git and tar come from ``tools/bootstrap.sh --test``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from tests.node import Node
from tests.posix._model_fixtures import assert_fsck_clean, remount

ROWS = 100_000  # inserted in 10 transactions; then SMALL transactions of 10 rows
SMALL = 20
ALL_ROWS = ROWS + 10 * SMALL
CHANGED = 20_000  # among the first ids, a tenth is deleted and a tenth changed


def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, \
        f"{' '.join(map(str, argv))} exited {result.returncode}:\n{result.stderr}{result.stdout}"
    return result.stdout


def need(program: str) -> str:
    path = shutil.which(program)
    assert path, f"{program} is not installed: run tools/bootstrap.sh --test"
    return path


# --- SQLite --------------------------------------------------------------------------------


def row(i: int) -> tuple[int, str, bytes]:
    """Row ``i`` as inserted: keys in a scattered order, so the index is written all over."""
    return i, f"key-{i * 7919 % ROWS:06}", random.Random(i).randbytes(20 + i % 180)


@functools.cache
def expected_rows() -> list[tuple[int, str, bytes]]:
    """The rows after the changes: ids below CHANGED ending in 3 deleted, in 5 reversed."""
    return [(i, key, value[::-1] if i < CHANGED and i % 10 == 5 else value)
            for i, key, value in map(row, range(ALL_ROWS)) if not (i < CHANGED and i % 10 == 3)]


def check_database(path: Path) -> None:
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        got = con.execute("SELECT id, k, v FROM t ORDER BY id")
        for expected, found in itertools.zip_longest(expected_rows(), got):
            assert found == expected, f"row {expected and expected[0]}: found {found and found[:2]}"
        by_key = con.execute("SELECT count(*) FROM t INDEXED BY t_k WHERE k >= 'key-050000'").fetchone()[0]
        assert by_key == sum(1 for _, key, _ in expected_rows() if key >= "key-050000")
    finally:
        con.close()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite(node: Node, short_tmp: Path, journal: str) -> None:
    mnt = node.mount("sql", short_tmp / "mnt", block_size=4096)
    db = mnt / "test.db"
    con = sqlite3.connect(db)
    try:
        assert con.execute(f"PRAGMA journal_mode={journal}").fetchone()[0] == journal
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA cache_size=-65536")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL)")
        con.execute("CREATE INDEX t_k ON t (k)")
        for start in range(0, ROWS, 10_000):
            with con:
                con.executemany("INSERT INTO t VALUES (?, ?, ?)", map(row, range(start, start + 10_000)))
        with con:
            con.executemany("UPDATE t SET v = ? WHERE id = ?", ((row(i)[2][::-1], i) for i in range(5, CHANGED, 10)))
            con.execute("DELETE FROM t WHERE id % 10 = 3 AND id < ?", (CHANGED,))
        for start in range(ROWS, ALL_ROWS, 10):
            with con:
                con.executemany("INSERT INTO t VALUES (?, ?, ?)", map(row, range(start, start + 10)))
        with pytest.raises(sqlite3.IntegrityError), con:  # rolled back: changes nothing
            con.execute("DELETE FROM t WHERE id < 1000")
            con.execute("INSERT INTO t VALUES (1, 'x', x'00')")
            con.execute("INSERT INTO t VALUES (1, 'x', x'00')")
        if journal == "wal":
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    check_database(db)
    remount(node, "sql", mnt)
    check_database(db)
    assert_fsck_clean(node)


# --- git -----------------------------------------------------------------------------------


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "cfs", "GIT_AUTHOR_EMAIL": "cfs@example.invalid",
        "GIT_COMMITTER_NAME": "cfs", "GIT_COMMITTER_EMAIL": "cfs@example.invalid", "LC_ALL": "C",
    }


def write_project(root: Path, rng: random.Random, files: int) -> None:
    for n in range(files):
        path = root / f"pkg{n % 7}" / f"sub{n % 3}" / f"file{n}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        words = [f"w{rng.randrange(5000)}" for _ in range(rng.randrange(10, 2000))]
        path.write_text(" ".join(words) + "\n")
    (root / "blob.bin").write_bytes(rng.randbytes(300_000))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    if not (root / "link").is_symlink():
        (root / "link").symlink_to("pkg0/sub0/file0.txt")


def test_git(node: Node, short_tmp: Path) -> None:
    git = need("git")
    env = git_env(short_tmp)
    mnt = node.mount("git", short_tmp / "mnt", block_size=4096)
    repo = mnt / "repo"
    repo.mkdir()
    rng = random.Random(7)
    write_project(repo, rng, 400)
    run(git, "init", "-q", "-b", "main", cwd=repo, env=env)
    run(git, "add", "-A", cwd=repo, env=env)
    run(git, "commit", "-q", "-m", "first", cwd=repo, env=env)
    write_project(repo, rng, 150)  # rewrites the first 150 files
    for n in range(150, 200):
        (repo / f"pkg{n % 7}" / f"sub{n % 3}" / f"file{n}.txt").unlink()
    os.rename(repo / "pkg6", repo / "moved")
    run(git, "add", "-A", cwd=repo, env=env)
    run(git, "commit", "-q", "-m", "second", cwd=repo, env=env)
    run(git, "gc", "-q", "--prune=now", cwd=repo, env=env)
    run(git, "fsck", "--full", "--strict", "--no-dangling", cwd=repo, env=env)
    assert run(git, "status", "--porcelain", cwd=repo, env=env) == ""
    run(git, "clone", "-q", "--local", str(repo), str(mnt / "clone"), env=env)
    clone = mnt / "clone"
    run(git, "fsck", "--full", "--strict", cwd=clone, env=env)
    assert run(git, "log", "--format=%H %s", cwd=clone, env=env) == run(git, "log", "--format=%H %s", cwd=repo, env=env)
    assert tree_state(clone, skip=".git") == tree_state(repo, skip=".git")
    remount(node, "git", mnt)
    run(git, "fsck", "--full", "--strict", "--no-dangling", cwd=repo, env=env)
    assert run(git, "status", "--porcelain", cwd=repo, env=env) == ""
    assert_fsck_clean(node)


# --- tar -----------------------------------------------------------------------------------


def tree_state(root: Path, skip: str | None = None, times: bool = False) -> dict[str, Any]:
    """Every entry below ``root``: type, mode, owner, size, content hash, symlink target,
    mtime (when asked), and which names are hard links of each other."""
    entries: dict[str, Any] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip in dirnames:
            dirnames.remove(skip)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            state: list[Any] = [stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid]
            if times and not stat.S_ISDIR(st.st_mode):
                state.append(int(st.st_mtime))
            if stat.S_ISREG(st.st_mode):
                state += [st.st_size, sha256(path)]
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                state.append(os.readlink(path))
            entries[rel] = state
    for group in inodes.values():
        for rel in group:
            entries[rel].append(sorted(group))
    return entries


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_awkward_tree(root: Path) -> None:
    """Entries that trip archivers and file systems up."""
    root.mkdir()
    (root / "plain").write_bytes(b"plain\n")
    (root / "empty").write_bytes(b"")
    (root / "exec").write_bytes(b"#!/bin/sh\n")
    (root / "exec").chmod(0o755)
    (root / "private").write_bytes(b"secret")
    (root / "private").chmod(0o600)
    (root / "setid").write_bytes(b"x")
    (root / "setid").chmod(0o6755)
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    (root / "owned").write_bytes(b"owned by 1000")
    os.chown(root / "owned", 1000, 1000)
    os.link(root / "plain", root / "hardlink")
    os.link(root / "plain", root / "sticky" / "hardlink2")
    (root / "rel-link").symlink_to("plain")
    (root / "dangling").symlink_to("../nowhere/at/all")
    (root / "abs-link").symlink_to("/etc/hostname")
    (root / "dir-link").symlink_to("sticky")
    os.mkfifo(root / "fifo", 0o640)
    (root / ("n" * 255)).write_bytes(b"long name")
    (root / "ünïcödé ✓ name").write_bytes("unicode".encode())
    deep = root.joinpath(*[f"d{i}" for i in range(30)])
    deep.mkdir(parents=True)
    (deep / "bottom").write_bytes(b"deep")
    with open(root / "sparse", "wb") as f:
        f.seek(5_000_000)
        f.write(b"end")
        f.seek(1_000_000)
        f.write(random.Random(3).randbytes(70_000))
    big = random.Random(4).randbytes(3_000_000)
    (root / "big").write_bytes(big)
    (root / "big-copy").write_bytes(big)  # the same chunks twice: deduplicated


def test_untar_and_retar_a_large_tree(node: Node, short_tmp: Path) -> None:
    tar = need("tar")
    site = Path(sysconfig.get_paths()["purelib"])
    make_awkward_tree(short_tmp / "awkward")
    source = short_tmp / "source"  # the two trees side by side, as tar sees them
    source.mkdir()
    archive = short_tmp / "tree.tar"
    run(tar, "-cf", archive, "--numeric-owner", "-C", site.parent, site.name, "-C", short_tmp, "awkward")
    run(tar, "-xpf", archive, "--numeric-owner", "-C", source)
    expected = tree_state(source, times=True)
    assert len(expected) > 3000

    mnt = node.mount("tar", short_tmp / "mnt", block_size=4096)
    unpacked = mnt / "unpacked"
    unpacked.mkdir()
    run(tar, "-xpf", archive, "--numeric-owner", "-C", unpacked)
    assert_same_tree(tree_state(unpacked, times=True), expected, "unpacked on cfs")

    repacked = short_tmp / "repacked.tar"
    run(tar, "-cf", repacked, "--numeric-owner", "-C", unpacked, ".")
    back = short_tmp / "back"
    back.mkdir()
    run(tar, "-xpf", repacked, "--numeric-owner", "-C", back)
    assert_same_tree(tree_state(back, times=True), expected, "packed again from cfs")

    remount(node, "tar", mnt)
    assert_same_tree(tree_state(unpacked, times=True), expected, "on cfs after mounting again")
    shutil.rmtree(unpacked)
    assert list(mnt.iterdir()) == []
    assert_fsck_clean(node)


def assert_same_tree(got: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    if got == expected:
        return
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    differ = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    details = [f"{k}: {got[k]} != {expected[k]}" for k in differ[:10]]
    raise AssertionError(f"{what}: {len(missing)} missing {missing[:10]}, {len(extra)} unexpected {extra[:10]}, "
                         f"{len(differ)} differ:\n" + "\n".join(details))

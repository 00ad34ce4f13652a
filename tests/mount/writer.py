"""Crash-test workload: writes files, fsyncs them, and only then logs what it made durable.

Run as ``python writer.py MOUNT LOG SEED``. Each log line is JSON and fsync'd on the
host disk, so after a crash every logged fact must hold on the volume:
  {"file": name, "sha256": hex, "size": n}    a file written once and fsync'd (file and dir)
  {"append": name, "size": n, "sha256": hex}  a prefix of an append-only file, fsync'd
  {"deleting": name}                          an unlink about to be issued: from here on the
                                              file may be gone (a commit of the daemon's own
                                              may make the unlink durable before the fsync
                                              below returns), but if it is there it is intact
  {"deleted": name}                           an unlink made durable by fsync of the dir
  {"rewriting": name, "sha256": hex, "size": n}  a write into a range of a file is about to be
                                              issued: until the next {"file": name} fact the
                                              file may hold this content or the last logged one
The workload stops at the first error (the daemon was killed under it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys


def main() -> None:
    mount, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    dirfd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    journal = os.open(os.path.join(mount, "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    journal_hash = hashlib.sha256()
    journal_size = 0
    shared_block = rng.randbytes(8192)
    written: list[str] = []
    db = bytearray(rng.randbytes(100_000))  # rewritten in place: small writes into stored blocks
    fd = os.open(os.path.join(mount, "db"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, bytes(db))
    os.fsync(fd)
    os.close(fd)
    os.fsync(dirfd)

    def record(entry: dict) -> None:
        os.write(log, (json.dumps(entry) + "\n").encode())
        os.fsync(log)

    for i in range(100_000):
        kind = rng.random()
        if kind < 0.6:
            name = f"f{i:06d}"
            size = rng.choice([0, 1, 4095, 4096, 4097, 20000, 100_000, 300_000])
            body = bytearray(rng.randbytes(size))
            if size > 16384 and rng.random() < 0.5:
                body[4096:4096 + 8192] = shared_block  # dedup across files
            if size > 50_000 and rng.random() < 0.5:
                body[20000:40000] = bytes(20000)       # a hole-sized run of zeros
            fd = os.open(os.path.join(mount, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, bytes(body))
            os.fsync(fd)
            os.close(fd)
            os.fsync(dirfd)
            written.append(name)
            record({"file": name, "sha256": hashlib.sha256(body).hexdigest(), "size": size})
        elif kind < 0.75:
            piece = rng.randbytes(rng.randint(1, 6000))
            offset = rng.randrange(len(db))
            db[offset:offset + len(piece)] = piece
            record({"rewriting": "db", "sha256": hashlib.sha256(db).hexdigest(), "size": len(db)})
            fd = os.open(os.path.join(mount, "db"), os.O_WRONLY)
            os.pwrite(fd, piece, offset)
            os.fsync(fd)
            os.close(fd)
            record({"file": "db", "sha256": hashlib.sha256(db).hexdigest(), "size": len(db)})
        elif kind < 0.9:
            piece = rng.randbytes(rng.randint(1, 9000))
            os.write(journal, piece)
            if rng.random() < 0.5:
                os.fdatasync(journal)
            else:
                os.fsync(journal)
            journal_hash.update(piece)
            journal_size += len(piece)
            record({"append": "journal", "size": journal_size, "sha256": journal_hash.hexdigest()})
        elif written:
            name = written.pop(rng.randrange(len(written)))
            record({"deleting": name})
            os.unlink(os.path.join(mount, name))
            os.fsync(dirfd)
            record({"deleted": name})
        if i % 7 == 0:
            # unsynced work that a crash may lose: it must not damage anything synced
            with open(os.path.join(mount, f"scratch{i % 3}"), "wb") as f:
                f.write(rng.randbytes(50_000))


if __name__ == "__main__":
    try:
        main()
    except OSError:
        sys.exit(0)

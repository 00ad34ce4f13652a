"""mknod(2) and mkfifo(3): FIFOs, sockets, device nodes, regular files.

Device nodes need CAP_MKNOD; FIFOs, sockets and regular files do not. A device node
keeps its st_rdev; on these nodev mounts it cannot be opened (EACCES). FIFOs and sockets
work across processes through the filesystem name.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from pathlib import Path

from tests.posix.calls import GROUP, USER, age, errnos_as, fails, times


def test_fifo(fsdir: Path) -> None:
    age(fsdir)
    before = times(fsdir)
    os.mkfifo(fsdir / "fifo", 0o666)
    st = os.stat(fsdir / "fifo")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert (st.st_size, st.st_nlink, st.st_rdev) == (0, 1, 0)
    after = times(fsdir)
    assert after[1] == after[2] > before[2]


def test_fifo_carries_data_between_processes(fsdir: Path) -> None:
    os.mkfifo(fsdir / "fifo")
    received: list[bytes] = []

    def reader() -> None:
        with open(fsdir / "fifo", "rb") as f:
            received.append(f.read())

    thread = threading.Thread(target=reader)
    thread.start()
    with open(fsdir / "fifo", "wb") as f:
        f.write(b"through the pipe" * 1000)
    thread.join(10)
    assert received == [b"through the pipe" * 1000]
    assert os.stat(fsdir / "fifo").st_size == 0


def test_mknod_types(fsdir: Path) -> None:
    os.mknod(fsdir / "reg", 0o600)  # no type: a regular file
    os.mknod(fsdir / "reg2", 0o600 | stat.S_IFREG)
    os.mknod(fsdir / "fifo", 0o600 | stat.S_IFIFO)
    os.mknod(fsdir / "sock", 0o600 | stat.S_IFSOCK)
    os.mknod(fsdir / "chr", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(fsdir / "blk", 0o600 | stat.S_IFBLK, os.makedev(259, 65536 + 7))
    kinds = {name: stat.S_IFMT(os.lstat(fsdir / name).st_mode) for name in os.listdir(fsdir)}
    assert kinds == {"reg": stat.S_IFREG, "reg2": stat.S_IFREG, "fifo": stat.S_IFIFO, "sock": stat.S_IFSOCK,
                     "chr": stat.S_IFCHR, "blk": stat.S_IFBLK}
    assert os.lstat(fsdir / "chr").st_rdev == os.makedev(1, 3)
    assert os.lstat(fsdir / "blk").st_rdev == os.makedev(259, 65536 + 7)
    assert os.lstat(fsdir / "fifo").st_rdev == 0
    assert all(stat.S_IMODE(os.lstat(fsdir / name).st_mode) == 0o600 for name in kinds)
    assert (fsdir / "reg").read_bytes() == b""


def test_device_nodes_cannot_be_opened_on_nodev_mounts(fsdir: Path) -> None:
    os.mknod(fsdir / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    fails(errno.EACCES, os.open, fsdir / "null", os.O_RDONLY)
    fails(errno.EACCES, os.open, fsdir / "null", os.O_WRONLY)


def test_mknod_errors(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.symlink("nowhere", fsdir / "dangling")
    fails(errno.EEXIST, os.mknod, fsdir / "f", 0o600 | stat.S_IFIFO)
    fails(errno.EEXIST, os.mkfifo, fsdir / "dangling")
    assert not os.path.lexists(fsdir / "nowhere")
    fails(errno.EPERM, os.mknod, fsdir / "dir", 0o700 | stat.S_IFDIR)
    fails(errno.EINVAL, os.mknod, fsdir / "bad", 0o700 | 0o110000)
    fails(errno.ENOENT, os.mknod, fsdir / "missing" / "x", 0o600 | stat.S_IFIFO)
    fails(errno.ENOTDIR, os.mkfifo, fsdir / "f" / "x")
    fails(errno.ENAMETOOLONG, os.mkfifo, fsdir / ("n" * 256))


def test_mknod_as_user(fsdir: Path) -> None:
    os.chmod(fsdir, 0o777)
    got = errnos_as([
        "os.mknod(D + '/chr', 0o600 | stat.S_IFCHR, os.makedev(1, 3))",
        "os.mknod(D + '/blk', 0o600 | stat.S_IFBLK, os.makedev(8, 0))",
        "os.mknod(D + '/fifo', 0o600 | stat.S_IFIFO)",
        "os.mknod(D + '/sock', 0o600 | stat.S_IFSOCK)",
        "os.mknod(D + '/reg', 0o600)",
    ], D=str(fsdir))
    assert got == ["EPERM", "EPERM", "success", "success", "success"]
    assert sorted(os.listdir(fsdir)) == ["fifo", "reg", "sock"]
    st = os.stat(fsdir / "fifo")
    assert (st.st_uid, st.st_gid) == (USER, GROUP)


def test_unix_socket_binds_and_connects(fsdir: Path) -> None:
    path = str(fsdir / "s")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        conn, _ = server.accept()
        client.sendall(b"hello")
        assert conn.recv(5) == b"hello"
        conn.close()
        client.close()
        second = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with_error = second.connect_ex(str(fsdir))  # a directory is not a socket
            assert with_error == errno.ECONNREFUSED
        finally:
            second.close()
    finally:
        server.close()
    third = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fails(errno.EADDRINUSE, third.bind, path)  # the name outlives the socket
    finally:
        third.close()
    os.unlink(path)

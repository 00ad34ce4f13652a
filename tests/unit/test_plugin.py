"""The Docker volume plugin over the real node service, without Docker and without mounts.

The driver runs over a real ``NodeService`` composed as the daemon composes it
(mountd.daemon): a ``Filesystem`` over a real store, ``NodeRecords``, and a
``ClusterNode`` with the embedded ``LocalCoordinator`` running in a nursery; only the
FUSE session is missing, as everywhere in tests/unit. So these tests check what needs no
mount: the endpoints' answers, refusals and messages for people, option validation,
idempotent create, missing volumes, malformed requests (400, 404), a bug turned into an
error reply, and the HTTP server over a real unix socket with raw bytes (garbage,
oversized and stalled requests, a socket in use).

What binds a volume (Mount, the one bind counted by mount IDs, Remove dropping stale
IDs, restarts and the repairs at start, keep-alive with a Mount in the pipeline) needs
the node's FUSE session: those tests run against a real daemon with real binds, in
tests/mount/test_plugin_node.py.
"""

from __future__ import annotations

import calendar
import logging
import os
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing

from cfs.coord.local import LocalCoordinator
from cfs.fs import Filesystem
from cfs.store import NodeRecords, Store
from mountd.cluster.node import ClusterNode
from mountd.cluster.writer import Eviction
from mountd.config import DaemonConfig
from mountd.plugin import MEDIA_TYPE, PluginServer, VolumeDriver
from mountd.plugin import server as plugin_server
from mountd.service import NodeService
from tests.plugin_client import MALFORMED_REQUESTS, http_request, parse_responses, request_body


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes, which pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="cfs-plugin-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def node_service(store: Store, data_dir: Path) -> AsyncIterator[NodeService]:
    """The daemon's ``NodeService`` over ``store``, composed as ``mountd.daemon`` does it,
    without the FUSE session, the sockets and the commit timer.

    ``data_dir`` is the daemon's data directory: ``store`` must be its ``store``
    directory, the coordinator keeps its state in ``coord`` beside it.

    Resource handling: the cluster node and the eviction watcher run in a nursery that
    is cancelled on the way out, returned or raised; the coordinator's lock is released.
    """
    config = DaemonConfig(data_dir=data_dir)
    assert store.path == config.store_dir, "the store must be the data directory's"
    fs = Filesystem(store)
    fs.recover()
    records = NodeRecords(store)
    evictions_in, evictions_out = trio.open_memory_channel[Eviction](64)
    async with LocalCoordinator(config.coord_dir) as coord:
        cluster = ClusterNode(fs, records, coord, config.cluster, evictions_in)
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(cluster.run)
                service = NodeService(config, fs, records, cluster)
                nursery.start_soon(service.run_evictions, evictions_out)
                yield service
            finally:
                nursery.cancel_scope.cancel()


Body = Callable[[VolumeDriver, NodeService], Awaitable[None]]


def run_plugin(store: Store, data_dir: Path, body: Body, *, restore: bool = True,
               clock: trio.abc.Clock | None = None) -> None:
    """Run ``body`` with a driver over the real service, as the daemon builds it (its
    mount root ``DATA_DIR/plugin-mounts``); ``restore``: first what the start does
    (PluginServer.serve does it itself)."""
    async def main() -> None:
        async with node_service(store, data_dir) as service:
            driver = VolumeDriver(service, service.config.plugin_mount_root)
            if restore:
                await driver.restore()
            await body(driver, service)

    trio.run(main, clock=clock)


async def call(driver: VolumeDriver, endpoint: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    return await driver.handle(endpoint, request_body(body))


async def names(service: NodeService) -> list[str]:
    """The node's volumes, as ``cfs volume ls`` lists them."""
    return [v["name"] for v in await service.volume_ls()]


# --- the endpoints ---------------------------------------------------------------------

def test_activate_and_capabilities(store: Store, tmp_path: Path) -> None:
    async def check(driver: VolumeDriver, _service: NodeService) -> None:
        assert await call(driver, "/Plugin.Activate") == (200, {"Implements": ["VolumeDriver"]})
        assert await call(driver, "/VolumeDriver.Capabilities", {}) == (200, {"Capabilities": {"Scope": "global"}})

    run_plugin(store, tmp_path, check)


def test_create_get_list_remove(store: Store, tmp_path: Path) -> None:
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        before = time.time()
        opts = {"block_size": "4096", "size": "1G"}
        assert await call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": opts}) == (200, {"Err": ""})
        after = time.time()
        assert (await call(driver, "/VolumeDriver.Create", {"Name": "v2", "Opts": None}))[0] == 200
        status, reply = await call(driver, "/VolumeDriver.Get", {"Name": "v1"})
        assert status == 200 and reply["Err"] == ""
        assert reply["Volume"]["Name"] == "v1" and reply["Volume"]["Mountpoint"] == ""
        created = reply["Volume"]["CreatedAt"]   # the node's creation time, as cfs volume inspect says
        assert created == (await service.volume_info("v1"))["created"]
        assert int(before) <= calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) <= after
        assert reply["Volume"]["Status"]["id"] == (await service.volume_info("v1"))["id"]
        assert reply["Volume"]["Status"]["block_size"] == 4096
        assert reply["Volume"]["Status"]["size_bytes"] == 1 << 30
        assert reply["Volume"]["Status"]["used_bytes"] == 0
        assert reply["Volume"]["Status"]["containers"] == 0
        assert "size_bytes" not in (await call(driver, "/VolumeDriver.Get", {"Name": "v2"}))[1]["Volume"]["Status"]
        assert await call(driver, "/VolumeDriver.List", {}) == (200, {"Volumes": [
            {"Name": "v1", "Mountpoint": ""}, {"Name": "v2", "Mountpoint": ""}], "Err": ""})
        assert await call(driver, "/VolumeDriver.Remove", {"Name": "v1"}) == (200, {"Err": ""})
        assert await names(service) == ["v2"]
        assert await service.cluster.spec("v1") is None   # gone from the catalog too
        status, reply = await call(driver, "/VolumeDriver.Get", {"Name": "v1"})
        assert status == 500 and reply == {"Err": "no volume named 'v1'"}

    run_plugin(store, tmp_path, check)


def test_create_refuses_unknown_options_and_passes_replicas_on(store: Store, tmp_path: Path) -> None:
    """Unknown options are refused with the known ones named; ``replicas`` reaches the
    node, which keeps it in the cluster catalog (not among the options) and, running
    alone, refuses more than one copy with a message Docker prints as it is."""
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        status, reply = await call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"colour": "blue"}})
        assert status == 500 and "unknown volume option(s): colour" in reply["Err"]
        assert "(known: block_size, durability, from, gid, mode, replicas, size, uid)" in reply["Err"]
        assert await names(service) == []
        assert (await call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"replicas": "1"}}))[0] == 200
        [v1] = await service.volume_ls()
        assert v1["name"] == "v1" and v1["replicas"] == 1 and v1["options"] == {}
        assert await call(driver, "/VolumeDriver.Create", {"Name": "v2", "Opts": {"replicas": "3"}}) \
            == (500, {"Err": "replicas above 1 need a cluster (start the node with --etcd)"})
        assert await call(driver, "/VolumeDriver.Create", {"Name": "v2", "Opts": {"replicas": "9"}}) \
            == (500, {"Err": "option replicas=9 must be between 1 and 5"})
        assert await names(service) == ["v1"]

    run_plugin(store, tmp_path, check)


def test_create_of_an_existing_volume(store: Store, tmp_path: Path) -> None:
    """`cfs volume create` then `docker volume create`: the same volume, unless options differ."""
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        await service.volume_create("v1", {"block_size": "4096", "size": "1073741824"})  # what the CLI calls
        assert await call(driver, "/VolumeDriver.Create", {"Name": "v1"}) == (200, {"Err": ""})
        assert await call(driver, "/VolumeDriver.Create",
                          {"Name": "v1", "Opts": {"size": "1G", "block_size": "4096"}}) == (200, {"Err": ""})
        status, reply = await call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"block_size": "8192"}})
        assert status == 500
        assert reply["Err"] == "volume 'v1' already exists with other options: block_size=8192 (it has 4096)"
        assert await names(service) == ["v1"]
        assert (await service.volume_info("v1"))["block_size"] == 4096

    run_plugin(store, tmp_path, check)


def test_create_again_compares_options_by_meaning(store: Store, tmp_path: Path) -> None:
    """replicas lives in the cluster catalog, not among the options; mode is octal, sizes
    have units: asking again with the same meaning is the same volume."""
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        opts = {"replicas": "1", "mode": "0750", "uid": "1000", "size": "64M"}
        assert await call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": opts}) == (200, {"Err": ""})
        assert await call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": opts}) == (200, {"Err": ""})
        same = {"replicas": "1", "mode": "750", "uid": "01000", "size": "67108864"}
        assert await call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": same}) == (200, {"Err": ""})
        status, reply = await call(driver, "/VolumeDriver.Create",
                                   {"Name": "v1", "Opts": {"mode": "700", "replicas": "2"}})
        assert status == 500
        assert reply["Err"] == ("volume 'v1' already exists with other options: mode=700 (it has 0750); "
                                "replicas=2 (it has 1)")
        assert (await service.volume_info("v1"))["replicas"] == 1

    run_plugin(store, tmp_path, check)


def test_missing_volumes(store: Store, tmp_path: Path) -> None:
    """Mounting one is an error; unmounting or removing one is done already."""
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        assert await call(driver, "/VolumeDriver.Mount", {"Name": "nope", "ID": "a"}) \
            == (500, {"Err": "no volume named 'nope'"})
        assert await call(driver, "/VolumeDriver.Get", {"Name": "nope"}) == (500, {"Err": "no volume named 'nope'"})
        assert await call(driver, "/VolumeDriver.Unmount", {"Name": "nope", "ID": "a"}) == (200, {"Err": ""})
        assert await call(driver, "/VolumeDriver.Remove", {"Name": "nope"}) == (200, {"Err": ""})
        assert driver.holders() == {} and service.records.mounts() == {}
        assert not (service.config.plugin_mount_root / "nope").exists()

    run_plugin(store, tmp_path, check)


# --- malformed requests -------------------------------------------------------------------

@pytest.mark.parametrize("endpoint, body, status, message", MALFORMED_REQUESTS)
def test_malformed_requests_get_an_error(store: Store, tmp_path: Path, endpoint: str, body: Any,
                                         status: int, message: str) -> None:
    """Each gets its status and a message for a person, and changes nothing: the next
    request that takes the driver's lock is served, no volume or holder came or went.
    (That a Mount still binds after each is checked against a daemon:
    tests/mount/test_plugin_node.py.)"""
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        await service.volume_create("v1")
        got_status, reply = await call(driver, endpoint, body)
        assert got_status == status and message in reply["Err"], reply
        assert set(reply) == {"Err"}
        with trio.fail_after(10):   # the lock is free again
            assert await call(driver, "/VolumeDriver.Create", {"Name": "v1"}) == (200, {"Err": ""})
        assert (await call(driver, "/VolumeDriver.Get", {"Name": "v1"}))[0] == 200
        assert await names(service) == ["v1"]
        assert driver.holders() == {} and service.records.mounts() == {}

    run_plugin(store, tmp_path, check)


def test_a_bug_is_an_error_reply_not_a_crash(store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An exception no layer expects (here a real one: a request served after the store
    was closed, which LMDB answers with ``lmdb.Error``) is a 500 that names the daemon's
    log, where the traceback is."""
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        await service.volume_create("v1")
        store.close()
        status, reply = await call(driver, "/VolumeDriver.Get", {"Name": "v1"})
        assert status == 500 and "internal error" in reply["Err"] and "daemon's log" in reply["Err"]
        [logged] = [r for r in caplog.records if r.getMessage() == "bug while serving /VolumeDriver.Get"]
        assert logged.levelno == logging.ERROR and logged.exc_info is not None

    run_plugin(store, tmp_path, check)


# --- the HTTP server ------------------------------------------------------------------------

def with_server(store: Store, data_dir: Path, sock: Path, client: Callable[[], Awaitable[None]],
                clock: trio.abc.Clock | None = None) -> None:
    """Serve the plugin on ``sock`` over the real service while ``client`` runs."""
    async def serve(driver: VolumeDriver, _service: NodeService) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(PluginServer(sock, driver).serve)
            await client()
            nursery.cancel_scope.cancel()

    run_plugin(store, data_dir, serve, restore=False, clock=clock)
    assert not sock.exists(), "the socket is removed when the server stops"


async def exchange(sock: Path, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    stream = await trio.open_unix_socket(str(sock))
    received = bytearray()

    async def send() -> None:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server refused the request before reading all of it

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        with trio.fail_after(1000):
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass  # ECONNRESET after the reply: the server closed with our bytes unread
    return bytes(received)


@pytest.mark.parametrize("data, status, message", [
    (b"this is not HTTP\r\n\r\n", 400, "malformed HTTP request"),
    (http_request("/VolumeDriver.Get", b"{}", method="GET"), 405, "takes POST requests"),
    (b"POST /VolumeDriver.Create HTTP/1.1\r\nHost: p\r\nContent-Length: 99999999\r\n\r\n", 413, "over the"),
    (b"POST /VolumeDriver.Create HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"".join(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" for _ in range(17)) + b"0\r\n\r\n", 413, "over the"),
    (b"POST /VolumeDriver.Create HTTP/1.1\r\nHost: p\r\n" + b"X-Long: " + b"y" * 200000 + b"\r\n\r\n",
     431, "malformed HTTP request"),
])
def test_http_garbage_is_answered_and_the_server_goes_on(store: Store, tmp_path: Path, short_dir: Path,
                                                       data: bytes, status: int, message: str) -> None:
    sock = short_dir / "p.sock"

    async def client() -> None:
        replies = parse_responses(await exchange(sock, data))
        assert len(replies) == 1 and replies[0][0] == status and message in replies[0][2]["Err"], replies
        assert replies[0][1]["connection"] == "close"
        again = parse_responses(await exchange(sock, http_request("/Plugin.Activate", b"", "Connection: close\r\n")))
        assert again[0][0] == 200

    with_server(store, tmp_path, sock, client)


def test_http_stalled_and_idle_connections_are_closed(store: Store, tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "p.sock"

    async def client() -> None:
        start = trio.current_time()
        replies = parse_responses(await exchange(sock, b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: p\r\n"))
        assert replies[0][0] == 408
        assert trio.current_time() - start == pytest.approx(plugin_server.REQUEST_TIMEOUT, abs=1)
        start = trio.current_time()
        assert await exchange(sock, b"") == b""  # idle: closed without a word
        assert trio.current_time() - start == pytest.approx(plugin_server.IDLE_TIMEOUT, abs=1)

    with_server(store, tmp_path, sock, client, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_socket_in_use_is_not_taken_over(store: Store, tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "p.sock"

    async def check(driver: VolumeDriver, _service: NodeService) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(PluginServer(sock, driver).serve)
            with pytest.raises(Exception, match="another process serves the plugin socket"):
                await PluginServer(sock, driver).serve()
            nursery.cancel_scope.cancel()
        assert not sock.exists()
        sock.touch()  # a stale socket file is replaced
        async with trio.open_nursery() as nursery:
            await nursery.start(PluginServer(sock, driver).serve)
            replies = parse_responses(await exchange(sock, http_request("/Plugin.Activate", b"",
                                                                        "Connection: close\r\n")))
            assert replies[0][0] == 200 and replies[0][1]["content-type"] == MEDIA_TYPE
            assert os.stat(sock).st_mode & 0o777 == 0o600
            nursery.cancel_scope.cancel()

    run_plugin(store, tmp_path, check, restore=False)

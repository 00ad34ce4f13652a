"""The Docker volume plugin without Docker and without mounts.

The driver runs over a fake ``NodeService`` (volumes and binds in dicts, with the same
refusals as the real one) and a real store, so its holder records and their restart
behaviour are the real ones. The HTTP server is driven over a real unix socket with raw
bytes: keep-alive, chunked bodies, garbage, oversized and stalled requests.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest
import trio
import trio.testing

from cfs.errors import UserError, VolumeBusy, VolumeNotFound
from cfs.fs.quota import parse_size
from cfs.store import NodeRecords, Store, catalog
from mountd.plugin import MEDIA_TYPE, PluginServer, VolumeDriver
from mountd.plugin import server as plugin_server


class FakeService:
    """NodeService's volume and mount calls over dicts, refusing what it refuses."""

    def __init__(self, store: Store, volumes: dict[str, dict[str, str]] | None = None,
                 binds: dict[str, str] | None = None) -> None:
        self.records = NodeRecords(store)
        self.volumes = volumes if volumes is not None else {}
        self.binds = binds if binds is not None else {}  # mount point -> volume
        self.bind_calls = 0
        self.fail_with: Exception | None = None

    def _check(self, name: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if name not in self.volumes:
            raise VolumeNotFound(f"no volume named {name!r}")

    async def volume_create(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        unknown = set(options or {}) - {"block_size", "uid", "gid", "mode", "size", "replicas"}
        if unknown:
            raise UserError(f"unknown volume option(s): {', '.join(sorted(unknown))}")
        if name in self.volumes:
            raise UserError(f"volume {name!r} already exists")
        self.volumes[name] = dict(options or {})
        return await self.volume_info(name)

    async def volume_info(self, name: str) -> dict[str, Any]:
        self._check(name)
        return {"name": name, "id": "00" * 16, "block_size": int(self.volumes[name].get("block_size", 65536)),
                "created": "2026-01-01T00:00:00Z", "options": self.volumes[name],
                "mountpoints": sorted(p for p, v in self.binds.items() if v == name),
                "used_bytes": 0, "size_bytes": parse_size(self.volumes[name].get("size", 0))}

    async def volume_ls(self) -> list[dict[str, Any]]:
        return [await self.volume_info(name) for name in sorted(self.volumes)]

    async def volume_rm(self, name: str) -> dict[str, Any]:
        self._check(name)
        if name in self.binds.values():
            raise VolumeBusy(f"volume {name!r} is mounted")
        del self.volumes[name]
        return {"removed": name}

    async def mount(self, name: str, path: str, read_only: bool = False) -> dict[str, Any]:
        self._check(name)
        if path in self.binds:
            raise UserError(f"{path} is already a mount point")
        if not Path(path).is_dir():
            raise UserError(f"mount point {path} does not exist")
        self.binds[path] = name
        self.bind_calls += 1
        return {"volume": name, "mountpoint": path}

    async def umount(self, path: str, lazy: bool = False) -> dict[str, Any]:
        if path not in self.binds:
            raise UserError(f"{path} is not a cfs mount of this node")
        return {"volume": self.binds.pop(path), "mountpoint": path}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes, which pytest's tmp_path may not."""
    path = Path(tempfile.mkdtemp(prefix="cfs-plugin-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_driver(store: Store, root: Path, service: FakeService | None = None) -> tuple[VolumeDriver, FakeService]:
    service = service or FakeService(store)
    driver = VolumeDriver(service, root, is_mounted=lambda p: str(p) in service.binds)
    trio.run(driver.restore)
    return driver, service


def call(driver: VolumeDriver, endpoint: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    return trio.run(driver.handle, endpoint, raw)


# --- the endpoints ---------------------------------------------------------------------

def test_activate_and_capabilities(store: Store, tmp_path: Path) -> None:
    driver, _ = make_driver(store, tmp_path / "mnt")
    assert call(driver, "/Plugin.Activate") == (200, {"Implements": ["VolumeDriver"]})
    assert call(driver, "/VolumeDriver.Capabilities", {}) == (200, {"Capabilities": {"Scope": "global"}})


def test_create_get_list_remove(store: Store, tmp_path: Path) -> None:
    driver, service = make_driver(store, tmp_path / "mnt")
    assert call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"block_size": "4096", "size": "1G"}}) \
        == (200, {"Err": ""})
    assert call(driver, "/VolumeDriver.Create", {"Name": "v2", "Opts": None})[0] == 200
    status, reply = call(driver, "/VolumeDriver.Get", {"Name": "v1"})
    assert status == 200 and reply["Err"] == ""
    assert reply["Volume"]["Name"] == "v1" and reply["Volume"]["Mountpoint"] == ""
    assert reply["Volume"]["CreatedAt"] == "2026-01-01T00:00:00Z"
    assert reply["Volume"]["Status"]["block_size"] == 4096
    assert reply["Volume"]["Status"]["size_bytes"] == 1 << 30
    assert reply["Volume"]["Status"]["used_bytes"] == 0
    assert "size_bytes" not in call(driver, "/VolumeDriver.Get", {"Name": "v2"})[1]["Volume"]["Status"]
    assert call(driver, "/VolumeDriver.List", {}) == (200, {"Volumes": [
        {"Name": "v1", "Mountpoint": ""}, {"Name": "v2", "Mountpoint": ""}], "Err": ""})
    assert call(driver, "/VolumeDriver.Remove", {"Name": "v1"}) == (200, {"Err": ""})
    assert set(service.volumes) == {"v2"}
    status, reply = call(driver, "/VolumeDriver.Get", {"Name": "v1"})
    assert status == 500 and reply == {"Err": "no volume named 'v1'"}


def test_create_refuses_unknown_options_and_passes_replicas_on(store: Store, tmp_path: Path) -> None:
    driver, service = make_driver(store, tmp_path / "mnt")
    status, reply = call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"colour": "blue"}})
    assert status == 500 and "unknown volume option(s): colour" in reply["Err"]
    assert service.volumes == {}
    assert call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"replicas": "3"}})[0] == 200
    assert service.volumes == {"v1": {"replicas": "3"}}


def test_create_of_an_existing_volume(store: Store, tmp_path: Path) -> None:
    """`cfs volume create` then `docker volume create`: the same volume, unless options differ."""
    driver, service = make_driver(store, tmp_path / "mnt")
    service.volumes["v1"] = {"block_size": "4096", "size": "1073741824"}
    assert call(driver, "/VolumeDriver.Create", {"Name": "v1"})[0] == 200
    assert call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"size": "1G", "block_size": "4096"}})[0] == 200
    status, reply = call(driver, "/VolumeDriver.Create", {"Name": "v1", "Opts": {"block_size": "8192"}})
    assert status == 500
    assert reply["Err"] == "volume 'v1' already exists with other options: block_size=8192 (it has 4096)"


# --- reference counting by mount ID ------------------------------------------------------

def test_one_bind_per_volume_counted_by_id(store: Store, tmp_path: Path) -> None:
    driver, service = make_driver(store, tmp_path / "mnt")
    service.volumes["v1"] = {}
    where = str(driver.mountpoint("v1"))
    assert call(driver, "/VolumeDriver.Mount", {"Name": "v1", "ID": "a"}) == (200, {"Mountpoint": where, "Err": ""})
    assert call(driver, "/VolumeDriver.Mount", {"Name": "v1", "ID": "b"}) == (200, {"Mountpoint": where, "Err": ""})
    assert call(driver, "/VolumeDriver.Mount", {"Name": "v1", "ID": "a"})[0] == 200  # repeated: no new holder
    assert service.bind_calls == 1 and service.binds == {where: "v1"}
    assert driver.holders() == {"v1": {"a", "b"}}
    assert call(driver, "/VolumeDriver.Path", {"Name": "v1"}) == (200, {"Mountpoint": where, "Err": ""})
    assert call(driver, "/VolumeDriver.List")[1]["Volumes"] == [{"Name": "v1", "Mountpoint": where}]

    assert call(driver, "/VolumeDriver.Unmount", {"Name": "v1", "ID": "a"}) == (200, {"Err": ""})
    assert service.binds == {where: "v1"}
    assert call(driver, "/VolumeDriver.Unmount", {"Name": "v1", "ID": "nobody"}) == (200, {"Err": ""})
    assert service.binds == {where: "v1"} and driver.holders() == {"v1": {"b"}}
    assert call(driver, "/VolumeDriver.Unmount", {"Name": "v1", "ID": "b"}) == (200, {"Err": ""})
    assert service.binds == {} and driver.holders() == {}
    assert not Path(where).exists()
    assert call(driver, "/VolumeDriver.Unmount", {"Name": "v1", "ID": "b"}) == (200, {"Err": ""})
    assert call(driver, "/VolumeDriver.Path", {"Name": "v1"}) == (200, {"Mountpoint": "", "Err": ""})

    assert call(driver, "/VolumeDriver.Mount", {"Name": "v1", "ID": "c"})[0] == 200
    assert service.bind_calls == 2 and service.binds == {where: "v1"}


def test_missing_volumes(store: Store, tmp_path: Path) -> None:
    """Mounting one is an error; unmounting or removing one is done already."""
    driver, service = make_driver(store, tmp_path / "mnt")
    assert call(driver, "/VolumeDriver.Mount", {"Name": "nope", "ID": "a"}) == (500, {"Err": "no volume named 'nope'"})
    assert call(driver, "/VolumeDriver.Get", {"Name": "nope"}) == (500, {"Err": "no volume named 'nope'"})
    assert call(driver, "/VolumeDriver.Unmount", {"Name": "nope", "ID": "a"}) == (200, {"Err": ""})
    assert call(driver, "/VolumeDriver.Remove", {"Name": "nope"}) == (200, {"Err": ""})
    assert driver.holders() == {} and service.binds == {}


def test_remove_drops_ids_docker_no_longer_uses(store: Store, tmp_path: Path) -> None:
    """Docker removes a volume only when no container refers to it: IDs still held are stale."""
    driver, service = make_driver(store, tmp_path / "mnt")
    service.volumes["v1"] = {}
    call(driver, "/VolumeDriver.Mount", {"Name": "v1", "ID": "a"})
    assert call(driver, "/VolumeDriver.Remove", {"Name": "v1"}) == (200, {"Err": ""})
    assert service.volumes == {} and service.binds == {} and driver.holders() == {}


def test_remove_refused_while_mounted_elsewhere(store: Store, tmp_path: Path) -> None:
    driver, service = make_driver(store, tmp_path / "mnt")
    service.volumes["v1"] = {}
    service.binds["/srv/v1"] = "v1"  # `cfs mount v1 /srv/v1`
    status, reply = call(driver, "/VolumeDriver.Remove", {"Name": "v1"})
    assert status == 500 and reply["Err"] == "volume 'v1' is mounted"
    assert "v1" in service.volumes


# --- restarts -----------------------------------------------------------------------------

def test_holders_survive_a_restart(store_path: Path, tmp_path: Path) -> None:
    store = Store(store_path)
    driver, service = make_driver(store, tmp_path / "mnt")
    service.volumes["v1"] = {}
    service.volumes["v2"] = {}
    for name, mount_id in [("v1", "a"), ("v1", "b"), ("v2", "c")]:
        assert call(driver, "/VolumeDriver.Mount", {"Name": name, "ID": mount_id})[0] == 200
    store.close()

    # The next daemon: NodeService has rebound the recorded mounts before the plugin starts.
    store = Store(store_path)
    try:
        driver, service = make_driver(store, tmp_path / "mnt", FakeService(store, service.volumes, service.binds))
        assert driver.holders() == {"v1": {"a", "b"}, "v2": {"c"}}
        assert service.bind_calls == 0
        call(driver, "/VolumeDriver.Unmount", {"Name": "v1", "ID": "a"})
        assert str(driver.mountpoint("v1")) in service.binds
        call(driver, "/VolumeDriver.Unmount", {"Name": "v1", "ID": "b"})
        assert sorted(service.binds.values()) == ["v2"]
    finally:
        store.close()


def test_restore_repairs_what_a_crash_left(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "mnt"
    service = FakeService(store, {"held": {}, "unheld": {}})
    with store.op() as op:
        catalog.set_plugin_holders(op, "held", {"a"})       # held, but its bind did not come back
        catalog.set_plugin_holders(op, "gone", {"b"})       # held, but the volume was removed
    service.binds[str(root / "unheld")] = "unheld"          # bound, but the crash came before the ID was recorded
    service.binds["/srv/unheld"] = "unheld"                 # a `cfs mount` elsewhere: not the plugin's
    driver, service = make_driver(store, root, service)
    assert driver.holders() == {"held": {"a"}}
    assert service.binds == {str(root / "held"): "held", "/srv/unheld": "unheld"}


# --- malformed requests -------------------------------------------------------------------

@pytest.mark.parametrize("endpoint, body, status, message", [
    ("/VolumeDriver.Get", b"{not json", 400, "the body is not JSON"),
    ("/VolumeDriver.Get", b"[1, 2]", 400, "the body must be a JSON object"),
    ("/VolumeDriver.Get", b"\xff\xfe", 400, "the body is not JSON"),
    ("/VolumeDriver.Get", {}, 400, "the request has no volume Name"),
    ("/VolumeDriver.Remove", {"Name": 7}, 400, "the request has no volume Name"),
    ("/VolumeDriver.Path", {"Name": "../etc"}, 500, "contains '/'"),
    ("/VolumeDriver.Path", {"Name": "-x"}, 500, "is not allowed"),
    ("/VolumeDriver.Mount", {"Name": "v1"}, 400, "the request has no mount ID"),
    ("/VolumeDriver.Unmount", {"Name": "v1", "ID": ["a"]}, 400, "the request has no mount ID"),
    ("/VolumeDriver.Create", {"Name": "v2", "Opts": ["size"]}, 400, "Opts must be a JSON object"),
    ("/VolumeDriver.Create", {"Name": "v2", "Opts": {"size": {"x": 1}}}, 400, "option size must have a string value"),
    ("/VolumeDriver.Explode", {"Name": "v1"}, 404, "unknown endpoint '/VolumeDriver.Explode'"),
])
def test_malformed_requests_get_an_error(store: Store, tmp_path: Path, endpoint: str, body: Any,
                                         status: int, message: str) -> None:
    driver, service = make_driver(store, tmp_path / "mnt")
    service.volumes["v1"] = {}
    got_status, reply = call(driver, endpoint, body)
    assert got_status == status and message in reply["Err"], reply
    assert set(reply) == {"Err"}
    assert call(driver, "/VolumeDriver.Mount", {"Name": "v1", "ID": "a"})[0] == 200
    assert service.volumes.keys() == {"v1"}


def test_a_bug_is_an_error_reply_not_a_crash(store: Store, tmp_path: Path) -> None:
    driver, service = make_driver(store, tmp_path / "mnt")
    service.volumes["v1"] = {}
    service.fail_with = KeyError("boom")
    status, reply = call(driver, "/VolumeDriver.Get", {"Name": "v1"})
    assert status == 500 and "internal error" in reply["Err"] and "daemon's log" in reply["Err"]


# --- the HTTP server ------------------------------------------------------------------------

def http_request(path: str, body: bytes, extra: str = "", method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
    """Every response in ``data`` (they all carry Content-Length)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        out.append((int(lines[0].split()[1]), headers, json.loads(rest[:length])))
        data = rest[length:]
    return out


def with_server(store: Store, root: Path, sock: Path,
                client: Callable[[FakeService], Awaitable[None]], clock: Any = None) -> FakeService:
    driver, service = make_driver(store, root)
    service.volumes["v1"] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(PluginServer(sock, driver).serve)
            await client(service)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
    assert not sock.exists(), "the socket is removed when the server stops"
    return service


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


def test_http_keep_alive_and_chunked(store: Store, tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "p.sock"

    async def client(service: FakeService) -> None:
        mount = json.dumps({"Name": "v1", "ID": "a"}).encode()
        chunked = (b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: plugin\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\n{\"Nam\r\n8\r\ne\": \"v1\"\r\n1\r\n}\r\n0\r\n\r\n")
        data = (http_request("/Plugin.Activate", b"") + http_request("/VolumeDriver.Mount", mount)
                + chunked + http_request("/VolumeDriver.List", b"{}", extra="Connection: close\r\n"))
        replies = parse_responses(await exchange(sock, data))
        assert [r[0] for r in replies] == [200, 200, 200, 200]
        assert all(r[1]["content-type"] == MEDIA_TYPE for r in replies)
        assert replies[0][2] == {"Implements": ["VolumeDriver"]}
        assert replies[2][2]["Volume"]["Name"] == "v1"
        assert os.stat(sock).st_mode & 0o777 == 0o600

    service = with_server(store, tmp_path / "mnt", sock, client)
    assert list(service.binds.values()) == ["v1"]


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

    async def client(service: FakeService) -> None:
        replies = parse_responses(await exchange(sock, data))
        assert len(replies) == 1 and replies[0][0] == status and message in replies[0][2]["Err"], replies
        assert replies[0][1]["connection"] == "close"
        again = parse_responses(await exchange(sock, http_request("/Plugin.Activate", b"", "Connection: close\r\n")))
        assert again[0][0] == 200

    with_server(store, tmp_path / "mnt", sock, client)


def test_http_stalled_and_idle_connections_are_closed(store: Store, tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "p.sock"

    async def client(service: FakeService) -> None:
        start = trio.current_time()
        replies = parse_responses(await exchange(sock, b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: p\r\n"))
        assert replies[0][0] == 408
        assert trio.current_time() - start == pytest.approx(plugin_server.REQUEST_TIMEOUT, abs=1)
        start = trio.current_time()
        assert await exchange(sock, b"") == b""  # idle: closed without a word
        assert trio.current_time() - start == pytest.approx(plugin_server.IDLE_TIMEOUT, abs=1)

    with_server(store, tmp_path / "mnt", sock, client, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_socket_in_use_is_not_taken_over(store: Store, tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "p.sock"
    driver, _ = make_driver(store, tmp_path / "mnt")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(PluginServer(sock, driver).serve)
            with pytest.raises(Exception, match="another process serves the plugin socket"):
                await PluginServer(sock, driver).serve()
            nursery.cancel_scope.cancel()

    trio.run(main)
    sock.touch()  # a stale socket file is replaced
    trio.run(lambda: _serve_once(sock, driver))


async def _serve_once(sock: Path, driver: VolumeDriver) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(PluginServer(sock, driver).serve)
        replies = parse_responses(await exchange(sock, http_request("/Plugin.Activate", b"", "Connection: close\r\n")))
        assert replies[0][0] == 200
        nursery.cancel_scope.cancel()

"""The CSI plugin's request checks (tools.csi.checks), without a server: which access a
request may ask for, capacity as a size limit, parameters, ids and pagination tokens,
each refusal with the gRPC code the CSI spec names. The proto's wire layout is pinned
here too: a field number that moved would make every orchestrator misread cfs. And the
endpoint ``cfs csi`` serves on (``--endpoint`` or ``CSI_ENDPOINT``)."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfs.errors import CfsError
from tools import cli
from tools.csi import checks, server
from tools.csi.checks import Abort
from tools.csi.generated import csi_pb2 as pb

Mode = pb.VolumeCapability.AccessMode.Mode
Code = grpc.StatusCode


def mount(mode: int, **kw: object) -> pb.VolumeCapability:
    return pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(**kw),  # type: ignore[arg-type]
                               access_mode=pb.VolumeCapability.AccessMode(mode=mode))


def refused(code: grpc.StatusCode, fn: object, *args: object, match: str = "") -> str:
    with pytest.raises(Abort) as caught:
        fn(*args)  # type: ignore[operator]
    assert caught.value.code is code, caught.value.message
    assert match in caught.value.message
    return caught.value.message


@pytest.mark.parametrize("mode", [Mode.SINGLE_NODE_WRITER, Mode.SINGLE_NODE_READER_ONLY,
                                  Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER])
def test_single_node_modes_are_served(mode: int) -> None:
    assert checks.capability(mount(mode)) == mode
    assert checks.capability(mount(mode, fs_type="cfs")) == mode
    assert checks.unsupported(mount(mode)) is None


@pytest.mark.parametrize("mode", [Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER,
                                  Mode.MULTI_NODE_MULTI_WRITER])
def test_multi_node_modes_are_refused_saying_why(mode: int) -> None:
    message = refused(Code.INVALID_ARGUMENT, checks.capability, mount(mode), match=Mode.Name(mode))
    assert "one node at a time" in message and "split brain" in message
    assert checks.unsupported(mount(mode)) == message


def test_what_else_a_capability_cannot_ask() -> None:
    block = pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(),
                                access_mode=pb.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER))
    refused(Code.INVALID_ARGUMENT, checks.capability, block, match="block volumes are not served")
    no_type = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER))
    refused(Code.INVALID_ARGUMENT, checks.capability, no_type, match="access_type is required")
    refused(Code.INVALID_ARGUMENT, checks.capability, mount(Mode.UNKNOWN), match="access_mode is required")
    refused(Code.INVALID_ARGUMENT, checks.capability, pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume()),
            match="access_mode is required")
    refused(Code.INVALID_ARGUMENT, checks.capability, mount(Mode.SINGLE_NODE_WRITER, fs_type="ext4"), match="ext4")
    refused(Code.INVALID_ARGUMENT, checks.capability, mount(Mode.SINGLE_NODE_WRITER, mount_flags=["noatime"]),
            match="mount flags")
    refused(Code.INVALID_ARGUMENT, checks.capability, mount(Mode.SINGLE_NODE_WRITER, volume_mount_group="100"),
            match="volume_mount_group")
    refused(Code.INVALID_ARGUMENT, checks.capabilities, [], match="volume_capabilities is required")
    message = refused(Code.INVALID_ARGUMENT, checks.capabilities,
                      [mount(Mode.SINGLE_NODE_WRITER), mount(Mode.MULTI_NODE_MULTI_WRITER)])
    assert message.startswith("volume_capabilities[1]")


def test_capacity_is_the_size_limit() -> None:
    assert checks.capacity(None) == (0, 0)
    assert checks.capacity(pb.CapacityRange()) == (0, 0)
    assert checks.capacity(pb.CapacityRange(required_bytes=10)) == (10, 0)
    assert checks.capacity(pb.CapacityRange(limit_bytes=20)) == (20, 20)  # at most 20: a limit of 20
    assert checks.capacity(pb.CapacityRange(required_bytes=10, limit_bytes=20)) == (10, 20)
    refused(Code.OUT_OF_RANGE, checks.capacity, pb.CapacityRange(required_bytes=30, limit_bytes=20))
    refused(Code.INVALID_ARGUMENT, checks.capacity, pb.CapacityRange(required_bytes=-1))


@pytest.mark.parametrize("limit, required, most, fits", [
    (0, 0, 0, True), (0, 10, 0, True), (0, 0, 10, False),  # no limit: at least anything, at most nothing
    (10, 10, 0, True), (10, 5, 0, True), (10, 20, 0, False), (10, 0, 10, True), (10, 0, 5, False),
    (10, 10, 10, True),
])
def test_an_existing_volume_fits_a_capacity_range(limit: int, required: int, most: int, fits: bool) -> None:
    assert checks.fits(limit, pb.CapacityRange(required_bytes=required, limit_bytes=most)) is fits


def test_parameters() -> None:
    assert checks.parameters({}) == {}
    assert checks.parameters({"replicas": "2", "block_size": " 4096 "}) == {"replicas": "2", "block_size": "4096"}
    assert checks.parameters({"csi.storage.k8s.io/pvc/name": "data", "replicas": "1"}) == {"replicas": "1"}
    refused(Code.INVALID_ARGUMENT, checks.parameters, {"fstype": "ext4"}, match="unknown parameter(s) fstype")
    refused(Code.INVALID_ARGUMENT, checks.parameters, {"replicas": "two"}, match="not a whole number")
    refused(Code.INVALID_ARGUMENT, checks.parameters, {"replicas": "-1"}, match="not a whole number")
    assert checks.parameters({"durability": " Strict "}) == {"durability": "strict"}
    assert checks.parameters({"durability": "available", "replicas": "3"}) == {"durability": "available",
                                                                                "replicas": "3"}
    refused(Code.INVALID_ARGUMENT, checks.parameters, {"durability": "2"},
            match="durability='2' is not a durability mode: use available or strict")


def test_ids_and_names() -> None:
    assert checks.volume_name("pvc-1e2f") == "pvc-1e2f"
    assert checks.volume_name("a@b") is None and checks.volume_name("../x") is None
    assert checks.volume_name("") is None
    assert checks.snapshot_parts("pvc-1@snap-2") == ("pvc-1", "snap-2")
    assert checks.snapshot_parts("pvc-1") is None and checks.snapshot_parts("a@b@c") is None
    assert checks.new_name("snapshot-1", "snapshot") == "snapshot-1"
    refused(Code.INVALID_ARGUMENT, checks.new_name, "", "volume", match="name is required")
    refused(Code.INVALID_ARGUMENT, checks.new_name, "my volume", "volume", match="volume name")
    refused(Code.INVALID_ARGUMENT, checks.new_name, "a/b", "volume", match="'/'")


def test_pagination_tokens_are_ours_or_refused() -> None:
    names = ["a", "b", "c", "d", "e"]
    first, token = checks.paginate(names, checks.page(2, ""))
    assert first == ["a", "b"] and token
    second, token2 = checks.paginate(names, checks.page(2, token))
    assert second == ["c", "d"]
    assert checks.paginate(names, checks.page(0, token2)) == (["e"], "")
    assert checks.paginate(["a", "b", "d", "e"], checks.page(0, token)) == (["d", "e"], "")  # c went: still good
    assert checks.paginate(names, checks.page(0, "")) == (names, "")
    for bad in ("invalid-token", "cfs1.", "cfs1.!!!", "cfs1.//79", token[:-1] + "?"):
        refused(Code.ABORTED, checks.page, 0, bad, match="not handed out")
    refused(Code.INVALID_ARGUMENT, checks.page, -1, "")


@given(st.lists(st.text(min_size=1, max_size=10), unique=True), st.integers(1, 4))
def test_paging_through_returns_every_name_once_in_order(names: list[str], size: int) -> None:
    seen: list[str] = []
    token = ""
    for _ in range(len(names) + 1):
        page, token = checks.paginate(names, checks.page(size, token))
        assert len(page) <= size
        seen += page
        if not token:
            break
    assert seen == sorted(names)


def test_the_wire_layout_is_the_specs() -> None:
    """A few messages encoded by hand from the spec's field numbers (CSI v1.9.0's csi.proto):
    name 1, capacity_range 2 of CreateVolumeRequest; volume_id 2 and capacity_bytes 1 of
    Volume; access_mode 3 and its mode 1 of VolumeCapability; readonly 6 of
    NodePublishVolumeRequest; node_id 1 of NodeGetInfoResponse; and the services' methods."""
    request = pb.CreateVolumeRequest(name="v", capacity_range=pb.CapacityRange(required_bytes=5))
    assert request.SerializeToString() == b"\x0a\x01v" + b"\x12\x02\x08\x05"
    assert pb.Volume(capacity_bytes=3, volume_id="x").SerializeToString() == b"\x08\x03\x12\x01x"
    assert mount(Mode.SINGLE_NODE_READER_ONLY).SerializeToString() == b"\x12\x00\x1a\x02\x08\x02"
    assert pb.NodePublishVolumeRequest(readonly=True).SerializeToString() == b"\x30\x01"
    assert pb.NodeGetInfoResponse(node_id="n").SerializeToString() == b"\x0a\x01n"
    services = {s.full_name: [m.name for m in s.methods] for s in pb.DESCRIPTOR.services_by_name.values()}
    assert services["csi.v1.Identity"] == ["GetPluginInfo", "GetPluginCapabilities", "Probe"]
    assert "ControllerModifyVolume" not in services["csi.v1.Controller"] and len(services["csi.v1.Controller"]) == 13
    assert len(services["csi.v1.Node"]) == 8


# --- the command line and the endpoint ----------------------------------------------------

def test_the_endpoint_is_a_unix_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert server.socket_path("unix:///csi/csi.sock") == Path("/csi/csi.sock")
    assert server.socket_path("unix:/csi/csi.sock") == Path("/csi/csi.sock")
    for bad, why in ((None, "no endpoint"), ("", "no endpoint"), ("tcp://127.0.0.1:10000", "unix socket"),
                     ("unix://relative.sock", "absolute path")):
        with pytest.raises(CfsError, match=why):
            server.socket_path(bad)
    monkeypatch.setenv("CSI_ENDPOINT", "unix:///var/lib/kubelet/plugins/csi.cfs.dev/csi.sock")
    args = cli.build_parser().parse_args(["csi", "--mode", "node"])
    assert (args.endpoint, args.mode) == ("unix:///var/lib/kubelet/plugins/csi.cfs.dev/csi.sock", "node")
    assert cli.build_parser().parse_args(["csi", "--endpoint", "unix:///x.sock"]).mode == "both"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["csi", "--mode", "everything"])


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "csi.sock"
    server._clear_stale(path)  # nothing there: nothing to do
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(CfsError, match="another process serves"):
            server._clear_stale(path)
    assert path.exists()  # closed without unlinking: what a killed plugin leaves
    server._clear_stale(path)
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(CfsError, match="not a socket"):
        server._clear_stale(path)

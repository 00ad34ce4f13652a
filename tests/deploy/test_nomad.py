"""deploy/nomad/: the plugin job and the volume spec parse, and fit each other and cfs.

No Nomad runs here, so the HCL is read with python-hcl2 (it parses HCL2's syntax; it
does not evaluate expressions or know Nomad's job schema: a misspelt block name parses).
The tests then check what Nomad would only find at run time: the plugin id the volume
names, the directory the daemon must share with the plugin (it is derived from the
plugin's id and type), the daemon's flags (through cfs's own parser), the secret
file's mode (through the daemon's own check), the volume's parameters (through the
daemon's own limits).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from cfs.store.catalog import check_block_size
from mountd import main as mountd_main
from mountd.service import MAX_REPLICAS
from tests.deploy.kube import ROOT
from tools import cli

NOMAD_DIR = ROOT / "deploy" / "nomad"
JOB = NOMAD_DIR / "cfs.nomad.hcl"
VOLUME = NOMAD_DIR / "volume.hcl"

CSI_PARAMETERS = {"replicas", "block_size"}
"""The CreateVolume parameters of docs/DESIGN.md, "CSI"."""

MODES = {"node": "node", "controller": "controller", "monolith": "both"}
"""Nomad's plugin type, and the plugin's --mode that serves it."""

STAND_INS = {"CFS_ETCD": "http://10.0.0.1:2379", "NOMAD_ADDR_peer": "10.0.0.2:7101",
             "CSI_ENDPOINT": "unix:///csi/csi.sock"}
"""What Nomad puts in the tasks' environment at run time, for parsing the command lines."""

Block = dict[str, Any]

OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, preserve_heredocs=False,
                               strip_string_quotes=True)


def load(path: Path) -> Block:
    with path.open() as f:
        parsed: Block = hcl2.load(f, serialization_options=OPTIONS)
    return parsed


def labelled(blocks: list[Block], label: str) -> Block:
    """The body of the block with ``label`` (python-hcl2 gives a list of {label: body})."""
    found = [b[label] for b in blocks if label in b]
    assert len(found) == 1, f"expected one block {label!r}, found {len(found)}"
    body: Block = found[0]
    return body


def single(body: Block, name: str) -> Block:
    assert len(body.get(name, [])) == 1, f"expected one {name} block"
    block: Block = body[name][0]
    return block


def job() -> Block:
    return labelled(load(JOB)["job"], "cfs")


def group() -> Block:
    return labelled(job()["group"], "node")


def task(name: str) -> Block:
    return labelled(group()["task"], name)


def plugin_task() -> Block:
    """The task that has a csi_plugin block."""
    found: list[Block] = [body for t in group()["task"] for body in t.values() if "csi_plugin" in body]
    assert len(found) == 1, "expected one task with a csi_plugin block"
    return found[0]


def runtime(arg: str) -> str:
    """An argument as the task gets it: HCL's ``$${X}`` is Nomad's ``${X}``, filled in at start."""
    return re.sub(r"\$\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: STAND_INS[m.group(1)], arg)


def command(t: Block) -> list[str]:
    config = single(t, "config")
    return [runtime(a) for a in config["entrypoint"] + config["args"]]


def daemon_volumes() -> dict[str, tuple[str, str]]:
    """The daemon task's bind volumes: container path -> (host path, options)."""
    out: dict[str, tuple[str, str]] = {}
    for spec in single(task("mountd"), "config")["volumes"]:
        host, container, options = spec.split(":")
        out[container] = (host, options)
    return out


@pytest.mark.parametrize("path", sorted(NOMAD_DIR.glob("*.hcl")), ids=lambda p: p.name)
def test_parses(path: Path) -> None:
    """Each file is HCL2 (a missing brace or quote fails here, as `nomad job run` would)."""
    assert load(path)


def test_volume_names_the_plugin() -> None:
    """The volume's plugin_id is the id the job registers its plugin under."""
    plugin = single(plugin_task(), "csi_plugin")
    assert load(VOLUME)["plugin_id"] == plugin["id"]
    assert load(VOLUME)["type"] == "csi"


def test_volume_capabilities() -> None:
    """Single-node modes on a file system: DESIGN, "CSI", refuses multi-node and block."""
    caps = load(VOLUME)["capability"]
    assert {"access_mode": "single-node-writer", "attachment_mode": "file-system"} in caps
    for cap in caps:
        assert cap["access_mode"].startswith("single-node-"), cap
        assert cap["attachment_mode"] == "file-system", cap


def test_volume_parameters_are_valid() -> None:
    """Parameters are DESIGN's, with values the daemon accepts."""
    params = single(load(VOLUME), "parameters")
    assert set(params) <= CSI_PARAMETERS
    if "block_size" in params:
        check_block_size(int(params["block_size"]))
    if "replicas" in params:
        assert 1 <= int(params["replicas"]) <= MAX_REPLICAS


def test_plugin_serves_its_type() -> None:
    """The plugin's --mode serves the type Nomad registers it as, on every client."""
    assert job()["type"] == "system", "node plugins must run on every client"
    plugin = single(plugin_task(), "csi_plugin")
    argv = command(plugin_task())
    assert argv[:2] == ["cfs", "csi"]
    assert f"--mode={MODES[plugin['type']]}" in argv
    assert "--endpoint=" + STAND_INS["CSI_ENDPOINT"] in argv


def test_daemon_shares_the_plugins_staging_directory() -> None:
    """Nomad names staging paths inside the plugin; the daemon mounts there, so sees the same.

    Nomad binds DATA_DIR/client/csi/<type>/<id> at the plugin's stage_publish_base_dir;
    the daemon task must bind that host directory at the same path, propagating its
    mounts back out.
    """
    plugin = single(plugin_task(), "csi_plugin")
    base = plugin["stage_publish_base_dir"]
    host, options = daemon_volumes()[base]
    assert host == f"${{var.nomad_data_dir}}/client/csi/{plugin['type']}/{plugin['id']}"
    assert options == "rshared"


def test_daemon_task() -> None:
    """Privileged, started before the plugin and kept running, /var/lib/cfs shared out."""
    mountd = task("mountd")
    config = single(mountd, "config")
    assert config["privileged"] is True
    assert single(mountd, "lifecycle") == {"hook": "prestart", "sidecar": True}
    assert daemon_volumes()["/var/lib/cfs"] == ("/var/lib/cfs", "rshared")
    plugin_volumes = single(plugin_task(), "config")["volumes"]
    assert any(v.startswith("/var/lib/cfs:/var/lib/cfs:") for v in plugin_volumes), "the plugin lacks mountd.sock"


def test_daemon_flags_are_the_daemons(tmp_path: Path) -> None:
    """``cfs node run`` and its cluster flags, through cfs's own parser and checks."""
    argv = command(task("mountd"))
    assert argv[:3] == ["cfs", "node", "run"]
    args = cli.build_parser().parse_args(argv[1:])
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123456789abcdef")
    secret.chmod(0o400)
    given, args.secret_file = args.secret_file, secret
    config = mountd_main.cluster_config(args)
    assert config.etcd == STAND_INS["CFS_ETCD"]
    assert config.listen is not None
    ports = single(group(), "network")["port"]
    assert labelled(ports, "peer")["static"] == config.listen[1]
    # A template's destination is relative to the task directory, whose secrets/ the
    # container sees at /secrets.
    templates = {t["destination"]: t for t in task("mountd")["template"]}
    assert str(given).removeprefix("/") in templates, "--secret-file is no template's file"
    env_vars = {line.split("=", 1)[0] for t in templates.values() if t.get("env") for line in t["data"].splitlines()}
    assert "CFS_ETCD" in env_vars


def test_secret_file_mode_suits_the_daemon(tmp_path: Path) -> None:
    """The template's perms, tried on a file with the daemon's own check."""
    args = cli.build_parser().parse_args(command(task("mountd"))[1:])
    templates = {t["destination"]: t for t in task("mountd")["template"]}
    template = templates[str(args.secret_file).removeprefix("/")]
    path = tmp_path / "cluster-secret"
    path.write_text("0123456789abcdef0123456789abcdef")
    path.chmod(int(template["perms"], 8))
    assert mountd_main.read_secret(path)

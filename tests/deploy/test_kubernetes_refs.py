"""The manifests in deploy/kubernetes/ agree with each other and with cfs itself.

A schema passes a manifest whose parts do not fit: a socket the registrar looks for
where the plugin does not listen, a Secret key nobody wrote, a ServiceAccount bound in
another namespace, a daemon flag that does not exist. Each would surface only on a real
cluster, as a pod that never becomes ready or a claim that stays pending. These tests
follow each reference to its other end; where cfs's own code decides (the daemon's
command line, its secret-file rule, its volume options), they ask that code.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from pathlib import Path

import pytest

from cfs.store.catalog import check_block_size
from mountd import main as mountd_main
from mountd.config import SOCKET_NAME, default_data_dir
from mountd.service import CREATE_OPTIONS, MAX_REPLICAS
from tests.deploy import kube
from tools import cli

NAMESPACE = "cfs-system"

CSI_PARAMETERS = {"replicas", "block_size"}
"""The CreateVolume parameters of docs/DESIGN.md, "CSI"; any other makes CreateVolume fail."""

STAND_INS = {"CFS_ETCD": "http://10.0.0.1:2379", "POD_IP": "10.1.2.3"}
"""Values the kubelet fills in at run time (from the Secret, from the pod), for parsing."""


def node_ds() -> kube.Doc:
    return kube.one("DaemonSet", "cfs-node")


def controller() -> kube.Doc:
    return kube.one("Deployment", "cfs-controller")


def daemon_container() -> kube.Doc:
    """The node daemon: the container that runs ``cfs node run``."""
    spec = kube.pod_spec(node_ds())
    found: list[kube.Doc] = [c for c in spec["containers"] if c.get("command", [])[:3] == ["cfs", "node", "run"]]
    assert len(found) == 1, "expected one container running `cfs node run`"
    return found[0]


def plugin_container(workload: kube.Doc) -> kube.Doc:
    """The CSI plugin: the container that runs ``cfs csi``."""
    found: list[kube.Doc] = [c for c in kube.pod_spec(workload)["containers"]
                             if c.get("command", [])[:2] == ["cfs", "csi"]]
    assert len(found) == 1, f"{workload['metadata']['name']}: expected one container running `cfs csi`"
    return found[0]


def plugin_socket(workload: kube.Doc) -> kube.Location:
    """Where the plugin listens: --endpoint, or CSI_ENDPOINT without it (DESIGN, "CSI")."""
    c = plugin_container(workload)
    env = kube.env_values(c)
    endpoint = kube.flag(c, "--endpoint") if kube.has_flag(c, "--endpoint") else env.get("CSI_ENDPOINT")
    assert endpoint, f"{c['name']}: neither --endpoint nor CSI_ENDPOINT"
    if "CSI_ENDPOINT" in env:
        assert env["CSI_ENDPOINT"] == endpoint, "--endpoint and CSI_ENDPOINT disagree"
    return kube.locate(kube.pod_spec(workload), c, kube.socket_path(endpoint))


# --- names --------------------------------------------------------------------------


def test_one_driver_name() -> None:
    """CSIDriver, StorageClass and VolumeSnapshotClass name the driver of DESIGN, "CSI"."""
    assert kube.one("CSIDriver")["metadata"]["name"] == kube.DRIVER
    assert kube.one("StorageClass")["provisioner"] == kube.DRIVER
    assert kube.one("VolumeSnapshotClass")["driver"] == kube.DRIVER


def test_the_csidriver_fits_the_plugin() -> None:
    """Publishing is how cfs refuses a second writer node, so attach must be required."""
    spec = kube.one("CSIDriver")["spec"]
    assert spec["attachRequired"] is True
    assert spec["volumeLifecycleModes"] == ["Persistent"]


def test_namespaced_objects_are_in_the_namespace() -> None:
    """Everything namespaced (but the examples, which go where the user is) is in cfs-system."""
    assert kube.one("Namespace")["metadata"]["name"] == NAMESPACE
    for path, doc in kube.all_docs():
        if path.parent.name == "example" or doc["kind"] in ("Namespace", "CSIDriver", "StorageClass",
                                                             "VolumeSnapshotClass", "ClusterRole",
                                                             "ClusterRoleBinding"):
            continue
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {doc['kind']}"


# --- service accounts and their rights --------------------------------------------------

SIDECAR_NEEDS: dict[str, set[tuple[str, str, str]]] = {
    "csi-provisioner": {
        ("", "persistentvolumes", "create"), ("", "persistentvolumes", "delete"),
        ("", "persistentvolumeclaims", "update"), ("storage.k8s.io", "storageclasses", "watch"),
        ("storage.k8s.io", "csinodes", "get"), ("", "nodes", "get"), ("", "events", "create"),
        ("storage.k8s.io", "volumeattachments", "list"),
        ("snapshot.storage.k8s.io", "volumesnapshots", "get"),
        ("snapshot.storage.k8s.io", "volumesnapshotcontents", "get"),
    },
    "csi-attacher": {
        ("", "persistentvolumes", "patch"), ("storage.k8s.io", "csinodes", "watch"),
        ("storage.k8s.io", "volumeattachments", "patch"), ("storage.k8s.io", "volumeattachments/status", "patch"),
    },
    "csi-snapshotter": {
        ("", "events", "create"), ("snapshot.storage.k8s.io", "volumesnapshotclasses", "watch"),
        ("snapshot.storage.k8s.io", "volumesnapshotcontents", "update"),
        ("snapshot.storage.k8s.io", "volumesnapshotcontents/status", "patch"),
    },
    "csi-resizer": {
        ("", "persistentvolumes", "patch"), ("", "persistentvolumeclaims", "watch"), ("", "pods", "watch"),
        ("", "persistentvolumeclaims/status", "patch"), ("", "events", "create"),
        ("storage.k8s.io", "volumeattributesclasses", "list"),
    },
}
"""Rights each sidecar cannot work without (from its own RBAC manifest at our version).

A sample, not the whole list: enough that a missing binding, a rule on the wrong
resource or a ServiceAccount bound in another namespace is caught."""

LEADER_ELECTION = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
NODE_SIDE_IMAGES = {"cfs", "csi-node-driver-registrar", "livenessprobe"}
"""Images that talk to no Kubernetes API (the registrar talks to the kubelet's socket)."""


def rights(account: str, namespace: str) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """What a ServiceAccount may do: (cluster-wide, in ``namespace``), through its bindings."""
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in kube.by_kind("ClusterRole") + kube.by_kind("Role")}
    cluster: set[tuple[str, str, str]] = set()
    local: set[tuple[str, str, str]] = set()
    for binding in kube.by_kind("ClusterRoleBinding") + kube.by_kind("RoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account and s.get("namespace") == namespace
                   for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        bns = binding["metadata"].get("namespace")
        role = roles.get((ref["kind"], bns if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, f"{binding['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}"
        granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        if binding["kind"] == "RoleBinding":
            if bns == namespace:
                local |= granted
        else:
            cluster |= granted
    return cluster, local


@pytest.mark.parametrize("kind,name", [("DaemonSet", "cfs-node"), ("Deployment", "cfs-controller")])
def test_service_account_exists(kind: str, name: str) -> None:
    """A pod whose ServiceAccount is missing is never created; the default one must not be used."""
    workload = kube.one(kind, name)
    account = kube.pod_spec(workload).get("serviceAccountName")
    assert account, f"{name} runs as the namespace's default ServiceAccount"
    found = [sa for sa in kube.by_kind("ServiceAccount") if sa["metadata"]["name"] == account
             and sa["metadata"].get("namespace") == workload["metadata"]["namespace"]]
    assert len(found) == 1, f"{name}: ServiceAccount {account} is not defined in its namespace"


def test_controller_account_has_each_sidecars_rights() -> None:
    """Every controller sidecar's needs are granted, leader election in the pod's namespace too."""
    workload = controller()
    spec = kube.pod_spec(workload)
    cluster, local = rights(spec["serviceAccountName"], workload["metadata"]["namespace"])
    sidecars = [kube.image_name(c) for c in spec["containers"] if kube.image_name(c) not in NODE_SIDE_IMAGES]
    assert sorted(sidecars) == sorted(SIDECAR_NEEDS), "a sidecar without a row in SIDECAR_NEEDS, or one missing"
    for sidecar in sidecars:
        missing = SIDECAR_NEEDS[sidecar] - cluster
        assert not missing, f"{sidecar} may not: {sorted(missing)}"
        if kube.has_flag(kube.by_image(spec, sidecar), "--leader-election"):
            assert LEADER_ELECTION <= local | cluster, f"{sidecar} elects a leader but may not write Leases"


def test_node_pods_need_no_api() -> None:
    """The node pods run nothing that calls the API server, so they carry no token."""
    spec = kube.pod_spec(node_ds())
    assert {kube.image_name(c) for c in spec["containers"]} <= NODE_SIDE_IMAGES
    assert spec.get("automountServiceAccountToken") is False


# --- sockets and paths ------------------------------------------------------------------


def test_node_socket_paths_agree() -> None:
    """Plugin, registrar, livenessprobe and kubelet all mean one socket on the host.

    The registrar hands the kubelet --kubelet-registration-path, a host path; the plugin
    listens on a container path. Both are followed through the pod's mounts to the host.
    """
    ds = node_ds()
    spec = kube.pod_spec(ds)
    socket = kube.host_path(spec, plugin_socket(ds))
    assert socket == f"/var/lib/kubelet/plugins/{kube.DRIVER}/csi.sock"
    registrar = kube.by_image(spec, "csi-node-driver-registrar")
    assert kube.flag(registrar, "--kubelet-registration-path") == socket
    for c in (registrar, kube.by_image(spec, "livenessprobe")):
        at = kube.locate(spec, c, kube.socket_path(kube.flag(c, "--csi-address")))
        assert kube.host_path(spec, at) == socket, f"{c['name']} looks for the socket elsewhere"
    reg = kube.locate(spec, registrar, "/registration")
    assert kube.host_path(spec, reg) == "/var/lib/kubelet/plugins_registry"


def test_controller_socket_paths_agree() -> None:
    """The controller's sidecars reach the plugin through one pod-private directory."""
    deploy = controller()
    spec = kube.pod_spec(deploy)
    socket = plugin_socket(deploy)
    assert "emptyDir" in kube.volumes(spec)[socket.volume], "the controller's socket is private to its pod"
    for c in spec["containers"]:
        if kube.has_flag(c, "--csi-address"):
            at = kube.locate(spec, c, kube.socket_path(kube.flag(c, "--csi-address")))
            assert at == socket, f"{c['name']} looks for the socket at {at}, the plugin listens at {socket}"
    callers = {kube.image_name(c) for c in spec["containers"] if kube.has_flag(c, "--csi-address")}
    assert set(SIDECAR_NEEDS) <= callers


def test_the_daemon_socket_is_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both plugins reach the daemon's control socket, DATA_DIR/mountd.sock, on its host.

    DATA_DIR is the daemon's default for root (the containers run as root, with no
    --data-dir and no CFS_DATA_DIR), which is also where the plugins look by default.
    """
    monkeypatch.delenv("CFS_DATA_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    control = f"{default_data_dir()}/{SOCKET_NAME}"
    ds, deploy = node_ds(), controller()
    users = [(ds, daemon_container()), (ds, plugin_container(ds)), (deploy, plugin_container(deploy))]
    for workload, c in users:
        assert not kube.has_flag(c, "--data-dir") and "CFS_DATA_DIR" not in kube.env_values(c), c["name"]
        spec = kube.pod_spec(workload)
        on_host = kube.host_path(spec, kube.locate(spec, c, control))
        assert on_host == control, f"{workload['metadata']['name']}/{c['name']}: {control} is {on_host} on the host"


def test_mounting_containers_see_host_paths_at_host_paths() -> None:
    """The kubelet names staging and target paths as host paths; the daemon mounts there.

    So in the daemon and the node plugin, the kubelet's directory and the data directory
    sit at their host paths, and the daemon's mounts travel out (Bidirectional).
    """
    ds = node_ds()
    spec = kube.pod_spec(ds)
    for c in (daemon_container(), plugin_container(ds)):
        for path in ("/var/lib/kubelet", "/var/lib/cfs"):
            at = kube.locate(spec, c, path)
            assert kube.host_path(spec, at) == path, f"{c['name']}: {path} is not the host's"
    for m in daemon_container()["volumeMounts"]:
        if m["mountPath"] in ("/var/lib/kubelet", "/var/lib/cfs"):
            assert m.get("mountPropagation") == "Bidirectional", m["mountPath"]
    fuse = kube.locate(spec, daemon_container(), "/dev/fuse")
    assert kube.volumes(spec)[fuse.volume]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}


# --- the controller's place -------------------------------------------------------------


def test_controller_runs_beside_a_node_daemon() -> None:
    """DESIGN, "CSI": the controller asks the daemon of its own host, so it goes where one runs."""
    spec = kube.pod_spec(controller())
    terms = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    node_labels = node_ds()["spec"]["template"]["metadata"]["labels"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname"
               and t["labelSelector"]["matchLabels"].items() <= node_labels.items()
               and t.get("namespaces", [node_ds()["metadata"]["namespace"]]) == [node_ds()["metadata"]["namespace"]]
               for t in terms), "no required affinity to the cfs-node pods on the same host"


def test_replicated_sidecars_elect_a_leader() -> None:
    """Two controllers acting at once would both provision; each sidecar must elect a leader."""
    deploy = controller()
    spec = kube.pod_spec(deploy)
    assert deploy["spec"]["replicas"] >= 1
    for name in SIDECAR_NEEDS:
        if deploy["spec"]["replicas"] > 1:
            assert kube.has_flag(kube.by_image(spec, name), "--leader-election"), name


# --- command lines ----------------------------------------------------------------------


def test_arguments_name_defined_variables() -> None:
    """The kubelet leaves an undefined ``$(VAR)`` as it is: the daemon would get the text."""
    for workload in (node_ds(), controller()):
        for c in kube.pod_spec(workload)["containers"]:
            env = kube.env_values(c)
            for arg in c.get("command", []) + c.get("args", []):
                for var in kube.variables(arg):
                    assert var in env, f"{c['name']}: {arg} names {var}, which its env lacks"


def test_daemon_flags_are_the_daemons(tmp_path: Path) -> None:
    """``cfs node run`` and its cluster flags, through cfs's own parser and checks."""
    daemon = daemon_container()
    argv = kube.args(daemon, STAND_INS)
    assert argv[:3] == ["cfs", "node", "run"]
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123456789abcdef")
    secret.chmod(0o400)
    args = cli.build_parser().parse_args(argv[1:])
    given = Path(args.secret_file)
    args.secret_file = secret
    config = mountd_main.cluster_config(args)
    assert config.etcd == STAND_INS["CFS_ETCD"] and config.advertise == f"{STAND_INS['POD_IP']}:7101"
    assert config.listen is not None
    listen_port = config.listen[1]
    assert any(p["containerPort"] == listen_port for p in daemon.get("ports", [])), "the peer port is not declared"
    spec = kube.pod_spec(node_ds())
    mount = kube.locate(spec, daemon, str(given))
    assert "secret" in kube.volumes(spec)[mount.volume], "--secret-file is not on the Secret's volume"


def test_probe_commands_exist() -> None:
    """An exec probe runs a cfs command; one the CLI does not know fails the probe forever."""
    for workload in (node_ds(), controller()):
        for c in kube.pod_spec(workload)["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                command = c.get(probe, {}).get("exec", {}).get("command")
                if command:
                    assert command[0] == "cfs"
                    cli.build_parser().parse_args(command[1:])


@pytest.mark.parametrize("kind,name,mode", [("DaemonSet", "cfs-node", "node"),
                                            ("Deployment", "cfs-controller", "controller")])
def test_plugin_mode(kind: str, name: str, mode: str) -> None:
    """Node mode beside every daemon, controller mode in the Deployment (DESIGN, "CSI")."""
    assert kube.flag(plugin_container(kube.one(kind, name)), "--mode") == mode


@pytest.mark.parametrize("kind,name", [("DaemonSet", "cfs-node"), ("Deployment", "cfs-controller")])
def test_plugin_flags_parse(kind: str, name: str) -> None:
    """Once `cfs csi` exists, the plugin's command line goes through its parser too."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "csi" not in commands.choices:
        pytest.skip("`cfs csi` is not in this tree yet; its flags are DESIGN's (test_plugin_mode)")
    parser.parse_args(kube.args(plugin_container(kube.one(kind, name)))[1:])


def test_health_ports_are_served() -> None:
    """Each HTTP probe's port is one a container in the pod listens on (--http-endpoint)."""
    for workload in (node_ds(), controller()):
        spec = kube.pod_spec(workload)
        named = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])}
        served = [int(kube.flag(c, "--http-endpoint").rsplit(":", 1)[1])
                  for c in spec["containers"] if kube.has_flag(c, "--http-endpoint")]
        assert len(served) == len(set(served)), f"two sidecars listen on one port: {served}"
        for c in spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                get = c.get(probe, {}).get("httpGet")
                if get:
                    port = named.get(get["port"], get["port"])
                    assert port in served, f"{c['name']}: {probe} asks port {get['port']}, which nothing serves"


# --- the Secret ---------------------------------------------------------------------------


def secret_doc() -> kube.Doc:
    return kube.one("Secret", "cfs-cluster")


def secret_keys() -> set[str]:
    doc = secret_doc()
    return set(doc.get("stringData", {})) | set(doc.get("data", {}))


def test_referenced_secret_keys_exist() -> None:
    """Every key the node pods read from the Secret is one the Secret has."""
    spec = kube.pod_spec(node_ds())
    name = secret_doc()["metadata"]["name"]
    used: set[str] = set()
    for c in spec["containers"]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == name
                used.add(ref["key"])
    for vol in spec["volumes"]:
        if "secret" in vol:
            assert vol["secret"]["secretName"] == name
            used |= {item["key"] for item in vol["secret"]["items"]}
    assert used, "the node pods read nothing from the Secret"
    assert used <= secret_keys(), f"not in the Secret: {sorted(used - secret_keys())}"


def test_secret_file_mode_suits_the_daemon(tmp_path: Path) -> None:
    """The daemon refuses a secret file others may read: the volume's mode, tried on a file."""
    vol = next(v for v in kube.pod_spec(node_ds())["volumes"] if "secret" in v)
    mode = vol["secret"].get("defaultMode", 0o644)
    mode = next((i.get("mode", mode) for i in vol["secret"]["items"]), mode)
    path = tmp_path / "cluster-secret"
    path.write_text("0123456789abcdef0123456789abcdef")
    path.chmod(mode)
    assert mountd_main.read_secret(path)


def test_placeholder_secret_is_refused(tmp_path: Path) -> None:
    """A Secret applied with its placeholders must stop the daemon, not join a known secret."""
    doc = secret_doc()
    values = doc["stringData"]
    path = tmp_path / "cluster-secret"
    path.write_text(values["secret"])
    path.chmod(0o400)
    with pytest.raises(Exception, match="at least"):
        mountd_main.read_secret(path)
    assert re.match(r"^http://[^/]*\.invalid(:\d+)?$", values["etcd"]), "the etcd placeholder resolves"


# --- classes and examples ---------------------------------------------------------------


def test_storage_class_parameters_are_valid() -> None:
    """Parameters are DESIGN's CreateVolume parameters, with values the daemon accepts."""
    sc = kube.one("StorageClass")
    params = sc["parameters"]
    assert set(params) <= CSI_PARAMETERS <= CREATE_OPTIONS
    assert all(isinstance(v, str) for v in params.values())
    if "block_size" in params:
        check_block_size(int(params["block_size"]))
    if "replicas" in params:
        assert 1 <= int(params["replicas"]) <= MAX_REPLICAS
    assert sc["allowVolumeExpansion"] is True


def test_examples_refer_to_what_exists() -> None:
    """The example claim's class, the snapshot's class, the restore's source, the pod's claim."""
    classes = {d["metadata"]["name"] for d in kube.by_kind("StorageClass")}
    snap_classes = {d["metadata"]["name"] for d in kube.by_kind("VolumeSnapshotClass")}
    claims = {d["metadata"]["name"]: d for d in kube.by_kind("PersistentVolumeClaim")}
    snapshots = {d["metadata"]["name"]: d for d in kube.by_kind("VolumeSnapshot")}
    for claim in claims.values():
        assert claim["spec"]["storageClassName"] in classes
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], "one writer node: DESIGN refuses the others"
        source = claim["spec"].get("dataSource")
        if source:
            assert source["kind"] == "VolumeSnapshot" and source["name"] in snapshots
    for snap in snapshots.values():
        assert snap["spec"]["volumeSnapshotClassName"] in snap_classes
        assert snap["spec"]["source"]["persistentVolumeClaimName"] in claims
    for pod in kube.by_kind("Pod"):
        for vol in pod["spec"]["volumes"]:
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims


# --- images -----------------------------------------------------------------------------


def images() -> list[str]:
    return [c["image"] for d in kube.by_kind("DaemonSet") + kube.by_kind("Deployment") + kube.by_kind("Pod")
            for c in d["spec"].get("template", d)["spec"]["containers"]]


def test_images_are_pinned() -> None:
    """Every image names a version: no tag means latest, and latest changes under a running cluster."""
    for image in images():
        name, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag, f"{image}: no tag"
        assert tag != "latest", image
        if name.startswith("registry.k8s.io/sig-storage/"):
            assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"{image}: not a release tag"


def test_one_version_of_each_image() -> None:
    """The same image in both pods (livenessprobe, cfs) at the same version."""
    tags: dict[str, set[str]] = {}
    for image in images():
        name, _, tag = image.rpartition(":")
        tags.setdefault(name, set()).add(tag)
    assert all(len(t) == 1 for t in tags.values()), tags


def test_cfs_image_is_this_version() -> None:
    """The manifests run the cfs version they ship with (pyproject.toml's)."""
    version = tomllib.loads((kube.ROOT / "pyproject.toml").read_text())["project"]["version"]
    cfs_images = {i for i in images() if i.rpartition(":")[0].endswith("/cfs")}
    assert cfs_images and all(i.endswith(f":{version}") for i in cfs_images), (cfs_images, version)

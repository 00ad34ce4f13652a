"""Every manifest in deploy/kubernetes/ parses and is what the API server would accept.

Built-in kinds are checked with kubernetes-validate, strictly (an unknown field is an
error, as it is for ``kubectl apply`` since its field validation became strict), against
two Kubernetes versions:

* 1.34, the oldest minor release the Kubernetes project still supported when this was
  written, and the first the sidecars' releases we run ask for (external-provisioner
  6.x and external-resizer 2.x need its VolumeAttributesClass v1 API for that
  feature): a field added later would fail here;
* 1.37, the newest kubernetes-validate (1.37.x) has schemas for: a field removed by
  then would fail here.

The snapshot kinds are custom resources and go through our own schemas
(``snapshot_schemas``). A kind with no schema at all fails: nothing is passed
unchecked.

The published schemas leave out what the API server checks in code: enumerated values
(a misspelt ``mountPropagation`` passes kubernetes-validate), Bidirectional propagation
only for privileged containers, a selector that must match its template's labels. Those
are checked here too.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy import kube
from tests.deploy.snapshot_schemas import SCHEMAS

KUBERNETES_VERSIONS = ("1.34.0", "1.37.0")

DOCS = [(path, i, doc) for path in kube.manifest_files() for i, doc in enumerate(kube.load(path))]
"""Every document, loaded once at collection (a file that does not parse fails collection)."""


def _id(path: Path, i: int, doc: kube.Doc) -> str:
    return f"{path.relative_to(kube.KUBE_DIR)}#{i}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def test_the_manifests_are_there() -> None:
    """Each kind the deployment needs has a manifest: a file left out of a commit fails here."""
    kinds = {doc["kind"] for _, _, doc in DOCS}
    needed = {"Namespace", "CSIDriver", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
              "RoleBinding", "DaemonSet", "Deployment", "StorageClass", "VolumeSnapshotClass", "Secret",
              "PersistentVolumeClaim", "Pod", "VolumeSnapshot"}
    assert needed <= kinds, f"missing: {sorted(needed - kinds)}"


@pytest.mark.parametrize("path", kube.manifest_files(), ids=lambda p: str(p.relative_to(kube.KUBE_DIR)))
def test_every_document_is_an_object(path: Path) -> None:
    """Each document names its apiVersion, kind and metadata.name, as kubectl requires."""
    docs = kube.load(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), doc
        assert isinstance(doc.get("metadata", {}).get("name"), str), doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path,i,doc", DOCS, ids=[_id(*d) for d in DOCS])
def test_every_document_validates(path: Path, i: int, doc: kube.Doc, version: str) -> None:
    """The document against the Kubernetes schema of its kind, or our schema for a CRD kind."""
    custom = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        jsonschema.Draft202012Validator.check_schema(custom)
        errors = sorted(jsonschema.Draft202012Validator(custom).iter_errors(doc), key=str)
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
        return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{'.'.join(map(str, exc.path))}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"no schema, so nothing checked it: {exc.message}")


ENUMS: dict[str, set[str]] = {
    "mountPropagation": {"None", "HostToContainer", "Bidirectional"},
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "protocol": {"TCP", "UDP", "SCTP"},
    "reclaimPolicy": {"Delete", "Retain"},
    "volumeBindingMode": {"Immediate", "WaitForFirstConsumer"},
    "fsGroupPolicy": {"None", "File", "ReadWriteOnceWithFSType"},
    "restartPolicy": {"Always", "OnFailure", "Never"},
}
"""Fields whose values the API server checks in code; the schemas say only "string"."""

HOST_PATH_TYPES = {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice",
                   "BlockDevice"}
ACCESS_MODES = {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}


@pytest.mark.parametrize("path,i,doc", DOCS, ids=[_id(*d) for d in DOCS])
def test_enumerated_values(path: Path, i: int, doc: kube.Doc) -> None:
    """Values the schemas cannot refuse: ``mountPropagation: Bidirectinal`` would pass them."""
    for where, node in kube.walk(doc):
        for key, allowed in ENUMS.items():
            if key in node and isinstance(node[key], str):
                assert node[key] in allowed, f"{'.'.join(where)}.{key}: {node[key]!r} is not one of {allowed}"
        if "hostPath" in node:
            assert node["hostPath"].get("type", "") in HOST_PATH_TYPES, f"{'.'.join(where)}.hostPath.type"
        if "accessModes" in node:
            assert set(node["accessModes"]) <= ACCESS_MODES, f"{'.'.join(where)}.accessModes"
    if doc["kind"] == "DaemonSet":
        assert doc["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") in {"RollingUpdate", "OnDelete"}
    if doc["kind"] == "Deployment":
        assert doc["spec"].get("strategy", {}).get("type", "RollingUpdate") in {"RollingUpdate", "Recreate"}
    if doc["kind"] == "CSIDriver":
        assert set(doc["spec"].get("volumeLifecycleModes", [])) <= {"Persistent", "Ephemeral"}


WORKLOADS = [doc for _, _, doc in DOCS if doc["kind"] in ("DaemonSet", "Deployment")]


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda d: d["metadata"]["name"])
def test_bidirectional_only_in_privileged_containers(workload: kube.Doc) -> None:
    """The API server refuses Bidirectional propagation in a container that is not privileged."""
    for c in kube.pod_spec(workload)["containers"]:
        privileged = c.get("securityContext", {}).get("privileged", False)
        for m in c.get("volumeMounts", []):
            if m.get("mountPropagation") == "Bidirectional":
                assert privileged, f"{c['name']}: {m['mountPath']} is Bidirectional, the container not privileged"


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda d: d["metadata"]["name"])
def test_selector_matches_the_template(workload: kube.Doc) -> None:
    """The API server refuses a DaemonSet or Deployment whose selector misses its own pods."""
    selector = workload["spec"]["selector"]["matchLabels"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda d: d["metadata"]["name"])
def test_names_within_a_pod_are_unique(workload: kube.Doc) -> None:
    """Container, volume, mount and port names: the API server refuses duplicates in a pod."""
    spec = kube.pod_spec(workload)
    names = [c["name"] for c in spec["containers"]]
    assert len(names) == len(set(names)), names
    vols = [v["name"] for v in spec.get("volumes", [])]
    assert len(vols) == len(set(vols)), vols
    ports = [p["name"] for c in spec["containers"] for p in c.get("ports", [])]
    assert len(ports) == len(set(ports)), ports
    assert all(len(p) <= 15 for p in ports), "a port name is at most 15 characters"
    for c in spec["containers"]:
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert len(mounts) == len(set(mounts)), f"{c['name']}: {mounts}"

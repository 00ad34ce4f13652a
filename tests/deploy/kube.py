"""Reading deploy/kubernetes/ for the tests: documents, pods, containers, flags, paths.

No cluster answers these tests, so what the kubelet and the API server would work out
(which host path a container path is, what ``$(VAR)`` in an argument becomes) is worked
out here, the same way, so that the tests can compare the results.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE_DIR = ROOT / "deploy" / "kubernetes"

Doc = dict[str, Any]

DRIVER = "csi.cfs.dev"
"""The CSI driver name of docs/DESIGN.md, "CSI"."""


def manifest_files() -> list[Path]:
    """Every manifest: the directory `kubectl apply -f` takes, and its subdirectories."""
    return sorted(p for p in KUBE_DIR.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))


def load(path: Path) -> list[Doc]:
    """The documents of one file, each a mapping.

    An empty document (a stray ``---``) is refused here, although kubectl skips it: it is
    a leftover, not something meant. A copy each time, so that no test can change what
    the next one reads.
    """
    return copy.deepcopy(_parse(path))


@functools.cache
def _parse(path: Path) -> list[Doc]:
    # PyYAML, like the YAML library kubectl uses, reads YAML 1.1: 0400 is octal (256).
    docs = list(yaml.safe_load_all(path.read_text()))
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ValueError(f"{path.name}: document {i} is {type(doc).__name__}, not a mapping")
    return docs


def all_docs() -> list[tuple[Path, Doc]]:
    return [(path, doc) for path in manifest_files() for doc in load(path)]


def by_kind(kind: str, docs: list[tuple[Path, Doc]] | None = None) -> list[Doc]:
    return [doc for _, doc in (docs if docs is not None else all_docs()) if doc["kind"] == kind]


def one(kind: str, name: str | None = None) -> Doc:
    """The one object of ``kind`` (and ``name``): a test that finds two must say which it means."""
    found = [d for d in by_kind(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def image_name(c: Doc) -> str:
    """The image's repository without registry or tag: ``csi-provisioner`` for a sidecar."""
    return str(c["image"]).rsplit("/", 1)[-1].split(":", 1)[0]


def by_image(spec: Doc, name: str) -> Doc:
    found: list[Doc] = [c for c in spec["containers"] if image_name(c) == name]
    assert len(found) == 1, f"expected one container of the image {name!r}, found {len(found)}"
    return found[0]


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def env_values(c: Doc) -> dict[str, str | None]:
    """The container's environment: a literal value, or None for one the kubelet fills in."""
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def expand(c: Doc, arg: str, fill: dict[str, str] | None = None) -> str:
    """``arg`` as the kubelet passes it: ``$(VAR)`` replaced from the container's env.

    A variable the env does not define stays as it is, which is what the kubelet does and
    why ``test_arguments_name_defined_variables`` exists. Values the kubelet fills in at
    run time (a Secret's key, the pod's IP) come from ``fill``; without it they stay too.
    """
    env = env_values(c)

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in env:
            return m.group(0)
        value = env[name]
        if value is None:
            if fill is None:
                return m.group(0)
            assert name in fill, f"no stand-in value for {name}"
            return fill[name]
        return value

    return _VAR.sub(sub, arg)


def variables(arg: str) -> list[str]:
    return _VAR.findall(arg)


def args(c: Doc, fill: dict[str, str] | None = None) -> list[str]:
    return [expand(c, a, fill) for a in c.get("command", []) + c.get("args", [])]


def flag(c: Doc, name: str) -> str:
    """The value of ``--name=VALUE`` (or ``--name VALUE``), given exactly once."""
    argv = args(c)
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    values += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
    assert len(values) == 1, f"container {c['name']!r}: {name} given {len(values)} times"
    return values[0]


def has_flag(c: Doc, name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in args(c))


def socket_path(endpoint: str) -> str:
    """The file of a CSI endpoint: ``unix:///csi/csi.sock`` and ``/csi/csi.sock`` alike."""
    path = endpoint.removeprefix("unix://")
    assert path.startswith("/"), f"endpoint {endpoint!r} is not an absolute unix socket path"
    return path


@dataclass(frozen=True)
class Location:
    """Where a container path really is: inside which pod volume, at which relative path."""

    volume: str
    rel: str


def locate(spec: Doc, c: Doc, path: str) -> Location:
    """The pod volume and relative path behind ``path`` in container ``c``: its deepest mount."""
    best: tuple[str, Doc] | None = None
    for m in c.get("volumeMounts", []):
        mount = m["mountPath"].rstrip("/") or "/"
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) > len(best[0])):
            best = (mount, m)
    assert best is not None, f"container {c['name']!r} has no volume mounted over {path}"
    mount, m = best
    rel = path[len(mount):].lstrip("/")
    if m.get("subPath"):
        rel = f"{m['subPath']}/{rel}".rstrip("/")
    assert m["name"] in volumes(spec), f"container {c['name']!r} mounts {m['name']!r}, which the pod lacks"
    return Location(m["name"], rel)


def volumes(spec: Doc) -> dict[str, Doc]:
    return {v["name"]: v for v in spec.get("volumes", [])}


def host_path(spec: Doc, loc: Location) -> str | None:
    """The host path of ``loc`` when its volume is a hostPath, else None."""
    vol = volumes(spec)[loc.volume]
    if "hostPath" not in vol:
        return None
    base = str(vol["hostPath"]["path"]).rstrip("/")
    return f"{base}/{loc.rel}" if loc.rel else base


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Doc]]:
    """Every mapping in a document, with the keys that lead to it."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, path + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, path + (str(i),))

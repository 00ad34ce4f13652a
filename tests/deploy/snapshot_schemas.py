"""JSON schemas for the two snapshot kinds our manifests use, which kubernetes-validate lacks.

VolumeSnapshotClass and VolumeSnapshot (``snapshot.storage.k8s.io/v1``) are custom
resources: the API server knows them only once the cluster has installed the CRDs of
kubernetes-csi/external-snapshotter, and kubernetes-validate ships schemas for built-in
kinds alone. These schemas are written here from what the CRDs of external-snapshotter
v8.6.0 (``client/config/crd/``, the version whose sidecar 04-controller.yaml runs) say
about the v1 version:

VolumeSnapshotClass
    ``driver`` (string) and ``deletionPolicy`` (``Delete`` or ``Retain``) required;
    ``parameters`` a map of strings; nothing else at the top level but apiVersion, kind,
    metadata.
VolumeSnapshot
    ``spec`` required, ``spec.source`` required; the source names exactly one of
    ``persistentVolumeClaimName`` and ``volumeSnapshotContentName`` (a CEL rule in the
    CRD, a ``oneOf`` here); ``spec.volumeSnapshotClassName`` a string that is not empty
    when given (a CEL rule too).

Unknown fields are refused (``additionalProperties: false``): the API server prunes
them from a structural schema, and kubectl's default field validation (strict) makes
that an error, so a misspelt field fails there as here. What is not checked: the
immutability rules (they concern updates), the status, and ObjectMeta beyond the name,
namespace, labels and annotations these manifests use.
"""

from __future__ import annotations

from typing import Any

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}

_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS_SUBDOMAIN},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}

VOLUME_SNAPSHOT_CLASS: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "driver", "deletionPolicy"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
        "kind": {"const": "VolumeSnapshotClass"},
        "metadata": _METADATA,
        "driver": {"type": "string", "minLength": 1},
        "deletionPolicy": {"enum": ["Delete", "Retain"]},
        "parameters": _STRING_MAP,
    },
}

VOLUME_SNAPSHOT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
        "kind": {"const": "VolumeSnapshot"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["source"],
            "additionalProperties": False,
            "properties": {
                "volumeSnapshotClassName": {"type": "string", "minLength": 1},
                "source": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "persistentVolumeClaimName": {"type": "string", "minLength": 1},
                        "volumeSnapshotContentName": {"type": "string", "minLength": 1},
                    },
                    "oneOf": [
                        {"required": ["persistentVolumeClaimName"]},
                        {"required": ["volumeSnapshotContentName"]},
                    ],
                },
            },
        },
    },
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): VOLUME_SNAPSHOT_CLASS,
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"): VOLUME_SNAPSHOT,
}
"""Schemas by (apiVersion, kind), for the kinds kubernetes-validate has none of."""

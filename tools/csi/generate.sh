#!/usr/bin/env bash
# Generate the Python stubs of tools/csi/csi.proto into tools/csi/generated/: csi_pb2.py
# (the messages), csi_pb2.pyi (their types, for mypy) and csi_pb2_grpc.py (the services).
# Never committed (.gitignore), never edited: run again after changing csi.proto.
# Run by tools/bootstrap.sh and the Dockerfile. Usage: tools/csi/generate.sh [PYTHON]
# (a Python with grpcio-tools; default .venv/bin/python).
#
# protoc names a generated module's imports after the proto's path, so the proto is seen
# at the path of the package it is generated into (--proto_path=VIRTUAL=REAL): the
# service module then imports tools.csi.generated.csi_pb2, not a top-level csi_pb2.
set -euo pipefail
cd "$(dirname "$0")/../.."
python="${1:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m grpc_tools.protoc --proto_path=tools/csi/generated=tools/csi \
    --python_out="$work" --pyi_out="$work" --grpc_python_out="$work" tools/csi/generated/csi.proto
out="$work/tools/csi/generated"
echo '"""Stubs generated from tools/csi/csi.proto by tools/csi/generate.sh: not committed, not edited."""' \
    > "$out/__init__.py"
rm -rf tools/csi/generated
mv "$out" tools/csi/generated

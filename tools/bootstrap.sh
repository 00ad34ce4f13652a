#!/usr/bin/env bash
# Install what cfs needs on a Debian/Ubuntu host and the project itself into ./.venv.
# Idempotent: a second run installs nothing new. Usage: tools/bootstrap.sh [--test | --bench]
# (--test: what the tests need too, and mount(8)'s helper linked to this checkout, run as
# root; --bench: what the benchmark suite needs, fio and bindfs)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv)
if [ "${1:-}" = "--test" ]; then
    packages+=(attr python3 fio bindfs)  # tests/posix runs /usr/bin/python3 as other users; fio, bindfs: the bench tests
    packages+=(git tar)  # tests/posix/test_programs.py runs them on a cfs mount
    packages+=(etcd-server iproute2)  # tests/cluster: a real etcd; network namespaces for the partition test
    packages+=(systemd)  # tests/deploy: systemd-analyze verify of deploy/systemd/cfs.service
fi
if [ "${1:-}" = "--bench" ]; then
    packages+=(fio bindfs)
fi
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating the virtualenv .venv" >&2
    python3 -m venv .venv
fi
extra="[csi-build]"
[ "${1:-}" = "--test" ] && extra="[csi-build,test]"
# The first run downloads and builds the Python packages (pyfuse3 compiles against
# libfuse3): half a minute or more, so say so rather than sit silent.
echo "bootstrap: installing cfs and its Python packages into .venv (about half a minute the first time, seconds after)" >&2
.venv/bin/pip install --quiet --disable-pip-version-check -e ".${extra}"
echo "bootstrap: generating the CSI plugin's gRPC stubs" >&2
tools/csi/generate.sh .venv/bin/python  # the CSI plugin's gRPC stubs (not committed)
if [ "${1:-}" = "--test" ] && [ "$(id -u)" -eq 0 ]; then
    tools/install_mount_helper.sh  # tests/mount/test_mount_helper.py runs mount(8)
fi

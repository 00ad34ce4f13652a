#!/usr/bin/env bash
# Install cfs and its mount(8) helper, start the node daemon in the background, mount a demo volume, print its path.
# Usage (as root): tools/demo.sh [MOUNT_DIR]   (default /mnt/cfs-demo)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: installing cfs (tools/bootstrap.sh)" >&2
tools/bootstrap.sh
tools/install_mount_helper.sh  # mount -t cfs, and fstab's fuse.cfs lines
mountpoint="${1:-/mnt/cfs-demo}"
data_dir="${CFS_DATA_DIR:-/var/lib/cfs}"
cfs=".venv/bin/cfs"

if ! "$cfs" --data-dir "$data_dir" status >/dev/null 2>&1; then
    echo "demo: starting the node daemon (data in $data_dir)" >&2
    mkdir -p "$data_dir"
    nohup .venv/bin/cfs-mountd --data-dir "$data_dir" >>"$data_dir/mountd.log" 2>&1 </dev/null &
    for _ in $(seq 100); do
        "$cfs" --data-dir "$data_dir" status >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$cfs" --data-dir "$data_dir" status >/dev/null || { tail -20 "$data_dir/mountd.log" >&2; exit 1; }
    echo "cfs-mountd running (pid $(cat "$data_dir/mountd.lock"), log $data_dir/mountd.log)" >&2
fi
if ! "$cfs" --data-dir "$data_dir" volume inspect demo >/dev/null 2>&1; then
    echo "demo: creating the volume demo" >&2
    "$cfs" --data-dir "$data_dir" volume create demo >/dev/null
fi
if ! grep -q " $mountpoint fuse.cfs " /proc/mounts; then
    echo "demo: mounting demo" >&2
    mkdir -p "$mountpoint"
    "$cfs" --data-dir "$data_dir" mount demo "$mountpoint" >/dev/null
fi
echo "$mountpoint"

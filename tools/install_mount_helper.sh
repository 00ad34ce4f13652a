#!/usr/bin/env bash
# Link mount(8)'s helpers for cfs to this checkout's script: /sbin/mount.cfs (mount -t cfs)
# and /sbin/mount.fuse.cfs (mount -t fuse.cfs, fstab), both to .venv/bin/mount.cfs.
# util-linux looks for helpers in /sbin (on merged-usr Debian, /sbin is /usr/sbin).
# Idempotent; a link to another checkout's script is moved here, a file that is not a
# link is left alone. Usage (as root, after tools/bootstrap.sh): tools/install_mount_helper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
script="$(pwd)/.venv/bin/mount.cfs"
[ -x "$script" ] || { echo "install_mount_helper: no $script (run tools/bootstrap.sh)" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ]; then
    echo "install_mount_helper: need root to link /sbin/mount.cfs" >&2
    exit 1
fi
for name in mount.cfs mount.fuse.cfs; do
    link="/sbin/$name"
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        echo "install_mount_helper: $link is a file, not a link: left alone" >&2
        continue
    fi
    if [ "$(readlink "$link" || true)" != "$script" ]; then
        ln -sfn "$script" "$link"
        echo "install_mount_helper: $link -> $script" >&2
    fi
done

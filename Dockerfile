# The cfs node daemon: volumes over FUSE, the control socket and the Docker volume plugin.
#
#   docker build -t cfs .                                   # on python:3.11-slim
#   docker build --build-arg BASE_IMAGE=my/debian-python .  # any Debian-based image with python3 >= 3.11
#   docker build --build-arg PIP_OPTIONS="--no-index --find-links /src/wheels" .   # offline, from ./wheels
#
# How to run it (it needs /dev/fuse, CAP_SYS_ADMIN and a shared mount of /var/lib/cfs):
# README.md, "Docker".
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG PIP_OPTIONS=""

# fuse3 (the kernel interface's tools), and what building pyfuse3 takes: libfuse3-dev,
# pkg-config, gcc, and Python's headers and venv where the base lacks them (Debian's python3).
# Only what is missing is installed, so a base that has it all builds without a network.
RUN set -eu; missing=""; \
    for p in fuse3 libfuse3-dev pkg-config gcc; do \
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"; \
    done; \
    python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_path("include") + "/Python.h"))' \
        || missing="$missing python3-dev"; \
    python3 -c 'import ensurepip' 2>/dev/null || missing="$missing python3-venv"; \
    if [ -n "$missing" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
        rm -rf /var/lib/apt/lists/*; \
    fi

# The package twice: first with grpcio-tools (the csi-build extra), which generates the CSI
# plugin's gRPC stubs from tools/csi/csi.proto (never committed), then again with them in it;
# grpcio-tools is not needed to run and goes.
COPY . /src
RUN python3 -m venv /opt/cfs \
    && /opt/cfs/bin/pip install --no-cache-dir --disable-pip-version-check $PIP_OPTIONS "/src[csi-build]" \
    && /src/tools/csi/generate.sh /opt/cfs/bin/python \
    && /opt/cfs/bin/pip install --no-cache-dir --disable-pip-version-check $PIP_OPTIONS --no-deps --force-reinstall /src \
    && /opt/cfs/bin/pip uninstall --yes --disable-pip-version-check grpcio-tools \
    && /opt/cfs/bin/python -c "import tools.csi.generated.csi_pb2_grpc" \
    && rm -rf /src

ENV PATH=/opt/cfs/bin:$PATH
# State in /var/lib/cfs (bind it from the host, rshared); the plugin socket in
# /run/docker/plugins/cfs.sock (bind the host's /run/docker/plugins).
ENTRYPOINT ["cfs-mountd"]

"""The one C extension of cfs, cfs.fuse._lowlevel (see cfs/fuse/lowlevel.py); the rest of
the project is described in pyproject.toml. It builds against libfuse 3's headers, as
pyfuse3 itself does: tools/bootstrap.sh installs them (libfuse3-dev, pkg-config, gcc)."""

import subprocess

from setuptools import Extension, setup


def _fuse3_flags() -> list[str]:
    try:
        out = subprocess.run(["pkg-config", "--cflags", "fuse3"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ["-I/usr/include/fuse3"]
    return out.stdout.split()


setup(ext_modules=[Extension(
    "cfs.fuse._lowlevel", ["cfs/fuse/_lowlevel.c"],
    extra_compile_args=[*_fuse3_flags(), "-Wall", "-Wextra", "-Wno-unused-parameter"],
    libraries=["fuse3"],
)])

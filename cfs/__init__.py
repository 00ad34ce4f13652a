"""cfs: a container filesystem whose volumes outlive their containers.

The library is importable without FUSE: ``cfs.store`` owns LMDB, ``cfs.fs`` owns
filesystem semantics, ``cfs.fuse`` (the only pyfuse3 importer) adapts them to the kernel.
"""

__version__ = "0.1.0"

"""The FUSE edge: the only package that imports pyfuse3."""

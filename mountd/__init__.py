"""The cfs node daemon: hosts the node's FUSE session, its volumes' mounts and the control API."""

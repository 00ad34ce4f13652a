"""``cfs csi``: the Container Storage Interface plugin (docs/DESIGN.md, "CSI").

A gRPC server on a unix socket that serves CSI's Identity, Controller and Node services
as a thin adapter over the node daemon's control socket, as the command line is.
``generated`` holds the stubs of ``csi.proto``, made by ``generate.sh``, never committed.
"""

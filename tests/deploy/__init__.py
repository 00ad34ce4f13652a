"""Checks of deploy/: the Kubernetes manifests and the Nomad job, without a cluster."""

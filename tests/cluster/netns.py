"""Network namespaces for partition tests: each node on links of its own that a test can cut.

Layout (``TAG`` is random per ``Network``, so parallel or leftover runs never collide)::

    root namespace: etcd on ETCD_HOST (on a veth pair of its own), the test process
        | cfe<TAG><n>  10.78.<i>.1/30      one veth per node: the node's way to etcd
        | etcd0        10.78.<i>.2/30      (route to ETCD_HOST through it)
    node namespace cfs-<TAG>-<n>: the daemon (started through ``nsenter --net``, so it
        keeps the root mount namespace and its FUSE mounts are the test's), lo
        | peer0        10.77.0.<i+1>/24    the node's address for peers
        | p<n>                              a port of the bridge br0
    switch namespace cfs-<TAG>-sw: br0. The bridge lives in a namespace of its own so
        that the host's firewall (bridged traffic may pass its FORWARD chain) never sees it.

``cut_peers``/``heal_peers`` take a node's bridge port down and up (it loses every peer,
keeps etcd); ``cut_etcd``/``heal_etcd`` do the same with its etcd link. ``close``
deletes every namespace and link made, whatever state they are in.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ETCD_HOST = "10.78.0.1"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def available() -> str | None:
    """None if namespaces, veths and bridges can be made here; else why not."""
    if os.geteuid() != 0:
        return "needs root"
    probe = f"cfs-probe-{os.getpid()}"
    try:
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"ip netns add failed: {made.stderr.strip()}"
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot make a bridge: {bridge.stderr.strip()}"
        veth = _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1", check=False)
        if veth.returncode != 0:
            return f"cannot make a veth pair: {veth.stderr.strip()}"
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip is not usable: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)


class Network:
    def __init__(self) -> None:
        self.tag = os.urandom(2).hex()
        self.switch = f"cfs-{self.tag}-sw"
        self.dummy = f"cfd{self.tag}"
        self.namespaces: list[str] = []
        self.root_links: list[str] = []
        self.index: dict[str, int] = {}
        self.etcd_host = ETCD_HOST

    def setup(self) -> Network:
        self.root_links.append(self.dummy)
        # a veth pair stands in for a dummy interface (not every kernel has the dummy driver)
        _ip("link", "add", self.dummy, "type", "veth", "peer", "name", f"cfD{self.tag}")
        _ip("addr", "add", f"{ETCD_HOST}/32", "dev", self.dummy)
        _ip("link", "set", self.dummy, "up")
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def namespace(self, node: str) -> str:
        return f"cfs-{self.tag}-{node}"

    def attach(self, node: str) -> tuple[str, list[str]]:
        """Make ``node``'s namespace and links; returns its peer address and the command
        prefix that runs a program in its network namespace."""
        i = self.index[node] = len(self.index) + 1
        ns = self.namespace(node)
        self._add_namespace(ns)
        root_side = f"cfe{self.tag}{node}"
        self.root_links.append(root_side)
        _ip("link", "add", root_side, "type", "veth", "peer", "name", "etcd0", "netns", ns)
        _ip("addr", "add", f"10.78.{i}.1/30", "dev", root_side)
        _ip("link", "set", root_side, "up")
        _ip("-n", ns, "addr", "add", f"10.78.{i}.2/30", "dev", "etcd0")
        _ip("-n", ns, "link", "set", "etcd0", "up")
        _ip("-n", ns, "route", "add", f"{ETCD_HOST}/32", "via", f"10.78.{i}.1")
        _ip("-n", ns, "link", "add", "peer0", "type", "veth", "peer", "name", f"p{node}", "netns", self.switch)
        _ip("-n", self.switch, "link", "set", f"p{node}", "master", "br0")
        _ip("-n", self.switch, "link", "set", f"p{node}", "up")
        _ip("-n", ns, "addr", "add", f"10.77.0.{i + 1}/24", "dev", "peer0")
        _ip("-n", ns, "link", "set", "peer0", "up")
        return f"10.77.0.{i + 1}", ["nsenter", f"--net={Path('/run/netns') / ns}"]

    def cut_peers(self, node: str) -> None:
        _ip("-n", self.switch, "link", "set", f"p{node}", "down")

    def heal_peers(self, node: str) -> None:
        _ip("-n", self.switch, "link", "set", f"p{node}", "up")

    def cut_etcd(self, node: str) -> None:
        _ip("link", "set", f"cfe{self.tag}{node}", "down")

    def heal_etcd(self, node: str) -> None:
        _ip("link", "set", f"cfe{self.tag}{node}", "up")

    def close(self) -> None:
        """Delete every namespace (their veth ends go with them) and root-side link."""
        for ns in reversed(self.namespaces):
            _ip("netns", "del", ns, check=False)
        for link in self.root_links:
            _ip("link", "del", link, check=False)
        self.namespaces.clear()
        self.root_links.clear()

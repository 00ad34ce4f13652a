"""The import rules of docs/DESIGN.md ("Map"), checked on the source, so that a change
that breaks one fails here rather than in review.

* lmdb is imported by ``cfs.store`` alone, and no module outside it touches an LMDB
  transaction or cursor: they read through ``View`` and write through ``Op``.
* The daemon and the tools reach the store through its door, ``NodeRecords``: they
  open no store operation, view or snapshot themselves, and import none of the
  store's row-level modules.
* pyfuse3 is imported by ``cfs.fuse`` alone.
* Imports flow one way: tools -> mountd -> cfs.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("cfs", "mountd", "tools")

LMDB_HANDLES = {"txn", "cursor", "dbs", "batch", "_batch", "set_range", "iternext", "begin"}
"""Attributes that mean an LMDB transaction or cursor is being handled."""

STORE_CALLS = {"op", "view", "reading"}
"""Store methods that open an operation, a view or a snapshot."""

STORE_DOOR = {"NodeRecords", "CopySource", "Removal", "Store", "StoreConfig", "Table"}
"""What mountd and tools may import from cfs.store: the door, and opening a store."""


def modules(*packages: str) -> Iterator[tuple[str, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path))


def imported(tree: ast.Module) -> Iterator[tuple[str, list[str], int]]:
    """(module, names imported from it, line) of every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names], node.lineno


def attributes(tree: ast.Module) -> Iterator[tuple[str, int, bool]]:
    """(attribute, line, whether it is called) of every attribute access."""
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            yield node.attr, node.lineno, id(node) in called


def test_the_sources_are_found() -> None:
    found = {name for name, _tree in modules(*PRODUCT)}
    assert {"cfs/store/store.py", "mountd/daemon.py", "tools/cli.py", "cfs/check.py"} <= found


def test_lmdb_is_imported_by_the_store_alone() -> None:
    bad = [f"{name}:{line}" for name, tree in modules(*PRODUCT) if not name.startswith("cfs/store/")
           for module, _names, line in imported(tree) if module.split(".")[0] == "lmdb"]
    assert bad == []


def test_no_module_outside_the_store_touches_a_transaction_or_cursor() -> None:
    bad = [f"{name}:{line} .{attr}" for name, tree in modules(*PRODUCT) if not name.startswith("cfs/store/")
           for attr, line, _called in attributes(tree) if attr in LMDB_HANDLES
           and not (attr == "txn" and name.startswith("cfs/coord/"))]  # etcd's transactions, not LMDB's
    assert bad == []


def test_the_daemon_and_the_tools_go_through_node_records() -> None:
    bad = []
    for name, tree in modules("mountd", "tools"):
        for module, names, line in imported(tree):
            if module.startswith("cfs.store.") or (module == "cfs.store" and not set(names) <= STORE_DOOR):
                bad.append(f"{name}:{line} imports {module} {names}")
        bad += [f"{name}:{line} calls .{attr}()" for attr, line, called in attributes(tree)
                if called and attr in STORE_CALLS]
    assert bad == []


def test_pyfuse3_is_imported_by_the_fuse_package_alone() -> None:
    bad = [f"{name}:{line}" for name, tree in modules(*PRODUCT) if not name.startswith("cfs/fuse/")
           for module, _names, line in imported(tree) if module.split(".")[0] == "pyfuse3"]
    assert bad == []


@pytest.mark.parametrize("package, below", [("cfs", ("mountd", "tools")), ("mountd", ("tools",))])
def test_imports_flow_one_way(package: str, below: tuple[str, ...]) -> None:
    bad = [f"{name}:{line} imports {module}" for name, tree in modules(package)
           for module, _names, line in imported(tree) if module.split(".")[0] in below]
    assert bad == []

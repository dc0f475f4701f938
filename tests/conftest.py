"""Shared fixtures: a private test node and the real containerd inside it.

`node` gives each test a fresh `Node` under its tmp_path; `containerd` and
`containerd_nogc` start containerd in that node and stop it after the test,
even when the test fails. Tests that use any of them are marked ``node``
(registered in pyproject.toml), so ``-m "not node"`` skips them; they are
skipped with the reason when the machine cannot run them (not root, a tool
missing: install with scripts/install-system-deps.sh).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig.containerd import Containerd
from tests.rig.node import Node, process_alive
from tests.rig.rootfs import minbase_rootfs

# Fixtures that need a private node, and the tools each one needs.
_NODE_FIXTURES = {
    "node": ("unshare", "nsenter", "containerd"),
    "containerd": ("unshare", "nsenter", "containerd", "ctr", "runc"),
    "containerd_nogc": ("unshare", "nsenter", "containerd", "ctr", "runc"),
    "minbase_root": ("debootstrap", "unshare", "chroot"),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a node fixture with the `node` marker."""
    for item in items:
        if set(getattr(item, "fixturenames", ())) & _NODE_FIXTURES.keys():
            item.add_marker(pytest.mark.node)


def _require(fixture: str) -> None:
    """Skip the test, naming what is missing, unless fixture can run here."""
    if os.geteuid() != 0:
        pytest.skip(f"fixture {fixture!r} needs root (mount namespaces, overlayfs)")
    missing = [tool for tool in _NODE_FIXTURES[fixture] if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"fixture {fixture!r} needs {', '.join(missing)}: "
            "run scripts/install-system-deps.sh"
        )


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A fresh private node whose backing folders live in tmp_path/node."""
    _require("node")
    with Node(tmp_path / "node") as started:
        yield started


@pytest.fixture
def containerd(node: Node) -> Iterator[Containerd]:
    """containerd running in `node`, GC on (stopped after the test)."""
    _require("containerd")
    yield from _running_containerd(node, gc=True)


@pytest.fixture
def containerd_nogc(node: Node) -> Iterator[Containerd]:
    """containerd running in `node` with automatic GC runs off."""
    _require("containerd_nogc")
    yield from _running_containerd(node, gc=False)


def _running_containerd(node: Node, *, gc: bool) -> Iterator[Containerd]:
    """Start containerd, hand it over, stop it, and check that it is gone."""
    started = Containerd(node, gc=gc).start()
    pid = started.pid
    try:
        yield started
    finally:
        started.stop()
    assert not process_alive(pid), f"containerd (pid {pid}) outlived its fixture"


@pytest.fixture(scope="session")
def minbase_root() -> Path:
    """The cached bookworm minbase root with python3 (built once, ~35 s)."""
    _require("minbase_root")
    return minbase_rootfs()

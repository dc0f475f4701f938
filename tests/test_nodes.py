"""Which nodes can run the debug pod, judged from their Node objects first."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kubectl_crilinks import nodes
from tests.rig.fakeapi import make_node


def node(name: str = "node-a", **overrides: Any) -> dict[str, Any]:
    return make_node(
        name,
        ready=overrides.pop("ready", True),
        address="10.0.0.1",
        conditions=overrides.pop("conditions", None),
        node_info=overrides.pop("node_info", None),
        labels=None,
    )


def pressed(kind: str) -> dict[str, Any]:
    found = node()
    for condition in found["status"]["conditions"]:
        if condition["type"] == kind:
            condition["status"] = "True"
    return found


def test_a_ready_linux_node_passes() -> None:
    nodes.check(node(), critical=False)


@pytest.mark.parametrize("ready", [False, "Unknown"])
def test_a_node_not_ready_is_refused_with_the_way_by_hand(ready: Any) -> None:
    with pytest.raises(nodes.NodeUnavailable) as caught:
        nodes.check(node(ready=ready), critical=True)
    message = str(caught.value)
    assert "node 'node-a' is NotReady" in message
    assert "kubectl crilinks inspect node/node-a --emit-agent" in message


def test_a_windows_node_is_refused() -> None:
    with pytest.raises(nodes.NodeUnavailable, match="runs Windows"):
        nodes.check(node(node_info={"operatingSystem": "windows"}), critical=True)


@pytest.mark.parametrize("kind", ["DiskPressure", "PIDPressure"])
def test_pressure_refuses_a_pod_that_is_not_critical(kind: str) -> None:
    with pytest.raises(nodes.NodeUnavailable, match=f"under {kind}"):
        nodes.check(pressed(kind), critical=False)


def test_pressure_lets_a_critical_pod_try_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kubectl_crilinks.nodes"):
        nodes.check(pressed("DiskPressure"), critical=True)
    assert "pulling its image may fail" in caplog.text


def test_memory_pressure_alone_does_not_stop_the_debug_pod() -> None:
    nodes.check(pressed("MemoryPressure"), critical=False)


@pytest.mark.parametrize(("reported", "runtime"), [
    ("containerd://1.6.20", "containerd"),
    ("cri-o://1.28.1", "cri-o"),
    ("docker://24.0.7", None),
    ("", None),
])
def test_runtime_is_read_from_the_node_report(reported, runtime):
    node = {"status": {"nodeInfo": {"containerRuntimeVersion": reported}}}

    assert nodes.runtime(node) == runtime

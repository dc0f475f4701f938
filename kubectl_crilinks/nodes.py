"""Whether a node can run the debug pod at all, judged from its Node object first.

Three states make a debug pod pointless or impossible, and each is visible in the Node
before anything is created:

- a Windows node: the agent reads Linux runtimes' storage (containerd's snapshots,
  containers/storage), which a Windows node does not have;
- a node that is not Ready (``Ready`` is ``False`` or ``Unknown``): its kubelet does
  not start new pods, so the debug pod would wait until ``--timeout``;
- a node under disk or PID pressure: the kubelet's eviction manager admits only
  critical pods. The debug pod is critical in ``kube-system`` (it then gets the
  ``system-node-critical`` priority class), so there it is tried, with a warning that
  pulling its image may fail on a full disk; elsewhere the node is reported at once.

Where no pod can start, the way out is the agent by hand: ``--emit-agent`` prints it
as one script to run in a shell on the node, and ``render`` turns its output into the
usual report. The messages say so with the exact commands.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from kubectl_crilinks.errors import DebugPodError

logger = logging.getLogger(__name__)

PRESSURES: Final = ("DiskPressure", "PIDPressure")
"""Conditions under which the kubelet admits only critical pods (memory pressure
refuses only BestEffort pods, and the debug pod has requests)."""


class NodeUnavailable(DebugPodError):
    """Raised when a node cannot run the debug pod: Windows, NotReady, pressure."""


def by_hand(node: str) -> str:
    """Return the commands that inspect ``node`` without a debug pod."""
    return (
        f"inspect it by hand instead: kubectl crilinks inspect node/{node} "
        f"--emit-agent > crilinks-agent.py, copy that file to the node, run "
        f"'sudo python3 crilinks-agent.py > {node}.jsonl' there, then here: "
        f"kubectl crilinks render {node}.jsonl"
    )


RUNTIMES = {"containerd": "containerd", "cri-o": "cri-o"}
"""Runtimes the agent reads, by the scheme of ``nodeInfo.containerRuntimeVersion``."""


def runtime(node: dict[str, Any]) -> str | None:
    """Return the node's container runtime (``containerd``, ``cri-o``) if it says."""
    version = ((node.get("status") or {}).get("nodeInfo") or {}).get(
        "containerRuntimeVersion"
    ) or ""
    return RUNTIMES.get(str(version).partition("://")[0])


def check(node: dict[str, Any], *, critical: bool) -> None:
    """Raise NodeUnavailable when ``node`` cannot run the debug pod; warn if it may not.

    ``critical`` says whether the debug pod gets a critical priority class (it does
    in kube-system), which the kubelet admits even under disk pressure.
    """
    meta, status = node.get("metadata") or {}, node.get("status") or {}
    name = str(meta.get("name") or "?")
    system = (status.get("nodeInfo") or {}).get("operatingSystem") or (
        meta.get("labels") or {}
    ).get("kubernetes.io/os")
    if system == "windows":
        raise NodeUnavailable(
            f"node {name!r} runs Windows: crilinks reads the storage of Linux "
            "container runtimes only (containerd snapshots, containers/storage), "
            "so there is nothing it can inspect on it"
        )

    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = conditions.get("Ready") or {}
    if ready.get("status") != "True":
        why = ": ".join(
            str(x) for x in (ready.get("reason"), ready.get("message")) if x
        )
        raise NodeUnavailable(
            f"node {name!r} is NotReady (Ready={ready.get('status', 'Unknown')}"
            f"{', ' + why if why else ''}): its kubelet starts no new pod; check it "
            f"with: kubectl describe node {name}, or {by_hand(name)}"
        )

    pressed = [
        kind for kind in PRESSURES if conditions.get(kind, {}).get("status") == "True"
    ]
    if pressed and not critical:
        raise NodeUnavailable(
            f"node {name!r} is under {' and '.join(pressed)}: its kubelet admits only "
            "critical pods; run the debug pod where it gets the system-node-critical "
            f"priority with --agent-namespace kube-system, or {by_hand(name)}"
        )
    if pressed:
        logger.warning(
            "node %s is under %s: the debug pod is critical and should be admitted, "
            "but pulling its image may fail if the disk is full (then: %s)",
            name,
            " and ".join(pressed),
            by_hand(name),
        )

"""What one agent run is asked to inspect, and how gently."""

from __future__ import annotations

import dataclasses
from typing import Final

DEFAULT_TIME_BUDGET: Final = 300.0
"""Seconds after which the agent stops walking and reports what it did not read."""


@dataclasses.dataclass(frozen=True)
class Options:
    """One inspection request, the same whether it comes from argv or in-process.

    ``scope`` is ``pod`` (the containers of ``pod``, or every CRI container when
    ``pod`` is None) or ``node`` (the node-wide audits, plus every container's root
    when ``containers`` is set). ``host_root`` is where the node's ``/`` is seen (``/host`` in the debug pod, ``/``
    with ``--local``). ``proc_root`` is the node's process table, or ``None`` for a
    mounted disk with no running system behind it.
    """

    host_root: str = "/"
    proc_root: str | None = "/proc"
    node: str | None = None
    pod: str | None = None
    namespace: str | None = None
    container: str | None = None
    scope: str = "pod"
    runtime: str | None = None
    """The runtime the node reports to Kubernetes; the agent confirms it on disk."""
    containers: bool = False
    time_budget: float = DEFAULT_TIME_BUDGET
    progress_interval: float = 1.0
    gentle: bool = True

"""The pods and containers the node's runtimes know, and which containers run.

The kubelet's folders (volumes, pod logs, log links) are named by pod UID, pod name
and container ID; judging them needs the runtimes' side of the story. Every CRI
container carries its pod's name, namespace and UID (containerd: the
``io.kubernetes.pod.*`` labels; CRI-O: its container metadata), sandboxes included,
so a UID that no runtime knows belongs to a pod that is gone.

A containerd container *runs* when its task bundle under
``<state>/io.containerd.runtime.v2.task/<namespace>/<id>`` names an ``init.pid`` that
is a live process in the node's process table. Without a process table (a mounted
disk) running is unknown (None), and checks that need it stay silent.

``complete`` is False unless every runtime store on the node was read: a check must
not call a pod gone because the one runtime that knew it could not be read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Final, Iterable

from . import cstorage
from .containerd import CRI_NAMESPACE
from .hostview import HostView, ScopeError

logger = logging.getLogger(__name__)

POD_UID: Final = "io.kubernetes.pod.uid"
TASK_DIR: Final = "io.containerd.runtime.v2.task"


@dataclasses.dataclass(frozen=True)
class Known:
    """One container (or sandbox) a runtime knows, with its pod."""

    id: str
    runtime: str
    pod: str | None
    namespace: str | None
    uid: str | None
    name: str | None
    sandbox: bool
    running: bool | None


@dataclasses.dataclass(frozen=True)
class Census:
    """Every container the node's runtimes know; see the module docstring."""

    containers: tuple[Known, ...]
    complete: bool

    def uids(self) -> set[str]:
        return {c.uid for c in self.containers if c.uid}

    def of_pod(self, pod: str, namespace: str | None) -> list[Known]:
        """Return the containers of a pod (any namespace when ``namespace`` is None)."""
        return [
            c
            for c in self.containers
            if c.pod == pod and (namespace is None or c.namespace == namespace)
        ]

    def matching_id(self, prefix: str) -> list[Known]:
        """Return the containers whose ID starts with ``prefix`` (from a cut name)."""
        return [c for c in self.containers if prefix and c.id.startswith(prefix)]


def census(host: HostView, proc_root: str | None, runtimes: Iterable) -> Census:
    """Gather every container of the containerd states and CRI-O stores on the node."""
    runtimes = tuple(runtimes)
    found: list[Known] = []
    complete = True
    for install, state in runtimes:
        found.extend(_containerd(host, proc_root, install, state))
    try:
        stores = cstorage.find_stores(host, proc_root)
    except (OSError, ValueError) as exc:
        logger.debug("CRI-O stores not looked for: %s", exc)
        stores, complete = [], False
    for store in stores:
        try:
            found.extend(_crio(cstorage.read_state(host, store)))
        except (cstorage.StoreError, OSError, ValueError) as exc:
            logger.debug("CRI-O store %s not read: %s", store.graphroot, exc)
            complete = False
    return Census(tuple(found), complete and bool(runtimes or stores))


def _containerd(host: HostView, proc_root: str | None, install, state) -> list[Known]:
    tasks = os.path.join(install.state, TASK_DIR, CRI_NAMESPACE)
    return [
        Known(
            id=c.id,
            runtime="containerd",
            pod=c.pod,
            namespace=c.pod_namespace,
            uid=c.labels.get(POD_UID),
            name=c.name,
            sandbox=c.is_sandbox,
            running=_running(host, proc_root, os.path.join(tasks, c.id)),
        )
        for c in state.containers
        if c.namespace == CRI_NAMESPACE
    ]


def _crio(state: cstorage.State) -> list[Known]:
    return [
        Known(
            id=c.id,
            runtime="cri-o",
            pod=c.pod,
            namespace=c.pod_namespace,
            uid=c.pod_uid,
            name=c.name,
            sandbox=c.is_sandbox,
            running=None,
        )
        for c in state.containers.values()
    ]


def _running(host: HostView, proc_root: str | None, bundle: str) -> bool | None:
    """Tell whether a task bundle's init process is alive (None: cannot tell)."""
    try:
        raw = host.read_bytes(os.path.join(bundle, "init.pid"), limit=64)
    except (OSError, ScopeError):
        return False
    if proc_root is None:
        return None
    pid = raw.strip().decode("ascii", "replace")
    if not pid.isdigit():
        return False
    try:
        with open(os.path.join(proc_root, pid, "stat"), "rb") as handle:
            state = handle.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state != [b"Z"]

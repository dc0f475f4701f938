"""Helpers for the filesystem-link tests: kubelet-style folders, traced agent runs.

No kubelet runs in the test node, so the tests lay out what it would: pod folders
and volumes under /var/lib/kubelet (the atomic writer's ``..data`` scheme included,
following kubernetes/kubernetes pkg/volume/util/atomic_writer.go step by step), pod
log folders under /var/log/pods and links under /var/log/containers, named as
pkg/kubelet/kuberuntime does (storage-formats §6).

:func:`run_agent_traced` runs the agent under ``strace -y`` so a test can prove
which paths the agent opened or stat'ed, not only what it reported.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from kubectl_crilinks.agent.records import StreamReader
from tests.agent_helpers import REPO, of_kind
from tests.rig.node import Node

KUBELET = "/var/lib/kubelet"
POD_LOGS = "/var/log/pods"
CONTAINER_LOGS = "/var/log/containers"

# Syscalls that name a path (by string or by a decorated fd); readlink* is left out
# because its *result* holds the link's target text, which is not an access.
TRACED = (
    "open,openat,openat2,stat,lstat,newfstatat,statx,fstat,access,faccessat,"
    "faccessat2,getxattr,lgetxattr,fgetxattr,listxattr,llistxattr,flistxattr,"
    "getdents64,statfs,fstatfs,chdir,fchdir"
)


def warnings_and_up(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in of_kind(records, "finding") if f["severity"] != "info"]


def checks_of(records: list[dict[str, Any]], *ids: str) -> list[dict[str, Any]]:
    return [f for f in of_kind(records, "finding") if f["check"] in ids]


# -- kubelet-style folders ---------------------------------------------------------


def volume_dir(node: Node, uid: str, plugin: str, name: str) -> Path:
    """Create and return a pod volume folder's backing path (plugin as 'a~b')."""
    path = node.path(f"{KUBELET}/pods/{uid}/volumes/{plugin}/{name}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(
    target: Path, payload: dict[str, bytes], *, stamp: str | None = None
) -> str:
    """Project ``payload`` into ``target`` as the kubelet's atomic writer does.

    Returns the timestamped folder's name. Steps: a new ``..YYYY_MM_DD_HH_MM_SS.N``
    folder with the payload, the user-visible links ``KEY -> ..data/KEY`` (first path
    component only), ``..data_tmp`` pointing at the new folder renamed over
    ``..data``, then the previous folder removed.
    """
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    stamp = stamp or time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
    folder = f"{stamp}{len(list(target.iterdir())) + 100000000}"
    (target / folder).mkdir(mode=0o755)
    for key, data in payload.items():
        path = target / folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        visible = key.split("/", 1)[0]
        if not (target / visible).is_symlink():
            (target / visible).symlink_to(f"..data/{visible}")
    (target / "..data_tmp").symlink_to(folder)
    os.rename(target / "..data_tmp", target / "..data")
    if old:
        _remove_tree(target / old)
    return folder


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: -len(p.parts)):
        child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
    path.rmdir()


def pod_log_dir(node: Node, namespace: str, pod: str, uid: str) -> Path:
    path = node.path(f"{POD_LOGS}/{namespace}_{pod}_{uid}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def container_log(
    node: Node,
    namespace: str,
    pod: str,
    uid: str,
    container: str,
    restarts: int = 0,
    text: str = "",
) -> str:
    """Write a container's log file as the runtime would; return its node path."""
    folder = pod_log_dir(node, namespace, pod, uid) / container
    folder.mkdir(exist_ok=True)
    line = text or "2026-01-01T00:00:00.000000000Z stdout F started\n"
    (folder / f"{restarts}.log").write_text(line)
    return f"{POD_LOGS}/{namespace}_{pod}_{uid}/{container}/{restarts}.log"


def log_link_name(pod: str, namespace: str, container: str, container_id: str) -> str:
    """The kubelet's link name, spelled here independently of the agent's code."""
    stem = f"{pod}_{namespace}_{container}-{container_id}".encode()
    return stem[:251].decode() + ".log"


def log_link(node: Node, name: str, target: str) -> Path:
    link = node.path(f"{CONTAINER_LOGS}/{name}")
    link.symlink_to(target)
    return link


def kubelet_link(node: Node, container, restarts: int = 0) -> str:
    """Write a running container's log and link the way the kubelet does."""
    target = container_log(
        node,
        container.pod_namespace,
        container.pod,
        container.pod_uid,
        container.container_name,
        restarts,
    )
    name = log_link_name(
        container.pod, container.pod_namespace, container.container_name, container.id
    )
    log_link(node, name, target)
    return name


# -- the OCI layout a test built -------------------------------------------------------


def layout_history(workdir: Path) -> list[dict[str, Any]]:
    """Read the image config's history straight from the OCI layout build_image made."""
    blobs = workdir / "oci" / "blobs" / "sha256"
    index = json.loads((workdir / "oci" / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    return config["history"]


# -- a traced agent ------------------------------------------------------------------


def traced(node: Node, trace: Path, argv: list[str], *, timeout: float = 300):
    """Run ``argv`` in the node under strace; return (process, trace lines)."""
    full = [
        "strace",
        "-f",
        "-qq",
        "-y",
        "-s",
        "4096",
        "-e",
        f"trace={TRACED}",
        "-o",
        str(trace),
        *argv,
    ]
    done = node.run(full, cwd=REPO, capture_output=True, timeout=timeout)
    return done, trace.read_text(errors="surrogateescape").splitlines()


def run_agent_traced(
    node: Node, trace: Path, *args: str, timeout: float = 300
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the agent in the node under strace; return its records and the trace."""
    argv = [sys.executable, "-m", "kubectl_crilinks.agent", *args]
    done, lines = traced(node, trace, argv, timeout=timeout)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    reader = StreamReader()
    records = [reader.feed(line) for line in done.stdout.decode().splitlines()]
    reader.finish()
    return records, lines


def assert_detector_sees(node: Node, trace: Path, forbidden: str) -> None:
    """Check that :func:`touched` does catch a program that follows a link there."""
    _, lines = traced(node, trace, ["sh", "-c", f"ls -lL {forbidden}/ > /dev/null"])
    assert touched(lines, forbidden), (
        "the strace detector saw nothing: it proves nothing"
    )


_DECORATED = re.compile(r"<([^<>]*)>")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def touched(trace: list[str], forbidden: str) -> list[str]:
    """Return the traced calls that name ``forbidden`` or a path below it.

    A call names a path by a string argument (absolute, or relative to a decorated
    directory fd) or by a decorated fd (``3</path>``), in its arguments or result.
    """
    hits = []
    for line in trace:
        paths = set(_DECORATED.findall(line))
        strings = _QUOTED.findall(line)
        folders = _DECORATED.findall(line.split("(", 1)[-1].split(",", 1)[0])
        for text in strings:
            paths.add(
                text
                if text.startswith("/") or not folders
                else f"{folders[0].rstrip('/')}/{text}"
            )
        if any(
            p == forbidden or p.startswith(forbidden.rstrip("/") + "/") for p in paths
        ):
            hits.append(line)
    return hits

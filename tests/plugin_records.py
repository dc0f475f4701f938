"""Agent record streams for the plugin's tests, built with the contract's own Emitter.

The records are shaped like the agent's (``kubectl_crilinks.agent.run``): a target
with its layer chain, findings with the symlink checks' details, a summary last.
"""

from __future__ import annotations

from typing import Any

from kubectl_crilinks.agent.records import Emitter, Finding, dumps

SNAPSHOTS = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"


def layer(
    position: int, *, kind: str = "committed", present: bool = True, **extra: Any
) -> dict[str, Any]:
    return {
        "position": position,
        "key": f"k8s.io/{10 + position}/sha256:{position:064x}",
        "id": str(20 + position),
        "kind": kind,
        "dir": f"{SNAPSHOTS}/{20 + position}/fs",
        "present": present,
        **extra,
    }


def target(
    *,
    node: str = "node-a",
    namespace: str = "shop",
    pod: str = "web",
    container: str | None = "app",
    status: str = "inspected",
    reason: str | None = None,
    layers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "node": node,
        "runtime": "containerd",
        "namespace": namespace,
        "pod": pod,
        "container": container,
        "container_id": f"{container}-id",
        "image": "registry.example/web:1.0",
        "status": status,
        "reason": reason,
        "layers": layers
        if layers is not None
        else [layer(0, kind="active"), layer(1), layer(2)],
    }


def dangling(
    *,
    path: str = "/etc/ssl/cert.pem",
    link_target: str = "certs/ca.crt",
    severity: str = "warning",
    node: str = "node-a",
    namespace: str = "shop",
    pod: str = "web",
    container: str = "app",
) -> Finding:
    stops_at = "/etc/ssl/certs/ca.crt"
    return Finding(
        check="symlink.dangling" if severity != "error" else "layer.dir-missing",
        severity=severity,
        message=f"symlink {path} -> {link_target} is dangling: {stops_at} is missing",
        hint=f"Fix the image: point the link at a path that exists, or add {stops_at}",
        node=node,
        namespace=namespace,
        pod=pod,
        container=container,
        layer=layer(1)["key"],
        path=path,
        target=link_target,
        details={
            "hops": [
                {
                    "link": path,
                    "target": link_target,
                    "layer": 1,
                    "layer_key": layer(1)["key"],
                }
            ],
            "stops_at": stops_at,
            "reason": "missing",
            "layer_position": 1,
            "snapshot_key": layer(1)["key"],
            "snapshot_id": "21",
            "layer_dir": layer(1)["dir"],
        },
    )


def stream(
    *,
    targets: list[dict[str, Any]] | None = None,
    findings: list[Finding] | None = None,
    complete: bool = True,
    not_read: list[str] | None = None,
    progress: int = 0,
) -> list[dict[str, Any]]:
    """Return one agent run's records, numbered and closed by a summary."""
    out: list[dict[str, Any]] = []
    emitter = Emitter(out.append)
    for record in targets if targets is not None else [target()]:
        emitter.emit("target", record)
    for number in range(progress):
        emitter.emit(
            "progress",
            {
                "node": "node-a",
                "container": "app",
                "entries": number * 100,
                "links": number,
                "elapsed": float(number),
            },
        )
    for finding in findings or []:
        emitter.finding(finding)
    counts = {"error": 0, "warning": 0, "info": 0}
    for finding in findings or []:
        counts[finding.severity] += 1
    emitter.summary(
        {
            "node": "node-a",
            "complete": complete,
            "not_read": not_read or [],
            "error": None,
            "counts": counts,
        }
    )
    return out


def lines(records: list[dict[str, Any]]) -> str:
    return "".join(dumps(record) + "\n" for record in records)

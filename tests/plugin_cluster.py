"""What the command-line tests share: the plugin, kubectl, a fake cluster, its pods.

Test modules import the fixtures they use from here (``cluster``, ``node_cluster``);
pytest finds imported fixtures like its own. Pods in the fake cluster are added as a
kubelet would have reported them (``target_pod``); debug pods are those carrying the
plugin's label.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from kubectl_crilinks import launcher
from kubectl_crilinks.agent.records import StreamReader
from kubectl_crilinks.cli import app
from tests.rig.images import Dir, File, Layer, Symlink, build_image, host_binaries

BIN_DIR = pathlib.Path(sys.executable).parent
PLUGIN = BIN_DIR / "kubectl-crilinks"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

SLEEP = ["/bin/sleep", "3600"]
BROKEN = "example.com/broken:1"
BROKEN_LAYERS: list[Layer] = [
    {
        "/etc/ssl/certs/ca-certificates.crt": File("CERTS\n"),
        "/etc/ssl/cert.pem": Symlink("certs/missing.crt"),
    },
    {
        "/usr/sbin2": Dir(),
        "/sbin2": Symlink("usr/sbin2"),
        "/usr/sbin2/execlineb": Symlink("/sbin2/execlineb"),
    },
]
EXPECTED = {
    "/etc/ssl/cert.pem": "symlink.dangling",
    "/usr/sbin2/execlineb": "symlink.loop",
}


def plugin() -> str:
    """Return the installed console script, or skip naming how to install it."""
    if not PLUGIN.exists():
        pytest.skip(f"{PLUGIN} is missing: install the project (pip install -e .)")
    return str(PLUGIN)


def invoke(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> Any:
    """Run the command line in this process (typer's CliRunner)."""
    return CliRunner().invoke(app, list(args), env=env, input=input)


def inspect(*args: str, env: dict[str, str] | None = None) -> Any:
    return invoke("inspect", *args, env=env)


def records_of(text: str) -> list[dict[str, Any]]:
    """Read JSON lines output as one checked record stream."""
    reader = StreamReader()
    records = [reader.feed(line) for line in text.splitlines() if line.strip()]
    reader.finish()
    return records


# -- the fake cluster ----------------------------------------------------------------


@dataclasses.dataclass
class Cluster:
    """A fake API server whose nodes run debug pods with runc in a private node.

    Unpacks as ``server, kubeconfig``. The private test node has no container
    runtime of its own, so the agent finds none under ``/host`` and says so; nodes
    added with :meth:`add_node` share the same private node.
    """

    server: Any
    kubeconfig: str
    node: Any
    images: dict[str, str]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.server, self.kubeconfig))

    def add_node(self, name: str, **node: Any) -> None:
        """Register a node whose kubelet runs pods in the private test node."""
        self.server.add_node(name, **node)
        self.server.attach_kubelet(name, self.node, images=self.images)


@pytest.fixture
def cluster(
    node: Any, minbase_root: pathlib.Path, tmp_path: pathlib.Path
) -> Iterator[Cluster]:
    """A fake API server: namespace shop, and node-a whose kubelet runs runc pods."""
    from tests.rig.fakeapi import FakeApiServer
    from tests.rig.kubeconfig import write_kubeconfig

    images = {launcher.DEFAULT_IMAGE: str(minbase_root)}
    with FakeApiServer() as server:
        server.add_namespace("shop")
        server.attach_kubelet("node-a", node, images=images)
        path = write_kubeconfig(tmp_path / "kubeconfig", server.url, namespace="shop")
        yield Cluster(server, str(path), node, images)


def target_pod(
    name: str = "web",
    *,
    node: str | None = "node-a",
    created: bool = True,
    namespace: str = "shop",
    labels: dict[str, str] | None = None,
    owner: tuple[str, str] | None = None,
    containers: tuple[str, ...] = ("app",),
    **status: Any,
) -> dict[str, Any]:
    """Return a pod as its kubelet reported it: running, its containers created."""
    spec: dict[str, Any] = {
        "containers": [{"name": c, "image": "example.com/broken:1"} for c in containers]
    }
    if node:
        spec["nodeName"] = node
    states = []
    for container in containers:
        state: dict[str, Any] = {
            "name": container,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
        }
        if created:
            state["containerID"] = f"containerd://{name}-{container}-1"
        states.append(state)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": owner[0],
                "name": owner[1],
                "uid": f"uid-{owner[1]}",
                "controller": True,
            }
        ]
    return {
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Running", "containerStatuses": states, **status},
    }


def debug_pods(server: Any) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in server.pods()
        if p["metadata"].get("labels", {}).get(launcher.MANAGED_BY_LABEL)
        == launcher.MANAGED_BY
    ]


def wait_no_debug_pod(server: Any, timeout: float = 15) -> list[str]:
    """Return the debug pods left once their graceful deletion had time to finish."""
    deadline = time.monotonic() + timeout
    while debug_pods(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    return debug_pods(server)


def created_for_real(server: Any) -> list[Any]:
    """Return the pod creations that were not dry runs."""
    return [
        r
        for r in server.requests
        if r.method == "POST"
        and r.path.endswith("/pods")
        and r.param("dryRun") != "All"
    ]


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- a real node ----------------------------------------------------------------------


def broken_pod(containerd: Any, tmp_path: pathlib.Path, *, start: bool = True) -> None:
    """Import the broken-links image and make pod shop/web's container ``web-1``."""
    tar = build_image(
        tmp_path / "image", BROKEN, [host_binaries("sleep"), *BROKEN_LAYERS]
    )
    containerd.import_image(tar, BROKEN)
    make = containerd.run if start else containerd.create
    make(BROKEN, "web-1", pod="web", pod_namespace="shop", container_name="app",
         cmd=SLEEP)


@pytest.fixture
def node_cluster(
    containerd: Any, minbase_root: pathlib.Path, tmp_path: pathlib.Path
) -> Iterator[tuple[Any, str, Any]]:
    """Pod shop/web runs an image with broken links on node-a, a real containerd node.

    The fake kubelet of node-a runs the debug pod with runc in the same test node, from
    a Debian minbase root standing in for the default python image.
    """
    from tests.rig.fakeapi import FakeApiServer
    from tests.rig.kubeconfig import write_kubeconfig

    broken_pod(containerd, tmp_path)
    with FakeApiServer() as server:
        server.add_namespace("shop")
        server.attach_kubelet(
            "node-a",
            containerd.node,
            images={launcher.DEFAULT_IMAGE: str(minbase_root)},
        )
        server.add_pod(target_pod())
        kubeconfig = write_kubeconfig(
            tmp_path / "kubeconfig", server.url, namespace="shop"
        )
        yield server, str(kubeconfig), containerd


# -- the real kubectl -------------------------------------------------------------------


def kubectl_env(tmp: pathlib.Path, **extra: str) -> dict[str, str]:
    """Return an environment where kubectl finds this plugin first on PATH."""
    return {
        **os.environ,
        "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp),
        **extra,
    }


def kubectl(
    *args: str, tmp: pathlib.Path, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """Start the real kubectl, which finds kubectl-crilinks on PATH and execs it."""
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    plugin()
    return subprocess.Popen(
        [KUBECTL, *args],
        env=env or kubectl_env(tmp),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def kubectl_run(
    *args: str, tmp: pathlib.Path, timeout: float = 120, **kwargs: Any
) -> tuple[int, str, str]:
    """Run the real kubectl to its end; return (exit status, stdout, stderr)."""
    run = kubectl(*args, tmp=tmp, **kwargs)
    try:
        out, err = run.communicate(timeout=timeout)
    finally:
        if run.poll() is None:
            run.kill()
    return run.returncode, out, err

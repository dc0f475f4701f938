"""The real containerd, running inside a private test `Node`.

containerd runs with its stock paths (root /var/lib/containerd, state
/run/containerd, socket /run/containerd/containerd.sock), which the node backs
with private folders, so the agent under test finds it exactly where it would on
a real node. Every ctr call also runs inside the node (the socket path differs
outside it, and ctr writes FIFOs under /run/containerd/fifo).

Containers are made with ``ctr run``/``ctr containers create`` and carry the
labels the CRI plugin would set (io.kubernetes.pod.*, io.cri-containerd.kind),
in namespace k8s.io. They are not CRI sandboxes: there is no pause container, no
/var/log/pods file and no CRI metadata extension; tests that need those write
them through `Node.path`.

Two settings keep the machine untouched beyond the node's namespace:

* the ``opt`` plugin (default /opt/containerd) and the CRI plugin's CNI config
  folder (default /etc/cni/net.d, created if missing) point at private paths;
* containers keep ctr's default cgroup path /k8s.io/<id>, which lands under the
  node's own cgroup parent on the machine's cgroupfs (see `Node`).

``gc=False`` turns the GC scheduler's automatic runs off (its first run is
scheduled far in the future and no deletion count triggers one); an explicit
synchronous request (``ctr images rm --sync``) still collects. The scheduler
plugin cannot be disabled outright: the leases service, which ctr needs, requires
it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from tests.rig.node import (
    Node,
    NodeError,
    NodeProcess,
    kill_and_wait,
)

ROOT: Final = "/var/lib/containerd"
STATE: Final = "/run/containerd"
ADDRESS: Final = "/run/containerd/containerd.sock"
CONFIG: Final = "/etc/containerd/config.toml"

# How long containerd may take to answer on its socket after start.
_START_TIMEOUT: Final = 30.0

_CONFIG_TEMPLATE: Final = """\
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{address}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    conf_dir = "/etc/containerd/cni/net.d"

[debug]
  level = "debug"
{gc}"""

# No automatic run: the first is a year away and deletions never trigger one.
_GC_OFF: Final = """
[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "8760h"
  deletion_threshold = 0
  mutation_threshold = 0
"""


@dataclasses.dataclass(frozen=True)
class CriContainer:
    """A container made by `Containerd.run` or `Containerd.create`."""

    id: str
    image: str
    pod: str
    pod_namespace: str
    pod_uid: str
    container_name: str
    labels: dict[str, str]


class Containerd:
    """containerd inside a node: configure, start(), ctr(), stop()."""

    def __init__(self, node: Node, *, gc: bool = True) -> None:
        self.node = node
        self.gc = gc
        self.log_path = node.base_dir / "containerd.log"
        self._proc: NodeProcess | None = None
        self._pid: int | None = None

    # -- properties ----------------------------------------------------------

    @property
    def root(self) -> str:
        return ROOT

    @property
    def state(self) -> str:
        return STATE

    @property
    def address(self) -> str:
        return ADDRESS

    @property
    def pid(self) -> int:
        """Return containerd's PID as seen from outside the node."""
        if self._pid is None:
            raise NodeError("containerd is not started")
        return self._pid

    # -- lifecycle -----------------------------------------------------------

    def write_config(self) -> Path:
        """Write the node's /etc/containerd/config.toml; return its backing path."""
        text = _CONFIG_TEMPLATE.format(
            root=ROOT, state=STATE, address=ADDRESS, gc="" if self.gc else _GC_OFF
        )
        backing = self.node.path(CONFIG)
        backing.write_text(text)
        return backing

    def start(self) -> Containerd:
        """Start containerd in the node and wait until it answers on its socket."""
        if self._proc is not None:
            raise NodeError("containerd is already started")
        other = getattr(self.node, "containerd", None)
        if other is not None and other is not self and other._proc is not None:
            raise NodeError("another containerd already runs in this node: use one "
                            "fixture of containerd / containerd_nogc per test")
        self.node.containerd = self
        self.write_config()

        # containerd logs to a file outside the node's folders.
        with open(self.log_path, "ab") as log:
            self._proc = self.node.popen(
                ["containerd", "--config", CONFIG],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._pid = self._proc.inner_pid

        # Ready means the socket exists and the API answers.
        self._wait_ready()
        return self

    def stop(self) -> None:
        """Kill tasks, then containerd by PID, then leftovers; keep all state.

        Safe to call twice, and after the node has stopped (then the
        namespace took everything with it). `start` may be called again.
        """
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            # Tasks first, while containerd can still reach their shims.
            if proc.poll() is None and self.node.running:
                self._delete_all_tasks()
        finally:
            self._kill_containerd(proc)
            if self.node.running:
                self._kill_leftover_shims()
                self._unmount_leftovers()
                self._wait_unlocked()

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- ctr -------------------------------------------------------------------

    def ctr(self, *args: str, namespace: str = "k8s.io", timeout: float = 60) -> str:
        """Run ctr in the node against this containerd; return its stdout."""
        argv = ["ctr", "--address", ADDRESS, "--namespace", namespace, *args]
        done = self.node.run(
            argv,
            capture_output=True,
            text=True,
            errors="surrogateescape",  # labels and paths may hold odd bytes
            timeout=timeout,
        )
        if done.returncode != 0:
            raise NodeError(
                f"{' '.join(argv)!r} failed with {done.returncode}: "
                f"{done.stderr.strip()}"
            )
        return str(done.stdout)

    def import_image(
        self, oci_tar: str | os.PathLike[str], ref: str, *, namespace: str = "k8s.io"
    ) -> None:
        """Import an OCI layout tar (see images.build_image) and check ref exists."""
        self.ctr("images", "import", os.fspath(oci_tar), namespace=namespace)
        if ref not in self.ctr("images", "ls", "-q", namespace=namespace).split():
            raise NodeError(
                f"importing {os.fspath(oci_tar)!r} did not create image {ref!r}; "
                "build the tar with tests.rig.images.build_image, which names it"
            )

    def run(self, ref: str, container_id: str, **labels: Any) -> CriContainer:
        """Run a detached container with CRI labels (namespace k8s.io).

        Keywords: ``pod``, ``pod_namespace``, ``container_name``, ``cmd`` (required),
        ``pod_uid`` and ``extra_args`` (ctr flags before the image).
        """
        return self._make(["run", "-d"], ref, container_id, **labels)

    def create(self, ref: str, container_id: str, **labels: Any) -> CriContainer:
        """Create the same container as `run` without starting it (no task)."""
        return self._make(["containers", "create"], ref, container_id, **labels)

    def _make(
        self,
        verb: list[str],
        ref: str,
        container_id: str,
        *,
        pod: str,
        pod_namespace: str,
        container_name: str,
        cmd: Sequence[str],
        pod_uid: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> CriContainer:
        info = _cri_container(
            ref,
            container_id,
            pod=pod,
            pod_namespace=pod_namespace,
            container_name=container_name,
            pod_uid=pod_uid,
        )
        self.ctr(*verb, *self._create_args(info, extra_args), *cmd)
        return info

    def kill_task(self, container_id: str, *, delete: bool = False) -> None:
        """SIGKILL a container's task and wait until it is stopped.

        The stopped task keeps its rootfs mounted; delete=True removes the
        task too (unmounting it), leaving only the container record.
        """
        self.ctr("tasks", "kill", "--signal", "SIGKILL", container_id)
        deadline = time.monotonic() + 10
        while self.task_status(container_id) not in ("STOPPED", None):
            if time.monotonic() > deadline:
                raise NodeError(f"task {container_id!r} did not stop after SIGKILL")
            time.sleep(0.05)
        if delete:
            self.ctr("tasks", "delete", container_id)

    def tasks(self, *, namespace: str = "k8s.io") -> dict[str, tuple[int, str]]:
        """Return {container id: (PID inside the node, status)} for all tasks."""
        rows = self.ctr("tasks", "ls", namespace=namespace).splitlines()[1:]
        found = {}
        for row in rows:
            task, pid, status = row.split()
            found[task] = (int(pid), status)
        return found

    def task_status(self, container_id: str) -> str | None:
        """Return a task's status (RUNNING, STOPPED, ...) or None if none."""
        entry = self.tasks().get(container_id)
        return entry[1] if entry else None

    # -- helpers ---------------------------------------------------------------

    def _create_args(self, info: CriContainer, extra: Sequence[str]) -> list[str]:
        """Return ctr's label flags for info, then extra flags, image and id."""
        args = []
        for key, value in info.labels.items():
            args += ["--label", f"{key}={value}"]
        return [*args, *extra, info.image, info.id]

    def _wait_ready(self) -> None:
        """Poll `ctr version` until it works; fail early if containerd exits."""
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise NodeError(
                    f"containerd exited with {self._proc.returncode}; "
                    f"log {str(self.log_path)!r}:\n{self._log_tail()}"
                )
            if self.node.path(ADDRESS).exists():
                try:
                    self.ctr("version", timeout=10)
                    return
                except NodeError:
                    pass
            time.sleep(0.02)
        raise NodeError(
            f"containerd did not answer within {_START_TIMEOUT}s; "
            f"log {str(self.log_path)!r}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _kill_containerd(self, proc: NodeProcess) -> None:
        """SIGTERM containerd by its PID, SIGKILL if it lingers; reap nsenter."""
        if self._pid is not None and not kill_and_wait(
            self._pid, signal.SIGTERM, timeout=10.0
        ):
            os.kill(self._pid, signal.SIGKILL)
        proc.wait(timeout=10)
        self._pid = None

    def _wait_unlocked(self, timeout: float = 30.0) -> None:
        """Wait until no process holds containerd's BoltDB files (flock released)."""
        files = [self.node.path(ROOT) / "io.containerd.metadata.v1.bolt" / "meta.db",
                 self.node.path(ROOT) / "io.containerd.snapshotter.v1.overlayfs" / "metadata.db"]
        deadline = time.monotonic() + timeout
        for path in files:
            if not path.exists():
                continue
            with open(path, "rb") as handle:
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.flock(handle, fcntl.LOCK_UN)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise NodeError(f"{path} is still locked {timeout} s after "
                                            f"containerd stopped: {_lock_holders(path)}"
                                            ) from None
                        time.sleep(0.05)

    def _delete_all_tasks(self) -> None:
        """Force-delete every task in every namespace (kills and unmounts)."""
        for namespace in self.ctr("namespaces", "ls", "-q").split():
            for task in self.tasks(namespace=namespace):
                self.ctr("tasks", "delete", "--force", task, namespace=namespace)

    def _kill_leftover_shims(self) -> None:
        """SIGKILL shims still running in the node (started by our containerd)."""
        node_pidns = os.readlink(f"/proc/{self.node.pid}/ns/pid")
        for pid in _pids():
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                same_node = os.readlink(f"/proc/{pid}/ns/pid") == node_pidns
            except OSError:
                continue
            if same_node and os.path.basename(exe).startswith("containerd-shim"):
                kill_and_wait(pid, signal.SIGKILL, timeout=5.0)

    def _unmount_leftovers(self) -> None:
        """Unmount what is still mounted below containerd's root and state."""
        text = self.node.run(["cat", "/proc/1/mountinfo"], capture_output=True).stdout
        points = [
            _unescape(line.split()[4])
            for line in os.fsdecode(text).splitlines()
            if len(line.split()) > 4
        ]
        below = [p for p in points if p.startswith((ROOT + "/", STATE + "/"))]
        for point in sorted(below, key=len, reverse=True):
            # A lazy unmount of a parent may already have taken the child.
            self.node.run(["umount", "--lazy", point], capture_output=True)


def _cri_container(
    ref: str,
    container_id: str,
    *,
    pod: str,
    pod_namespace: str,
    container_name: str,
    pod_uid: str | None,
) -> CriContainer:
    """Build the record and labels of a CRI-labelled container."""
    # A stable default UID: containers of one pod share it, as in Kubernetes.
    uid = pod_uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod:{pod_namespace}/{pod}"))
    labels = {
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": pod_namespace,
        "io.kubernetes.pod.uid": uid,
        "io.kubernetes.container.name": container_name,
        "io.cri-containerd.kind": "container",
    }
    return CriContainer(
        id=container_id,
        image=ref,
        pod=pod,
        pod_namespace=pod_namespace,
        pod_uid=uid,
        container_name=container_name,
        labels=labels,
    )


def _lock_holders(path: Path) -> str:
    """Describe the processes /proc/locks names for a file, for an error message."""
    inode = os.stat(path).st_ino
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[5].endswith(f":{inode}"):
            pid = fields[4]
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                holders.append(f"pid {pid}: {cmd.decode(errors='replace')}")
            except OSError:
                holders.append(f"pid {pid} (gone)")
    return "; ".join(holders) or "no holder listed"


def _pids() -> list[int]:
    """Return every PID on the machine (the node's processes included)."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _unescape(field: str) -> str:
    """Decode mountinfo's octal escapes (\\040 for a space, ...)."""
    octal = re.compile(rb"\\([0-7]{3})")
    raw = octal.sub(lambda m: bytes([int(m[1], 8)]), os.fsencode(field))
    return os.fsdecode(raw)

"""The kubelet of the fake cluster: runs a pod's containers and reports their status.

A `FakeKubelet` is attached to one node of a `fakeapi.FakeApiServer`. When a pod bound
to that node is created it starts the containers through a runtime, writes the pod
status back the way a kubelet does, streams container output to the pod log, runs
exec sessions, and stops the containers when the pod is deleted or runs out of time.

Two runtimes:

- `RuncRuntime` runs each container for real with runc inside a private test node
  (`tests.rig.node.Node`), from an OCI bundle that starts as ``runc spec`` and takes
  the pod spec: command and args, env (values of any size, ``$(VAR)`` expansion,
  fieldRefs, the service-link variables), workingDir, privileged (the runtime's own
  capabilities, as containerd's WithAllCurrentCapabilities; no masked or read-only
  paths; the node's devices), hostPID/hostNetwork/hostIPC (namespaces left out),
  hostPath volumes as rbind mounts (readOnly as ``ro`` plus recursive ``rro`` where
  the kernel has mount_setattr), emptyDir, readOnlyRootFilesystem, runAsUser. The
  rootfs is an overlay over the image directory; runc state lives under a runc root
  in the node's private /run; cgroups follow the kubelet's cgroupfs layout
  (/kubepods/besteffort/pod<uid>/<id>) below the node's own cgroup parent. Pod
  folders (/var/lib/kubelet/pods) and CRI-format logs (/var/log/pods) are where a
  kubelet keeps them, and are removed when the pod is deleted.
- `ProcessRuntime` runs the container command as a plain host process, with no
  isolation, for API-level tests that need neither root nor a node.

Faithful: the eviction manager's admission (a node under disk or PID pressure refuses
pods that are not critical: Failed, Evicted, ``The node had condition: [...]``), a
container's memory limit applied to its cgroup (the kernel's OOM killer does the
rest), phases and container states (ContainerCreating, ErrImagePull then
ImagePullBackOff, CreateContainerError, Running with containerID and startedAt,
terminated with exitCode and Completed/Error/StartError with containerd's message),
the five pod conditions, hostIP and podIP, DeadlineExceeded for activeDeadlineSeconds,
graceful termination (SIGTERM, the grace period, SIGKILL to every process of the
container) before the deletion is confirmed, the kubelet's texts for logs of
containers that have not started, and exec with the container's process spec passed
in a process.json (so only the exec'd process carries its argv), killed when its
client goes away.

Simplified: one attempt per container (no restarts, so restartPolicy Always behaves
like Never and there is no CrashLoopBackOff or ``previous`` log); no init or sidecar
containers, probes, CPU resources or service-account volume; no image configuration (an
image is a root directory, so a container needs ``command`` or ``args``); networking
is the node's (hostNetwork) or an empty namespace with loopback only; the container
sees the node's /sys/fs/cgroup through a bind (runc's cgroup-v1 mount cannot follow
the test node's cgroup view).

Two deliberate differences from a literal ``runc run -d``: the container runs under a
foreground ``runc run``, which waits for it as a containerd shim would, because a
detached container's exit code can be collected only by its parent; and runc's own
start errors are caught from its stderr and reported as StartError, not logged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

Obj = dict[str, Any]

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVICE_ENV: Final = (
    "KUBERNETES_SERVICE_HOST=10.96.0.1",
    "KUBERNETES_SERVICE_PORT=443",
    "KUBERNETES_SERVICE_PORT_HTTPS=443",
    "KUBERNETES_PORT=tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
    "KUBERNETES_PORT_443_TCP_PROTO=tcp",
    "KUBERNETES_PORT_443_TCP_PORT=443",
    "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
)
PULL_BACKOFF_AFTER: Final = 1.0
"""Seconds between ErrImagePull and ImagePullBackOff (the kubelet's first back-off)."""

MAX_LOG_LINE: Final = 16 * 1024
"""Bytes after which the CRI log splits a line without a newline (containerd's)."""

SUPERVISE_INTERVAL: Final = 0.05

CRITICAL_PRIORITY: Final = 2000000000
"""kubelettypes.IsCriticalPod: pods at or above this priority pass eviction admission."""


class PodSink(Protocol):
    """What the kubelet needs from the API server."""

    pull_failures: dict[str, str | None]

    def update_pod_status(
        self, namespace: str, name: str, uid: str, change: Callable[[Obj], None]
    ) -> Obj | None: ...

    def confirm_pod_deleted(self, namespace: str, name: str, uid: str) -> None: ...

    def node(self, name: str) -> Obj | None: ...


class KubeletError(Exception):
    """Raised for a kubelet refusal: an HTTP code and the kubelet's text."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StartError(Exception):
    """Raised by a runtime when a container's process cannot be started."""


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(stamp_ns: int) -> str:
    """Return Go's RFC3339Nano for epoch nanoseconds (trailing zeros trimmed)."""
    seconds, nanos = divmod(stamp_ns, 1_000_000_000)
    whole = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    fraction = f"{nanos:09d}".rstrip("0")
    return (
        whole.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"
    )


def normalize_image(image: str) -> str:
    """Return the image's full reference as containerd names it (docker.io/...)."""
    name = image
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    last = name.rsplit("/", 1)[-1]
    if "@" not in last and ":" not in last:
        name += ":latest"
    return name


def image_id(image: str) -> str:
    """Return a stable made-up repo digest for an image (name@sha256:...)."""
    full = normalize_image(image)
    digest = hashlib.sha256(full.encode()).hexdigest()
    return full.split("@")[0].rsplit(":", 1)[0] + f"@sha256:{digest}"


def read_some(fd: int) -> bytes:
    """Return what is available on fd now (b"" at end of file or once closed)."""
    while True:
        try:
            return os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError as err:
            if err.errno in (errno.EBADF, errno.EIO):
                return b""
            raise


# ---------------------------------------------------------------------------
# Container log (what ``kubectl logs`` reads)
# ---------------------------------------------------------------------------


class ContainerLog:
    """A container's output as CRI keeps it: timestamped lines from both streams.

    Lines become visible when their newline arrives (or at 16 KiB, or at exit), as
    with containerd's CRI logger. With ``cri_file`` the lines are also written in the
    CRI format (``TIME stdout F text``) to the node's /var/log/pods.
    """

    def __init__(self, cri_file: Path | None = None) -> None:
        self._lines: list[tuple[int, str, bytes]] = []
        self._partial: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._file = cri_file.open("ab") if cri_file else None

    def write(self, stream: str, data: bytes) -> None:
        """Add output of one stream ("stdout" or "stderr")."""
        with self._cond:
            buffer = self._partial.get(stream, b"") + data
            *complete, rest = buffer.split(b"\n")
            for line in complete:
                self._append(stream, line + b"\n", "F")
            while len(rest) >= MAX_LOG_LINE:
                self._append(stream, rest[:MAX_LOG_LINE], "P")
                rest = rest[MAX_LOG_LINE:]
            self._partial[stream] = rest

    def close(self) -> None:
        """Flush unterminated lines and wake followers: the container has exited."""
        with self._cond:
            for stream, rest in self._partial.items():
                if rest:
                    self._append(stream, rest, "F")
            self._partial.clear()
            self._closed = True
            if self._file:
                self._file.close()
                self._file = None
            self._cond.notify_all()

    def _append(self, stream: str, line: bytes, tag: str) -> None:
        stamp = time.time_ns()
        self._lines.append((stamp, stream, line))
        if self._file:
            text = line[:-1] if line.endswith(b"\n") else line
            head = f"{rfc3339_nano(stamp)} {stream} {tag} ".encode()
            self._file.write(head + text + b"\n")
            self._file.flush()
        self._cond.notify_all()

    def lines(
        self,
        *,
        follow: bool,
        tail: int | None,
        since_seconds: int | None,
        timestamps: bool,
        stop: threading.Event,
    ) -> Iterator[bytes]:
        """Yield log lines; with ``follow`` wait for more until the container exits."""
        with self._cond:
            index = self._first_index(tail, since_seconds)
        while True:
            with self._cond:
                while (
                    follow
                    and index >= len(self._lines)
                    and not self._closed
                    and not stop.is_set()
                ):
                    self._cond.wait(timeout=0.5)
                batch = self._lines[index:]
                index += len(batch)
                done = not follow or self._closed or stop.is_set()
            for stamp, _, line in batch:
                yield (
                    rfc3339_nano(stamp).encode() + b" " if timestamps else b""
                ) + line
            if done and not batch:
                return

    def _first_index(self, tail: int | None, since_seconds: int | None) -> int:
        index = 0
        if since_seconds is not None:
            cutoff = time.time_ns() - since_seconds * 1_000_000_000
            index = next(
                (i for i, (s, _, _) in enumerate(self._lines) if s >= cutoff),
                len(self._lines),
            )
        if tail is not None:
            index = max(index, len(self._lines) - tail)
        return index


LogReader = ContainerLog


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


def _exit_code(returncode: int) -> int:
    """Return a container-style exit code: 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class ExecProcess:
    """A process started by exec: raw stdout/stderr fds, stdin, exit code."""

    def __init__(
        self, popen: subprocess.Popen[bytes], *, kill: Callable[[], None]
    ) -> None:
        assert popen.stdout is not None and popen.stderr is not None
        self._popen = popen
        self._kill = kill
        self.stdout_fd = popen.stdout.fileno()
        self.stderr_fd = popen.stderr.fileno()

    def write_stdin(self, data: bytes) -> None:
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self._popen.stdin.write(data)
                self._popen.stdin.flush()

    def close_stdin(self) -> None:
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError):
                self._popen.stdin.close()

    def finished(self) -> bool:
        return self._popen.poll() is not None

    def hangup(self) -> None:
        """Kill the process (the client went away)."""
        with contextlib.suppress(OSError):
            self._kill()

    def wait(self) -> int:
        """Wait for the exit; close the pipes; return the exit code."""
        code = self._popen.wait()
        for pipe in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return _exit_code(code)


def _pump_to_log(
    popen: subprocess.Popen[bytes],
    log_: ContainerLog,
    *,
    runtime_errors: list[bytes] | None = None,
) -> list[threading.Thread]:
    """Copy a process's stdout and stderr into its log as they are written.

    With ``runtime_errors``, stderr chunks that are runc's own failure report
    ("runc run failed: ...") are kept there instead of entering the pod log.
    """

    def copy(fd: int, stream: str) -> None:
        while data := read_some(fd):
            if (
                runtime_errors is not None
                and stream == "stderr"
                and data.startswith(b"runc run failed: ")
            ):
                runtime_errors.append(data)
                continue
            log_.write(stream, data)

    assert popen.stdout is not None and popen.stderr is not None
    threads = [
        threading.Thread(
            target=copy, args=(popen.stdout.fileno(), "stdout"), daemon=True
        ),
        threading.Thread(
            target=copy, args=(popen.stderr.fileno(), "stderr"), daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    return threads


@dataclasses.dataclass
class ContainerSpec:
    """What a runtime needs to start one container of a pod."""

    pod: Obj
    container: Obj
    container_id: str
    argv: list[str]
    env: list[str]
    cwd: str
    hostname: str
    log: ContainerLog
    pod_dir: Path | None = None


class Container(Protocol):
    """A started container, as the runtime hands it to the kubelet."""

    def poll(self) -> int | None: ...

    def start_failure(self) -> str | None:
        """Return why the process never started, once it has exited."""
        ...

    def signal(self, sig: int) -> None: ...

    def exec(self, argv: list[str], *, stdin: bool) -> ExecProcess: ...

    def cleanup(self) -> None: ...


class Runtime(Protocol):
    def has_image(self, image: str) -> bool: ...

    def pod_dir(self, pod: Obj) -> Path | None: ...

    def log_file(self, pod: Obj, container: str) -> Path | None: ...

    def start(self, spec: ContainerSpec) -> Container: ...

    def remove_pod(self, pod: Obj) -> None:
        """Remove what the pod left on the node once it is deleted."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------
# ProcessRuntime: plain host processes
# ---------------------------------------------------------------------------


class HostProcess:
    """A container that is just a process group on the machine."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        spec: ContainerSpec,
        *,
        hang_execs: bool = False,
    ) -> None:
        self._popen = popen
        self._spec = spec
        self._pumps = _pump_to_log(popen, spec.log)
        self._hang_execs = hang_execs

    def poll(self) -> int | None:
        code = self._popen.poll()
        if code is None:
            return None
        for pump in self._pumps:
            pump.join(timeout=2)  # a daemon the process left may hold the pipe open
        return _exit_code(code)

    def start_failure(self) -> str | None:
        return None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, sig)

    def exec(self, argv: list[str], *, stdin: bool) -> ExecProcess:
        env = dict(item.split("=", 1) for item in self._spec.env)
        if self._hang_execs:
            # The shell stops itself before it would exec argv: a hung process.
            argv = ["/bin/sh", "-c", 'kill -STOP $$; exec "$@"', "sh", *argv]
        try:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=self._spec.cwd,
                start_new_session=True,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as err:
            raise KubeletError(500, _exec_failure(argv, err)) from err

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)

        return ExecProcess(popen, kill=kill)

    def cleanup(self) -> None:
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=5)


def _exec_failure(argv: list[str], err: OSError) -> str:
    return (
        f"failed to exec in container: failed to start exec: OCI runtime exec "
        f"failed: exec failed: unable to start container process: exec: "
        f'"{argv[0] if argv else ""}": {err.strerror}: unknown'
    )


class ProcessRuntime:
    """Run containers as host processes; ``images`` limits the images it "has"."""

    def __init__(
        self,
        *,
        images: dict[str, str] | list[str] | None = None,
        hang_execs: bool = False,
    ) -> None:
        self.images = None if images is None else {normalize_image(i) for i in images}
        self.hang_execs = hang_execs
        self._scratch = Path(tempfile.mkdtemp(prefix="fakekubelet-proc-"))

    def has_image(self, image: str) -> bool:
        return self.images is None or normalize_image(image) in self.images

    def pod_dir(self, pod: Obj) -> Path | None:
        return None

    def log_file(self, pod: Obj, container: str) -> Path | None:
        return None

    def start(self, spec: ContainerSpec) -> Container:
        """Start the command in its own session, cwd its workingDir if it exists."""
        env = dict(item.split("=", 1) for item in spec.env)
        cwd = (
            spec.cwd
            if os.path.isdir(spec.cwd) and spec.cwd != "/"
            else str(self._scratch)
        )
        spec.cwd = cwd
        try:
            popen = subprocess.Popen(
                spec.argv,
                env=env,
                cwd=cwd,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as err:
            raise StartError(
                _start_failure(spec.argv, err.strerror or str(err))
            ) from err
        return HostProcess(popen, spec, hang_execs=self.hang_execs)

    def remove_pod(self, pod: Obj) -> None:
        return None

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)


def _start_failure(argv: list[str], why: str) -> str:
    """Return containerd 1.6's message for a container whose process cannot start."""
    return (
        "failed to create containerd task: failed to create shim task: OCI runtime "
        "create failed: runc create failed: unable to start container process: "
        f'exec: "{argv[0] if argv else ""}": {why}: unknown'
    )


# ---------------------------------------------------------------------------
# RuncRuntime: runc inside a private test node
# ---------------------------------------------------------------------------

CAPABILITIES: Final = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)
DEFAULT_CAPABILITIES: Final = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
)
"""containerd's default capability set for unprivileged containers."""

_SKIPPED_DEV_DIRS: Final = {
    "pts",
    "shm",
    "fd",
    "mqueue",
    ".lxc",
    ".lxd-mounts",
    ".udev",
}


class RuncRuntime:
    """Run containers with runc inside ``node`` (a `tests.rig.node.Node`).

    ``images`` maps image names to root directories (e.g. `rootfs.minbase_rootfs()`);
    bundles, overlay upper layers and exec pid files live in ``state_dir`` (a temp
    folder when not given), which the node sees at the same path.
    """

    RUNC_ROOT: Final = "/run/fakekubelet/runc"

    def __init__(
        self, node: Any, *, images: dict[str, str], state_dir: str | None = None
    ) -> None:
        self.node = node
        self.images = {normalize_image(k): Path(v) for k, v in images.items()}
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="fakekubelet-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._base_spec: Obj | None = None
        self._lock = threading.Lock()

    # -- Runtime protocol --------------------------------------------------------

    def has_image(self, image: str) -> bool:
        return normalize_image(image) in self.images

    def pod_dir(self, pod: Obj) -> Path | None:
        """Return the pod's /var/lib/kubelet/pods folder, as seen from outside."""
        path = Path(self.node.path(f"/var/lib/kubelet/pods/{pod['metadata']['uid']}"))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_file(self, pod: Obj, container: str) -> Path | None:
        """Return /var/log/pods/NS_NAME_UID/CONTAINER/0.log (outside view)."""
        meta = pod["metadata"]
        folder = f"/var/log/pods/{meta['namespace']}_{meta['name']}_{meta['uid']}"
        path = Path(self.node.path(f"{folder}/{container}/0.log"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def start(self, spec: ContainerSpec) -> Container:
        """Build the bundle, mount the rootfs, start ``runc run``, wait for running."""
        self._prepare()
        bundle = self.state_dir / spec.container_id[:16]
        rootfs = self._mount_rootfs(
            bundle, self.images[normalize_image(spec.container["image"])]
        )
        config = build_oci_spec(
            self._base(), spec, rootfs=rootfs, cgroups_path=self._cgroups_path(spec)
        )
        (bundle / "config.json").write_text(json.dumps(config))
        container = RuncContainer(self, spec, bundle)
        container.launch()
        return container

    def remove_pod(self, pod: Obj) -> None:
        """Remove the pod's cgroup, its /var/lib/kubelet/pods folder and its logs."""
        meta = pod["metadata"]
        uid = meta["uid"]
        self.node.run(
            [
                "sh",
                "-c",
                f"rmdir /sys/fs/cgroup/*/kubepods/*/pod{uid} "
                f"/sys/fs/cgroup/*/kubepods/pod{uid} 2>/dev/null",
            ],
            timeout=10,
        )
        shutil.rmtree(
            self.node.path(f"/var/lib/kubelet/pods/{uid}"), ignore_errors=True
        )
        logs = f"/var/log/pods/{meta['namespace']}_{meta['name']}_{uid}"
        shutil.rmtree(self.node.path(logs), ignore_errors=True)

    def close(self) -> None:
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------

    def runc(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``runc --root RUNC_ROOT args`` inside the node."""
        done: subprocess.CompletedProcess[str] = self.node.run(
            ["runc", "--root", self.RUNC_ROOT, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done

    def _prepare(self) -> None:
        """Check once that the node's /run is private, then create the runc root."""
        with self._lock:
            if self._base_spec is not None:
                return
            inside = self.node.run(
                ["stat", "-c", "%d", "/run"], capture_output=True, text=True, check=True
            ).stdout.strip()
            if int(inside) == os.stat("/run").st_dev:
                raise RuntimeError(
                    "the node's /run is the machine's: refusing to put runc state "
                    f"under {self.RUNC_ROOT!r} (the node must shadow /run)"
                )
            self.node.run(["mkdir", "-p", self.RUNC_ROOT], check=True)
            self._base_spec = self._runc_spec()

    def _runc_spec(self) -> Obj:
        """Return the default spec ``runc spec`` writes (generated in the node)."""
        scratch = Path(tempfile.mkdtemp(prefix="spec-", dir=self.state_dir))
        try:
            self.node.run(
                ["runc", "spec", "--bundle", str(scratch)],
                check=True,
                capture_output=True,
            )
            return dict(json.loads((scratch / "config.json").read_text()))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _base(self) -> Obj:
        assert self._base_spec is not None
        return copy.deepcopy(self._base_spec)

    def _cgroups_path(self, spec: ContainerSpec) -> str:
        """Return the kubelet's cgroupfs path (the node maps / to its own parent)."""
        qos = spec.pod.get("status", {}).get("qosClass", "BestEffort")
        tier = {"Guaranteed": "", "Burstable": "/burstable"}.get(qos, "/besteffort")
        uid = spec.pod["metadata"]["uid"]
        return f"/kubepods{tier}/pod{uid}/{spec.container_id}"

    def _mount_rootfs(self, bundle: Path, image_root: Path) -> Path:
        """Mount an overlay (image root below, a fresh upper layer) in the node."""
        for name in ("upper", "work", "rootfs"):
            (bundle / name).mkdir(parents=True, exist_ok=True)
        options = (
            f"lowerdir={image_root},upperdir={bundle / 'upper'},"
            f"workdir={bundle / 'work'}"
        )
        done = self.node.run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                options,
                str(bundle / "rootfs"),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise StartError(f"failed to mount rootfs component: {done.stderr.strip()}")
        return bundle / "rootfs"


class RuncContainer:
    """One container under a foreground ``runc run`` in the node."""

    START_TIMEOUT: Final = 30.0

    def __init__(self, runtime: RuncRuntime, spec: ContainerSpec, bundle: Path) -> None:
        self.runtime = runtime
        self.spec = spec
        self.bundle = bundle
        self.id = spec.container_id
        self._popen: subprocess.Popen[bytes] | None = None
        self._pumps: list[threading.Thread] = []
        self._runc_errors: list[bytes] = []
        self._execs = 0
        self._exec_procs: list[ExecProcess] = []
        self._cleaned = False

    def launch(self) -> None:
        """Start runc; return once the process runs; raise StartError if it cannot."""
        node = self.runtime.node
        self._popen = node.popen(
            [
                "runc",
                "--root",
                RuncRuntime.RUNC_ROOT,
                "--log",
                str(self.bundle / "runc.log"),
                "--log-format",
                "json",
                "run",
                "--bundle",
                str(self.bundle),
                self.id,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._pumps = _pump_to_log(
            self._popen, self.spec.log, runtime_errors=self._runc_errors
        )
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                failure = self.start_failure()
                if failure:
                    raise StartError(failure)
                return  # it ran and ended between two looks
            if self._state() == "running":
                return
            time.sleep(0.02)
        raise StartError(
            f"container {self.id} did not start within {self.START_TIMEOUT}s"
        )

    def _state(self) -> str | None:
        done = self.runtime.runc("state", self.id, timeout=10)
        if done.returncode != 0:
            return None
        return str(json.loads(done.stdout).get("status"))

    def start_failure(self) -> str | None:
        """Return containerd's StartError text if runc failed before the exec."""
        if self._popen is None or self._popen.poll() is None:
            return None
        for pump in self._pumps:
            pump.join(timeout=2)
        if not self._runc_errors:
            return None
        why = self._runc_errors[-1].decode(errors="replace").strip()
        why = why.removeprefix("runc run failed: ")
        return (
            "failed to create containerd task: failed to create shim task: OCI "
            f"runtime create failed: runc create failed: {why}: unknown"
        )

    def poll(self) -> int | None:
        assert self._popen is not None
        code = self._popen.poll()
        if code is None:
            return None
        for pump in self._pumps:
            pump.join(timeout=2)  # a daemon the process left may hold the pipe open
        return _exit_code(code)

    def signal(self, sig: int) -> None:
        """Signal the container (all its processes for SIGKILL, as runc kill --all)."""
        extra = ["--all"] if sig == signal.SIGKILL else []
        self.runtime.runc("kill", *extra, self.id, str(int(sig)), timeout=10)

    def exec(self, argv: list[str], *, stdin: bool) -> ExecProcess:
        """Start ``runc exec --process`` with the container's process spec and argv.

        Like containerd's shim, the argv goes in a process.json, so only the exec'd
        process shows it on its command line (not runc, not nsenter).
        """
        self._execs += 1
        process_file = self.bundle / f"exec-{self._execs}.json"
        pid_file = self.bundle / f"exec-{self._execs}.pid"
        process = json.loads((self.bundle / "config.json").read_text())["process"]
        process.update(args=argv, terminal=False)
        process_file.write_text(json.dumps(process))
        popen = self.runtime.node.popen(
            [
                "runc",
                "--root",
                RuncRuntime.RUNC_ROOT,
                "exec",
                "--process",
                str(process_file),
                "--pid-file",
                str(pid_file),
                self.id,
            ],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        process_ = ExecProcess(popen, kill=lambda: self._kill_exec(popen, pid_file))
        self._exec_procs.append(process_)
        return process_

    def _kill_exec(self, popen: subprocess.Popen[bytes], pid_file: Path) -> None:
        """Kill an exec chain: the exec'd process, then runc exec, then nsenter."""
        with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
            pid = pid_file.read_text().strip()
            if pid:
                self.runtime.node.run(["kill", "-KILL", pid], timeout=10)
        with contextlib.suppress(OSError):
            popen.kill()  # a NodeProcess signals the process inside the node
        if popen.poll() is None:  # not reaped, so the pid is still nsenter's
            with contextlib.suppress(OSError):
                os.kill(popen.pid, signal.SIGKILL)

    def cleanup(self) -> None:
        """Kill what is left, delete the container, unmount and remove the bundle."""
        if self._cleaned:
            return
        self._cleaned = True
        for process in self._exec_procs:
            if not process.finished():
                process.hangup()
        if self._popen is not None and self._popen.poll() is None:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=10)
        self.runtime.runc("delete", "--force", self.id, timeout=10)
        self.runtime.node.run(
            ["umount", "-l", str(self.bundle / "rootfs")],
            capture_output=True,
            timeout=10,
        )
        shutil.rmtree(self.bundle, ignore_errors=True)


def build_oci_spec(
    base: Obj, spec: ContainerSpec, *, rootfs: Path, cgroups_path: str
) -> Obj:
    """Return the OCI runtime spec for a container: ``runc spec``'s, then the pod's."""
    pod_spec, container = spec.pod["spec"], spec.container
    context = container.get("securityContext") or {}
    privileged = bool(context.get("privileged"))
    config = base
    config["root"] = {
        "path": str(rootfs),
        "readonly": bool(context.get("readOnlyRootFilesystem")),
    }
    if pod_spec.get("hostNetwork"):
        config.pop("hostname", None)  # the node's UTS namespace: its own name
    else:
        config["hostname"] = spec.hostname
    _apply_process(config["process"], spec, context, privileged=privileged)
    _apply_namespaces(config["linux"], pod_spec)
    config["linux"]["cgroupsPath"] = cgroups_path
    _apply_memory_limit(config["linux"], container)
    config["mounts"] = _base_mounts(
        config["mounts"],
        privileged=privileged,
        host_network=bool(pod_spec.get("hostNetwork")),
    )
    config["mounts"] += _volume_mounts(spec)
    if privileged:
        _make_privileged(config["linux"])
    return config


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_QUANTITY_UNITS: Final = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity_bytes(text: str) -> int:
    """Return the bytes of a memory quantity (``256Mi``, ``1G``, ``1048576``)."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"unsupported quantity {text!r}")
    return int(float(match[1]) * _QUANTITY_UNITS[match[2]])


def _apply_memory_limit(linux: Obj, container: Obj) -> None:
    """Give the container's cgroup its memory limit, as the kubelet asks the runtime.

    The kernel's OOM killer then acts inside the container as on a real node (on
    cgroup v1, it kills the biggest process of the cgroup, not the whole container).
    """
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if limit is None:
        return
    linux.setdefault("resources", {})["memory"] = {"limit": quantity_bytes(limit)}


def _apply_process(
    process: Obj, spec: ContainerSpec, context: Obj, *, privileged: bool
) -> None:
    """Set argv, env, cwd, user, capabilities and no_new_privs."""
    process.update(terminal=False, args=spec.argv, env=spec.env, cwd=spec.cwd)
    process["user"] = {
        "uid": int(context.get("runAsUser", 0)),
        "gid": int(context.get("runAsGroup", 0)),
    }
    process["noNewPrivileges"] = context.get("allowPrivilegeEscalation") is False
    process.pop("apparmorProfile", None)
    caps = _capabilities(context, privileged=privileged)
    process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}


def _capabilities(context: Obj, *, privileged: bool) -> list[str]:
    """Return CAP_ names: all the runtime has when privileged, else default +add -drop.

    Privileged is containerd's WithAllCurrentCapabilities: the bounding set of the
    runtime's own process, which on a sandboxed machine may lack some.
    """
    if privileged:
        return [f"CAP_{name}" for name in current_capabilities()]
    changes = context.get("capabilities") or {}
    drop = {c.upper().removeprefix("CAP_") for c in changes.get("drop") or []}
    names = [] if "ALL" in drop else [c for c in DEFAULT_CAPABILITIES if c not in drop]
    names += [c.upper().removeprefix("CAP_") for c in changes.get("add") or []]
    return [f"CAP_{name}" for name in dict.fromkeys(names)]


def current_capabilities() -> list[str]:
    """Return the names of the capabilities in this process's bounding set."""
    status = Path("/proc/self/status").read_text()
    mask = int(re.search(r"^CapBnd:\s*([0-9a-f]+)", status, re.M)[1], 16)  # type: ignore[index]
    return [name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]


def _apply_namespaces(linux: Obj, pod_spec: Obj) -> None:
    """Drop the namespaces shared with the node (hostPID, hostNetwork, hostIPC)."""
    shared = set()
    if pod_spec.get("hostPID"):
        shared.add("pid")
    if pod_spec.get("hostNetwork"):
        shared.update({"network", "uts"})
    if pod_spec.get("hostIPC"):
        shared.add("ipc")
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        shared.add("cgroup")  # like containerd, no cgroup namespace on cgroup v1
    linux["namespaces"] = [
        ns for ns in linux.get("namespaces", []) if ns["type"] not in shared
    ]


def _base_mounts(
    mounts: list[Obj], *, privileged: bool, host_network: bool
) -> list[Obj]:
    """Keep runc's standard mounts; /sys and cgroups are writable when privileged.

    The cgroup mount becomes an rbind of the node's /sys/fs/cgroup: the test node
    shows each hierarchy from its own parent, which runc's cgroup-v1 mount (it
    computes bind sources from /proc/self/cgroup) cannot follow.
    """
    result = []
    for mount in mounts:
        mount = dict(mount)
        if mount["destination"] == "/sys/fs/cgroup":
            mount = {
                "destination": "/sys/fs/cgroup",
                "type": "bind",
                "source": "/sys/fs/cgroup",
                "options": [
                    "rbind",
                    "nosuid",
                    "noexec",
                    "nodev",
                    "rprivate",
                    "rw" if privileged else "ro",
                ],
            }
        elif privileged and mount["destination"] == "/sys":
            mount["options"] = [o for o in mount.get("options", []) if o != "ro"] + [
                "rw"
            ]
        if host_network and mount["destination"] == "/sys":
            mount = {
                "destination": "/sys",
                "type": "bind",
                "source": "/sys",
                "options": [
                    "rbind",
                    "nosuid",
                    "noexec",
                    "nodev",
                    "rw" if privileged else "ro",
                ],
            }
        result.append(mount)
    return result


def _volume_mounts(spec: ContainerSpec) -> list[Obj]:
    """Return the container's volume mounts: hostPath (rbind) and emptyDir."""
    volumes = {v["name"]: v for v in spec.pod["spec"].get("volumes") or []}
    mounts = []
    for mount in spec.container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        source = _volume_source(volume, spec)
        if source is None:
            continue
        options = ["rbind", _propagation(mount)]
        if mount.get("readOnly"):
            options += ["ro"] + (["rro"] if _kernel_has_rro() else [])
        mounts.append(
            {
                "destination": mount["mountPath"],
                "type": "bind",
                "source": source,
                "options": options,
            }
        )
    return mounts + _etc_mounts(spec)


def _volume_source(volume: Obj, spec: ContainerSpec) -> str | None:
    """Return the node path to bind for a volume, creating emptyDir folders."""
    if "hostPath" in volume:
        return str(volume["hostPath"]["path"])
    if "emptyDir" in volume and spec.pod_dir is not None:
        folder = spec.pod_dir / "volumes" / "kubernetes.io~empty-dir" / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)
        uid = spec.pod["metadata"]["uid"]
        kind = "kubernetes.io~empty-dir"
        return f"/var/lib/kubelet/pods/{uid}/volumes/{kind}/{volume['name']}"
    return None


def _propagation(mount: Obj) -> str:
    return {"HostToContainer": "rslave", "Bidirectional": "rshared"}.get(
        mount.get("mountPropagation", ""), "rprivate"
    )


def _kernel_has_rro() -> bool:
    """Tell whether mount_setattr (Linux 5.12) exists, which runc's rro needs."""
    major, minor = (int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    return (major, minor) >= (5, 12)


def _etc_mounts(spec: ContainerSpec) -> list[Obj]:
    """Return the /etc/hosts and /etc/hostname binds a kubelet gives every container."""
    if spec.pod_dir is None:
        return []
    uid = spec.pod["metadata"]["uid"]
    hosts = spec.pod_dir / "etc-hosts"
    if not hosts.exists():
        ip = spec.pod.get("status", {}).get("podIP", "127.0.0.1")
        hosts.write_text(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
            f"::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{spec.hostname}\n"
        )
    hostname = spec.pod_dir / "etc-hostname"
    hostname.write_text(spec.hostname + "\n")
    node_dir = f"/var/lib/kubelet/pods/{uid}"
    return [
        {
            "destination": "/etc/hosts",
            "type": "bind",
            "source": f"{node_dir}/etc-hosts",
            "options": ["rbind", "rprivate", "rw"],
        },
        {
            "destination": "/etc/hostname",
            "type": "bind",
            "source": f"{node_dir}/etc-hostname",
            "options": ["rbind", "rprivate", "rw"],
        },
    ]


def _make_privileged(linux: Obj) -> None:
    """Lift masks, read-only paths and the device cgroup; expose the node's devices."""
    linux["maskedPaths"] = []
    linux["readonlyPaths"] = []
    linux.pop("seccomp", None)
    linux.setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]
    linux["devices"] = _host_devices()


def _host_devices() -> list[Obj]:
    """List /dev's character and block devices (containerd's HostDevices)."""
    devices = []
    for folder, subdirs, files in os.walk("/dev"):
        subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DEV_DIRS]
        for name in files:
            path = os.path.join(folder, name)
            if path == "/dev/console":
                continue
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                kind = (
                    "c"
                    if stat.S_ISCHR(info.st_mode)
                    else ("b" if stat.S_ISBLK(info.st_mode) else None)
                )
                if kind:
                    devices.append(
                        {
                            "path": path,
                            "type": kind,
                            "major": os.major(info.st_rdev),
                            "minor": os.minor(info.st_rdev),
                            "fileMode": stat.S_IMODE(info.st_mode),
                            "uid": info.st_uid,
                            "gid": info.st_gid,
                        }
                    )
    return devices


# ---------------------------------------------------------------------------
# Environment and command (the kubelet's expansion rules)
# ---------------------------------------------------------------------------


def expand(text: str, values: dict[str, str]) -> str:
    """Expand ``$(VAR)`` from values; ``$$`` is a literal ``$``; unknown stays as is."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(values.get(name, text[i : end + 1]))
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


_FIELD_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref(pod: Obj, path: str) -> str:
    """Return a downward-API field of the pod (the fieldRef paths env may use)."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    match = _FIELD_REF.match(path)
    if match:
        return str(meta.get(match[1], {}).get(match[2], ""))
    return str(
        {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName"),
            "status.hostIP": status.get("hostIP"),
            "status.podIP": status.get("podIP"),
            "status.hostIPs": status.get("hostIP"),
            "status.podIPs": status.get("podIP"),
        }.get(path)
        or ""
    )


def container_env(pod: Obj, container: Obj, hostname: str) -> list[str]:
    """Return the process env: PATH and HOSTNAME, the container's, then service links.

    As in the kubelet, ``$(VAR)`` in a value refers to variables declared before it
    or to the service variables, which are appended unless the container sets them.
    """
    service = dict(item.split("=", 1) for item in SERVICE_ENV)
    if not pod["spec"].get("enableServiceLinks", True):
        service = {
            k: v for k, v in service.items() if k.startswith("KUBERNETES_SERVICE")
        }
    defined: dict[str, str] = {}
    for item in container.get("env") or []:
        if "valueFrom" in item:
            ref = item["valueFrom"].get("fieldRef", {}).get("fieldPath")
            value = field_ref(pod, ref) if ref else ""
        else:
            value = expand(str(item.get("value", "")), service | defined)
        defined[item["name"]] = value
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname} | defined
    env.update({k: v for k, v in service.items() if k not in defined})
    return [f"{key}={value}" for key, value in env.items()]


def container_argv(container: Obj, env: list[str]) -> list[str]:
    """Return command + args with ``$(VAR)`` expanded from the container's env."""
    values = dict(item.split("=", 1) for item in env)
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    return [expand(str(arg), values) for arg in argv]


# ---------------------------------------------------------------------------
# The kubelet
# ---------------------------------------------------------------------------


class ContainerRun:
    """One container of a pod: its state as the kubelet reports it."""

    def __init__(self, container: Obj) -> None:
        self.spec = container
        self.name: str = container["name"]
        self.image: str = container["image"]
        self.state = "waiting"
        self.reason: str | None = "ContainerCreating"
        self.message: str | None = None
        self.exit_code: int | None = None
        self.started_at: str | None = None
        self.finished_at: str | None = None
        self.container_id: str | None = None
        self.pulled = False
        self.handle: Container | None = None
        self.log = ContainerLog()

    def wait(self, reason: str, message: str | None = None) -> None:
        self.state, self.reason, self.message = "waiting", reason, message

    def run(self, container_id: str, handle: Container) -> None:
        self.state, self.reason, self.message = "running", None, None
        self.container_id, self.handle = container_id, handle
        self.started_at = now_rfc3339()

    def terminate(
        self, code: int, *, reason: str | None = None, message: str | None = None
    ) -> None:
        self.state, self.exit_code = "terminated", code
        self.reason = reason or ("Completed" if code == 0 else "Error")
        self.message = message
        self.finished_at = now_rfc3339()
        self.log.close()

    def status(self) -> Obj:
        """Return the v1.ContainerStatus, with fields in the apiserver's order."""
        state: Obj
        if self.state == "waiting":
            state = {"waiting": {"reason": self.reason}}
            if self.message:
                state["waiting"]["message"] = self.message
        elif self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
        else:
            state = {"terminated": self._terminated()}
        status: Obj = {}
        if self.container_id:
            status["containerID"] = f"containerd://{self.container_id}"
        status["image"] = normalize_image(self.image) if self.pulled else self.image
        status["imageID"] = image_id(self.image) if self.pulled else ""
        status.update(
            lastState={},
            name=self.name,
            ready=self.state == "running",
            restartCount=0,
            started=self.state == "running",
            state=state,
        )
        return status

    def _terminated(self) -> Obj:
        done: Obj = {}
        if self.container_id:
            done["containerID"] = f"containerd://{self.container_id}"
        done["exitCode"] = self.exit_code
        done["finishedAt"] = self.finished_at
        if self.message:
            done["message"] = self.message
        done["reason"] = self.reason
        done["startedAt"] = self.started_at or self.finished_at
        return done


class PodWorker:
    """Runs one pod from admission to its end (the kubelet's pod worker)."""

    def __init__(self, kubelet: FakeKubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = (
            meta["namespace"],
            meta["name"],
            meta["uid"],
        )
        self.runs = [ContainerRun(c) for c in pod["spec"]["containers"]]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now_rfc3339()
        self.started = time.monotonic()
        self.pod_ip = kubelet.allocate_ip(pod)
        self.transitions: dict[str, tuple[str, str]] = {}
        self.wake = threading.Event()
        self.kill_grace: int | None = None
        self.confirm = False
        self.done = threading.Event()
        self.thread = threading.Thread(
            target=self._main, daemon=True, name=f"kubelet-{self.name}"
        )

    # -- requests from the kubelet ---------------------------------------------

    def request_kill(self, grace: int, *, confirm: bool) -> None:
        """Ask the worker to stop the pod within ``grace`` seconds."""
        self.kill_grace = (
            grace if self.kill_grace is None else min(grace, self.kill_grace)
        )
        self.confirm = self.confirm or confirm
        self.wake.set()

    def container(self, name: str) -> ContainerRun | None:
        return next((run for run in self.runs if run.name == name), None)

    # -- the worker thread ---------------------------------------------------------

    def _main(self) -> None:
        """Admit, pull, start, supervise; always clean up and confirm a deletion."""
        try:
            if not self._admit():
                return
            self._report()
            if self._pull_images() and self._start_containers():
                self._settle_phase()
                self._report()
            self._supervise()
        except Exception:  # a broken rig must not hang the test: report and stop
            log.exception("fake kubelet: pod %s/%s failed", self.namespace, self.name)
        finally:
            for run in self.runs:
                if run.handle is not None:
                    with contextlib.suppress(Exception):
                        run.handle.cleanup()
                run.log.close()
            if self.kill_grace is not None:
                self.kubelet.forget(self.pod)
            if self.confirm:
                self.kubelet.sink.confirm_pod_deleted(
                    self.namespace, self.name, self.uid
                )
            self.done.set()

    def _admit(self) -> bool:
        """Refuse the pod as the eviction manager's admit handler does under pressure.

        Critical pods always pass; under memory pressure alone only BestEffort pods
        are refused; any other pressure refuses every pod that is not critical.
        """
        node = self.kubelet.sink.node(self.kubelet.node_name) or {}
        pressures = [
            c["type"]
            for c in node.get("status", {}).get("conditions") or []
            if c["type"].endswith("Pressure") and c.get("status") == "True"
        ]
        if not pressures or self.pod["spec"].get("priority", 0) >= CRITICAL_PRIORITY:
            return True
        qos = self.pod.get("status", {}).get("qosClass", "BestEffort")
        if pressures == ["MemoryPressure"] and qos != "BestEffort":
            return True
        self.phase, self.reason = "Failed", "Evicted"
        self.message = (
            f"Pod was rejected: The node had condition: [{' '.join(pressures)}]. "
        )
        status = {
            "phase": self.phase,
            "reason": self.reason,
            "message": self.message,
            "startTime": self.start_time,
        }
        self.kubelet.sink.update_pod_status(
            self.namespace, self.name, self.uid, lambda pod: pod.update(status=status)
        )
        return False

    def _stopping(self) -> bool:
        return self.kill_grace is not None or self._past_deadline()

    def _past_deadline(self) -> bool:
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        return deadline is not None and time.monotonic() - self.started >= deadline

    def _pull_images(self) -> bool:
        """Check every image; on a failure show ErrImagePull, then ImagePullBackOff."""
        for run in self.runs:
            failure = self._pull_failure(run.image)
            if failure is None:
                run.pulled = True
                continue
            run.wait("ErrImagePull", failure)
            self._report()
            self.wake.wait(PULL_BACKOFF_AFTER)
            run.wait(
                "ImagePullBackOff",
                f'Back-off pulling image "{run.image}": ErrImagePull: {failure}',
            )
            self._report()
            return False
        return True

    def _pull_failure(self, image: str) -> str | None:
        """Return the pull error for an image the node cannot get, else None."""
        full = normalize_image(image)
        known = self.kubelet.runtime.has_image(image)
        if full not in self.kubelet.sink.pull_failures and known:
            return None
        given = self.kubelet.sink.pull_failures.get(full)
        reference = full.split("@")[0]
        return given or (
            "rpc error: code = NotFound desc = failed to pull and unpack image "
            f'"{full}": failed to resolve reference "{full}": {reference}: not found'
        )

    def _start_containers(self) -> bool:
        """Start each container; a failure leaves it waiting or terminated."""
        for run in self.runs:
            if self._stopping():
                return False
            self._start_one(run)
        return True

    def _start_one(self, run: ContainerRun) -> None:
        hostname = self._hostname()
        env = container_env(self._pod_with_ips(), run.spec, hostname)
        argv = container_argv(run.spec, env)
        if not argv:
            run.wait(
                "CreateContainerError",
                f'failed to generate container "{uuid.uuid4().hex}" spec: failed to '
                "generate spec: no command specified",
            )
            return
        container_id = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        runtime = self.kubelet.runtime
        run.log = ContainerLog(runtime.log_file(self.pod, run.name))
        spec = ContainerSpec(
            pod=self._pod_with_ips(),
            container=run.spec,
            container_id=container_id,
            argv=argv,
            env=env,
            cwd=run.spec.get("workingDir") or "/",
            hostname=hostname,
            log=run.log,
            pod_dir=runtime.pod_dir(self.pod),
        )
        try:
            handle = runtime.start(spec)
        except StartError as err:
            run.container_id = container_id
            run.terminate(128, reason="StartError", message=str(err))
            return
        except Exception as err:  # a broken rig: show it in the status, not a hang
            log.exception("fake kubelet: cannot start %s/%s", self.name, run.name)
            run.wait("RunContainerError", f"fake kubelet: {err!r}")
            return
        run.run(container_id, handle)

    def _hostname(self) -> str:
        if self.pod["spec"].get("hostNetwork"):
            return self.kubelet.node_name
        return str(self.pod["spec"].get("hostname") or self.name)

    def _pod_with_ips(self) -> Obj:
        pod = copy.deepcopy(self.pod)
        pod["status"] = {"hostIP": self.kubelet.node_ip, "podIP": self.pod_ip}
        return pod

    def _supervise(self) -> None:
        """Watch for exits, the deadline and kill requests until the pod is done."""
        while True:
            if self.kill_grace is not None:
                self._kill(self.kill_grace)
                self._settle_phase()
                self._report()
                return
            if self._past_deadline():
                self._deadline_exceeded()
                return
            if self._collect_exits():
                self._settle_phase()
                self._report()
            if self.phase in ("Succeeded", "Failed"):
                return
            self.wake.wait(SUPERVISE_INTERVAL)
            self.wake.clear()

    def _collect_exits(self) -> bool:
        """Mark containers whose process ended; return whether any did."""
        changed = False
        for run in self.runs:
            if run.state == "running" and run.handle is not None:
                code = run.handle.poll()
                if code is None:
                    continue
                failure = run.handle.start_failure()
                if failure:
                    run.terminate(128, reason="StartError", message=failure)
                else:
                    run.terminate(code)
                changed = True
        return changed

    def _settle_phase(self) -> None:
        """Succeeded/Failed once no container runs or waits any more."""
        states = {run.state for run in self.runs}
        if "running" in states:
            self.phase = "Running"
        elif states == {"terminated"}:
            failed = any(run.exit_code for run in self.runs)
            self.phase = "Failed" if failed else "Succeeded"

    def _kill(self, grace: int) -> None:
        """SIGTERM, wait up to ``grace`` seconds, SIGKILL; record the exits."""
        running = [
            r for r in self.runs if r.state == "running" and r.handle is not None
        ]
        for run in running:
            assert run.handle is not None
            run.handle.signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            r.handle.poll() is None for r in running if r.handle
        ):
            time.sleep(SUPERVISE_INTERVAL)
        for run in running:
            assert run.handle is not None
            if run.handle.poll() is None:
                run.handle.signal(signal.SIGKILL)
            code = _wait_poll(run.handle)
            run.terminate(code if code is not None else 137)
        for run in self.runs:
            if run.state == "waiting":
                run.terminate(
                    137,
                    reason="ContainerStatusUnknown",
                    message="The container could not be located when the pod "
                    "was terminated",
                )

    def _deadline_exceeded(self) -> None:
        """Stop the pod for activeDeadlineSeconds: phase Failed, DeadlineExceeded."""
        grace = int(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        self.phase = "Failed"
        self.reason = "DeadlineExceeded"
        self.message = "Pod was active on the node longer than the specified deadline"
        self._kill(grace)
        self._report()

    # -- status ------------------------------------------------------------------

    def _report(self) -> None:
        """Write the whole pod status back to the API server."""
        status = self._status()

        def replace(pod: Obj) -> None:
            pod["status"] = status

        self.kubelet.sink.update_pod_status(
            self.namespace, self.name, self.uid, replace
        )

    def _status(self) -> Obj:
        status: Obj = {"phase": self.phase, "conditions": self._conditions()}
        if self.message:
            status["message"] = self.message
        if self.reason:
            status["reason"] = self.reason
        status.update(
            hostIP=self.kubelet.node_ip,
            hostIPs=[{"ip": self.kubelet.node_ip}],
            podIP=self.pod_ip,
            podIPs=[{"ip": self.pod_ip}],
            startTime=self.start_time,
            containerStatuses=[run.status() for run in self.runs],
            qosClass=self.pod.get("status", {}).get("qosClass", "BestEffort"),
        )
        return status

    def _conditions(self) -> list[Obj]:
        """Return the five pod conditions, with transition times kept per type."""
        done = self.phase in ("Succeeded", "Failed")
        unready = [r.name for r in self.runs if r.state != "running"]
        ready_reason = (
            ("PodCompleted" if done else "ContainersNotReady") if unready else None
        )
        message = (
            f"containers with unready status: [{' '.join(unready)}]"
            if unready and not done
            else None
        )
        sandbox = not done
        return [
            self._condition("PodReadyToStartContainers", sandbox, None, None),
            self._condition(
                "Initialized", True, "PodCompleted" if done else None, None
            ),
            self._condition("Ready", not unready, ready_reason, message),
            self._condition("ContainersReady", not unready, ready_reason, message),
            self._condition("PodScheduled", True, None, None),
        ]

    def _condition(
        self, kind: str, ok: bool, reason: str | None, message: str | None
    ) -> Obj:
        value = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != value:
            self.transitions[kind] = (value, now_rfc3339())
        condition: Obj = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": self.transitions[kind][1],
        }
        if reason and (not ok or kind == "Initialized"):
            condition["reason"] = reason
        if message:
            condition["message"] = message
        return condition


def _wait_poll(handle: Container, timeout: float = 10.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = handle.poll()
        if code is not None:
            return code
        time.sleep(SUPERVISE_INTERVAL)
    return None


class FakeKubelet:
    """The kubelet of one node: pod workers, exec and logs, over one runtime."""

    def __init__(
        self, node_name: str, sink: PodSink, runtime: Runtime, *, node_ip: str
    ) -> None:
        self.node_name = node_name
        self.sink = sink
        self.runtime = runtime
        self.node_ip = node_ip
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._next_ip = 2
        self._closed = False

    def allocate_ip(self, pod: Obj) -> str:
        """Return the pod IP: the node's with hostNetwork, else the next free one."""
        if pod["spec"].get("hostNetwork"):
            return self.node_ip
        with self._lock:
            self._next_ip += 1
            return f"10.244.0.{self._next_ip}"

    def admit(self, pod: Obj) -> None:
        """Start a worker for a pod just bound to this node."""
        worker = PodWorker(self, pod)
        with self._lock:
            if self._closed:
                return
            self._workers[worker.uid] = worker
        worker.thread.start()

    def kill(self, pod: Obj, *, grace: int) -> None:
        """Stop a pod: graceful deletions are confirmed once its containers are gone."""
        worker = self._workers.get(pod["metadata"]["uid"])
        if worker is None or worker.done.is_set():
            if worker is not None:
                self.forget(pod)
            if grace > 0:
                meta = pod["metadata"]
                self.sink.confirm_pod_deleted(
                    meta["namespace"], meta["name"], meta["uid"]
                )
            return
        worker.request_kill(grace, confirm=grace > 0)

    def forget(self, pod: Obj) -> None:
        """Drop a deleted pod: its worker, and what it left on the node."""
        with self._lock:
            self._workers.pop(pod["metadata"]["uid"], None)
        with contextlib.suppress(Exception):  # cleanup must not break a deletion
            self.runtime.remove_pod(pod)

    def exec(
        self, pod: Obj, container: str, argv: list[str], *, stdin: bool
    ) -> ExecProcess:
        """Start argv in a running container, or raise the kubelet's refusal."""
        worker = self._workers.get(pod["metadata"]["uid"])
        if worker is None:
            raise KubeletError(404, "pod does not exist")
        run = worker.container(container)
        if run is None or run.state != "running" or run.handle is None:
            raise KubeletError(500, f'container not found ("{container}")')
        return run.handle.exec(argv, stdin=stdin)

    def log_reader(self, pod: Obj, container: str, *, previous: bool) -> ContainerLog:
        """Return a container's log, or raise the kubelet's 400 text for it."""
        name = pod["metadata"]["name"]
        if previous:
            raise KubeletError(
                400,
                f'previous terminated container "{container}" in pod "{name}" '
                "not found",
            )
        validate_log_status(pod, container)
        worker = self._workers.get(pod["metadata"]["uid"])
        run = worker.container(container) if worker else None
        if run is None:
            empty = ContainerLog()
            empty.close()
            return empty
        return run.log

    def close(self) -> None:
        """Kill every container now (no grace) and wait for the workers."""
        with self._lock:
            self._closed = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.request_kill(0, confirm=False)
        for worker in workers:
            worker.done.wait(timeout=30)
        self.runtime.close()


def validate_log_status(pod: Obj, container: str) -> None:
    """Raise the kubelet's error for a container without a log yet.

    (validateContainerLogStatus in the kubelet.)
    """
    name = pod["metadata"]["name"]
    statuses = pod.get("status", {}).get("containerStatuses") or []
    status = next((s for s in statuses if s.get("name") == container), None)
    if status is None:
        raise KubeletError(
            400, f'container "{container}" in pod "{name}" is not available'
        )
    state = status.get("state", {})
    if "running" in state:
        return
    if "terminated" in state:
        if not state["terminated"].get("containerID"):
            raise KubeletError(
                400, f'container "{container}" in pod "{name}" is terminated'
            )
        return
    reason = state.get("waiting", {}).get("reason")
    if reason is None:
        raise KubeletError(
            400,
            f'container "{container}" in pod "{name}" is waiting to start - '
            "no logs yet",
        )
    text = {
        "ErrImagePull": "image can't be pulled",
        "ImagePullBackOff": "trying and failing to pull image",
    }.get(reason, reason)
    raise KubeletError(
        400, f'container "{container}" in pod "{name}" is waiting to start: {text}'
    )

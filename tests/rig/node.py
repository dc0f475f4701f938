"""A private test node: a mount and PID namespace that looks like a Kubernetes node.

The agent under test reads fixed node paths (/var/lib/containerd, /run/containerd,
/var/log/pods, ...). A test must give it real runtime state at those paths
without touching the machine's own. `Node` does this with one *holder* process
started by ``unshare -m -p -f --mount-proc --propagation private``:

* The holder is PID 1 of a new PID namespace, so ``/proc/1/mountinfo`` inside
  shows the node's mounts, as on a real node where PID 1 is the host's init.
  It reaps orphans (containerd shims reparent to it), and when it dies the
  kernel kills every process of the namespace.
* Every node path in `NODE_PATHS` is bind-mounted from a private backing folder
  ``<base_dir>/fs/<node path>``. Tests inspect or break state from outside
  through `Node.path`.

Mount scheme. A bind mount needs an existing mount point, and most node paths
do not exist on the machine. Creating them on the machine is not allowed, and a
bare tmpfs over /etc or /var/lib would hide what the runtimes need (passwd,
ld.so.cache, /etc/containers/policy.json, ...). So for each missing node path
the holder *shadows* its nearest existing ancestor (here /etc, /run, /var/lib,
/var/log):

1. open the ancestor as a directory fd, so its original entries stay reachable
   through ``/proc/self/fd/N/<name>``;
2. mount a fresh tmpfs over it, with the original mode and owner;
3. bind each original entry back into the tmpfs (symlinks are recreated as
   symlinks), except entries that are node paths themselves;
4. create the missing node paths in the tmpfs and bind the backing folders there.

Existing files keep their content and inode (they are bind mounts of the real
ones), new top-level names land in the namespace's tmpfs (e.g. /run/runc or
/run/containerd's siblings), and nothing is created on the machine.

Node paths under /etc that exist on the machine (/etc/containers holds podman's
policy.json) are seeded with a *copy* of the machine's files the first time the
backing folder is made, so runtimes find their usual configuration while edits
stay private. Data paths are never copied.

cgroups. cgroupfs is the machine's in every mount namespace, so runc's
cgroups (/k8s.io/<id> by default) would land in the machine's hierarchies.
`Node` makes a parent ``/crilinks-rig-<hash of base_dir>`` in each hierarchy
and the holder bind-mounts it over that hierarchy's mount point, so everything
made in the node lands below it; `stop` removes it. Node processes themselves
stay in the caller's cgroup (no cgroup namespace), which keeps cgroup v2's
"no internal processes" rule out of the way.

Processes run inside with ``nsenter -t PID -m -p``. nsenter forks into the PID
namespace and does not forward signals to its child, so `NodeProcess` signals
the inner process itself.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

# Node paths given private backing folders. /run/runc, /run/containerd/s and
# other new names under /run land in the namespace's tmpfs anyway.
NODE_PATHS: Final = (
    "/var/lib/containerd",
    "/run/containerd",
    "/etc/containerd",
    "/var/lib/containers",
    "/run/containers",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/kubelet",
    "/etc/containers",
    "/etc/crio",
    "/var/lib/rancher",
    "/run/k3s",
)

# Existing node paths under these prefixes are seeded with a copy of the
# machine's files (configuration, small); data paths never are.
_SEED_PREFIXES: Final = ("/etc/",)

# How long the holder may take to set up its mounts and say it is ready.
_READY_TIMEOUT: Final = 20.0

_MS_BIND: Final = 0x1000
_MS_REC: Final = 0x4000
_PR_SET_PDEATHSIG: Final = 1


class NodeError(RuntimeError):
    """Raised when the test node cannot be started or a command in it fails."""


class NodeProcess(subprocess.Popen[Any]):
    """A process started by ``nsenter`` inside the node.

    `pid` is nsenter's PID (so `wait` and pipes work as usual); `inner_pid` is
    the PID, as seen from outside, of the command nsenter forked into the node.
    Signals go to the inner process, since nsenter does not forward them.
    """

    @property
    def inner_pid(self) -> int | None:
        """Return the outside PID of the command inside the node, or None."""
        deadline = time.monotonic() + 2.0
        while self.poll() is None and time.monotonic() < deadline:
            children = _children(self.pid)
            if children:
                return children[0]
            time.sleep(0.01)
        return None

    def send_signal(self, sig: int) -> None:
        """Signal the inner process; fall back to nsenter if it is gone."""
        self.poll()
        if self.returncode is not None:
            return
        inner = self.inner_pid
        try:
            os.kill(inner if inner is not None else self.pid, sig)
        except ProcessLookupError:
            pass


class Node:
    """A private node: start() it, run() commands in it, stop() it."""

    def __init__(self, base_dir: str | os.PathLike[str]) -> None:
        self.base_dir = Path(base_dir)
        self.fs_root = self.base_dir / "fs"
        self._holder: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._procs: list[NodeProcess] = []
        digest = hashlib.sha256(os.fsencode(self.base_dir.resolve())).hexdigest()
        self.cgroup_parent = f"/crilinks-rig-{digest[:12]}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Node:
        """Create the backing folders and start the holder; wait until ready."""
        if self._holder is not None:
            raise NodeError(f"node {str(self.base_dir)!r} is already started")

        # Backing folders live on the machine's filesystem, under base_dir;
        # the node's cgroup parent lives in each of the machine's hierarchies.
        for node_path in NODE_PATHS:
            self._make_backing(node_path)
        cgroups = _make_cgroup_parent(self.cgroup_parent)

        # The holder runs this file as a script: stdlib only, no package import.
        spec = {
            "paths": list(NODE_PATHS),
            "fs_root": str(self.fs_root),
            "cgroups": cgroups,
        }
        argv = [
            "unshare", "-m", "-p", "-f", "--mount-proc", "--propagation", "private",
            sys.executable, "-I", str(Path(__file__).resolve()), "holder",
            json.dumps(spec),
        ]  # fmt: skip
        self._holder = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )

        # The holder prints one line once its mounts are in place.
        try:
            self._wait_ready()
        except NodeError:
            remove_cgroup_tree(self.cgroup_parent)
            raise
        self._pid = _wait_children(self._holder.pid)[0]
        return self

    def stop(self) -> None:
        """Kill what the node started, then the holder; keep the backing folders.

        Killing PID 1 of the namespace kills every process still in it, and the
        mount namespace (with its overlay, tmpfs and bind mounts) goes with the
        last one. Then the node's cgroup parent (`cgroup_parent`, on the
        machine's cgroupfs) is removed. The backing folders stay for the
        caller to inspect.
        """
        if self._holder is None:
            return

        # Processes we started, by their inner PID, then their nsenter.
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                _wait_quietly(proc)
        self._procs.clear()

        # The holder exits on SIGTERM; unshare then exits with it.
        holder, self._holder = self._holder, None
        if self._pid is not None:
            kill_and_wait(self._pid, signal.SIGTERM, timeout=5.0)
        if holder.poll() is None:
            holder.kill()
        _wait_quietly(holder)
        self._pid = None
        remove_cgroup_tree(self.cgroup_parent)

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Tell whether the node is started and its holder still lives."""
        return self._pid is not None and process_alive(self._pid)

    @property
    def pid(self) -> int:
        """Return the holder's PID as seen from outside (PID 1 inside)."""
        if self._pid is None:
            raise NodeError(f"node {str(self.base_dir)!r} is not started")
        return self._pid

    def path(self, node_path: str | os.PathLike[str]) -> Path:
        """Return the private backing folder of a path inside the node.

        Only paths under one of `NODE_PATHS` have a backing folder; others live
        in the namespace's tmpfs or are the machine's own, and raise ValueError.
        """
        text = os.fspath(node_path)
        for root in NODE_PATHS:
            if text == root or text.startswith(root + "/"):
                return self.fs_root / text.lstrip("/")
        raise ValueError(f"{text!r} is not under a node path with a backing folder")

    def popen(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        cwd: str | os.PathLike[str] | None = None,
        **kw: Any,
    ) -> NodeProcess:
        """Start argv inside the node's mount and PID namespaces.

        Keyword arguments go to subprocess.Popen. cwd is the working directory
        inside the node (default: the caller's, which the node also sees).
        """
        wd = os.fspath(cwd) if cwd is not None else os.getcwd()
        full = ["nsenter", "-t", str(self.pid), "-m", "-p", f"--wd={wd}", "--"]
        proc = NodeProcess([*full, *map(os.fspath, argv)], **kw)
        self._procs = [p for p in self._procs if p.poll() is None] + [proc]
        return proc

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        input: str | bytes | None = None,
        capture_output: bool = False,
        timeout: float | None = None,
        check: bool = False,
        **kw: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """Run argv inside the node and wait, like subprocess.run.

        On timeout the inner process is killed (not just nsenter).
        """
        if capture_output:
            kw["stdout"] = kw["stderr"] = subprocess.PIPE
        if input is not None:
            kw["stdin"] = subprocess.PIPE
        with self.popen(argv, **kw) as proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check:
            done.check_returncode()
        return done

    # -- helpers -------------------------------------------------------------

    def _make_backing(self, node_path: str) -> None:
        """Create a backing folder, seeding /etc ones from the machine once."""
        backing = self.path(node_path)
        if backing.exists():
            return
        seed = os.path.isdir(node_path) and node_path.startswith(_SEED_PREFIXES)
        if seed:
            shutil.copytree(node_path, backing, symlinks=True)
        else:
            backing.mkdir(parents=True)

    def _wait_ready(self) -> None:
        """Wait for the holder's ready line; raise with its stderr if it fails."""
        assert self._holder is not None and self._holder.stdout is not None
        ready, _, _ = select.select([self._holder.stdout], [], [], _READY_TIMEOUT)
        line = self._holder.stdout.readline() if ready else b""
        if line.strip() == b"ready":
            return
        if self._holder.poll() is None:
            self._holder.kill()
        _, err = self._holder.communicate()
        self._holder = None
        raise NodeError(
            f"test node {str(self.base_dir)!r} did not start: "
            f"{err.decode(errors='replace').strip() or 'no ready line'}"
        )


# -- process helpers (public ones are used by the other rig modules) -------------


def _children(pid: int) -> list[int]:
    """Return the PIDs of pid's children (from /proc/PID/task/*/children)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.extend(int(word) for word in text.split())
    return found


def _wait_children(pid: int, timeout: float = 5.0) -> list[int]:
    """Wait until pid has a child; return its children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _children(pid)
        if children:
            return children
        time.sleep(0.01)
    raise NodeError(f"process {pid} started no child within {timeout}s")


def kill_and_wait(pid: int, sig: int, *, timeout: float) -> bool:
    """Send sig to pid (not our child); poll until it is gone, True if it is."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.02)
    return False


def process_alive(pid: int) -> bool:
    """Tell whether pid exists and is not a zombie (for any PID, not just ours)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return text.rpartition(")")[2].split()[0] != "Z"


def _make_cgroup_parent(parent: str) -> list[list[str]]:
    """Create parent in every cgroup hierarchy; return [mount point, its dir] pairs."""
    pairs = []
    for mount_point in _cgroup_mounts():
        directory = Path(mount_point + parent)
        directory.mkdir(exist_ok=True)
        # cgroup v1 cpuset starts empty, and runc fills in only below the mount.
        for name in ("cpuset.cpus", "cpuset.mems"):
            inherited = Path(mount_point, name)
            if inherited.exists() and not (directory / name).read_text().strip():
                (directory / name).write_text(inherited.read_text())
        pairs.append([mount_point, str(directory)])
    return pairs


def remove_cgroup_tree(parent: str, *, timeout: float = 5.0) -> None:
    """Remove cgroup parent (e.g. '/crilinks-rig-x') and all below it, everywhere.

    Processes of a killed namespace leave their cgroups a moment after they
    die, so busy cgroups are retried until timeout, then left in place.
    """
    deadline = time.monotonic() + timeout
    tops = [Path(mount + parent) for mount in _cgroup_mounts()]
    while True:
        for top in tops:
            if top.is_dir():
                subdirs = [p for p in top.rglob("*") if p.is_dir()]
                for directory in sorted(subdirs, key=lambda p: -len(p.parts)):
                    _rmdir_quietly(directory)
                _rmdir_quietly(top)
        if not any(top.is_dir() for top in tops) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _cgroup_mounts() -> list[str]:
    """Return the mount points of cgroup (v1) and cgroup2 filesystems."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1] in ("cgroup", "cgroup2"):
            points.append(fields[4])
    return points


def _rmdir_quietly(directory: Path) -> None:
    """rmdir a cgroup; a busy one (a process still in it) is left alone."""
    try:
        directory.rmdir()
    except OSError:
        pass


def _wait_quietly(proc: subprocess.Popen[Any]) -> None:
    """Reap proc, closing its pipes; kill it if it does not exit."""
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def _die_with_parent() -> None:
    """In a child before exec: get SIGKILL when the parent thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# -- the holder (runs inside the namespace, as PID 1) --------------------------


def _holder_main(spec_json: str) -> None:
    """Set up the node's mounts, say ready, then reap children until SIGTERM."""
    spec = json.loads(spec_json)
    paths: list[str] = spec["paths"]
    fs_root = Path(spec["fs_root"])

    # Die with unshare (our parent), which dies with the test process.
    _die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    # Shadow the nearest existing ancestor of each missing node path,
    # outermost first, then bind the backing folders over the node paths.
    for ancestor in sorted({_existing_ancestor(p) for p in paths if not _exists(p)}):
        _shadow(ancestor, keep_out=set(paths))
    for node_path in paths:
        os.makedirs(node_path, exist_ok=True)
        _mount(str(fs_root / node_path.lstrip("/")), node_path, None, _MS_BIND)

    # A private /dev/shm: podman keeps its container locks in /dev/shm/libpod_lock,
    # and locks of nodes long gone must not fill the machine's.
    _mount("tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777")

    # Each cgroup hierarchy shows only the node's parent, so the cgroups runc
    # makes (/k8s.io/<id>) land below it on the machine's cgroupfs.
    for mount_point, parent in spec["cgroups"]:
        _mount(parent, mount_point, None, _MS_BIND)

    # Tell the starter we are ready, then stay alive as the namespace's init.
    _say_ready(sys.stdout)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.2)


def _exists(path: str) -> bool:
    return os.path.lexists(path)


def _existing_ancestor(path: str) -> str:
    """Return the nearest ancestor of path that exists; refuse the root."""
    parent = os.path.dirname(path)
    while not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    if parent == "/":
        raise NodeError(f"refusing to shadow '/' for missing node path {path!r}")
    return parent


def _shadow(directory: str, *, keep_out: set[str]) -> None:
    """Cover directory with a tmpfs that binds back its original entries."""
    # Keep the original directory reachable through our own fd.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    st = os.fstat(fd)
    names = os.listdir(fd)
    options = f"mode={stat.S_IMODE(st.st_mode):o},uid={st.st_uid},gid={st.st_gid}"
    _mount("tmpfs", directory, "tmpfs", 0, options)

    # Recreate each entry: symlinks as symlinks, the rest as bind mounts.
    for name in names:
        target = os.path.join(directory, name)
        if target not in keep_out:
            _restore_entry(f"/proc/self/fd/{fd}/{name}", target)
    os.close(fd)


def _restore_entry(source: str, target: str) -> None:
    """Recreate one original entry in the shadow tmpfs."""
    # An entry may vanish between listdir and here (other tools use /run too).
    try:
        mode = os.lstat(source).st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(source), target)
            return
    except FileNotFoundError:
        return

    # Directories and files become bind mounts of the originals.
    if stat.S_ISDIR(mode):
        os.mkdir(target)
    else:
        open(target, "wb").close()
    _mount(source, target, None, _MS_BIND | _MS_REC)


def _mount(
    source: str, target: str, fstype: str | None, flags: int, data: str = ""
) -> None:
    """Call mount(2) through libc; raise OSError naming source and target."""
    libc = ctypes.CDLL(None, use_errno=True)
    kind = os.fsencode(fstype) if fstype else None
    enc = os.fsencode
    rc = libc.mount(enc(source), enc(target), kind, flags, data.encode())
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source!r} on {target!r}: {os.strerror(err)}")


def _say_ready(stream: IO[str]) -> None:
    stream.write("ready\n")
    stream.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["holder"]:
    _holder_main(sys.argv[2])

"""One inspection: find the runtime, pick the containers, judge them, emit records.

The same function serves the debug pod (records written as JSON lines) and the
plugin's ``--local`` mode (records handed to a callback). It never raises for a bad
node: what cannot be read becomes a ``target`` record with ``status: not-inspected``
and a reason, and the closing ``summary`` says whether the report is complete.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable, Iterable

from . import AGENT_VERSION, bolt, containerd, content, cstorage, discovery, gentle
from . import sizes
from . import images
from .checks import cstorage as cstorage_checks
from .checks import layer_audit
from .checks import layers as layer_checks
from .checks import symlinks as symlink_checks
from .checks import hardlinks as hardlink_checks
from .checks import logs as log_checks
from .checks import storage_root as storage_root_checks
from .checks import volumes as volume_checks
from .checks.context import ContainerScope, NodeScope
from .hostview import HostView
from .options import Options
from .records import Emitter, Finding
from .resolve import RUNTIME_ROOTS, Resolver, under
from .union import LayerStack

logger = logging.getLogger(__name__)

CONFIRM_DELAY = 0.5
"""Seconds between a read that found a problem and the read that confirms it."""


def container_visitors(scope: ContainerScope, resolver: Resolver) -> list[Any]:
    """Return the checks that look at each entry of a container's root as it is walked.

    A visitor has ``visit(entry)`` and ``finish()``, both yielding findings.
    """
    return [symlink_checks.SymlinkVisitor(scope, resolver),
            hardlink_checks.HardlinkVisitor(scope, resolver)]


def node_checks(scope: str) -> list[Callable[[NodeScope], Iterable[Finding]]]:
    """Return the node-wide checks for a scope ('pod' narrows them to the pod)."""
    checks = [cstorage_checks.judge, volume_checks.judge, log_checks.judge]
    return checks + ([storage_root_checks.judge] if scope == "node" else [])


def inspect(options: Options, sink: Callable[[dict[str, Any]], None]) -> None:
    """Inspect what ``options`` asks for and hand every record to ``sink``."""
    emitter = Emitter(sink)
    run = _Run(options, emitter)
    error = None
    try:
        run.everything()
    except Exception as exc:  # noqa: BLE001 - the summary must still be written
        logger.debug("inspection failed", exc_info=True)
        error = f"internal error: {type(exc).__name__}: {exc}"
    emitter.summary(run.summary(error))


class _Run:
    """The state of one inspection: counters, the deadline, what was not read."""

    def __init__(self, options: Options, emitter: Emitter) -> None:
        self.options, self.emitter = options, emitter
        self.host = HostView(options.host_root)
        self.node = options.node or _hostname(self.host)
        self.started = time.monotonic()
        self.deadline = self.started + options.time_budget
        self.last_progress = self.started
        self.not_read: list[str] = []
        self.counts = {"error": 0, "warning": 0, "info": 0}
        self.stats = {"containers": 0, "entries": 0, "links": 0, "links_absolute": 0,
                      "links_relative": 0, "hardlink_groups": 0}
        self.catalogs: dict[str, images.Catalog] = {}  # image history, per containerd root
        self.notes: list[str] = []
        self.states: dict[int, containerd.State] = {}
        self.uninspected = 0

    # -- the whole run ---------------------------------------------------------------

    def everything(self) -> None:
        # Be gentle first: everything after this competes with the node's work.
        if self.options.gentle:
            self.notes.extend(gentle.lower_priority())
            gentle.raise_open_files()

        # A host root that is no folder has nothing to read: say so, and stop.
        if not os.path.isdir(self.host.root):
            self._not_inspected(runtime="containerd", reason=(
                f"nothing to inspect under host root {self.host.root!r}: it is not a "
                "folder (give the folder where the node's / is seen)"))
            return

        # Find the runtimes; say so when there is storage we do not read.
        installs = self._guarded("containerd", "finding containerd", list,
                                 discovery.find_containerd, self.host,
                                 self.options.proc_root)
        stores = self._guarded("cri-o", "finding containers/storage", list,
                               cstorage.find_stores, self.host, self.options.proc_root)
        for unread in discovery.find_unread(self.host):
            self._not_inspected(runtime=unread.runtime, reason=unread.reason,
                                runtime_root=unread.path)
        if not installs and not stores:
            processes = "running processes, " if self.options.proc_root else ""
            self._not_inspected(runtime="containerd", reason=(
                f"no containerd metadata found under host root {self.host.root!r} "
                f"(looked at {processes}/etc/containerd/config.toml, k3s, RKE2 and "
                "microk8s, and /var/lib/containerd/io.containerd.metadata.v1.bolt/"
                "meta.db), and no containers/storage (looked at "
                f"{processes}/etc/crio, storage.conf): is this the node's root?"))

        # The runtime Kubernetes reports must be the one whose storage is here.
        self._confirm_runtime(installs, stores)

        # Read each installation once; the container and node checks share it.
        runtimes = [(i, state) for i in installs if (state := self._read_state(i))]
        self.states = {id(i): state for i, state in runtimes}

        # The containers the user asked for, each from its own layers.
        if self.options.scope == "pod" or self.options.containers:
            found = sum(self._installation(install, state) for install, state in runtimes)
            found += self._containers_storage(stores)
            if found == 0 and self.options.pod and (runtimes or stores):
                self._not_inspected(runtime="containerd" if runtimes else "cri-o",
                                    reason=self._no_match(installs, stores))

        # Node-wide checks, narrowed to the pod when one was asked for.
        self._node_checks(runtimes)

    def _confirm_runtime(self, installs: list, stores: list) -> None:
        """Say so when the node's storage does not hold the runtime it reports."""
        reported = self.options.runtime
        found = {"containerd": bool(installs), "cri-o": bool(stores)}
        # With no storage at all, the "nothing found" target already says it.
        if reported is None or found.get(reported, True) or not any(found.values()):
            return
        present = [name for name, here in found.items() if here] or ["none"]
        self._not_inspected(runtime=reported, reason=(
            f"the node reports container runtime {reported!r}, but its storage is not "
            f"on this node's disk (found: {', '.join(present)}): was the runtime moved "
            "or its root changed?"))

    def _installation(self, install: discovery.Containerd, state: containerd.State) -> int:
        """Inspect the selected containers of one containerd; return how many matched."""
        chosen = [c for c in state.containers if self._selected(c)]
        for container in chosen:
            if self._expired():
                self.not_read.append(f"container {container.id} (time budget spent)")
                continue
            self._guarded("containerd", f"inspecting container {container.id}",
                          lambda: None, self._container, install, state, container)
        return len(chosen)

    def _containers_storage(self, stores: list[cstorage.Store]) -> int:
        """Inspect the selected containers of CRI-O's stores; return how many."""
        found = 0
        for store in stores:
            if store.driver != "overlay":
                self._not_inspected(runtime="cri-o", runtime_root=store.graphroot,
                                    reason=f"storage driver {store.driver!r} is not "
                                           "read by this agent (overlay only)")
                continue
            try:
                state = cstorage.read_state(self.host, store)
            except cstorage.StoreError as exc:
                self._not_inspected(runtime="cri-o", runtime_root=store.graphroot,
                                    reason=f"containers/storage cannot be read: {exc}")
                continue
            opts = self.options
            chosen = cstorage.select(state, pod=opts.pod, namespace=opts.namespace,
                                     container=opts.container)
            for container in chosen:
                self._crio_container(state, container)
            found += len(chosen)
        return found

    def _crio_container(self, state: cstorage.State, container) -> None:
        """Show a CRI-O container's layer stack, then walk it like any other root."""
        self.stats["containers"] += 1
        stack = cstorage.layer_stack(state, container)
        layers = [{"position": l.position, "key": l.key, "id": l.id, "kind": l.kind,
                   "short_link": l.short, "dir": self.host.display(l.directory),
                   "present": l.present,
                   **sizes.usage([l.contents], should_stop=self._expired).as_dict()}
                  for l in stack.layers]
        self.emitter.emit("target", {
            "node": self.node, "runtime": "cri-o",
            "runtime_root": state.store.graphroot, "address": cstorage.CRIO_SOCKET,
            "namespace": container.pod_namespace,
            "pod": container.pod, "container": container.name,
            "container_id": container.id, "image": container.image,
            "snapshotter": state.store.driver, "status": "inspected", "reason": None,
            "layers": layers})
        if stack.breaks or self._expired():
            why = "; ".join(stack.breaks) or "time budget spent"
            self.not_read.append(f"container {container.id} root ({why})")
            return
        scope = ContainerScope(node=self.node, container=container, layers=stack.layers,
                               address=cstorage.CRIO_SOCKET, runtime="cri-o",
                               display_dir=self.host.display)
        self._walk(scope, container, stack)

    def _images(self, install) -> tuple[containerd.Image, ...]:
        state = self.states.get(id(install))
        return state.meta.images if state and state.meta else ()

    def _node_checks(self, runtimes) -> None:
        scope = NodeScope(node=self.node, host=self.host, proc_root=self.options.proc_root,
                          runtimes=tuple(runtimes), pod=self.options.pod,
                          namespace=self.options.namespace, expired=self._expired)
        if self.options.scope == "node":
            for install, state in runtimes:
                self._guarded("containerd", f"auditing containerd at {install.root}",
                              lambda: None, self._layer_audit, scope, install, state)
        for check in node_checks(self.options.scope):
            if self._expired():
                self.not_read.append(f"node check {check.__module__} (time budget spent)")
                continue
            self._guarded("node", f"node check {check.__module__}", lambda: None,
                          lambda: self._emit_all(check(scope)))
        self.not_read.extend(scope.not_read)

    def _layer_audit(self, scope: NodeScope, install, state) -> None:
        """Audit one containerd's snapshots; its totals go in a target record."""
        result = layer_audit.audit(scope, install, state,
                                   reread=lambda: self._reread_state(install))
        self.emitter.emit("target", {
            "node": self.node, "runtime": "containerd", "runtime_root": install.root,
            "address": install.address, "source": install.source,
            "namespace": None, "pod": None, "container": None, "container_id": None,
            "status": "inspected", "reason": None, "layers": [],
            "namespaces": result.totals,
        })
        self._emit_all(result.findings)

    def _read_state(self, install: discovery.Containerd) -> containerd.State | None:
        try:
            root = self.host.resolve(install.root)
            overrides = {k: self.host.resolve(v) for k, v in install.snapshotter_roots.items()}
            return containerd.read_state(root, snapshotter_roots=overrides,
                                         rescope=self._rescope)
        except (bolt.BoltError, OSError) as exc:
            self._not_inspected(runtime="containerd", runtime_root=install.root,
                                reason=f"containerd metadata cannot be read: {exc}")
            return None

    def _guarded(self, runtime: str, what: str, fallback: Callable[[], Any],
                 step: Callable[..., Any], *args: Any) -> Any:
        """Run one step; a failure becomes a not-inspected target, and the run goes on.

        One odd config file or one container that changes under us must not cost
        the user every other result.
        """
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - reported, never swallowed
            logger.debug("%s failed", what, exc_info=True)
            self._not_inspected(runtime=runtime, reason=(
                f"{what} failed: {type(exc).__name__}: {exc}; the rest of the report "
                "stands (run the agent with -vv for the traceback)"))
            return fallback()

    def _rescope(self, path: str) -> str:
        """Follow any link in an agent-side path inside the host root, never outside.

        A folder missing on the way ends the resolution there: opening the result
        then fails as missing, which the readers report.
        """
        return self.host.resolve(self.host.display(path), strict=False)

    def _reread_state(self, install: discovery.Containerd) -> containerd.State | None:
        """Read again after containerd's in-flight operations have had time to finish.

        containerd commits the snapshotter's database and then meta.db, a few
        milliseconds apart, so a read between the two shows a record in one and not
        the other. A problem still there :data:`CONFIRM_DELAY` later is real.
        """
        time.sleep(CONFIRM_DELAY)
        return self._read_state(install)

    def _selected(self, container: containerd.Container) -> bool:
        """Tell whether a container is one the user asked for (pod, namespace, name)."""
        opts = self.options
        if container.namespace != containerd.CRI_NAMESPACE or container.is_sandbox:
            return False
        if opts.pod and container.pod != opts.pod:
            return False
        if opts.namespace and opts.pod and container.pod_namespace != opts.namespace:
            return False
        return not opts.container or container.name == opts.container

    def _no_match(self, installs: list[discovery.Containerd], stores) -> str:
        opts = self.options
        which = f"pod {opts.namespace or '?'}/{opts.pod}"
        if opts.container:
            which += f" container {opts.container!r}"
        places = [f"containerd namespace {containerd.CRI_NAMESPACE!r} at {i.root} "
                  f"({i.source})" for i in installs]
        places += [f"CRI-O's containers/storage at {s.graphroot} ({s.source})"
                   for s in stores]
        return (f"no container of {which} found in {' or '.join(places)}: is the pod "
                f"on this node?")

    # -- one container ---------------------------------------------------------------

    def _container(self, install, state, container) -> None:
        self.stats["containers"] += 1
        if container.snapshotter in state.not_inspected:
            self._not_inspected(runtime="containerd", container=container,
                                reason=state.not_inspected[container.snapshotter])
            return
        chain = self._confirmed_chain(install, state, container)
        catalog = self.catalogs.setdefault(state.root, images.Catalog(state))
        scope = ContainerScope(node=self.node, container=container, layers=chain.layers,
                               address=install.address, display_dir=self.host.display,
                               build_steps=catalog.steps(container, chain.layers))
        self._target(install, container, chain)
        if self.options.scope == "pod":
            self._emit_all(layer_checks.judge(scope, chain))
        if chain.breaks:
            self.not_read.append(f"container {container.id} root (its layer chain is broken)")
            return
        self._walk(scope, container, chain)

    def _confirmed_chain(self, install, state, container) -> containerd.Chain:
        """Read a broken chain twice: containerd may be mid-operation the first time."""
        chain = containerd.layer_chain(state, container)
        if not chain.breaks:
            return chain
        again = self._reread_state(install)
        fresh = next((c for c in (again.containers if again else ()) if c.id == container.id),
                     None)
        if fresh is None:
            return containerd.Chain(chain.layers, ())
        second = containerd.layer_chain(again, fresh)
        kept = {(b.check, b.key) for b in second.breaks}
        return containerd.Chain(second.layers,
                                tuple(b for b in chain.breaks if (b.check, b.key) in kept))

    def _walk(self, scope: ContainerScope, container, chain) -> None:
        """Walk the container's merged root and judge every symlink in it."""
        # overlayfs stacks the layers; the native snapshotter copies each parent into
        # its child, so the container's own folder alone is its whole root.
        native = getattr(container, "snapshotter", None) == "native"
        layers = chain.layers[:1] if native else chain.layers
        stack = LayerStack([layer.contents for layer in layers])
        covered = tuple(RUNTIME_ROOTS) + tuple(container.mount_points())
        resolver = Resolver(stack, container.mount_points())
        visitors = container_visitors(scope, resolver)
        for entry in stack.walk(skip=lambda path: under(path, covered),
                                should_stop=self._expired):
            self.stats["entries"] += 1
            self.stats["links"] += entry.is_link
            for visitor in visitors:
                self._emit_all(visitor.visit(entry))
            self._progress(container)
        for visitor in visitors:
            self._emit_all(visitor.finish())
            for key, count in getattr(visitor, "stats", {}).items():
                self.stats[key] = self.stats.get(key, 0) + count
        self.not_read.extend(f"{container.id}:{path}" for path in stack.not_read)

    # -- records ---------------------------------------------------------------------

    def _target(self, install, container, chain) -> None:
        """Emit the container's target record with its chain, sizes and layer digests."""
        digests = self._image_layers(install, container)
        layers = []
        for layer in chain.layers:
            used = sizes.usage([layer.directory], should_stop=self._expired)
            image_layer = digests.get(layer.key)
            layers.append({
                "position": layer.position, "key": layer.key, "id": layer.id,
                "kind": layer.kind, "dir": self.host.display(layer.directory),
                "present": layer.present, "bytes": used.bytes, "inodes": used.inodes,
                "diff_id": image_layer.diff_id if image_layer else None,
                "digest": image_layer.digest if image_layer else None,
            })
        self.emitter.emit("target", {
            "node": self.node, "runtime": "containerd", "runtime_root": install.root,
            "address": install.address, "namespace": container.pod_namespace,
            "pod": container.pod, "container": container.name,
            "container_id": container.id, "image": container.image,
            "snapshotter": container.snapshotter, "status": "inspected", "reason": None,
            "layers": layers,
        })

    def _image_layers(self, install, container) -> dict[str, content.ImageLayer]:
        """Map chain IDs to the image's layers, when its content is in the store."""
        state = self.states.get(id(install))
        image = next((i for i in self._images(install) if i.name == container.image), None)
        found = content.image_layers(state.blobs, image.target) \
            if state and image and image.target else None
        return {layer.chain_id: layer for layer in found or ()}

    def _not_inspected(self, *, runtime: str, reason: str, runtime_root: str | None = None,
                       container: containerd.Container | None = None) -> None:
        self.uninspected += 1
        self.emitter.emit("target", {
            "node": self.node, "runtime": runtime, "runtime_root": runtime_root,
            "namespace": container.pod_namespace if container else self.options.namespace,
            "pod": container.pod if container else self.options.pod,
            "container": container.name if container else self.options.container,
            "container_id": container.id if container else None,
            "status": "not-inspected", "reason": reason, "layers": [],
        })

    def _emit(self, finding: Finding) -> None:
        self.counts[finding.severity] += 1
        self.emitter.finding(finding)

    def _emit_all(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self._emit(finding)

    def _progress(self, container) -> None:
        now = time.monotonic()
        if now - self.last_progress < self.options.progress_interval:
            return
        self.last_progress = now
        self.emitter.emit("progress", {"node": self.node, "container": container.name,
                                       **self.stats, "elapsed": round(now - self.started, 3)})

    def _expired(self) -> bool:
        return time.monotonic() > self.deadline

    def summary(self, error: str | None) -> dict[str, Any]:
        return {
            "node": self.node,
            "complete": not self.not_read and error is None and not self.uninspected,
            "not_read": self.not_read,
            "error": error,
            "counts": self.counts,
            **self.stats,
            "elapsed": round(time.monotonic() - self.started, 3),
            "agent_version": AGENT_VERSION,
            "notes": self.notes,
        }


def _hostname(host: HostView) -> str:
    """Name the node: its /etc/hostname, else this machine's name."""
    try:
        name = host.read_bytes("/etc/hostname", limit=256).decode().strip()
        if name:
            return name
    except (OSError, UnicodeDecodeError):
        pass
    return socket.gethostname() if host.root == "/" else os.path.basename(host.root)

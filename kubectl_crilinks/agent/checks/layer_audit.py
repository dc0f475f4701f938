"""The node-wide audit of containerd's snapshots: both databases against the disk.

Every snapshot of every namespace and snapshotter is checked: its record in meta.db,
its record in the snapshotter's metadata.db, its parent pointers in both, its folder,
the snapshotter's parents index, and whether containerd's own garbage collector
(see :mod:`..gc`) would keep it. Running containers' overlay mounts are compared with
their chains. Folders no record knows are sized for what removing them returns.

containerd may be mid-operation while we read, so a problem is reported only when a
second, fresh read of both databases shows it too (:func:`audit`).
"""

from __future__ import annotations

import shlex
import dataclasses
import datetime
import os
from typing import Any, Callable

from .. import containerd, content, gc, mounts, sizes
from ..catalogue import severity_of
from ..containerd import State
from ..records import Finding
from .context import NodeScope

IN_FLIGHT = datetime.timedelta(hours=1)
"""Age under which a ``new-*`` folder or an ``extract-*`` snapshot may still be in use."""

TASK_DIR = "io.containerd.runtime.v2.task"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A finding before confirmation: ``identity`` must show again in a second read."""

    check: str
    identity: str
    namespace: str | None
    layer: str | None
    message: str
    hint: str
    details: dict[str, Any]
    path: str | None = None


@dataclasses.dataclass(frozen=True)
class Audit:
    findings: tuple[Finding, ...]
    totals: dict[str, dict[str, int]]


def audit(scope: NodeScope, install: Any, state: State, *,
          reread: Callable[[], State | None]) -> Audit:
    """Audit one containerd; confirm each problem with ``reread()`` before reporting."""
    first = _Auditor(scope, install, state).problems()
    if first:
        again = reread()
        confirmed = {p.identity for p in _Auditor(scope, install, again).problems()} \
            if again else set()
        first = [p for p in first if p.identity in confirmed]
    findings = tuple(_finding(scope, p) for p in first)
    return Audit(findings, _totals(state, scope.expired))


def _finding(scope: NodeScope, problem: Problem) -> Finding:
    return Finding(check=problem.check, severity=severity_of(problem.check),
                   message=problem.message, hint=problem.hint, node=scope.node,
                   namespace=problem.namespace, layer=problem.layer, path=problem.path,
                   details=problem.details)


def _totals(state: State, expired: Callable[[], bool]) -> dict[str, dict[str, int]]:
    """Sum snapshots, bytes and inodes per namespace (each inode once)."""
    dirs: dict[str, list[str]] = {}
    for snapshot in state.snapshots.values():
        snapshotter = state.snapshotters.get(snapshot.snapshotter)
        record = snapshotter.records.get(snapshot.backend_key or "") if snapshotter else None
        if record is not None:
            dirs.setdefault(snapshot.namespace, []).append(snapshotter.directory(record.id))
    totals = {}
    for namespace, folders in sorted(dirs.items()):
        used = sizes.usage(folders, should_stop=expired)
        totals[namespace] = {"snapshots": len(folders), "bytes": used.bytes,
                             "inodes": used.inodes}
    return totals


class _Auditor:
    """One pass over one state; :meth:`problems` lists everything found."""

    def __init__(self, scope: NodeScope, install: Any, state: State) -> None:
        self.scope, self.install, self.state = scope, install, state
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.found: list[Problem] = []

    def problems(self) -> list[Problem]:
        for name, snapshotter in sorted(self.state.snapshotters.items()):
            self._meta_records(snapshotter)
            self._backend_records(snapshotter)
            self._orphan_dirs(snapshotter)
            self._parents_index(snapshotter)
        self._reachability()
        self._images()
        self._mounts()
        return self.found

    # -- helpers ---------------------------------------------------------------------

    def ctr(self, namespace: str, *args: str) -> str:
        words = ["ctr", "-a", self.install.address, "-n", namespace, *args]
        return " ".join(shlex.quote(word) for word in words)

    def show(self, real: str) -> str:
        return self.scope.host.display(real)

    def add(self, check: str, identity: str, **fields: Any) -> None:
        self.found.append(Problem(check=check, identity=f"{check}:{identity}", **fields))

    def _meta_by_backend(self, snapshotter: containerd.Snapshotter) -> dict[str, Any]:
        return {s.backend_key: s for s in self.state.snapshots.values()
                if s.snapshotter == snapshotter.name and s.backend_key}

    # -- meta.db against the snapshotter ---------------------------------------------

    def _meta_records(self, snapshotter: containerd.Snapshotter) -> None:
        parents_of_records = {r.parent for r in snapshotter.records.values() if r.parent}
        for snap in self.state.snapshots.values():
            if snap.snapshotter != snapshotter.name:
                continue
            self._meta_parent(snapshotter, snap)
            record = snapshotter.records.get(snap.backend_key or "")
            if record is None and snap.backend_key not in parents_of_records:
                self._record_missing(snapshotter, snap)

    def _meta_parent(self, snapshotter: containerd.Snapshotter, snap: Any) -> None:
        if not snap.parent:
            return
        parent = self.state.snapshots.get((snap.namespace, snap.snapshotter, snap.parent))
        if parent is None:
            self.add("layer.parent-missing", f"meta:{snap.namespace}/{snap.key}",
                     namespace=snap.namespace, layer=snap.key,
                     message=(f"snapshot {snap.key!r} names parent {snap.parent!r}, which "
                              f"has no record in meta.db (namespace {snap.namespace})"),
                     hint=self._rebuild_hint(snap.namespace, snap.key),
                     details={"snapshot_key": snap.key, "parent": snap.parent,
                              "database": "meta.db", "snapshotter": snapshotter.name})
            return
        record = snapshotter.records.get(snap.backend_key or "")
        if record is not None and parent.backend_key and record.parent != parent.backend_key:
            self.add("layer.parent-mismatch", f"{snap.namespace}/{snap.key}",
                     namespace=snap.namespace, layer=snap.key,
                     message=(f"snapshot {snap.key!r}: meta.db names parent "
                              f"{parent.backend_key!r}, the snapshotter names "
                              f"{record.parent!r}"),
                     hint=self._rebuild_hint(snap.namespace, snap.key),
                     details={"snapshot_key": snap.key, "snapshot_id": record.id,
                              "meta_parent": parent.backend_key,
                              "snapshotter_parent": record.parent})

    def _record_missing(self, snapshotter: containerd.Snapshotter, snap: Any) -> None:
        self.add("layer.record-missing", f"{snap.namespace}/{snap.key}",
                 namespace=snap.namespace, layer=snap.key,
                 message=(f"snapshot {snap.key!r} (namespace {snap.namespace}) points at "
                          f"{snap.backend_key!r}, which has no record in the "
                          f"{snapshotter.name} snapshotter's metadata.db"),
                 hint=self._rebuild_hint(snap.namespace, snap.key),
                 details={"snapshot_key": snap.key, "backend_key": snap.backend_key,
                          "snapshotter": snapshotter.name})

    def _rebuild_hint(self, namespace: str, key: str) -> str:
        users = self._users(namespace, key)
        first = (f"remove the containers that use it ({', '.join(users)}), then "
                 if users else "")
        return (f"The chain is cut: {first}remove the snapshot with "
                f"`{self.ctr(namespace, 'snapshots', 'rm', key)}` and pull the image "
                f"again (`crictl pull IMAGE`).")

    def _users(self, namespace: str, key: str) -> list[str]:
        """Return the containers whose chain passes through a snapshot key."""
        users = []
        for c in self.state.containers:
            if c.namespace == namespace and key in self._chain_keys(c):
                users.append(c.labels.get(containerd.POD_NAME, c.id) + f"/{c.name or c.id}")
        return users

    def _chain_keys(self, container: containerd.Container) -> list[str]:
        keys, key = [], container.snapshot_key
        while key and key not in keys and len(keys) < containerd.MAX_CHAIN:
            keys.append(key)
            snap = self.state.snapshots.get(
                (container.namespace, container.snapshotter or "", key))
            key = snap.parent if snap else None
        return keys

    # -- the snapshotter's own records -----------------------------------------------

    def _backend_records(self, snapshotter: containerd.Snapshotter) -> None:
        meta = self._meta_by_backend(snapshotter)
        for record in snapshotter.records.values():
            namespace = record.key.split("/", 1)[0]
            key = meta[record.key].key if record.key in meta else record.key
            if record.parent and record.parent not in snapshotter.records:
                self._backend_parent_missing(snapshotter, record, namespace, key, meta)
            if not snapshotter.has_folder(record.id):
                self._dir_missing(snapshotter, record, namespace, key)
            if record.key not in meta:
                self._untracked(snapshotter, record, namespace)

    def _backend_parent_missing(self, snapshotter, record, namespace, key, meta) -> None:
        parent_key = meta[record.parent].key if record.parent in meta else record.parent
        self.add("layer.parent-missing", f"backend:{record.key}", namespace=namespace,
                 layer=key,
                 message=(f"snapshot {key!r} (id {record.id}) names parent "
                          f"{parent_key!r}, which has no record in the "
                          f"{snapshotter.name} snapshotter's metadata.db"),
                 hint=self._rebuild_hint(namespace, key),
                 details={"snapshot_key": key, "snapshot_id": record.id,
                          "parent": record.parent, "database": "metadata.db",
                          "directory": self.show(snapshotter.directory(record.id))})

    def _dir_missing(self, snapshotter, record, namespace: str, key: str) -> None:
        directory = self.show(snapshotter.directory(record.id))
        children = self._descendants(snapshotter, record.key)
        self.add("layer.dir-missing", f"{record.key}", namespace=namespace, layer=key,
                 path=directory,
                 message=(f"snapshot {key!r} (id {record.id}) has a record but its "
                          f"folder {directory} is gone"),
                 hint=(f"The layer's files are lost. Remove the containers using it, then "
                       f"the snapshots, children first ({', '.join(children) or 'none'}), "
                       f"with `{self.ctr(namespace, 'snapshots', 'rm', key)}`, and pull "
                       f"the image again."),
                 details={"snapshot_key": key, "snapshot_id": record.id,
                          "directory": directory, "children": children})

    def _descendants(self, snapshotter: containerd.Snapshotter, backend_key: str) -> list[str]:
        """Name every snapshot above one, nearest first; a hostile cycle ends the walk."""
        meta = self._meta_by_backend(snapshotter)
        children: dict[str, list[str]] = {}
        for record in snapshotter.records.values():
            if record.parent:
                children.setdefault(record.parent, []).append(record.key)
        found: list[str] = []
        seen = {backend_key}
        pending = list(children.get(backend_key, ()))
        while pending:
            key = pending.pop(0)
            if key in seen:
                continue
            seen.add(key)
            found.append(meta[key].key if key in meta else key)
            pending.extend(children.get(key, ()))
        return found

    def _untracked(self, snapshotter, record, namespace: str) -> None:
        directory = self.show(snapshotter.directory(record.id))
        used = sizes.usage([snapshotter.directory(record.id)], should_stop=self.scope.expired)
        self.add("layer.untracked-record", record.key, namespace=namespace,
                 layer=record.key, path=directory,
                 message=(f"the {snapshotter.name} snapshotter has record {record.key!r} "
                          f"(id {record.id}) that no meta.db snapshot names: ctr and "
                          f"crictl do not show it; {used.reclaimable_bytes} bytes"),
                 hint=("containerd's garbage collector removes snapshotter records that "
                       "meta.db does not name on its next run: trigger it with "
                       f"`{self._gc_trigger(namespace)}`"),
                 details={"backend_key": record.key, "snapshot_id": record.id,
                          "directory": directory, **used.as_dict()})

    def _gc_trigger(self, namespace: str) -> str:
        create = self.ctr(namespace, "leases", "create")
        return f"{self.ctr(namespace, 'leases', 'rm', '--sync')} \"$({create})\""

    # -- folders without records -----------------------------------------------------

    def _orphan_dirs(self, snapshotter: containerd.Snapshotter) -> None:
        base = snapshotter.snapshots_root
        known = {str(r.id) for r in snapshotter.records.values()}
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return
        for name in names:
            path = os.path.join(base, name)
            if name in known or self._in_flight(name, path):
                continue
            self._orphan(snapshotter, name, path)

    def _in_flight(self, name: str, path: str) -> bool:
        if not name.startswith("new-"):
            return False
        try:
            age = self.now.timestamp() - os.lstat(path).st_mtime
        except OSError:
            return True
        return age < IN_FLIGHT.total_seconds()

    def _orphan(self, snapshotter, name: str, path: str) -> None:
        used = sizes.usage([path], should_stop=self.scope.expired)
        directory = self.show(path)
        leftover = "a leftover extraction folder" if name.startswith("new-") else "a folder"
        self.add("layer.orphan-dir", directory, namespace=None, layer=None, path=directory,
                 message=(f"{leftover} {directory} has no record in the "
                          f"{snapshotter.name} snapshotter: {used.reclaimable_bytes} "
                          f"bytes no tool will free"),
                 hint=(f"Stop containerd, then remove {directory} (containerd also removes "
                       f"such folders the next time it removes a snapshot)."),
                 details={"directory": directory, "snapshotter": snapshotter.name,
                          **used.as_dict()})

    # -- the parents index -----------------------------------------------------------

    def _parents_index(self, snapshotter: containerd.Snapshotter) -> None:
        by_id = {r.id: r for r in snapshotter.records.values()}
        for link in snapshotter.parents:
            child = by_id.get(link.child_id)
            parent = by_id.get(link.parent_id)
            if child is not None and child.key == link.child_key and parent is not None \
                    and child.parent == parent.key:
                continue
            self._stale_link(snapshotter, link, parent)

    def _stale_link(self, snapshotter, link: containerd.ParentLink, parent: Any) -> None:
        namespace = (parent.key if parent else link.child_key).split("/", 1)[0]
        parent_key = parent.key if parent else "a parent with no record"
        self.add("layer.stale-child-index", f"{link.parent_id}/{link.child_id}",
                 namespace=namespace, layer=parent.key if parent else None,
                 message=(f"the {snapshotter.name} snapshotter's parents index still "
                          f"lists child {link.child_key!r} (id {link.child_id}) under "
                          f"{parent_key} (id {link.parent_id}), but that child is gone: "
                          f"the parent can never be removed"),
                 hint=("Only an edit of the snapshotter's metadata.db removes the entry: "
                       "stop containerd, back up metadata.db, delete the key from the "
                       "v1/parents bucket with a bbolt tool, start containerd."),
                 details={"parent_id": link.parent_id, "child_id": link.child_id,
                          "child_key": link.child_key, "parent_key": parent_key})

    # -- what the garbage collector keeps ----------------------------------------------

    def _reachability(self) -> None:
        reach = gc.reachability(self.state, now=self.now)
        by_lease: dict[tuple[str, str], list[Any]] = {}
        loose: dict[str, list[Any]] = {}
        for snap in self.state.snapshots.values():
            node = ("snapshot", snap.namespace, f"{snap.snapshotter}/{snap.key}")
            if snap.key.startswith("extract-"):
                self._extraction(snap)
            elif reach.snapshot_needs_lease(snap.namespace, snap.snapshotter, snap.key):
                for lease in reach.holders.get(node, ()):
                    by_lease.setdefault((snap.namespace, lease), []).append(snap)
            elif node not in reach.kept:
                expired = [l for l in reach.holders.get(node, ())
                           if f"{snap.namespace}/{l}" in reach.expired_leases]
                for lease in expired:
                    by_lease.setdefault((snap.namespace, lease), []).append(snap)
                if not expired:
                    loose.setdefault(snap.namespace, []).append(snap)
        for (namespace, lease), snaps in sorted(by_lease.items()):
            self._lease(namespace, lease, snaps, reach)
        for namespace, snaps in sorted(loose.items()):
            for chain in _chains(snaps):
                self._unreferenced(namespace, chain)

    def _dirs(self, snaps: list[Any]) -> list[str]:
        dirs = []
        for snap in snaps:
            snapshotter = self.state.snapshotters.get(snap.snapshotter)
            record = snapshotter.records.get(snap.backend_key or "") if snapshotter else None
            if record is not None:
                dirs.append(snapshotter.directory(record.id))
        return dirs

    def _lease(self, namespace: str, lease: str, snaps: list[Any], reach) -> None:
        used = sizes.usage(self._dirs(snaps), should_stop=self.scope.expired)
        expiry = reach.expired_leases.get(f"{namespace}/{lease}")
        keys = sorted(s.key for s in snaps)
        check = "layer.lease-expired" if expiry else "layer.lease-held"
        when = (f"expired at {expiry.isoformat()}" if expiry else "still live")
        self.add(check, f"{namespace}/{lease}", namespace=namespace, layer=keys[0],
                 message=(f"{len(keys)} snapshot(s) in namespace {namespace} are kept only "
                          f"by lease {lease!r} ({when}): {used.reclaimable_bytes} bytes"),
                 hint=(f"If no pull or build is running, remove the lease: "
                       f"`{self.ctr(namespace, 'leases', 'rm', '--sync', lease)}` "
                       "(the garbage collector then frees the snapshots)."),
                 details={"lease": lease, "expired": expiry.isoformat() if expiry else None,
                          "snapshots": keys, **used.as_dict()})

    def _unreferenced(self, namespace: str, chain: list[Any]) -> None:
        used = sizes.usage(self._dirs(chain), should_stop=self.scope.expired)
        keys = [s.key for s in chain]
        self.add("layer.unreferenced", f"{namespace}/{keys[0]}", namespace=namespace,
                 layer=keys[0],
                 message=(f"{len(keys)} snapshot(s) from {keys[0]!r} down in namespace "
                          f"{namespace} are referenced by no image, container, lease or "
                          f"gc.root label: containerd's garbage collector would free "
                          f"{used.reclaimable_bytes} bytes"),
                 hint=(f"containerd frees them on its next collection; trigger one with "
                       f"`{self._gc_trigger(namespace)}`."),
                 details={"snapshots": keys, **used.as_dict()})

    def _extraction(self, snap: Any) -> None:
        if snap.created is None or self.now - snap.created < IN_FLIGHT:
            return
        self.add("layer.extraction-leftover", f"{snap.namespace}/{snap.key}",
                 namespace=snap.namespace, layer=snap.key,
                 message=(f"extraction snapshot {snap.key!r} in namespace {snap.namespace} "
                          f"was started at {snap.created.isoformat()} and never committed "
                          f"(an interrupted pull)"),
                 hint=(f"If no pull is running, remove it: "
                       f"`{self.ctr(snap.namespace, 'snapshots', 'rm', snap.key)}`."),
                 details={"snapshot_key": snap.key, "created": snap.created.isoformat()})

    # -- images ----------------------------------------------------------------------

    def _images(self) -> None:
        for image in self.state.meta.images if self.state.meta else ():
            chain = content.image_chain(self.state.blobs, image.target or "")
            if chain:
                self._image_chain(image, chain)

    def _image_chain(self, image: Any, chain: list[str]) -> None:
        for name, snapshotter in self.state.snapshotters.items():
            present = [self._layer_state(image.namespace, snapshotter, c) for c in chain]
            if not any(present):
                continue
            highest = max(i for i, p in enumerate(present) if p)
            broken = [i for i, p in enumerate(present) if p != "ok" and i <= highest]
            if broken:
                self._image_broken(image, snapshotter, chain, broken[0], present[broken[0]])

    def _layer_state(self, namespace: str, snapshotter, chain_id: str) -> str | None:
        snap = self.state.snapshots.get((namespace, snapshotter.name, chain_id))
        if snap is None:
            return None
        record = snapshotter.records.get(snap.backend_key or "")
        if record is None:
            return "no snapshotter record"
        if not snapshotter.has_folder(record.id):
            return "folder missing"
        return "ok"

    def _image_broken(self, image, snapshotter, chain, k: int, why: str | None) -> None:
        self.add("layer.image-chain-broken", f"{image.namespace}/{image.name}",
                 namespace=image.namespace, layer=chain[k],
                 message=(f"image {image.name} ({snapshotter.name}) breaks at layer "
                          f"{k + 1} of {len(chain)}: {chain[k]} "
                          f"{why or 'has no snapshot'} while layers above it exist"),
                 hint=(f"Remove the image and pull it again: "
                       f"`{self.ctr(image.namespace, 'images', 'rm', image.name)}` then "
                       f"`crictl pull {image.name}`."),
                 details={"image": image.name, "layer_index": k, "chain_id": chain[k],
                          "reason": why or "no snapshot", "chain": chain})

    # -- running containers' mounts ----------------------------------------------------

    def _mounts(self) -> None:
        table = mounts.read(self.scope.proc_root, self.install.pid)
        if table is None:
            return
        for container in self.state.containers:
            rootfs = os.path.join(self.install.state, TASK_DIR, container.namespace,
                                  container.id, "rootfs")
            mount = next((m for m in table if m.mount_point == rootfs), None)
            if mount is not None and mount.fs_type == "overlay":
                self._compare_mount(container, mount)

    def _real(self, node_path: str) -> str:
        try:
            return self.scope.host.resolve(node_path)
        except OSError:
            return node_path

    def _compare_mount(self, container: containerd.Container, mount: mounts.Mount) -> None:
        chain = containerd.layer_chain(self.state, container)
        if not chain.layers or any(b.check == "layer.parent-missing" for b in chain.breaks):
            return
        upper = mount.options.get("upperdir", "")
        base = os.path.dirname(os.path.dirname(upper))
        lowers = [os.path.join(base, d) if not d.startswith("/") else d
                  for d in mount.options.get("lowerdir", "").split(":") if d]
        expected = [self.show(layer.contents) for layer in chain.layers[1:]]
        missing = [d for d in lowers if not self.scope.host.exists(d)]
        # Compare where the paths really lead: a root behind a symlink is named by its
        # link in the mount options and by its target in the chain.
        real = [self._real(d) for d in lowers]
        if real == [self._real(d) for d in expected] and not missing:
            return
        self.add("layer.mount-mismatch", container.id, namespace=container.namespace,
                 layer=chain.layers[0].key, path=mount.mount_point,
                 message=(f"running container {container.id} is mounted on lower "
                          f"folders that no longer exist: {missing}"
                          if real == [self._real(d) for d in expected] else
                          f"running container {container.id} is mounted with lower "
                          f"folders {lowers} but its chain says {expected}"
                          + (f"; missing now: {missing}" if missing else "")),
                 hint=("The running container reads layers its metadata no longer "
                       "describes: restart the pod so containerd mounts the recorded "
                       "chain, and check for manual edits under the snapshotter."),
                 details={"container_id": container.id, "mounted_lowers": lowers,
                          "expected_lowers": expected, "missing": missing,
                          "pod": container.pod})


def _chains(snaps: list[Any]) -> list[list[Any]]:
    """Group unreferenced snapshots into chains: each top with its unreferenced parents."""
    by_key = {s.key: s for s in snaps}
    parents = {s.parent for s in snaps if s.parent in by_key}
    chains, taken = [], set()
    for top in sorted((s for s in snaps if s.key not in parents), key=lambda s: s.key):
        chain, snap = [], top
        while snap is not None and snap.key not in taken:
            chain.append(snap)
            taken.add(snap.key)
            snap = by_key.get(snap.parent or "")
        chains.append(chain)
    return chains

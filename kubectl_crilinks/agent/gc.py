"""Which snapshots containerd's own garbage collector would keep, and why.

This follows the collector of containerd's metadata plugin, so that nothing it would
keep is ever called unreferenced (users would delete live data). Per namespace:

roots
    leases that have not expired (``containerd.io/gc.expire`` in the past means
    expired), with everything they hold; images (their target content and label
    references); ingests that have not expired; content, snapshots and sandboxes
    labelled ``containerd.io/gc.root``; containers (their snapshot and labels);
    sandboxes (their labels: containerd 1.7 and later keep them, so we do too).
edges
    content → ``containerd.io/gc.ref.content[./…]`` and
    ``containerd.io/gc.ref.snapshot.<snapshotter>[/…]`` labels; snapshot → its
    parent and its label references (not for a lease marked ``gc.flat``); ingest →
    its expected content.

Roots are computed twice: once as containerd does, once without any lease, so the
snapshots that only a lease keeps alive can be named with that lease.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Iterable, Iterator

from .containerd import State

GC_ROOT = "containerd.io/gc.root"
GC_EXPIRE = "containerd.io/gc.expire"
GC_FLAT = "containerd.io/gc.flat"
REF_CONTENT = "containerd.io/gc.ref.content"
REF_SNAPSHOT = "containerd.io/gc.ref.snapshot."

# A node is (kind, namespace, key); snapshots are keyed "snapshotter/key".
Node = tuple[str, str, str]


@dataclasses.dataclass(frozen=True)
class Reachability:
    """The outcome: what GC keeps, and which leases keep what."""

    kept: frozenset[Node]
    kept_without_leases: frozenset[Node]
    expired_leases: dict[str, datetime.datetime]
    holders: dict[Node, tuple[str, ...]]

    def snapshot_kept(self, namespace: str, snapshotter: str, key: str) -> bool:
        return ("snapshot", namespace, f"{snapshotter}/{key}") in self.kept

    def snapshot_needs_lease(self, namespace: str, snapshotter: str, key: str) -> bool:
        node = ("snapshot", namespace, f"{snapshotter}/{key}")
        return node in self.kept and node not in self.kept_without_leases


def lease_expiry(labels: dict[str, str] | object) -> datetime.datetime | None:
    """Return a lease's ``gc.expire`` time, or None when it has none or it is invalid."""
    raw = labels.get(GC_EXPIRE) if isinstance(labels, dict) else None
    if not raw:
        return None
    try:
        return datetime.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


def label_refs(namespace: str, labels: dict[str, str]) -> Iterator[Node]:
    """Yield the content and snapshots that GC labels reference."""
    for key, value in labels.items():
        if key == REF_CONTENT or (key.startswith(REF_CONTENT)
                                  and key[len(REF_CONTENT)] in "./"):
            yield ("content", namespace, value)
        elif key.startswith(REF_SNAPSHOT):
            snapshotter = key[len(REF_SNAPSHOT):].split("/", 1)[0]
            yield ("snapshot", namespace, f"{snapshotter}/{value}")


def reachability(state: State, *, now: datetime.datetime | None = None) -> Reachability:
    """Compute what containerd's collector keeps in ``state``."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    expired = _expired_leases(state, now)
    lease_roots, holders = _lease_roots(state, expired)
    other_roots = list(_other_roots(state, now))
    return Reachability(
        kept=frozenset(_closure(state, other_roots + lease_roots)),
        kept_without_leases=frozenset(_closure(state, other_roots)),
        expired_leases=expired,
        holders=holders,
    )


def _expired_leases(state: State, now: datetime.datetime) -> dict[str, datetime.datetime]:
    found = {}
    for lease in state.meta.leases if state.meta else ():
        expiry = lease_expiry(dict(lease.labels))
        if expiry is not None and expiry < now:
            found[f"{lease.namespace}/{lease.id}"] = expiry
    return found


def _lease_roots(state: State, expired: dict) -> tuple[list, dict[Node, tuple[str, ...]]]:
    """Return the roots that live leases hold, and which leases hold each node."""
    roots: list[tuple[Node, bool]] = []
    holders: dict[Node, list[str]] = {}
    for lease in state.meta.leases if state.meta else ():
        flat = GC_FLAT in lease.labels
        held = [("snapshot", lease.namespace, f"{sn}/{key}") for sn, key in lease.snapshots]
        held += [("content", lease.namespace, digest) for digest in lease.content]
        held += [("ingest", lease.namespace, ref) for ref in lease.ingests]
        for node in held:
            holders.setdefault(node, []).append(lease.id)
            if f"{lease.namespace}/{lease.id}" not in expired:
                roots.append((node, flat))
    return roots, {node: tuple(ids) for node, ids in holders.items()}


def _other_roots(state: State, now: datetime.datetime) -> Iterator[tuple[Node, bool]]:
    """Yield every root that is not a lease, as (node, flat)."""
    meta = state.meta
    if meta is None:
        return
    for image in meta.images:
        if image.target:
            yield ("content", image.namespace, image.target), False
        yield from _unflat(label_refs(image.namespace, dict(image.labels)))
    for ingest in meta.ingests:
        if ingest.expires is not None and ingest.expires > now:
            yield ("ingest", ingest.namespace, ingest.ref), False
    for (namespace, digest), labels in meta.blobs.items():
        if GC_ROOT in labels:
            yield ("content", namespace, digest), False
    for container in state.containers:
        if container.snapshotter:
            node = ("snapshot", container.namespace,
                    f"{container.snapshotter}/{container.snapshot_key or ''}")
            yield node, False
        yield from _unflat(label_refs(container.namespace, dict(container.labels)))
    for (namespace, _), labels in meta.sandboxes.items():
        yield from _unflat(label_refs(namespace, dict(labels)))
    for snapshot in state.snapshots.values():
        if GC_ROOT in snapshot.labels:
            yield ("snapshot", snapshot.namespace,
                   f"{snapshot.snapshotter}/{snapshot.key}"), False


def _unflat(nodes: Iterable[Node]) -> Iterator[tuple[Node, bool]]:
    return ((node, False) for node in nodes)


def _closure(state: State, roots: list[tuple[Node, bool]]) -> set[Node]:
    """Follow every edge from the roots; flat nodes follow parents only."""
    seen: set[tuple[Node, bool]] = set()
    pending = list(roots)
    while pending:
        item = pending.pop()
        if item in seen:
            continue
        seen.add(item)
        pending.extend(_edges(state, *item))
    return {node for node, _ in seen}


def _edges(state: State, node: Node, flat: bool) -> Iterator[tuple[Node, bool]]:
    kind, namespace, key = node
    if kind == "content" and not flat and state.meta:
        labels = state.meta.blobs.get((namespace, key))
        if labels:
            yield from _unflat(label_refs(namespace, dict(labels)))
    elif kind == "snapshot":
        snapshotter, _, name = key.partition("/")
        snapshot = state.snapshots.get((namespace, snapshotter, name))
        if snapshot is None:
            return
        if snapshot.parent:
            yield ("snapshot", namespace, f"{snapshotter}/{snapshot.parent}"), flat
        if not flat:
            yield from _unflat(label_refs(namespace, dict(snapshot.labels)))
    elif kind == "ingest" and state.meta:
        for ingest in state.meta.ingests:
            if ingest.namespace == namespace and ingest.ref == key and ingest.expected:
                yield ("content", namespace, ingest.expected), False

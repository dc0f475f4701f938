"""containerd's view of containers and snapshots, joined with the snapshotter's.

containerd keeps two BoltDB files. The metadata plugin's ``meta.db`` holds the
namespaced view (containers with their labels and snapshot key, snapshots with their
parent key and their *backend* key ``<ns>/<seq>/<key>``). Each snapshotter keeps its
own ``metadata.db`` whose records, keyed by that backend key, carry the numeric id
that names the directory ``snapshots/<id>``. The only way from a pod to a directory
is therefore: container → meta.db snapshot → backend key → snapshotter record → id.

This module reads both (through :mod:`bolt`) into plain frozen records; it judges
nothing. :func:`layer_chain` walks one container's chain and says where it breaks.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import stat
from typing import Any, Callable, Final, Mapping

from . import bolt, codec, content

logger = logging.getLogger(__name__)

META_DB: Final = "io.containerd.metadata.v1.bolt/meta.db"
SNAPSHOTTER_PLUGINS: Final = {
    "overlayfs": "io.containerd.snapshotter.v1.overlayfs",
    "native": "io.containerd.snapshotter.v1.native",
}
"""Snapshotters whose directories this agent knows how to stack."""

KINDS: Final = {0: "unknown", 1: "view", 2: "active", 3: "committed"}
MAX_CHAIN: Final = 512
"""Parent links followed before a chain is called circular (images have < 128 layers)."""

CRI_NAMESPACE: Final = "k8s.io"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
CONTAINER_NAME = "io.kubernetes.container.name"
CRI_KIND = "io.cri-containerd.kind"


@dataclasses.dataclass(frozen=True)
class Container:
    """A container record from meta.db."""

    id: str
    namespace: str
    labels: Mapping[str, str]
    image: str | None
    snapshotter: str | None
    snapshot_key: str | None
    spec: Mapping[str, Any] | None

    @property
    def pod(self) -> str | None:
        return self.labels.get(POD_NAME)

    @property
    def pod_namespace(self) -> str | None:
        return self.labels.get(POD_NAMESPACE)

    @property
    def name(self) -> str | None:
        return self.labels.get(CONTAINER_NAME)

    @property
    def is_sandbox(self) -> bool:
        return self.labels.get(CRI_KIND) == "sandbox"

    def mount_points(self) -> list[str]:
        """Return the destinations of the OCI spec's mounts (covered at run time)."""
        mounts = (self.spec or {}).get("mounts") or []
        return [m["destination"] for m in mounts if isinstance(m, dict) and m.get("destination")]


@dataclasses.dataclass(frozen=True)
class MetaSnapshot:
    """A snapshot as meta.db names it, inside a namespace and a snapshotter."""

    namespace: str
    snapshotter: str
    key: str
    backend_key: str | None
    parent: str | None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    created: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Image:
    """An image record: its name, the digest of its manifest or index, its labels."""

    namespace: str
    name: str
    target: str | None
    media_type: str | None
    labels: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Lease:
    """A lease and what it holds; ``labels`` may carry ``containerd.io/gc.expire``."""

    namespace: str
    id: str
    labels: Mapping[str, str]
    created: datetime.datetime | None
    snapshots: tuple[tuple[str, str], ...]
    content: tuple[str, ...]
    ingests: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Ingest:
    namespace: str
    ref: str
    expires: datetime.datetime | None
    expected: str | None


@dataclasses.dataclass(frozen=True)
class BackendSnapshot:
    """A snapshot record of the snapshotter's own metadata.db."""

    key: str
    id: int
    kind: str
    parent: str | None
    created: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class ParentLink:
    """An entry of the snapshotter's ``parents`` index: parent id, child id, child key."""

    parent_id: int
    child_id: int
    child_key: str


@dataclasses.dataclass(frozen=True)
class Snapshotter:
    """One snapshotter's records and where its directories are."""

    name: str
    root: str
    records: Mapping[str, BackendSnapshot]
    parents: tuple[ParentLink, ...] = ()
    snapshots_root: str = ""
    """The ``snapshots`` folder, resolved inside the host root (it may be moved)."""

    def directory(self, snapshot_id: int) -> str:
        base = self.snapshots_root or os.path.join(self.root, "snapshots")
        return os.path.join(base, str(snapshot_id))

    def contents(self, snapshot_id: int) -> str:
        """Return the folder holding the layer's files (``fs`` for overlayfs)."""
        base = self.directory(snapshot_id)
        return os.path.join(base, "fs") if self.name == "overlayfs" else base

    def has_folder(self, snapshot_id: int) -> bool:
        """Tell whether a snapshot's folder and contents are real folders, not links.

        A link in their place is never followed: it could lead anywhere on the host.
        """
        return all(_is_real_dir(path) for path in
                   (self.directory(snapshot_id), self.contents(snapshot_id)))


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class State:
    """Everything read from one containerd root in one consistent pass."""

    root: str
    containers: tuple[Container, ...]
    snapshots: Mapping[tuple[str, str, str], MetaSnapshot]
    snapshotters: Mapping[str, Snapshotter]
    not_inspected: Mapping[str, str]
    meta: "Meta | None" = None
    blobs: str = ""
    """The content store's sha256 blob folder, resolved inside the host root."""


@dataclasses.dataclass(frozen=True)
class Meta:
    """What meta.db holds besides containers and snapshots: the GC's other roots."""

    images: tuple[Image, ...]
    blobs: Mapping[tuple[str, str], Mapping[str, str]]
    ingests: tuple[Ingest, ...]
    leases: tuple[Lease, ...]
    sandboxes: Mapping[tuple[str, str], Mapping[str, str]]


# -- reading meta.db -----------------------------------------------------------------


def _labels(bucket: bolt.Bucket | None) -> dict[str, str]:
    if bucket is None:
        return {}
    return {codec.text(k) or "": codec.text(v) or "" for k, v in bucket.values.items()}


def _spec(raw: bytes | None) -> dict[str, Any] | None:
    """Decode the container's OCI spec (a protobuf Any wrapping JSON)."""
    if not raw:
        return None
    try:
        _, value = codec.protobuf_any(raw)
        spec = json.loads(value)
    except (codec.CodecError, ValueError) as exc:
        logger.debug("container spec cannot be decoded: %s", exc)
        return None
    return spec if isinstance(spec, dict) else None


def _container(namespace: str, cid: bytes, bucket: bolt.Bucket) -> Container:
    return Container(
        id=codec.text(cid) or "",
        namespace=namespace,
        labels=_labels(bucket.bucket(b"labels")),
        image=codec.text(bucket.get(b"image")),
        snapshotter=codec.text(bucket.get(b"snapshotter")),
        snapshot_key=codec.text(bucket.get(b"snapshotKey")),
        spec=_spec(bucket.get(b"spec")),
    )


def _time(raw: bytes | None) -> datetime.datetime | None:
    try:
        return codec.go_time(raw) if raw else None
    except codec.CodecError:
        return None


def _meta_snapshots(namespace: str, bucket: bolt.Bucket) -> list[MetaSnapshot]:
    found = []
    for snapshotter, keys in bucket.buckets.items():
        for key, record in keys.buckets.items():
            found.append(
                MetaSnapshot(
                    namespace=namespace,
                    snapshotter=codec.text(snapshotter) or "",
                    key=codec.text(key) or "",
                    backend_key=codec.text(record.get(b"name")),
                    parent=codec.text(record.get(b"parent")),
                    labels=_labels(record.bucket(b"labels")),
                    created=_time(record.get(b"createdat")),
                )
            )
    return found


def _images(namespace: str, bucket: bolt.Bucket) -> list[Image]:
    images = []
    for name, record in bucket.buckets.items():
        target = record.bucket(b"target") or _EMPTY
        images.append(Image(namespace=namespace, name=codec.text(name) or "",
                            target=codec.text(target.get(b"digest")),
                            media_type=codec.text(target.get(b"mediatype")),
                            labels=_labels(record.bucket(b"labels"))))
    return images


def _leases(namespace: str, bucket: bolt.Bucket) -> list[Lease]:
    leases = []
    for lease_id, record in bucket.buckets.items():
        held = record.bucket(b"snapshots") or _EMPTY
        snapshots = tuple(
            (codec.text(sn) or "", codec.text(key) or "")
            for sn, keys in held.buckets.items() for key in keys.values
        )
        leases.append(Lease(
            namespace=namespace, id=codec.text(lease_id) or "",
            labels=_labels(record.bucket(b"labels")),
            created=_time(record.get(b"createdat")), snapshots=snapshots,
            content=tuple(codec.text(k) or "" for k in (record.bucket(b"content") or _EMPTY).values),
            ingests=tuple(codec.text(k) or "" for k in (record.bucket(b"ingests") or _EMPTY).values),
        ))
    return leases


def _content(namespace: str, bucket: bolt.Bucket, meta: dict[str, Any]) -> None:
    for digest, record in (bucket.bucket(b"blob") or _EMPTY).buckets.items():
        meta["blobs"][(namespace, codec.text(digest) or "")] = _labels(record.bucket(b"labels"))
    for ref, record in (bucket.bucket(b"ingests") or _EMPTY).buckets.items():
        meta["ingests"].append(Ingest(namespace=namespace, ref=codec.text(ref) or "",
                                      expires=_time(record.get(b"expireat")),
                                      expected=codec.text(record.get(b"expected"))))


def _namespace_meta(namespace: str, ns: bolt.Bucket, meta: dict[str, Any]) -> None:
    """Collect one namespace's images, content, ingests, leases and sandboxes."""
    meta["images"].extend(_images(namespace, ns.bucket(b"images") or _EMPTY))
    meta["leases"].extend(_leases(namespace, ns.bucket(b"leases") or _EMPTY))
    _content(namespace, ns.bucket(b"content") or _EMPTY, meta)
    for sid, record in (ns.bucket(b"sandboxes") or _EMPTY).buckets.items():
        meta["sandboxes"][(namespace, codec.text(sid) or "")] = _labels(
            record.bucket(b"labels"))


def read_meta(path: str) -> tuple[list[Container], list[MetaSnapshot], Meta]:
    """Read every namespace's containers, snapshots and GC roots from meta.db."""
    tree = bolt.read_tree(path)
    v1 = tree.root.bucket(b"v1")
    if v1 is None:
        raise bolt.BoltError(f"{path}: no 'v1' bucket; this is not containerd's meta.db")
    containers: list[Container] = []
    snapshots: list[MetaSnapshot] = []
    meta: dict[str, Any] = {"images": [], "blobs": {}, "ingests": [], "leases": [],
                            "sandboxes": {}}
    for ns_raw, ns in v1.buckets.items():
        namespace = codec.text(ns_raw) or ""
        for cid, record in (ns.bucket(b"containers") or _EMPTY).buckets.items():
            containers.append(_container(namespace, cid, record))
        snapshots.extend(_meta_snapshots(namespace, ns.bucket(b"snapshots") or _EMPTY))
        _namespace_meta(namespace, ns, meta)
    frozen = Meta(images=tuple(meta["images"]), blobs=meta["blobs"],
                  ingests=tuple(meta["ingests"]), leases=tuple(meta["leases"]),
                  sandboxes=meta["sandboxes"])
    return containers, snapshots, frozen


# -- reading a snapshotter's metadata.db -----------------------------------------------


def _backend_record(key: bytes, bucket: bolt.Bucket) -> BackendSnapshot:
    raw_id = bucket.get(b"id")
    kind = bucket.get(b"kind") or b"\x00"
    return BackendSnapshot(
        key=codec.text(key) or "",
        id=codec.uvarint(raw_id)[0] if raw_id else -1,
        kind=KINDS.get(kind[0], f"0x{kind[0]:02x}"),
        parent=codec.text(bucket.get(b"parent")),
        created=_time(bucket.get(b"createdat")),
    )


def _parent_link(key: bytes, value: bytes) -> ParentLink | None:
    """Decode a parents-index key ``uvarint(parent) 0x00 uvarint(child)``."""
    try:
        parent_id, offset = codec.uvarint(key)
        if key[offset : offset + 1] != b"\x00":
            return None
        child_id, _ = codec.uvarint(key, offset + 1)
    except codec.CodecError:
        return None
    return ParentLink(parent_id, child_id, codec.text(value) or "")


def read_snapshotter(name: str, root: str, *,
                     rescope: Callable[[str], str] = lambda path: path) -> Snapshotter:
    """Read a snapshotter's records from ``<root>/metadata.db``."""
    tree = bolt.read_tree(rescope(os.path.join(root, "metadata.db")))
    bucket = tree.root.bucket(b"v1", b"snapshots") or _EMPTY
    records = {
        codec.text(key) or "": _backend_record(key, record)
        for key, record in bucket.buckets.items()
    }
    index = tree.root.bucket(b"v1", b"parents") or _EMPTY
    parents = tuple(p for k, v in index.values.items() if (p := _parent_link(k, v)))
    return Snapshotter(name=name, root=root, records=records, parents=parents,
                       snapshots_root=rescope(os.path.join(root, "snapshots")))


def read_state(root: str, *, snapshotter_roots: Mapping[str, str] | None = None,
               rescope: Callable[[str], str] = lambda path: path) -> State:
    """Read meta.db and every snapshotter it uses, under an agent-side ``root``.

    ``rescope`` maps an agent-side path to where it really is, its links followed
    inside the host root (a folder below the root may itself be moved elsewhere);
    without it paths are used as given.
    """
    containers, snapshots, meta = read_meta(rescope(os.path.join(root, META_DB)))
    used = {s.snapshotter for s in snapshots} | {c.snapshotter for c in containers if c.snapshotter}
    snapshotters: dict[str, Snapshotter] = {}
    not_inspected: dict[str, str] = {}
    for name in sorted(used):
        plugin_root = _snapshotter_root(root, name, snapshotter_roots or {})
        if plugin_root is None:
            not_inspected[name] = f"the {name!r} snapshotter is not one this agent reads"
            continue
        snapshotters[name] = read_snapshotter(name, rescope(plugin_root), rescope=rescope)
    return State(
        root=root,
        blobs=rescope(os.path.join(root, content.CONTENT_DIR, "blobs", "sha256")),
        containers=tuple(containers),
        snapshots={(s.namespace, s.snapshotter, s.key): s for s in snapshots},
        snapshotters=snapshotters,
        not_inspected=not_inspected,
        meta=meta,
    )


def _snapshotter_root(root: str, name: str, overrides: Mapping[str, str]) -> str | None:
    if name in overrides:
        return overrides[name]
    plugin = SNAPSHOTTER_PLUGINS.get(name)
    return os.path.join(root, plugin) if plugin else None


class _Empty:
    buckets: Mapping[bytes, bolt.Bucket] = {}
    values: Mapping[bytes, bytes] = {}

    def bucket(self, *names: bytes) -> None:
        return None

    def get(self, key: bytes) -> None:
        return None


_EMPTY: Any = _Empty()


# -- one container's chain ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChainLayer:
    """One layer of a container's stack, top (position 0) first."""

    position: int
    key: str
    backend_key: str
    id: int
    kind: str
    directory: str
    contents: str
    present: bool


@dataclasses.dataclass(frozen=True)
class ChainBreak:
    """Where a chain breaks: ``check`` is the finding's id, ``details`` its data."""

    check: str
    key: str
    message: str
    details: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Chain:
    layers: tuple[ChainLayer, ...]
    breaks: tuple[ChainBreak, ...]


def layer_chain(state: State, container: Container) -> Chain:
    """Follow a container's snapshot to its base layer, noting every break."""
    snapshotter = state.snapshotters.get(container.snapshotter or "")
    if snapshotter is None or not container.snapshot_key:
        return Chain((), ())
    by_backend = {
        s.backend_key: s
        for s in state.snapshots.values()
        if s.namespace == container.namespace and s.snapshotter == snapshotter.name
    }
    return _ChainWalk(state, container, snapshotter, by_backend).run()


class _ChainWalk:
    """The state of one walk down a chain; :meth:`run` returns the :class:`Chain`."""

    def __init__(self, state, container, snapshotter, by_backend) -> None:
        self.state, self.container = state, container
        self.snapshotter, self.by_backend = snapshotter, by_backend
        self.layers: list[ChainLayer] = []
        self.breaks: list[ChainBreak] = []

    def run(self) -> Chain:
        # The container's own snapshot, as meta.db names it.
        ns, sn = self.container.namespace, self.snapshotter.name
        top = self.state.snapshots.get((ns, sn, self.container.snapshot_key))
        if top is None or not top.backend_key:
            self._break_missing(self.container.snapshot_key or "", None, "meta.db")
            return Chain((), tuple(self.breaks))

        # Down the snapshotter's parent pointers, which are what the mounts use.
        backend_key: str | None = top.backend_key
        child: str | None = None
        seen: set[str] = set()
        while backend_key and len(self.layers) < MAX_CHAIN and backend_key not in seen:
            seen.add(backend_key)
            record = self.snapshotter.records.get(backend_key)
            if record is None:
                self._break_missing(self._meta_key(backend_key), child, "metadata.db")
                break
            self._add_layer(record)
            child, backend_key = self._meta_key(backend_key), record.parent
        return Chain(tuple(self.layers), tuple(self.breaks))

    def _meta_key(self, backend_key: str) -> str:
        meta = self.by_backend.get(backend_key)
        return meta.key if meta else backend_key.split("/", 2)[-1]

    def _add_layer(self, record: BackendSnapshot) -> None:
        directory = self.snapshotter.directory(record.id)
        contents = self.snapshotter.contents(record.id)
        present = self.snapshotter.has_folder(record.id)
        layer = ChainLayer(
            position=len(self.layers),
            key=self._meta_key(record.key),
            backend_key=record.key,
            id=record.id,
            kind=record.kind,
            directory=directory,
            contents=contents,
            present=present,
        )
        self.layers.append(layer)
        if not present:
            self._break_dir(layer)

    def _break_missing(self, key: str, child: str | None, database: str) -> None:
        owner = f"snapshot {child!r}" if child else f"container {self.container.id!r}"
        self.breaks.append(
            ChainBreak(
                check="layer.parent-missing",
                key=key,
                message=f"{owner} names snapshot {key!r}, which has no record in {database}",
                details={"snapshot_key": key, "child": child, "database": database},
            )
        )

    def _break_dir(self, layer: ChainLayer) -> None:
        self.breaks.append(
            ChainBreak(
                check="layer.dir-missing",
                key=layer.key,
                message=(
                    f"snapshot {layer.key!r} (id {layer.id}) has a record but its "
                    f"directory is gone"
                ),
                details={
                    "snapshot_key": layer.key,
                    "snapshot_id": layer.id,
                    "layer_position": layer.position,
                    "children": [l.key for l in self.layers[: layer.position]],
                },
            )
        )

"""containers/storage with the overlay driver (CRI-O, podman): where, and what it holds.

One store is a *graphroot* (default ``/var/lib/containers/storage``) and a *runroot*
(default ``/run/containers/storage``). Under the graphroot:

- ``overlay-layers/layers.json`` (and ``volatile-layers.json``): layer records, each
  naming its ``parent``; ``overlay-images/images.json``: images naming their top
  ``layer``; ``overlay-containers/containers.json`` (and ``volatile-containers.json``,
  where CRI-O keeps its containers): containers naming their ``image`` and ``layer``,
  with CRI-O's pod metadata as a JSON string in ``metadata``;
- ``overlay/<layer id>/`` holds ``diff/`` (the files), ``link`` (the layer's short
  name) and, above a base layer, ``lower``: ``l/<short>:l/<short>:...``, nearest
  parent first; ``overlay/l/<short>`` is a relative symlink to ``../<id>/diff``.

The overlay mount of a container names its lower layers by those short links, so a
lost link, ``link`` file or ``lower`` file stops every container above it.

Where the store is comes from CRI-O first (its running process's flags, then
``/etc/crio/crio.conf`` and the files of ``/etc/crio/crio.conf.d`` in name order,
later files winning), over ``storage.conf``, over the defaults, as CRI-O itself
layers them. Every path is a node path read through :class:`HostView`.

The JSON files are read without taking c/storage's locks: c/storage replaces them
by rename, so a read sees a whole old or a whole new file; one that does not parse
(a writer that does not rename, a network file system) is read once more before the
store is called unreadable. Readers return frozen records and judge nothing; the
checks are in :mod:`.checks.cstorage`.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import re
import stat
import struct
import time
import tomllib
from typing import Any, Final, Iterable, Iterator, Mapping

from . import proctable
from .hostview import HostView, ScopeError

logger = logging.getLogger(__name__)

DEFAULT_GRAPHROOT: Final = "/var/lib/containers/storage"
DEFAULT_RUNROOT: Final = "/run/containers/storage"
CRIO_CONFIG: Final = "/etc/crio/crio.conf"
CRIO_CONFIG_DIR: Final = "/etc/crio/crio.conf.d"
CRIO_SOCKET: Final = "/var/run/crio/crio.sock"
STORAGE_CONFIGS: Final = ("/etc/containers/storage.conf",
                          "/usr/share/containers/storage.conf")

NOT_LAYERS: Final = frozenset({"l", "staging", "tempdirs"})
"""Folders of ``overlay/`` that are the driver's own (ListLayers skips them)."""

SHORT_NAME: Final = re.compile(r"[A-Za-z0-9]{1,64}")
"""A usable short name (c/storage writes 26 characters of base32)."""

READ_RETRY_DELAY: Final = 0.05
"""Seconds before the second read of a JSON file that did not parse."""

MAX_CHAIN: Final = 500
"""Parents followed before a chain is called circular (c/storage's maxDepth)."""


class StoreError(Exception):
    """Raised when a store's records cannot be read (missing, not JSON twice)."""


# -- discovery -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Store:
    """One containers/storage installation, as node paths, and how it was found."""

    graphroot: str
    runroot: str
    driver: str
    source: str
    crio: bool
    transient: bool = False
    additional: tuple[str, ...] = ()
    pid: int | None = None

    @property
    def overlay(self) -> str:
        """The driver's home: ``<graphroot>/overlay``."""
        return os.path.join(self.graphroot, self.driver)

    def records(self, kind: str) -> str:
        """The folder of one kind of record: layers, images or containers."""
        return os.path.join(self.graphroot, f"{self.driver}-{kind}")


def find_stores(host: HostView, proc_root: str | None) -> list[Store]:
    """Return every containers/storage store with layer records, CRI-O's first."""
    found: list[Store] = []

    # 1. A running CRI-O says where its storage is on its command line.
    for pid, argv in proctable.processes(proc_root, "crio"):
        flags = parse_flags(argv)
        config = flags.get("config", CRIO_CONFIG)
        config_dir = flags.get("config_dir", CRIO_CONFIG_DIR)
        found.append(_store(host, crio_files=_crio_files(host, config, config_dir),
                            flags=flags, source=f"running crio process {pid}", pid=pid))

    # 2. CRI-O's config files over storage.conf over the defaults.
    files = _crio_files(host, CRIO_CONFIG, CRIO_CONFIG_DIR)
    found.append(_store(host, crio_files=files, flags={}, source="", pid=None))
    return _unique_with_records(host, found)


def parse_flags(argv: list[str]) -> dict[str, str]:
    """Pick CRI-O's storage flags out of its command line."""
    names = {"--root": "root", "-r": "root", "--runroot": "runroot",
             "--storage-driver": "driver", "-s": "driver", "--config": "config",
             "-c": "config", "--config-dir": "config_dir", "-d": "config_dir"}
    flags: dict[str, str] = {}
    args = iter(argv[1:])
    for arg in args:
        flag, sep, value = arg.partition("=")
        if flag in names:
            flags[names[flag]] = value if sep else next(args, "")
    return flags


def _crio_files(host: HostView, config: str, config_dir: str) -> list[tuple[str, dict]]:
    """Read CRI-O's config file, then each drop-in file of its folder in name order."""
    paths = [config]
    try:
        real_dir = host.resolve(config_dir)
        names = sorted(os.listdir(real_dir))
        paths += [os.path.join(config_dir, name) for name in names]
    except OSError:
        pass
    read = [(path, _toml(host, path, "CRI-O config")) for path in paths]
    return [(path, table) for path, table in read if table is not None]


def _toml(host: HostView, path: str, what: str) -> dict[str, Any] | None:
    """Read a TOML file on the node; None (and a warning) when it cannot be used."""
    try:
        if not host.is_dir(path):
            return tomllib.loads(host.read_bytes(path, limit=4 << 20).decode("utf-8"))
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            logger.warning("%s %s cannot be read (%s); it is left out", what, path, exc)
    except (ValueError, UnicodeDecodeError) as exc:
        logger.warning("%s %s is not valid TOML (%s); it is left out", what, path, exc)
    return None


def _store(host: HostView, *, crio_files: list[tuple[str, dict]], flags: dict[str, str],
           source: str, pid: int | None) -> Store:
    """Layer the settings as CRI-O does: defaults, storage.conf, crio.conf, flags."""
    settings: dict[str, Any] = {
        "graphroot": DEFAULT_GRAPHROOT, "runroot": DEFAULT_RUNROOT, "driver": "overlay",
        "transient": False, "additional": (), "from": "default paths"}

    # storage.conf: the first one found, as c/storage reads only one.
    for path in STORAGE_CONFIGS:
        table = _toml(host, path, "storage.conf")
        if table is not None:
            _apply_storage_conf(settings, table, path)
            break

    # CRI-O's own keys override storage.conf, file by file; flags override all.
    for path, table in crio_files:
        _apply_crio_conf(settings, table.get("crio") or {}, path)
    for key, name in (("root", "graphroot"), ("runroot", "runroot"),
                      ("driver", "driver")):
        if flags.get(key):
            settings[name] = flags[key]
    return Store(graphroot=settings["graphroot"], runroot=settings["runroot"],
                 driver=settings["driver"] or "overlay",
                 source=source or settings["from"], crio=bool(crio_files or pid),
                 transient=settings["transient"], additional=settings["additional"],
                 pid=pid)


def _apply_storage_conf(settings: dict[str, Any], table: dict, path: str) -> None:
    storage = table.get("storage") or {}
    options = storage.get("options") or {}
    for key, name in (("graphroot", "graphroot"), ("runroot", "runroot"),
                      ("driver", "driver"), ("transient_store", "transient")):
        if storage.get(key) not in (None, ""):
            settings[name] = storage[key]
    if storage.get("graphroot"):
        settings["from"] = f"storage.conf {path}"
    stores = options.get("additionalimagestores") or []
    settings["additional"] = tuple(s for s in stores if isinstance(s, str))


def _apply_crio_conf(settings: dict[str, Any], crio: dict, path: str) -> None:
    for key, name in (("root", "graphroot"), ("runroot", "runroot"),
                      ("storage_driver", "driver")):
        if crio.get(key):
            settings[name] = crio[key]
    if crio.get("root"):
        settings["from"] = f"CRI-O config {path}"
    for option in crio.get("storage_option") or []:
        key, _, value = str(option).partition("=")
        if key.endswith(".imagestore") and value:
            settings["additional"] = (*settings["additional"], value)


def _unique_with_records(host: HostView, found: list[Store]) -> list[Store]:
    """Keep the first store per real graphroot, and only those with layer records."""
    unique: list[Store] = []
    roots: set[str] = set()
    for store in found:
        try:
            real = host.resolve(store.graphroot)
        except ScopeError:
            continue
        if real in roots or not host.exists(os.path.join(store.records("layers"),
                                                         "layers.json")):
            continue
        roots.add(real)
        unique.append(store)
    return unique


# -- records ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layer:
    """A record of layers.json (or volatile-layers.json)."""

    id: str
    parent: str | None
    names: tuple[str, ...]
    incomplete: bool
    created: str | None
    volatile: bool


@dataclasses.dataclass(frozen=True)
class Image:
    """A record of images.json."""

    id: str
    names: tuple[str, ...]
    top_layer: str | None

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.id


@dataclasses.dataclass(frozen=True)
class Container:
    """A record of containers.json, with its pod as CRI-O's metadata names it.

    CRI-O writes ``pod-name`` (the sandbox name ``k8s_<pod>_<ns>_<uid>_<attempt>``),
    ``pod-id`` (the sandbox's id), ``metadata-name`` (the container's name in the pod
    spec) and, on the sandbox's own record, ``namespace``, ``uid`` and ``pod: true``.
    """

    id: str
    names: tuple[str, ...]
    image_id: str | None
    layer_id: str | None
    metadata: Mapping[str, Any]
    volatile: bool
    pod: str | None = None
    pod_namespace: str | None = None
    pod_uid: str | None = None
    image: str | None = None
    spec_mounts: tuple[str, ...] = ()

    @property
    def name(self) -> str | None:
        """The container's name in its pod (CRI-O's ``metadata-name``)."""
        return self.metadata.get("metadata-name") or None

    @property
    def pod_id(self) -> str | None:
        return self.metadata.get("pod-id") or None

    @property
    def is_sandbox(self) -> bool:
        return bool(self.metadata.get("pod")) or (self.pod_id == self.id)

    def mount_points(self) -> list[str]:
        """Return the destinations of the OCI spec's mounts (covered at run time)."""
        return list(self.spec_mounts)


@dataclasses.dataclass(frozen=True)
class LayerDir:
    """What ``overlay/<id>/`` holds: its short name, its lower chain, its diff."""

    id: str
    link: str | None
    link_problem: str | None
    lower: tuple[str, ...] | None
    lower_problem: str | None
    has_diff: bool


@dataclasses.dataclass(frozen=True)
class State:
    """Everything read from one store in one pass; ``overlay_dir`` is agent-side."""

    store: Store
    overlay_dir: str
    layers: Mapping[str, Layer]
    images: Mapping[str, Image]
    containers: Mapping[str, Container]
    dirs: Mapping[str, LayerDir]
    links: Mapping[str, str | None]
    foreign_layers: frozenset[str]
    foreign_links: frozenset[str]

    def node_path(self, *parts: str) -> str:
        """Spell a path below the driver's home as the node names it."""
        return os.path.join(self.store.overlay, *parts)


def read_state(host: HostView, store: Store) -> State:
    """Read a store's records, layer folders and short links; raise StoreError."""
    # The three kinds of record, each with its volatile sibling.
    volatile_root = store.runroot if store.transient else store.graphroot
    layers = _layers(host, store, volatile_root)
    images = {i.id: i for i in _images(_json_array(host, _path(store, "images"),
                                                   required=False))}
    containers = _containers(host, store, volatile_root, images)

    # The driver's home: one folder per layer, and the short links.
    try:
        overlay_dir = host.resolve(store.overlay)
    except OSError as exc:
        raise StoreError(f"{store.overlay} cannot be reached: {exc}") from exc
    foreign_layers, foreign_links = _additional(host, store)
    return State(store=store, overlay_dir=overlay_dir, layers=layers, images=images,
                 containers=containers, dirs=_layer_dirs(overlay_dir),
                 links=_short_links(overlay_dir), foreign_layers=foreign_layers,
                 foreign_links=foreign_links)


def _path(store: Store, kind: str, *, root: str | None = None,
          prefix: str = "") -> str:
    folder = os.path.join(root or store.graphroot, f"{store.driver}-{kind}")
    return os.path.join(folder, f"{prefix}{kind}.json")


def _json_array(host: HostView, path: str, *, required: bool = True) -> list[dict]:
    """Read one JSON array of records, once more if it does not parse."""
    for attempt in (1, 2):
        try:
            raw = host.read_bytes(path, limit=256 << 20)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not required:
                return []
            raise StoreError(f"{path} cannot be read: {exc.strerror}") from exc
        try:
            records = json.loads(raw) if raw.strip() else []
        except ValueError as exc:
            if attempt == 1:
                logger.debug("%s did not parse (%s); reading it again", path, exc)
                time.sleep(READ_RETRY_DELAY)
                continue
            raise StoreError(f"{path} is not JSON after two reads: {exc}") from exc
        if not isinstance(records, list):
            raise StoreError(f"{path} holds {type(records).__name__}, not a list of "
                             "records")
        return [r for r in records
                if isinstance(r, dict) and isinstance(r.get("id"), str)]
    raise AssertionError("[bug] unreachable")


def _layers(host: HostView, store: Store, volatile_root: str) -> dict[str, Layer]:
    stable = _json_array(host, _path(store, "layers"))
    volatile = _json_array(host, _path(store, "layers", root=volatile_root,
                                       prefix="volatile-"), required=False)
    layers: dict[str, Layer] = {}
    for record, is_volatile in _both(stable, volatile):
        flags = record.get("flags") if isinstance(record.get("flags"), dict) else {}
        layers.setdefault(record["id"], Layer(
            id=record["id"], parent=record.get("parent") or None,
            names=tuple(record.get("names") or ()),
            incomplete=bool(flags.get("incomplete")), created=record.get("created"),
            volatile=is_volatile))
    return layers


def _both(stable: list[dict], volatile: list[dict]) -> Iterator[tuple[dict, bool]]:
    """Yield the stable file's records, then the volatile file's, as c/storage loads."""
    yield from ((record, False) for record in stable)
    yield from ((record, True) for record in volatile)


def _images(records: Iterable[dict]) -> Iterator[Image]:
    for record in records:
        yield Image(id=record["id"], names=tuple(record.get("names") or ()),
                    top_layer=record.get("layer") or None)


def _containers(host: HostView, store: Store, volatile_root: str,
                images: Mapping[str, Image]) -> dict[str, Container]:
    """Read both container files, then place each container in its pod."""
    stable = _json_array(host, _path(store, "containers"), required=False)
    volatile = _json_array(host, _path(store, "containers", root=volatile_root,
                                       prefix="volatile-"), required=False)
    raw: dict[str, Container] = {}
    for record, is_volatile in _both(stable, volatile):
        raw.setdefault(record["id"], Container(
            id=record["id"], names=tuple(record.get("names") or ()),
            image_id=record.get("image") or None, layer_id=record.get("layer") or None,
            metadata=_metadata(record.get("metadata")), volatile=is_volatile))
    return {cid: _placed(host, store, c, raw, images) for cid, c in raw.items()}


def _metadata(text: Any) -> dict[str, Any]:
    """Decode a container's ``metadata`` string (CRI-O's and podman's are JSON)."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _placed(host: HostView, store: Store, container: Container,
            everyone: Mapping[str, Container],
            images: Mapping[str, Image]) -> Container:
    """Fill in the pod (from its sandbox's record, else the sandbox name) and image."""
    meta = container.metadata
    sandbox = everyone.get(meta.get("pod-id") or "")
    pod = namespace = uid = None
    if sandbox is not None and sandbox.metadata.get("namespace"):
        pod = sandbox.metadata.get("metadata-name")
        namespace, uid = sandbox.metadata["namespace"], sandbox.metadata.get("uid")
    elif meta.get("pod-name"):
        pod, namespace, uid = _parse_sandbox_name(meta["pod-name"])
    image = images.get(container.image_id or "")
    shown = meta.get("image-name") or (image.name if image else container.image_id)
    mounts = _spec_mounts(host, store, container)
    return dataclasses.replace(container, pod=pod, pod_namespace=namespace,
                               pod_uid=uid, image=shown, spec_mounts=mounts)


def _parse_sandbox_name(name: str) -> tuple[str | None, str | None, str | None]:
    """Split ``k8s_<pod>_<namespace>_<uid>_<attempt>`` (names hold no '_')."""
    parts = name.split("_")
    if len(parts) == 5 and parts[0] == "k8s":
        return parts[1], parts[2], parts[3]
    return None, None, None


def _spec_mounts(host: HostView, store: Store, container: Container) -> tuple[str, ...]:
    """Read the destinations of the container's OCI spec mounts, if it has a spec."""
    if not container.metadata.get("pod-id"):
        return ()
    path = os.path.join(store.records("containers"), container.id, "userdata",
                        "config.json")
    try:
        spec = json.loads(host.read_bytes(path, limit=16 << 20))
    except (OSError, ValueError):
        return ()
    mounts = spec.get("mounts") if isinstance(spec, dict) else None
    return tuple(m["destination"] for m in mounts or ()
                 if isinstance(m, dict) and isinstance(m.get("destination"), str))


# -- the driver's home -----------------------------------------------------------------


def _layer_dirs(overlay_dir: str) -> dict[str, LayerDir]:
    """Read every layer folder of ``overlay/``: its link, lower and diff."""
    try:
        names = sorted(os.listdir(overlay_dir))
    except OSError as exc:
        raise StoreError(f"{overlay_dir} cannot be listed: {exc.strerror}") from exc
    dirs = {}
    for name in names:
        path = os.path.join(overlay_dir, name)
        if name in NOT_LAYERS or name.startswith(".") or not _is_dir(path):
            continue
        dirs[name] = _layer_dir(name, path)
    return dirs


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _layer_dir(layer_id: str, path: str) -> LayerDir:
    link, link_problem = _read_small(os.path.join(path, "link"))
    if link is not None and not SHORT_NAME.fullmatch(link.strip("\n")):
        link, link_problem = None, f"malformed: {link[:80]!r} is not a short name"
    lower_text, lower_problem = _read_small(os.path.join(path, "lower"))
    lower = None
    if lower_text is not None:
        lower, lower_problem = _split_lower(lower_text)
    elif lower_problem == "missing":
        lower_problem = None
    return LayerDir(id=layer_id, link=link.strip("\n") if link else None,
                    link_problem=link_problem, lower=lower, lower_problem=lower_problem,
                    has_diff=_is_dir(os.path.join(path, "diff")))


def _read_small(path: str) -> tuple[str | None, str | None]:
    """Read a small text file without following a link; (text, None) or (None, why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None, "missing"
        return None, f"unreadable: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "unreadable: not a regular file"
        data = os.read(fd, 64 * 1024)
    except OSError as exc:
        return None, f"unreadable: {exc.strerror}"
    finally:
        os.close(fd)
    try:
        return data.decode("ascii"), None
    except UnicodeDecodeError:
        return None, "malformed: not ASCII text"


def _split_lower(text: str) -> tuple[tuple[str, ...] | None, str | None]:
    """Split a ``lower`` file into its ``l/<short>`` entries, or say why it is bad."""
    entries = tuple(text.strip("\n").split(":")) if text.strip("\n") else ()
    for entry in entries:
        folder, _, name = entry.partition("/")
        if folder != "l" or not SHORT_NAME.fullmatch(name):
            return None, f"malformed: entry {entry[:80]!r} is not l/<short name>"
    return entries, None


def _short_links(overlay_dir: str) -> dict[str, str | None]:
    """Map each ``l/`` entry to its link text (None when it is not a symlink)."""
    folder = os.path.join(overlay_dir, "l")
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    links: dict[str, str | None] = {}
    for name in names:
        try:
            links[name] = os.readlink(os.path.join(folder, name))
        except OSError:
            links[name] = None
    return links


def _additional(host: HostView, store: Store) -> tuple[frozenset[str], frozenset[str]]:
    """Read the layer ids and short names of the read-only additional image stores."""
    layers: set[str] = set()
    links: set[str] = set()
    for root in store.additional:
        path = os.path.join(root, f"{store.driver}-layers", "layers.json")
        try:
            layers.update(r["id"] for r in _json_array(host, path))
            short_dir = host.resolve(os.path.join(root, store.driver, "l"))
            links.update(os.listdir(short_dir))
        except OSError as exc:
            logger.warning("additional image store %s cannot be read (%s); its layers "
                           "may be reported missing", root, exc)
    return frozenset(layers), frozenset(links)


def writer_pid(host: HostView, lock_path: str) -> int | None:
    """Return the PID holding a c/storage lock file for writing, without locking it.

    c/storage takes POSIX record locks on its ``*.lock`` files; ``F_GETLK`` asks which
    lock would block a reader and takes none itself. None when nobody writes (or the
    lock cannot be asked about).
    """
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(host.resolve(lock_path), flags)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqi", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return None
    finally:
        os.close(fd)
    kind, _, _, _, pid = struct.unpack("hhqqi", answer)
    return pid if kind != fcntl.F_UNLCK else None


# -- chains ----------------------------------------------------------------------------


def parents(state: State, layer_id: str) -> list[str]:
    """Return a layer's ancestors from layers.json, nearest first, up to a break."""
    chain: list[str] = []
    parent = state.layers[layer_id].parent if layer_id in state.layers else None
    while parent and parent not in chain and len(chain) < MAX_CHAIN:
        chain.append(parent)
        record = state.layers.get(parent)
        parent = record.parent if record else None
    return chain


def link_target(layer_id: str) -> str:
    """The text of a layer's short link: ``../<id>/diff``."""
    return f"../{layer_id}/diff"


def target_layer(text: str | None) -> str | None:
    """Return the layer id a short link's text names, if it has the expected form."""
    parts = (text or "").split("/")
    if len(parts) == 3 and parts[0] == ".." and parts[2] == "diff" and parts[1]:
        return parts[1]
    return None


@dataclasses.dataclass(frozen=True)
class StackLayer:
    """One layer of a container's stack, top (its own layer, position 0) first.

    ``kind`` uses the words the other runtimes' records use: ``active`` for the
    container's writable layer, ``committed`` for an image layer.
    """

    position: int
    key: str
    id: str
    kind: str
    short: str | None
    directory: str
    contents: str
    present: bool


@dataclasses.dataclass(frozen=True)
class Stack:
    layers: tuple[StackLayer, ...]
    breaks: tuple[str, ...]


def layer_stack(state: State, container: Container) -> Stack:
    """Stack a container's layers as its records chain them; say where it breaks."""
    if not container.layer_id or container.layer_id not in state.layers:
        return Stack((), (f"its layer {container.layer_id!r} has no record",))
    ids = [container.layer_id, *parents(state, container.layer_id)]
    layers, breaks = [], []
    for position, layer_id in enumerate(ids):
        folder = os.path.join(state.overlay_dir, layer_id)
        layer_dir = state.dirs.get(layer_id)
        present = layer_dir is not None and layer_dir.has_diff
        layers.append(StackLayer(
            position=position, key=layer_id, id=layer_id,
            kind="active" if position == 0 else "committed",
            short=layer_dir.link if layer_dir else None, directory=folder,
            contents=os.path.join(folder, "diff"), present=present))
        if not present:
            breaks.append(f"layer {layer_id} has no diff folder")
    last = state.layers.get(ids[-1])
    if last is not None and last.parent:
        breaks.append(f"layer {ids[-1]} names parent {last.parent}, which has no "
                      "record")
    return Stack(tuple(layers), tuple(breaks))


def select(state: State, *, pod: str | None, namespace: str | None,
           container: str | None) -> list[Container]:
    """Return the pods' containers (not sandboxes) the user asked for."""
    chosen = []
    for candidate in state.containers.values():
        if candidate.pod is None or candidate.is_sandbox:
            continue
        if pod and candidate.pod != pod:
            continue
        if pod and namespace and candidate.pod_namespace != namespace:
            continue
        if container and candidate.name != container:
            continue
        chosen.append(candidate)
    return sorted(chosen, key=lambda c: (c.pod_namespace or "", c.pod or "",
                                         c.name or ""))

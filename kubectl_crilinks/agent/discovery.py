"""Find the container runtimes on the node, and where each keeps its storage.

containerd is looked for in this order, first match per root wins:

1. a running ``containerd`` process: its ``--config``, ``--root``, ``--state`` and
   ``--address`` flags, then the config file they name;
2. the config files of the distributions that move containerd (k3s, RKE2,
   microk8s) and the stock ``/etc/containerd/config.toml``;
3. the default folders.

A config's ``imports`` are merged in order, later files winning, as containerd does.
Every path here is a path on the node and is read through :class:`HostView`.
Storage the agent finds but does not read is returned too (:func:`find_unread`), so
the report can say it was not inspected instead of staying silent; CRI-O's
containers/storage is found by :mod:`.cstorage`.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import logging
import os
import tomllib
from typing import Any, Final

from .containerd import META_DB
from . import proctable
from .hostview import HostView, ScopeError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG: Final = "/etc/containerd/config.toml"
DEFAULT_ROOT: Final = "/var/lib/containerd"
DEFAULT_STATE: Final = "/run/containerd"

DISTRIBUTIONS: Final = (
    # (name, config file, root, state, socket)
    ("k3s", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
     "/var/lib/rancher/k3s/agent/containerd", "/run/k3s/containerd",
     "/run/k3s/containerd/containerd.sock"),
    ("rke2", "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
     "/var/lib/rancher/rke2/agent/containerd", "/run/k3s/containerd",
     "/run/k3s/containerd/containerd.sock"),
    ("microk8s", "/var/snap/microk8s/current/args/containerd.toml",
     "/var/snap/microk8s/common/var/lib/containerd",
     "/var/snap/microk8s/common/run/containerd",
     "/var/snap/microk8s/common/run/containerd.sock"),
    ("containerd", DEFAULT_CONFIG, DEFAULT_ROOT, DEFAULT_STATE,
     "/run/containerd/containerd.sock"),
)

OVERLAY_PLUGIN: Final = "io.containerd.snapshotter.v1.overlayfs"


@dataclasses.dataclass(frozen=True)
class Containerd:
    """One containerd installation: node paths, and how they were found."""

    root: str
    state: str
    address: str
    config: str | None
    source: str
    snapshotter_roots: dict[str, str]
    pid: int | None = None


@dataclasses.dataclass(frozen=True)
class Unread:
    """Storage that was found but is not read by this agent, and why."""

    runtime: str
    path: str
    reason: str


# -- processes ------------------------------------------------------------------------


def parse_flags(argv: list[str]) -> dict[str, str]:
    """Pick containerd's storage flags out of its command line."""
    names = {"-c": "config", "--config": "config", "--root": "root",
             "--state": "state", "-a": "address", "--address": "address"}
    flags: dict[str, str] = {}
    args = iter(argv[1:])
    for arg in args:
        flag, _, value = arg.partition("=")
        if flag in names:
            flags[names[flag]] = value if value else next(args, "")
    return flags


# -- config files -----------------------------------------------------------------------


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config(host: HostView, path: str,
                _seen: frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """Read a containerd config.toml on the node, with its ``imports`` merged in.

    Like containerd, a file already loaded is not loaded again (a config may import
    itself through a glob). Values of the wrong type are ignored with a warning.
    """
    try:
        config = tomllib.loads(host.read_bytes(path).decode("utf-8"))
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            logger.warning("containerd config %r cannot be read (%s); using defaults",
                           path, exc)
        return None
    except ValueError as exc:
        logger.warning("containerd config %r is not valid TOML (%s); using defaults",
                       path, exc)
        return None
    seen = _seen | {path}
    for imported in _imports(host, path, config.get("imports")):
        if imported not in seen:
            config = _merge(config, read_config(host, imported, seen) or {})
            seen = seen | {imported}
    return config


def _imports(host: HostView, path: str, patterns: Any) -> list[str]:
    """Expand a config's ``imports`` (a list of paths or globs) to node paths."""
    if patterns is None:
        return []
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        logger.warning("containerd config %r: imports is not a list of paths; ignored",
                       path)
        return []
    found = []
    for pattern in patterns:
        pattern = os.path.join(os.path.dirname(path), pattern)
        try:
            found += [host.display(p) for p in sorted(glob.glob(host.resolve(pattern)))]
        except OSError as exc:
            logger.warning("containerd config %r: import %r not read (%s)",
                           path, pattern, exc)
    return found


def _text(config: dict[str, Any], *keys: str) -> str | None:
    """Return a nested string setting, or None (with a warning) when it is not one."""
    value: Any = config
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    if value is None or isinstance(value, str):
        return value or None
    logger.warning("containerd config: %s is %r, not a path; ignored",
                   ".".join(keys), value)
    return None


def _snapshotter_roots(config: dict[str, Any]) -> dict[str, str]:
    root_path = _text(config, "plugins", OVERLAY_PLUGIN, "root_path")
    return {"overlayfs": root_path} if root_path else {}


def _install(*, config_path: str | None, config: dict[str, Any] | None,
             flags: dict[str, str], defaults: tuple[str, str, str],
             source: str, pid: int | None) -> Containerd:
    """Combine defaults, the config file and command-line flags (flags win)."""
    config = config or {}
    root = flags.get("root") or _text(config, "root") or defaults[0]
    state = flags.get("state") or _text(config, "state") or defaults[1]
    address = flags.get("address") or _text(config, "grpc", "address") or defaults[2]
    return Containerd(root=root, state=state, address=address, config=config_path,
                      source=source, snapshotter_roots=_snapshotter_roots(config), pid=pid)


# -- discovery ----------------------------------------------------------------------------


def find_containerd(host: HostView, proc_root: str | None) -> list[Containerd]:
    """Return every containerd installation with a meta.db, running ones first."""
    found: list[Containerd] = []

    # 1. Running daemons say where they keep their state.
    for pid, argv in proctable.processes(proc_root, "containerd") if proc_root else ():
        flags = parse_flags(argv)
        config_path = flags.get("config", DEFAULT_CONFIG)
        found.append(_install(config_path=config_path, config=read_config(host, config_path),
                              flags=flags, defaults=(DEFAULT_ROOT, DEFAULT_STATE,
                                                     "/run/containerd/containerd.sock"),
                              source=f"running process {pid}", pid=pid))

    # 2. The distributions' config files and folders, then the stock defaults.
    for name, config_path, root, state, socket in DISTRIBUTIONS:
        config = read_config(host, config_path)
        if config is None and not host.exists(root):
            continue
        source = f"{name} config {config_path}" if config else f"{name} default folder"
        found.append(_install(config_path=config_path if config else None, config=config,
                              flags={}, defaults=(root, state, socket),
                              source=source, pid=None))
    return _unique_with_metadata(host, found)


def _unique_with_metadata(host: HostView, found: list[Containerd]) -> list[Containerd]:
    """Keep the first installation per real root, and only roots with a meta.db."""
    unique: list[Containerd] = []
    roots: set[str] = set()
    for install in found:
        try:
            real = host.resolve(install.root)
        except ScopeError:
            continue
        if real in roots:
            continue
        roots.add(real)
        if host.exists(os.path.join(install.root, META_DB)):
            unique.append(install)
        else:
            logger.debug("containerd root %s (%s) has no meta.db", install.root, install.source)
    return unique


def find_unread(host: HostView) -> list[Unread]:
    """Return runtime storage present on the node that this agent does not read.

    None today: CRI-O's containers/storage is found and read by :mod:`.cstorage`.
    """
    return []

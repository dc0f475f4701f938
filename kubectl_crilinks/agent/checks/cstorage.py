"""Layer links of containers/storage: short links, link and lower files, records.

Every layer record is checked against its folder (``diff``, ``link``, ``lower``), its
short link in ``overlay/l/``, its parent record and the short links its ``lower`` file
names, each entry resolved hop by hop; images and containers against the layers they
name; folders against the records; running containers' overlay mounts against their
chains; and the store itself (a graphroot reached through a symlink, a separate mount
on ``overlay/``, which c/storage unmounts when it shuts down).

One broken thing is reported once, by the object that owns it: a missing short link by
the layer whose ``link`` file names it, not by every ``lower`` file that uses it. Each
finding lists what it breaks (layers above, images, containers, pods) and a hint: the
exact command that recreates what is lost where that is safe (also in
``details.command``), otherwise the runtime's own commands and what they delete.

The runtime may be mid-operation while we read: a problem is reported only when a
second read shows it too, and an incomplete layer is left alone while a writer holds
the layer store's lock.
"""

from __future__ import annotations

import shlex
import dataclasses
import os
import secrets
from typing import Any, Callable, Iterator

from .. import cstorage, mounts, sizes
from ..cstorage import Container, Layer, State, Store
from ..records import Finding
from .context import NodeScope

STORE_CHECKS = ("cstorage.root-symlink", "cstorage.overlay-separate-mount",
                "cstorage.records-unreadable")
"""Checks about the whole store: they concern every pod on it."""

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def judge(scope: NodeScope) -> Iterator[Finding]:
    """Yield the findings of every containers/storage store on the node."""
    for store in cstorage.find_stores(scope.host, scope.proc_root):
        if scope.expired():
            scope.not_read.append(
                f"containers/storage at {store.graphroot} (time budget spent)")
            return
        if store.driver == "overlay":
            yield from _judge_store(scope, store)


# -- a finding before it is confirmed --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Breaks:
    """What a broken object takes down with it."""

    layers: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    containers: tuple[Container, ...] = ()

    def pods(self) -> list[str]:
        return sorted({f"{c.pod_namespace}/{c.pod}" for c in self.containers if c.pod})

    def as_dict(self) -> dict[str, list[str]]:
        return {"layers": list(self.layers), "images": list(self.images),
                "containers": [c.id for c in self.containers], "pods": self.pods()}

    def words(self) -> str:
        parts = [f"{len(self.layers)} layer(s) above", f"{len(self.images)} image(s)",
                 f"{len(self.containers)} container(s)"]
        if self.pods():
            parts.append("pod(s) " + ", ".join(self.pods()))
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A finding before confirmation: ``identity`` must show again in a second read."""

    check: str
    identity: str
    message: str
    hint: str
    layer: str | None = None
    container: Container | None = None
    target: str | None = None
    breaks: Breaks = Breaks()
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Audit:
    state: State | None
    problems: list[Problem]


def _judge_store(scope: NodeScope, store: Store) -> Iterator[Finding]:
    """Audit one store twice; report what both reads show, narrowed to the pod."""
    first = _audit(scope, store)
    if first.problems:
        again = {p.identity for p in _audit(scope, store).problems}
        first = _Audit(first.state, [p for p in first.problems if p.identity in again])
    for problem in _narrowed(scope, first):
        yield _finding(scope, first.state, _sized(problem, first.state, scope.expired))


def _audit(scope: NodeScope, store: Store) -> _Audit:
    try:
        state = cstorage.read_state(scope.host, store)
    except cstorage.StoreError as exc:
        return _Audit(None, [_unreadable(store, exc)])
    table = mounts.read(scope.proc_root, store.pid)
    return _Audit(state, list(_Auditor(scope, state, table).problems()))


def _unreadable(store: Store, exc: Exception) -> Problem:
    reset = "crio wipe" if store.crio else "podman system reset"
    return Problem(
        check="cstorage.records-unreadable", identity=f"unreadable:{store.graphroot}",
        message=f"the records of containers/storage at {store.graphroot} cannot be "
                f"read: {exc}",
        details={"graphroot": store.graphroot, "error": str(exc)},
        hint=(f"Nothing in this store can be used until its records parse. Restore "
              f"the file from a backup if there is one; otherwise `{reset}` starts "
              f"over and deletes every image and container of the store."))


# -- the audit -------------------------------------------------------------------------


class _Auditor:
    """One read of one store, with the indexes every check needs."""

    def __init__(self, scope: NodeScope, state: State, table: list | None) -> None:
        self.scope, self.state, self.table = scope, state, table
        self.children: dict[str, list[str]] = {}
        self.claims: dict[str, list[str]] = {}   # short name -> layers' link files
        self.users: dict[str, list[str]] = {}    # short name -> layers' lower files
        self.aliases: dict[str, list[str]] = {}  # layer -> short links pointing at it
        for layer in state.layers.values():
            if layer.parent:
                self.children.setdefault(layer.parent, []).append(layer.id)
        for folder in state.dirs.values():
            if folder.link:
                self.claims.setdefault(folder.link, []).append(folder.id)
            for entry in folder.lower or ():
                self.users.setdefault(entry[2:], []).append(folder.id)
        for name, text in sorted(state.links.items()):
            if target := cstorage.target_layer(text):
                self.aliases.setdefault(target, []).append(name)
        self.known = set(state.layers) | state.foreign_layers
        self.lost_parents = {layer.parent for layer in state.layers.values()
                             if layer.parent and layer.parent not in self.known}
        self._deduced: dict[str, str] | None = None
        self.tools = Tools(state.store.crio or any(
            c.metadata.get("pod-id") for c in state.containers.values()))

    def problems(self) -> Iterator[Problem]:
        yield from _store_level(self)
        for layer in self.state.layers.values():
            yield from _layer_problems(self, layer)
        yield from _unclaimed_links(self)
        yield from _image_problems(self)
        for container in self.state.containers.values():
            yield from _container_problems(self, container)
        yield from _orphans(self)
        yield from _mount_problems(self)

    # -- who depends on what -----------------------------------------------------------

    def above(self, layer_id: str) -> list[str]:
        """Return every layer built on ``layer_id``, by parent or by ``lower`` file."""
        found: set[str] = set()
        pending = [layer_id]
        while pending:
            folder = self.state.dirs.get(current := pending.pop())
            users = self.users.get(folder.link, []) if folder and folder.link else []
            for child in self.children.get(current, []) + users:
                if child not in found and child != layer_id:
                    found.add(child)
                    pending.append(child)
        return sorted(found)

    def breaks(self, layer_id: str, *, own_container: bool = True) -> Breaks:
        """Say what is lost with a layer: the layers above, images, containers."""
        above = self.above(layer_id)
        hit = {layer_id, *above}
        images = sorted(image.name for image in self.state.images.values()
                        if image.top_layer in hit)
        containers = [c for c in self.state.containers.values() if c.layer_id in hit
                      and (own_container or c.layer_id != layer_id)]
        containers.sort(key=lambda c: (c.is_sandbox, c.pod_namespace or "", c.pod or "",
                                       c.name or "", c.id))
        return Breaks(tuple(above), tuple(images), tuple(containers))

    def deduced_name(self, layer_id: str) -> str | None:
        """Find a layer's short name from the ``lower`` files of the layers above it."""
        names = set()
        for above in self.above(layer_id):
            chain = cstorage.parents(self.state, above)
            folder = self.state.dirs.get(above)
            if layer_id in chain and folder and folder.lower:
                index = chain.index(layer_id)
                if index < len(folder.lower):
                    names.add(folder.lower[index][2:])
        return names.pop() if len(names) == 1 else None

    def owner(self, name: str) -> str | None:
        """Return the layer a short name belongs to: by link file, else by deduction."""
        claimed = self.claims.get(name, [])
        if len(claimed) == 1:
            return claimed[0]
        if self._deduced is None:
            self._deduced = {}
            for folder in self.state.dirs.values():
                if folder.link is None and (found := self.deduced_name(folder.id)):
                    self._deduced[found] = folder.id
        return self._deduced.get(name)


@dataclasses.dataclass(frozen=True)
class Tools:
    """The runtime's own commands, for hints that cannot recreate what was lost."""

    crio: bool

    @property
    def cli(self) -> str:
        return "crictl" if self.crio else "podman"

    def rebuild(self, what: str, breaks: Breaks) -> str:
        """Say how to get rid of a loss that cannot be undone, and what goes with it."""
        steps = []
        for pod in breaks.pods():
            namespace, name = pod.split("/", 1)
            steps.append(f"`kubectl delete pod -n {namespace} {name}`")
        for image in breaks.images:
            steps.append(f"`{self.cli} rmi {image}` then `{self.cli} pull {image}`")
        repair = "crio check --repair" if self.crio else "podman system check --repair"
        return (f"{what} cannot be recreated from what is left. Remove what uses it "
                f"and pull again: {'; '.join(steps) or 'nothing uses it'}. Or let the "
                f"runtime do it: `{repair}` deletes the damaged layer and everything "
                f"built on it ({breaks.words()}).")


# -- the store itself ------------------------------------------------------------------


def _store_level(audit: _Auditor) -> Iterator[Problem]:
    state, host = audit.state, audit.scope.host
    graphroot = state.store.graphroot
    plain = os.path.normpath(os.path.join(host.root, graphroot.lstrip("/")))
    real = host.resolve(graphroot)
    if plain != real:
        shown = host.display(real)
        yield Problem(
            check="cstorage.root-symlink", identity=f"root-symlink:{shown}",
            message=f"graphroot {graphroot} is reached through a symlink and is really "
                    f"{shown}",
            details={"graphroot": graphroot, "real_path": shown},
            hint=(f"Current c/storage follows it, but runc rejected container roots "
                  f"below a symlink in older releases (containers/storage#165) and "
                  f"tools that compare paths disagree. Prefer a bind mount: with CRI-O "
                  f"and the kubelet stopped, `rm {shlex.quote(graphroot)} && mkdir "
                  f"{shlex.quote(graphroot)} && mount --bind {shlex.quote(shown)} "
                  f"{shlex.quote(graphroot)}` and an /etc/fstab line, or "
                  f"set the graphroot to {shown} in storage.conf and CRI-O's `root`."))
    yield from _separate_mount(audit)


def _separate_mount(audit: _Auditor) -> Iterator[Problem]:
    """Tell a mount of its own on ``overlay/`` from c/storage's private self-bind."""
    state, host = audit.state, audit.scope.host
    home_dir = state.overlay_dir
    found = [(m, _real(host, m.mount_point)) for m in audit.table or ()]
    on_home = [m for m, real in found if real == home_dir]
    below = [(m, real) for m, real in found if real and real != home_dir
             and (home_dir + "/").startswith(real.rstrip("/") + "/")]
    if not on_home or not below:
        return

    # c/storage binds overlay/ onto itself: same filesystem, same place within it.
    home = on_home[-1]
    parent, parent_real = max(below, key=lambda pair: len(pair[1]))
    inside = os.path.join(parent.root, os.path.relpath(home_dir, parent_real))
    if (home.source, home.fs_type) == (parent.source, parent.fs_type) and \
            os.path.normpath(home.root) == os.path.normpath(inside):
        return
    overlay = state.store.overlay
    yield Problem(
        check="cstorage.overlay-separate-mount", identity=f"separate:{overlay}",
        message=f"{overlay} is a mount of its own ({home.fs_type} "
                f"{home.source}:{home.root}); c/storage unmounts it when the driver "
                f"shuts down (containers/podman#27012) and every layer folder vanishes "
                f"with it",
        details={"mount_point": overlay, "fs_type": home.fs_type,
                 "source": home.source, "root": home.root},
        hint=(f"Mount that filesystem on the graphroot {state.store.graphroot} (or a "
              f"parent) instead of on its overlay/ folder, then restart CRI-O."))


def _real(host: Any, node_path: str) -> str | None:
    try:
        return host.resolve(node_path)
    except OSError:
        return None


# -- one layer's record and folder -----------------------------------------------------


def _layer_problems(audit: _Auditor, layer: Layer) -> Iterator[Problem]:
    if layer.incomplete:
        yield from _incomplete(audit, layer)
    if layer.parent and layer.parent not in audit.known:
        yield _parent_missing(audit, layer)
    folder = audit.state.dirs.get(layer.id)
    if folder is None or not folder.has_diff:
        yield _dir_missing(audit, layer)
        return
    yield from _link_problems(audit, layer)
    yield from _lower_problems(audit, layer)


def _incomplete(audit: _Auditor, layer: Layer) -> Iterator[Problem]:
    lock = os.path.join(audit.state.store.records("layers"), "layers.lock")
    if cstorage.writer_pid(audit.scope.host, lock) is not None:
        return  # being written right now: incomplete is what it should be
    breaks = audit.breaks(layer.id)
    if breaks.layers or breaks.containers or breaks.images:
        fix = audit.tools.rebuild(f"Layer {layer.id}", breaks)
    else:
        fix = "Nothing depends on it: the next podman or crio start removes it."
    yield Problem(
        check="cstorage.layer-incomplete", identity=f"incomplete:{layer.id}",
        layer=layer.id, breaks=breaks,
        message=f"layer {layer.id} is flagged incomplete (an interrupted pull or "
                f"delete); c/storage deletes it the next time a writer opens the "
                f"store, which breaks {breaks.words()}",
        details={"parent": layer.parent, "breaks": breaks.as_dict()}, hint=fix)


def _parent_missing(audit: _Auditor, layer: Layer) -> Problem:
    breaks = audit.breaks(layer.id)
    return Problem(
        check="cstorage.parent-missing", identity=f"parent:{layer.id}:{layer.parent}",
        layer=layer.id, breaks=breaks,
        message=f"layer {layer.id} names parent {layer.parent}, which has no record in "
                f"layers.json: the chain is cut ({breaks.words()} depend on it)",
        details={"parent": layer.parent, "breaks": breaks.as_dict(),
                 "parent_dir_present": layer.parent in audit.state.dirs},
        hint=audit.tools.rebuild(f"The record of layer {layer.parent}", breaks))


def _dir_missing(audit: _Auditor, layer: Layer) -> Problem:
    state = audit.state
    breaks = audit.breaks(layer.id)
    folder = state.node_path(layer.id) + ("/diff" if layer.id in state.dirs else "")
    hint = audit.tools.rebuild(f"The files of layer {layer.id}", breaks)
    if not any(layer_id in state.dirs for layer_id in state.layers):
        hint = (f"No layer has a folder under {state.store.overlay} although "
                f"layers.json lists {len(state.layers)}: was a filesystem mounted "
                f"there? c/storage unmounts a separate mount on overlay/ "
                f"(containers/podman#27012); mount it again (for example "
                f"`mount {state.store.overlay}` when /etc/fstab names it) before "
                f"anything else. Otherwise: {hint}")
    return Problem(
        check="cstorage.layer-dir-missing", identity=f"dir:{layer.id}", layer=layer.id,
        breaks=breaks, message=f"layer {layer.id} has a record but {folder} is gone",
        details={"directory": folder, "breaks": breaks.as_dict()}, hint=hint)


# -- short links and link files --------------------------------------------------------


def _link_problems(audit: _Auditor, layer: Layer) -> Iterator[Problem]:
    state = audit.state
    link = state.dirs[layer.id].link
    aliases = audit.aliases.get(layer.id, [])
    if link is None:
        yield _link_file_missing(audit, layer, aliases)
    elif link not in state.links:
        others = [name for name in aliases if name != link]
        if others:
            yield _link_file_mismatch(audit, layer, others)
        else:
            yield _short_missing(audit, layer)
    elif cstorage.target_layer(state.links[link]) != layer.id:
        yield _short_wrong(audit, layer)


def _short_missing(audit: _Auditor, layer: Layer) -> Problem:
    state = audit.state
    name = state.dirs[layer.id].link
    path = state.node_path("l", name)
    command = f"ln -s {cstorage.link_target(layer.id)} {path}"
    breaks = audit.breaks(layer.id, own_container=False)
    return Problem(
        check="cstorage.link-missing", identity=f"short-missing:{name}", layer=layer.id,
        breaks=breaks, target=cstorage.link_target(layer.id),
        message=f"short link {path} of layer {layer.id} is missing: mounts of "
                f"{breaks.words()} fail with 'no such file or directory'",
        details={"short": name, "link_path": path, "command": command,
                 "breaks": breaks.as_dict()},
        hint=f"Recreate it from the layer's link file: `{command}`.")


def _short_wrong(audit: _Auditor, layer: Layer) -> Problem:
    state = audit.state
    name = state.dirs[layer.id].link
    path, text = state.node_path("l", name), state.links[name]
    other = cstorage.target_layer(text)
    breaks = audit.breaks(layer.id, own_container=False)
    target = cstorage.link_target(layer.id)
    if other and other in state.dirs and state.dirs[other].link == name:
        command = None
        hint = (f"Layers {layer.id} and {other} both claim the short name {name}; "
                f"which one the lower files mean cannot be told. "
                + audit.tools.rebuild(f"Layer {layer.id}'s short link", breaks))
    else:
        command = (f"ln -sfn {target} {path}" if text is not None
                   else f"mv {path} {path}.broken && ln -s {target} {path}")
        hint = f"Point it back at the layer its link file names: `{command}`."
    shown = "not a symlink" if text is None else f"points to {text}"
    return Problem(
        check="cstorage.link-wrong-target", identity=f"short-wrong:{name}:{text}",
        layer=layer.id, breaks=breaks, target=text,
        message=f"short link {path} of layer {layer.id} is {shown}, not {target}: "
                f"{breaks.words()} are mounted on the wrong files or fail",
        details={"short": name, "link_path": path, "found": text, "expected": target,
                 "command": command, "breaks": breaks.as_dict()},
        hint=hint)


def _link_file_missing(audit: _Auditor, layer: Layer, aliases: list[str]) -> Problem:
    """A layer without a usable ``link`` file: say how its name can be recovered."""
    state = audit.state
    problem = state.dirs[layer.id].link_problem
    path = state.node_path(layer.id, "link")
    breaks = audit.breaks(layer.id, own_container=False)
    command, how = _link_file_command(audit, layer, aliases)
    if command:
        hint = f"{how}: `{command}`."
    else:
        hint = ("Its short name cannot be recovered. "
                + audit.tools.rebuild(f"Layer {layer.id}'s short name", breaks))
    return Problem(
        check="cstorage.link-file-missing", identity=f"link-file:{layer.id}",
        layer=layer.id, breaks=breaks,
        message=f"layer {layer.id} has no usable link file ({path}: {problem}): "
                f"c/storage cannot rebuild short links ('reading name of symlink'), "
                f"and {breaks.words()} depend on its short link",
        details={"link_file": path, "problem": problem, "aliases": aliases,
                 "command": command, "breaks": breaks.as_dict()},
        hint=hint)


def _link_file_command(audit: _Auditor, layer: Layer,
                       aliases: list[str]) -> tuple[str | None, str]:
    """Return the command that restores a link file, and how its name was found."""
    state = audit.state
    path = state.node_path(layer.id, "link")

    # A short link still pointing at the layer names it.
    if len(aliases) == 1:
        return (f"printf '%s' {aliases[0]} > {path}",
                f"l/{aliases[0]} still points at this layer; write its name back")

    # Else the lower files above it do; a layer nothing stacks on may take a new one.
    name = audit.deduced_name(layer.id)
    how = "The lower files of the layers above name it; write it back"
    if name is None and not audit.above(layer.id):
        name = _fresh_name(state)
        how = "Nothing refers to its short name; give it a new one"
    if name is None:
        return None, ""
    command = f"printf '%s' {name} > {path}"
    if name not in state.links:
        link = state.node_path("l", name)
        command += f" && ln -s {cstorage.link_target(layer.id)} {link}"
    return command, how


def _fresh_name(state: State) -> str:
    while True:
        name = "".join(secrets.choice(_BASE32) for _ in range(26))
        if name not in state.links:
            return name


def _link_file_mismatch(audit: _Auditor, layer: Layer, others: list[str]) -> Problem:
    state = audit.state
    link = state.dirs[layer.id].link
    path = state.node_path("l", link)
    command = f"ln -s {cstorage.link_target(layer.id)} {path}"
    breaks = audit.breaks(layer.id, own_container=False)
    users = {u for name in [link, *others] for u in audit.users.get(name, [])}
    return Problem(
        check="cstorage.link-file-mismatch", identity=f"mismatch:{layer.id}:{link}",
        layer=layer.id, breaks=breaks,
        message=f"layer {layer.id}'s link file names {link}, but l/{link} is missing "
                f"while {', '.join('l/' + o for o in others)} point(s) at the layer",
        details={"link_file": link, "short_links": others, "command": command,
                 "lower_users": sorted(users), "breaks": breaks.as_dict()},
        hint=(f"Add the name the link file gives, keeping the other for the lower "
              f"files that use it: `{command}`."))


def _unclaimed_links(audit: _Auditor) -> Iterator[Problem]:
    """Short links that no layer claims or lower file uses, whose target is gone."""
    state = audit.state
    for name, text in sorted(state.links.items()):
        target = cstorage.target_layer(text)
        folder = state.dirs.get(target or "")
        if name in audit.claims or name in audit.users or (folder and folder.has_diff):
            continue
        path = state.node_path("l", name)
        command = f"rm -- {shlex.quote(path)}"
        yield Problem(
            check="cstorage.link-dangling", identity=f"dangling:{name}:{text}",
            target=text, layer=target,
            message=f"short link {path} points to {text}, which does not exist, and "
                    f"no layer's link file names it",
            details={"short": name, "link_path": path, "found": text,
                     "command": command},
            hint=f"No lower file uses it, so it is safe to remove: `{command}`.")


# -- lower files -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resolution:
    """How one ``lower`` entry resolves: ``failure`` is None if it reaches its layer."""

    entry: str
    hops: tuple[dict[str, str], ...]
    layer: str | None
    failure: str | None = None
    why: str = ""


def resolve_entry(state: State, entry: str, expected: str | None) -> Resolution:
    """Follow ``l/<short>`` to a layer hop by hop, stopping at the first failure."""
    name = entry[2:]
    if name not in state.links:
        if name in state.foreign_links:
            return Resolution(entry, ({"link": entry, "found": "additional store"},),
                              None)
        return Resolution(entry, (), None, "link-missing", f"{entry} does not exist")

    # The link's text must be ../<layer>/diff.
    text = state.links[name]
    hops = [{"link": entry, "target": str(text)}]
    layer = cstorage.target_layer(text)
    if text is None or layer is None:
        shown = "not a symlink" if text is None else repr(text)
        return Resolution(entry, tuple(hops), None, "bad-target",
                          f"{entry} is {shown}, not ../<layer>/diff")

    # That layer's folder, its record, and its place in the chain.
    folder = state.dirs.get(layer)
    if folder is None or not folder.has_diff:
        return Resolution(entry, tuple(hops), layer, "dir-missing",
                          f"{entry} -> {text}, which does not exist")
    hops.append({"layer": layer, "dir": state.node_path(layer, "diff")})
    if layer not in state.layers and layer not in state.foreign_layers:
        return Resolution(entry, tuple(hops), layer, "no-record",
                          f"{entry} reaches layer {layer}, which has no record")
    if expected and layer != expected:
        return Resolution(entry, tuple(hops), layer, "wrong-layer",
                          f"{entry} reaches layer {layer}, but layers.json puts "
                          f"{expected} at this position")
    return Resolution(entry, tuple(hops), layer)


def _lower_problems(audit: _Auditor, layer: Layer) -> Iterator[Problem]:
    folder = audit.state.dirs[layer.id]
    chain = cstorage.parents(audit.state, layer.id)
    count = len(folder.lower or ())
    if folder.lower_problem:
        yield _lower_invalid(audit, layer, folder.lower_problem)
    elif folder.lower is None and layer.parent:
        yield _lower_invalid(audit, layer, f"missing, while layers.json names parent "
                                           f"{layer.parent}")
    elif count and not layer.parent:
        yield _lower_invalid(audit, layer, f"naming {count} lower layer(s) while "
                                           f"layers.json records no parent")
    elif count != len(chain) and all(p in audit.state.layers for p in chain):
        yield _lower_invalid(audit, layer, f"naming {count} lower layer(s) while "
                                           f"layers.json chains {len(chain)}")
    else:
        for index, entry in enumerate(folder.lower or ()):
            expected = chain[index] if index < len(chain) else None
            resolution = resolve_entry(audit.state, entry, expected)
            if resolution.failure and not _covered(audit, resolution, expected):
                yield _entry_broken(audit, layer, index, resolution)


def _covered(audit: _Auditor, resolution: Resolution, expected: str | None) -> bool:
    """Tell whether another finding already owns an entry's failure."""
    state, failure = audit.state, resolution.failure
    owners = audit.claims.get(resolution.entry[2:], [])
    if failure in ("link-missing", "bad-target") and owners:
        return True  # the owner's link-missing or link-wrong-target
    if failure == "wrong-layer" and owners and resolution.layer not in owners:
        return True  # the link points away from its owner: link-wrong-target
    if failure == "link-missing" and expected in state.dirs and \
            state.dirs[expected].link is None:
        return True  # the expected layer's link-file-missing
    if failure == "dir-missing" and resolution.layer in state.layers:
        return True  # that layer's layer-dir-missing
    return failure == "no-record" and resolution.layer in audit.lost_parents


def _lower_hint(audit: _Auditor, layer: Layer,
                breaks: Breaks) -> tuple[str, str | None]:
    """Spell the ``lower`` file the records call for, when every name is known."""
    names = []
    for parent in cstorage.parents(audit.state, layer.id):
        folder = audit.state.dirs.get(parent)
        if folder is None or folder.link is None:
            names = []
            break
        names.append(f"l/{folder.link}")
    if not names:
        return audit.tools.rebuild(f"The lower file of layer {layer.id}", breaks), None
    path = audit.state.node_path(layer.id, "lower")
    command = f"printf '%s' {':'.join(names)} > {path}"
    return (f"Write it from layers.json's chain and the parents' link files (what "
            f"c/storage wrote when it made the layer): `{command}`.", command)


def _lower_invalid(audit: _Auditor, layer: Layer, why: str) -> Problem:
    path = audit.state.node_path(layer.id, "lower")
    breaks = audit.breaks(layer.id)
    hint, command = _lower_hint(audit, layer, breaks)
    return Problem(
        check="cstorage.lower-invalid", identity=f"lower:{layer.id}:{why}",
        layer=layer.id, breaks=breaks,
        message=f"lower file {path} of layer {layer.id} is {why}: the layer and "
                f"{breaks.words()} cannot be mounted as recorded",
        details={"lower_file": path, "problem": why, "command": command,
                 "breaks": breaks.as_dict()},
        hint=hint)


def _entry_broken(audit: _Auditor, layer: Layer, index: int,
                  resolution: Resolution) -> Problem:
    path = audit.state.node_path(layer.id, "lower")
    breaks = audit.breaks(layer.id)
    hint, command = _lower_hint(audit, layer, breaks)
    return Problem(
        check="cstorage.lower-entry-broken",
        identity=f"entry:{layer.id}:{index}:{resolution.failure}", layer=layer.id,
        breaks=breaks, target=resolution.entry,
        message=f"entry {index} of {path} fails: {resolution.why}; layer {layer.id} "
                f"and {breaks.words()} cannot be mounted",
        details={"lower_file": path, "entry": resolution.entry, "position": index,
                 "reason": resolution.failure, "hops": list(resolution.hops),
                 "command": command, "breaks": breaks.as_dict()},
        hint=hint)


# -- images and containers -------------------------------------------------------------


def _image_problems(audit: _Auditor) -> Iterator[Problem]:
    state, cli = audit.state, audit.tools.cli
    for image in state.images.values():
        if not image.top_layer or image.top_layer in audit.known:
            continue
        users = tuple(c for c in state.containers.values() if c.image_id == image.id)
        breaks = Breaks(images=(image.name,), containers=users)
        yield Problem(
            check="cstorage.image-layer-missing", identity=f"image:{image.id}",
            layer=image.top_layer, breaks=breaks,
            message=f"image {image.name} names top layer {image.top_layer}, which has "
                    f"no record: no new container can be made from it",
            details={"image_id": image.id, "top_layer": image.top_layer,
                     "breaks": breaks.as_dict()},
            hint=(f"Remove the image record and pull it again: "
                  f"`{cli} rmi {image.name}` then `{cli} pull {image.name}` (the pull "
                  f"brings the layers back)."))


def _container_problems(audit: _Auditor, container: Container) -> Iterator[Problem]:
    state, cli = audit.state, audit.tools.cli
    who = _who(container)
    if container.layer_id and container.layer_id not in audit.known:
        fix = (f"`kubectl delete pod -n {container.pod_namespace} {container.pod}` "
               f"(the kubelet makes new containers)" if container.pod
               else f"`{cli} rm {container.id}`")
        yield Problem(
            check="cstorage.container-layer-missing",
            identity=f"ctr-layer:{container.id}", container=container,
            layer=container.layer_id, breaks=Breaks(containers=(container,)),
            message=f"{who} names layer {container.layer_id}, which has no record: it "
                    f"cannot be mounted or started again",
            details={"container_id": container.id, "layer_id": container.layer_id,
                     "layer_dir_present": container.layer_id in state.dirs},
            hint=f"Its writable layer is lost to c/storage; remove the container: "
                 f"{fix}.")
    if container.image_id and container.image_id not in state.images:
        image = container.image if container.image != container.image_id else None
        fix = (f"`{cli} pull {image}` brings the record back (same image id)" if image
               else "pull the image it was made from again")
        yield Problem(
            check="cstorage.container-image-missing",
            identity=f"ctr-image:{container.id}", container=container,
            breaks=Breaks(containers=(container,)),
            message=f"{who} was made from image {container.image_id}, which has no "
                    f"record: it runs from its layers, but c/storage's check counts it "
                    f"damaged and `--repair` deletes it",
            details={"container_id": container.id, "image_id": container.image_id,
                     "image": image},
            hint=f"Restore the image record before any repair runs: {fix}.")


def _who(container: Container) -> str:
    if container.pod:
        return (f"container {container.name or container.id} of pod "
                f"{container.pod_namespace}/{container.pod} ({container.id})")
    return f"container {container.id}"


# -- folders no record knows -----------------------------------------------------------


def _orphans(audit: _Auditor) -> Iterator[Problem]:
    state = audit.state
    for layer_id, folder in sorted(state.dirs.items()):
        if layer_id in state.layers:
            continue
        path = state.node_path(layer_id)
        users = sorted({user for name in audit.aliases.get(layer_id, [])
                        for user in audit.users.get(name, [])})
        if users:
            command = None
            hint = (f"Layers {', '.join(users)} still stack on it through their lower "
                    f"files: its record is what is lost, not the folder. Do not remove "
                    f"it. " + audit.tools.rebuild(f"The record of layer {layer_id}",
                                                  Breaks(layers=tuple(users))))
        else:
            command = f"rm -rf -- {shlex.quote(path)}"
            # Its short link goes too, but only when it points at this very folder:
            # a copied folder's link file names the live layer's link.
            if cstorage.target_layer(state.links.get(folder.link) or "") == layer_id:
                command += f" {shlex.quote(state.node_path('l', folder.link))}"
            hint = (f"Nothing uses it. With CRI-O (and podman) stopped, remove it: "
                    f"`{command}`; `crio check --repair` removes unaccounted folders "
                    f"too.")
        yield Problem(
            check="cstorage.orphan-dir", identity=f"orphan:{layer_id}", layer=layer_id,
            message=f"folder {path} belongs to no layer record",
            details={"directory": path, "short": folder.link, "lower_users": users,
                     "command": command},
            hint=hint)


def _sized(problem: Problem, state: State | None,
           expired: Callable[[], bool]) -> Problem:
    """Add allocated bytes and inodes to an orphan folder's finding."""
    if problem.check != "cstorage.orphan-dir" or state is None or expired():
        return problem
    folder = os.path.join(state.overlay_dir, problem.layer or "")
    usage = sizes.usage(_own_trees(folder), should_stop=expired)
    message = f"{problem.message}: {usage.bytes} bytes in {usage.inodes} inodes"
    return dataclasses.replace(problem, message=message,
                               details=problem.details | usage.as_dict())


def _own_trees(folder: str) -> list[str]:
    """Return the folder, or its parts but ``merged/`` while a root is mounted there."""
    merged = os.path.join(folder, "merged")
    try:
        if os.lstat(merged).st_dev != os.lstat(folder).st_dev:
            return [os.path.join(folder, name) for name in os.listdir(folder)
                    if name != "merged"]
    except OSError:
        pass
    return [folder]


# -- running containers' mounts --------------------------------------------------------


def _mount_problems(audit: _Auditor) -> Iterator[Problem]:
    state, host = audit.state, audit.scope.host
    for mount in audit.table or ():
        real = _real(host, mount.mount_point) if mount.fs_type == "overlay" else None
        if not real or os.path.basename(real) != "merged" or \
                os.path.dirname(os.path.dirname(real)) != state.overlay_dir:
            continue
        layer_id = os.path.basename(os.path.dirname(real))
        if layer_id in state.layers:
            yield from _mount_mismatch(audit, mount, layer_id)


def _mount_layers(audit: _Auditor,
                  mount: Any) -> tuple[list[str], list[str], str | None]:
    """Return the layers a mount stacks (lower, nearest first), unresolved, upper."""
    lowers, unresolved = [], []
    for entry in (mount.options.get("lowerdir") or "").split(":"):
        layer = _mount_entry_layer(audit, entry) if entry else ""
        if layer is None:
            unresolved.append(entry)
        elif layer:
            lowers.append(layer)
    upper = mount.options.get("upperdir")
    return lowers, unresolved, _mount_entry_layer(audit, upper) if upper else None


def _mount_entry_layer(audit: _Auditor, entry: str) -> str | None:
    """Map one lowerdir path (absolute, or relative to ``overlay/``) to its layer.

    A short link ``l/NAME`` means the layer that owns NAME (by its link file, or by
    the lower files above it): the link itself may have changed since the mount, and
    its own finding says so. Returns "" for a path that adds no layer (``<id>/empty``,
    ``<id>/diff1``...), None for one that leads nowhere.
    """
    state, host = audit.state, audit.scope.host
    path = entry if entry.startswith("/") else state.node_path(entry)
    folder, name = os.path.split(path)
    in_short_dir = _real(host, folder) == os.path.join(state.overlay_dir, "l")
    if in_short_dir and audit.owner(name):
        return audit.owner(name)
    real = _real(host, path)
    if real is None or not os.path.isdir(real):
        return None
    relative = os.path.relpath(real, state.overlay_dir).split("/")
    if len(relative) != 2 or relative[0] in ("..", "l"):
        return None
    return relative[0] if relative[1] == "diff" else ""


def _mount_mismatch(audit: _Auditor, mount: Any, layer_id: str) -> Iterator[Problem]:
    lowers, unresolved, upper = _mount_layers(audit, mount)
    expected = cstorage.parents(audit.state, layer_id)
    recorded = [p for p in expected if p in audit.state.layers]
    if len(recorded) < len(expected):  # a cut chain is parent-missing's to report
        lowers, expected = lowers[:len(recorded)], recorded
    if lowers == expected and upper == layer_id and not unresolved:
        return
    container = next((c for c in audit.state.containers.values()
                      if c.layer_id == layer_id), None)
    who = _who(container) if container else f"layer {layer_id}"
    restart = (f"`crictl stop {container.id}` (the kubelet starts it again from its "
               f"records)" if container and container.pod else f"restart {who}")
    lost = f"; {len(unresolved)} lowerdir entries lead nowhere" if unresolved else ""
    yield Problem(
        check="cstorage.mount-mismatch",
        identity=f"mount:{layer_id}:{lowers}:{unresolved}", layer=layer_id,
        container=container,
        breaks=Breaks(containers=(container,) if container else ()),
        message=f"running {who} is mounted on lower layers {lowers} but its records "
                f"chain {expected}{lost}",
        details={"mount_point": mount.mount_point, "mounted_lowers": lowers,
                 "recorded_lowers": expected, "unresolved": unresolved, "upper": upper},
        hint=(f"The container sees other files than its records say, and will see the "
              f"recorded ones after a restart; check which is right, then restart it: "
              f"{restart}."))


# -- findings --------------------------------------------------------------------------


def _narrowed(scope: NodeScope, audit: _Audit) -> list[Problem]:
    """Keep what the pod's containers depend on when a pod was asked for."""
    if not scope.pod or audit.state is None:
        return audit.problems
    state = audit.state
    mine = cstorage.select(state, pod=scope.pod, namespace=scope.namespace,
                           container=None)
    relevant: set[str] = set()
    for container in mine:
        if container.layer_id:
            relevant |= {container.layer_id,
                         *cstorage.parents(state, container.layer_id)}
    ids = {c.id for c in mine}
    return [p for p in audit.problems
            if (p.check in STORE_CHECKS and mine) or p.layer in relevant
            or ids & {c.id for c in p.breaks.containers}
            or (p.container is not None and p.container.id in ids)]


def _finding(scope: NodeScope, state: State | None, problem: Problem) -> Finding:
    """Place a problem: on its container, else on the asked pod's first victim."""
    container = problem.container
    if container is None and scope.pod:
        container = next((c for c in problem.breaks.containers if c.pod == scope.pod
                          and (not scope.namespace
                               or c.pod_namespace == scope.namespace)), None)
    details = {"graphroot": state.store.graphroot if state else None,
               "breaks": problem.breaks.as_dict(), **problem.details}
    return scope.finding(
        problem.check, message=problem.message, hint=problem.hint,
        namespace=container.pod_namespace if container else None,
        pod=container.pod if container else None,
        container=(container.name or container.id) if container else None,
        layer=problem.layer, target=problem.target, details=details)

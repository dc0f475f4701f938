"""Symlinks in a container's root, judged as the container resolves them.

Each link is resolved by :class:`~kubectl_crilinks.agent.resolve.Resolver` inside the
stacked layers, and falls into exactly one class, checked in this order:

- broken inside the container (warning): ``symlink.dangling``, ``symlink.loop``,
  ``symlink.too-deep``;
- fine only while the container runs (info): ``symlink.runtime-only``, a target under
  ``/proc``, ``/sys``, ``/dev`` or a mount point of the container's spec;
- fine inside the container, a trap for tools on the node that follow the link from
  the layer directory (info): ``symlink.escapes-root`` (a relative target that climbs
  above the root) and ``symlink.host-divergent`` (an absolute target, which on the
  node starts at the node's own ``/``);
- plain: a relative link that resolves inside the container. Plain links, and the
  absolute links that resolve inside the container, are counted in :attr:`stats`.

Where a node-side tool would land is worked out from the link's text alone: no check
here ever looks at the node's files through a container's link, so a link to ``/``
or to a hung network mount costs nothing. Every finding carries the hop chain, the
layer that holds the link and, when the image history is known, the build step that
made that layer.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any, Final, Iterator

from ..records import Finding
from ..resolve import Resolution, Resolver, relative_form
from ..union import Entry
from .context import ContainerScope

STEP_WIDTH: Final = 80
"""Characters of a build step quoted in a message; the details keep all of it."""

CHAIN_SHOWN: Final = 6
"""Hops spelled out in a message before the middle of the chain is elided."""

REASONS: Final = {
    "not-a-directory": "is not a directory",
    "name-too-long": "has a name longer than the kernel allows (255 bytes)",
    "unreadable": "cannot be read",
}


class SymlinkVisitor:
    """Judge every symlink met while walking one container's root."""

    def __init__(self, scope: ContainerScope, resolver: Resolver) -> None:
        self.scope, self.resolver = scope, resolver
        self.stats = {"links_absolute": 0, "links_relative": 0}

    def visit(self, entry: Entry) -> Iterator[Finding]:
        if not entry.is_link:
            return
        resolution = self.resolver.resolve(entry)
        if resolution.status == "ok" and not resolution.escapes_root:
            form = "absolute" if resolution.absolute else "relative"
            self.stats[f"links_{form}"] += 1
        finding = _judge(self.scope, entry, resolution)
        if finding:
            yield finding

    def finish(self) -> Iterator[Finding]:
        return iter(())


def judge(scope: ContainerScope, resolver: Resolver, entry: Entry) -> Finding | None:
    """Return the finding for one symlink entry, or None when it is plain."""
    return _judge(scope, entry, resolver.resolve(entry))


def _judge(
    scope: ContainerScope, entry: Entry, resolution: Resolution
) -> Finding | None:
    if resolution.status == "dangling":
        return _dangling(scope, entry, resolution)
    if resolution.status in ("loop", "too-deep"):
        return _loop(scope, entry, resolution)
    if resolution.status == "runtime":
        return _runtime_only(scope, entry, resolution)
    if resolution.escapes_root:
        return _escapes_root(scope, entry, resolution)
    if resolution.absolute:
        return _host_divergent(scope, entry, resolution)
    return None


# -- shared pieces -----------------------------------------------------------------


def _details(
    scope: ContainerScope, entry: Entry, resolution: Resolution, **extra: Any
) -> dict[str, Any]:
    return {
        "hops": [
            hop.as_dict() | {"layer_key": scope.layers[hop.layer].key}
            for hop in resolution.hops
        ],
        "stops_at": resolution.final,
        "reason": resolution.why,
        **scope.layer_details(entry.layer),
        **extra,
    }


def where(scope: ContainerScope, position: int) -> str:
    """Say in words which layer holds an object, and the step that made it."""
    layer = scope.layers[position]
    if layer.kind == "active":
        return "the container's own writable layer"
    # The same numbering as the pod view's layer tree: position from the top.
    text = f"image layer #{position} (snapshot id {layer.id})"
    step = scope.build_step(position)
    if step and step.created_by:
        quoted = step.created_by.strip()
        if len(quoted) > STEP_WIDTH:
            quoted = quoted[: STEP_WIDTH - 3] + "..."
        text += f", made by `{quoted}`"
    return text


def _finding(
    scope: ContainerScope,
    check: str,
    entry: Entry,
    resolution: Resolution,
    *,
    message: str,
    hint: str,
    **extra: Any,
) -> Finding:
    return scope.finding(
        check,
        message=message,
        hint=hint,
        layer=scope.layers[entry.layer].key,
        path=entry.path,
        target=entry.link_target,
        details=_details(scope, entry, resolution, **extra),
    )


def _fix(
    scope: ContainerScope, entry: Entry, what: str, *, link: str | None = None
) -> str:
    """Name the safe next step: fix the image, or look at the running container."""
    layer = scope.layers[entry.layer]
    link = link or entry.path
    quoted = shlex.quote(link)
    if layer.kind == "active":
        exec_cmd = (
            f"kubectl exec -n {scope.container.pod_namespace} {scope.container.pod} "
            f"-c {scope.container.name} -- ls -l {quoted}"
        )
        return (
            f"The container made this link at run time: inspect it with `{exec_cmd}`, "
            f"{what}."
        )
    image = scope.container.image or "the image"
    return (
        f"Fix {image}: {what} in the build step that adds {quoted} "
        f"(for example `RUN ln -sfn NEW_TARGET {quoted}`, with a relative target), "
        f"then "
        f"rebuild and roll the pod."
    )


def _node_side(scope: ContainerScope, entry: Entry) -> str:
    """Where a node tool lands following the link's own target from the layer folder.

    Worked out from the text only; nothing on the node is looked at.
    """
    target = entry.link_target or ""
    if target.startswith("/"):
        return posixpath.normpath(target)
    layer_dir = scope.display_dir(scope.layers[entry.layer].contents)
    folder = posixpath.dirname(entry.path).lstrip("/")
    return posixpath.normpath(posixpath.join(layer_dir, folder, target))


# -- broken inside the container (warning) -----------------------------------------


def _dangling(scope: ContainerScope, entry: Entry, resolution: Resolution) -> Finding:
    reason = REASONS.get(resolution.why or "", "does not exist")
    message = (
        f"symlink {entry.path} -> {entry.link_target} is dangling: "
        f"{resolution.final} {reason} in the container "
        f"({where(scope, entry.layer)})"
    )
    broken = resolution.hops[-1]
    what = f"point the link at a path that exists, or add {resolution.final}"
    if broken.link != entry.path:
        what = (
            f"the chain breaks at {broken.link} -> {broken.target}: point that link "
            f"at a path that exists, or add {resolution.final}"
        )
    hint = _fix(scope, entry, what, link=broken.link)
    return _finding(
        scope, "symlink.dangling", entry, resolution, message=message, hint=hint
    )


def _chain(resolution: Resolution) -> str:
    """Spell a hop chain; a long one keeps its ends (the details keep every hop)."""
    hops = [f"{hop.link} -> {hop.target}" for hop in resolution.hops]
    if len(hops) > CHAIN_SHOWN:
        hidden = len(hops) - CHAIN_SHOWN + 1
        hops = hops[: CHAIN_SHOWN - 2] + [f"... {hidden} more ..."] + hops[-1:]
    return ", ".join(hops)


def _loop(scope: ContainerScope, entry: Entry, resolution: Resolution) -> Finding:
    chain = _chain(resolution)
    if resolution.status == "loop":
        check = "symlink.loop"
        what = f"loops: {chain}, then {resolution.final} again"
    else:
        check = "symlink.too-deep"
        what = f"needs more than {len(resolution.hops) - 1} hops: {chain}"
    message = f"symlink {entry.path} {what} ({where(scope, entry.layer)})"
    closing = resolution.hops[-1]
    hint = _fix(
        scope,
        entry,
        f"make one link in the chain (for example {closing.link}) "
        f"point at a real file or directory",
        link=closing.link,
    )
    return _finding(scope, check, entry, resolution, message=message, hint=hint)


# -- fine only while the container runs (info) ---------------------------------------


def _runtime_only(
    scope: ContainerScope, entry: Entry, resolution: Resolution
) -> Finding:
    message = (
        f"symlink {entry.path} -> {entry.link_target} leads into "
        f"{resolution.final}, which exists only while the container runs: the "
        f"runtime mounts it ({where(scope, entry.layer)})"
    )
    hint = (
        "Nothing to fix for the running container. Tools that read the image or a "
        "stopped container's layers (scanners, backups) see this link dangling; "
        "expect that there."
    )
    return _finding(
        scope,
        "symlink.runtime-only",
        entry,
        resolution,
        message=message,
        hint=hint,
        escapes_root=resolution.escapes_root,
    )


# -- fine inside the container, a trap on the node (info) -----------------------------


def _escapes_root(
    scope: ContainerScope, entry: Entry, resolution: Resolution
) -> Finding:
    node_side = _node_side(scope, entry)
    message = (
        f"symlink {entry.path} -> {entry.link_target} climbs above the root: in the "
        f"container '..' stops at / and it reaches {resolution.final}, but a tool on "
        f"the node following it from the layer folder lands on {node_side}, outside "
        f"the layer ({where(scope, entry.layer)})"
    )
    relative = relative_form(entry.path, resolution.final)
    hint = (
        f"Fine in the container. To keep node-side tools (backups, scanners, find -L) "
        f"inside the layer, write it without the extra '..': `ln -sfn "
        f"{shlex.quote(relative)} {shlex.quote(entry.path)}` in the build step that "
        f"adds "
        f"it."
    )
    return _finding(
        scope,
        "symlink.escapes-root",
        entry,
        resolution,
        message=message,
        hint=hint,
        node_side=node_side,
        relative_form=relative,
    )


def _host_divergent(
    scope: ContainerScope, entry: Entry, resolution: Resolution
) -> Finding:
    layer_dir = scope.display_dir(scope.layers[entry.layer].contents)
    message = (
        f"symlink {entry.path} -> {entry.link_target} is absolute: in the container it "
        f"reaches {resolution.final}, but a tool on the node following it from "
        f"{layer_dir} lands on the node's own {_node_side(scope, entry)}, a node file "
        f"or nothing ({where(scope, entry.layer)})"
    )
    relative = relative_form(entry.path, resolution.final)
    hint = (
        f"Fine in the container. Node-side tools must resolve links inside the layer "
        f"(a chroot or a --root option), not on the node; or make the link relative in "
        f"the image: `ln -sfn {shlex.quote(relative)} {shlex.quote(entry.path)}`."
    )
    return _finding(
        scope,
        "symlink.host-divergent",
        entry,
        resolution,
        message=message,
        hint=hint,
        node_side=_node_side(scope, entry),
        relative_form=relative,
    )

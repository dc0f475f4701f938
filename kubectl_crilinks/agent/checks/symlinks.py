"""Symlinks in a container's root that do not resolve inside the container.

Each link is resolved by :class:`~kubectl_crilinks.agent.resolve.Resolver` as the
container would resolve it. Links that reach a path only present at run time (under
``/proc``, ``/sys``, ``/dev`` or a mount point of the spec) are not judged here.
"""

from __future__ import annotations

import shlex
from typing import Iterator

from ..records import Finding
from ..resolve import Resolution, Resolver
from ..union import Entry
from .context import ContainerScope


class SymlinkVisitor:
    """Judge every symlink met while walking one container's root."""

    def __init__(self, scope: ContainerScope, resolver: Resolver) -> None:
        self.scope, self.resolver = scope, resolver

    def visit(self, entry: Entry) -> Iterator[Finding]:
        if entry.is_link:
            finding = judge(self.scope, self.resolver, entry)
            if finding:
                yield finding

    def finish(self) -> Iterator[Finding]:
        return iter(())


def judge(scope: ContainerScope, resolver: Resolver, entry: Entry) -> Finding | None:
    """Return the finding for one symlink entry, or None when it is fine."""
    resolution = resolver.resolve(entry)
    if resolution.status == "dangling":
        return _dangling(scope, entry, resolution)
    if resolution.status in ("loop", "too-deep"):
        return _loop(scope, entry, resolution)
    return None


def _details(scope: ContainerScope, entry: Entry, resolution: Resolution) -> dict:
    return {
        "hops": [hop.as_dict() | {"layer_key": scope.layers[hop.layer].key}
                 for hop in resolution.hops],
        "stops_at": resolution.final,
        "reason": resolution.why,
        **scope.layer_details(entry.layer),
    }


def _where(scope: ContainerScope, position: int) -> str:
    """Say in words which layer holds an object: the container's own or an image's."""
    layer = scope.layers[position]
    if layer.kind == "active":
        return "the container's own writable layer"
    below = len(scope.layers) - position
    return f"image layer {below} of {len(scope.layers) - 1}"


def _fix(scope: ContainerScope, entry: Entry, what: str) -> str:
    """Name the safe next step: fix the image, or the running container."""
    layer = scope.layers[entry.layer]
    quoted = shlex.quote(entry.path)
    if layer.kind == "active":
        exec_cmd = (f"kubectl exec -n {scope.container.pod_namespace} {scope.container.pod} "
                    f"-c {scope.container.name} -- ls -l {quoted}")
        return f"The container made this link at run time: inspect it with `{exec_cmd}`, {what}."
    image = scope.container.image or "the image"
    return (f"Fix {image}: {what} in the build step that adds {quoted} "
            f"(for example `RUN ln -sfn NEW_TARGET {quoted}`, with a relative target), then "
            f"rebuild and roll the pod.")


def _dangling(scope: ContainerScope, entry: Entry, resolution: Resolution) -> Finding:
    reason = "is not a directory" if resolution.why == "not-a-directory" else "does not exist"
    message = (f"symlink {entry.path} -> {entry.link_target} is dangling: "
               f"{resolution.final} {reason} in the container "
               f"({_where(scope, entry.layer)})")
    hint = _fix(scope, entry, f"point the link at a path that exists, or add {resolution.final}")
    return scope.finding("symlink.dangling", message=message, hint=hint,
                         layer=scope.layers[entry.layer].key, path=entry.path,
                         target=entry.link_target,
                         details=_details(scope, entry, resolution))


def _loop(scope: ContainerScope, entry: Entry, resolution: Resolution) -> Finding:
    chain = ", ".join(f"{hop.link} -> {hop.target}" for hop in resolution.hops)
    if resolution.status == "loop":
        check = "symlink.loop"
        what = f"loops: {chain}, then {resolution.final} again"
    else:
        check = "symlink.too-deep"
        what = f"needs more than {len(resolution.hops) - 1} hops: {chain}"
    message = f"symlink {entry.path} {what} ({_where(scope, entry.layer)})"
    hint = _fix(scope, entry, "make one link in the chain point at a real file or directory")
    return scope.finding(check, message=message, hint=hint,
                         layer=scope.layers[entry.layer].key, path=entry.path,
                         target=entry.link_target,
                         details=_details(scope, entry, resolution))

"""What a check knows about the container it judges."""

from __future__ import annotations

import shlex
import dataclasses
from typing import Any

from ..catalogue import severity_of
from ..containerd import ChainLayer, Container
from ..records import Finding


@dataclasses.dataclass(frozen=True)
class ContainerScope:
    """One container on one node: where findings are placed and hints point."""

    node: str | None
    container: Container
    layers: tuple[ChainLayer, ...]
    address: str
    display_dir: Any  # Callable[[str], str]: agent-side path -> node path
    build_steps: Any = None  # Mapping[int, images.BuildStep]: layer position -> step
    runtime: str = "containerd"  # or "cri-o": layers are cstorage.StackLayer records

    def finding(self, check: str, *, message: str, hint: str, layer: str | None,
                path: str | None = None, target: str | None = None,
                details: dict[str, Any] | None = None) -> Finding:
        """Build a finding for this container, with its placement filled in."""
        return Finding(
            check=check,
            severity=severity_of(check),
            message=message,
            hint=hint,
            node=self.node,
            namespace=self.container.pod_namespace,
            pod=self.container.pod,
            container=self.container.name or self.container.id,
            layer=layer,
            path=path,
            target=target,
            details={"container_id": self.container.id, **(details or {})},
        )

    def ctr(self, *args: str) -> str:
        """Spell a ctr command against this node's containerd and namespace."""
        words = ["ctr", "-a", self.address, "-n", self.container.namespace, *args]
        return " ".join(shlex.quote(word) for word in words)

    def layer_details(self, position: int) -> dict[str, Any]:
        layer = self.layers[position]
        if self.runtime == "cri-o":
            return {"layer_position": position, "layer_id": layer.id,
                    "short_link": layer.short,
                    "layer_dir": self.display_dir(layer.contents)}
        return {
            "layer_position": position,
            "snapshot_key": layer.key,
            "snapshot_id": layer.id,
            "layer_dir": self.display_dir(layer.contents),
            "build_step": step.as_dict() if (step := self.build_step(position)) else None,
        }

    def build_step(self, position: int) -> Any:
        """Return the image history entry that made a layer, when it is known."""
        return (self.build_steps or {}).get(position)


@dataclasses.dataclass(frozen=True)
class NodeScope:
    """The whole node: its storage, and the pod the user asked about (if any).

    Node checks (layer audits, volumes, log links, the storage root) take this and
    yield findings. ``pod`` and ``namespace`` narrow a check to one pod's objects
    when the user inspects a pod; both are None for ``inspect node``.
    """

    node: str | None
    host: Any  # HostView
    proc_root: str | None
    runtimes: tuple[Any, ...]  # (discovery.Containerd, containerd.State) pairs
    pod: str | None
    namespace: str | None
    expired: Any  # Callable[[], bool]: True once the time budget is spent
    not_read: list[str] = dataclasses.field(default_factory=list)  # left unread, why

    def finding(self, check: str, *, message: str, hint: str,
                namespace: str | None = None, pod: str | None = None,
                container: str | None = None, layer: str | None = None,
                path: str | None = None, target: str | None = None,
                details: dict[str, Any] | None = None) -> Finding:
        """Build a node-scope finding; keys that do not apply stay None."""
        return Finding(check=check, severity=severity_of(check), message=message,
                       hint=hint, node=self.node, namespace=namespace, pod=pod,
                       container=container, layer=layer, path=path, target=target,
                       details=details or {})

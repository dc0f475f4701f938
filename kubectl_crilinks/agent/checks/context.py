"""What a check knows about the container it judges."""

from __future__ import annotations

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
        return " ".join(["ctr", "-a", self.address, "-n", self.container.namespace, *args])

    def layer_details(self, position: int) -> dict[str, Any]:
        layer = self.layers[position]
        return {
            "layer_position": position,
            "snapshot_key": layer.key,
            "snapshot_id": layer.id,
            "layer_dir": self.display_dir(layer.contents),
        }

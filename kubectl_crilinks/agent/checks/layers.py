"""Breaks in a container's snapshot chain: a missing parent record, a missing folder."""

from __future__ import annotations

from typing import Iterator

from ..containerd import Chain, ChainBreak
from ..records import Finding
from .context import ContainerScope


def judge(scope: ContainerScope, chain: Chain) -> Iterator[Finding]:
    """Yield one finding per break in the chain."""
    for chain_break in chain.breaks:
        if chain_break.check == "layer.parent-missing":
            yield _parent_missing(scope, chain_break)
        else:
            yield _dir_missing(scope, chain, chain_break)


def _image_hint(scope: ContainerScope) -> str:
    image = scope.container.image or "the container's image"
    return (f"remove the image and pull it again (`{scope.ctr('images', 'rm', image)}`, "
            f"then `crictl pull {image}`) and recreate the pod")


def _parent_missing(scope: ContainerScope, chain_break: ChainBreak) -> Finding:
    hint = (f"The chain is cut, so the container cannot be started again. Delete the pod's "
            f"container, then {_image_hint(scope)}.")
    return scope.finding("layer.parent-missing", message=chain_break.message, hint=hint,
                         layer=chain_break.key, details=dict(chain_break.details))


def _dir_missing(scope: ContainerScope, chain: Chain, chain_break: ChainBreak) -> Finding:
    position = chain_break.details["layer_position"]
    layer = chain.layers[position]
    directory = scope.display_dir(layer.directory)
    message = f"{chain_break.message}: {directory} does not exist"
    hint = (f"The layer's files are lost. After the containers using it are gone, remove "
            f"the record with `{scope.ctr('snapshots', 'rm', layer.key)}` (children first: "
            f"{', '.join(chain_break.details['children']) or 'none'}), then {_image_hint(scope)}.")
    details = dict(chain_break.details) | {"directory": directory}
    return scope.finding("layer.dir-missing", message=message, hint=hint,
                         layer=layer.key, details=details)

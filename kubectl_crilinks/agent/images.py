"""The build step that made each layer of a container, from the image history.

containerd keeps every blob it pulled or imported under
``<root>/io.containerd.content.v1.content/blobs/sha256/<hex>``. An image record in
meta.db points at a manifest (or an index of manifests); the manifest names the image
config, whose ``rootfs.diff_ids`` list the layers base first and whose ``history``
lists the build steps. Steps marked ``empty_layer`` made no layer; the others pair
with the diff IDs in order, as the image spec says. When the two counts differ the
history cannot be trusted and no step is named.

A container's committed layers are snapshots keyed by *chain IDs*, computed from the
diff IDs (:func:`.content.chain_ids`), so a layer of the container is matched to its
step by key, never by position. For an
index the manifest whose chain IDs match the container's layers is chosen, so the
platform never has to be guessed.

This is a reader: it returns records and never judges. It reads small JSON blobs only
(at most :data:`MAX_BLOB` bytes each), never layer tarballs, and opens each blob through
:func:`.content.read_json` (``O_NOFOLLOW``, a plain sha256 digest only).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Final, Iterator, Mapping, Sequence

from . import content
from .content import chain_ids
from .containerd import ChainLayer, Container, State

logger = logging.getLogger(__name__)

MAX_INDEX_DEPTH: Final = 4
"""Nested indexes followed before giving up (real images nest at most twice)."""



@dataclasses.dataclass(frozen=True)
class BuildStep:
    """One entry of an image config's history: the step that made a layer."""

    history_index: int
    created_by: str | None
    created: str | None
    comment: str | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """An image config's layers (base first) and the step that made each."""

    digest: str
    diff_ids: tuple[str, ...]
    chain_ids: tuple[str, ...]
    steps: tuple[BuildStep | None, ...]


def layer_steps(history: Any, layers: int) -> tuple[BuildStep | None, ...]:
    """Pair the history entries that made a layer with the ``layers`` layers."""
    if not isinstance(history, list):
        return (None,) * layers
    steps = [
        BuildStep(
            index,
            _text(entry.get("created_by")),
            _text(entry.get("created")),
            _text(entry.get("comment")),
        )
        for index, entry in enumerate(history)
        if isinstance(entry, dict) and not entry.get("empty_layer")
    ]
    if len(steps) != layers:
        logger.debug(
            "history names %d layer steps for %d layers; not used", len(steps), layers
        )
        return (None,) * layers
    return tuple(steps)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class ContentStore:
    """The blobs of one containerd root (an agent-side path), read-only."""

    def __init__(self, blobs: str) -> None:
        self.root = blobs  # the store's blobs/sha256 folder

    def read_json(self, digest: str) -> dict[str, Any]:
        """Read and parse a small JSON blob; raise OSError or ValueError."""
        return content.read_json(self.root, digest)

    def configs(self, digest: str, depth: int = 0) -> Iterator[ImageConfig]:
        """Yield the image config(s) behind a manifest or index digest."""
        document = self.read_json(digest)
        if isinstance(document.get("manifests"), list) and depth < MAX_INDEX_DEPTH:
            for manifest in document["manifests"]:
                child = manifest.get("digest") if isinstance(manifest, dict) else None
                if isinstance(child, str):
                    yield from self._configs_quietly(child, depth + 1)
            return
        config = document.get("config")
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            yield self.config(config["digest"])

    def _configs_quietly(self, digest: str, depth: int) -> Iterator[ImageConfig]:
        # An index lists every platform; containerd keeps only the ones it pulled.
        try:
            yield from self.configs(digest, depth)
        except (OSError, ValueError) as exc:
            logger.debug("manifest %s not read: %s", digest, exc)

    def config(self, digest: str) -> ImageConfig:
        """Read one image config."""
        document = self.read_json(digest)
        rootfs = (
            document.get("rootfs") if isinstance(document.get("rootfs"), dict) else {}
        )
        diff_ids = tuple(d for d in rootfs.get("diff_ids") or () if isinstance(d, str))
        steps = layer_steps(document.get("history"), len(diff_ids))
        return ImageConfig(digest, diff_ids, tuple(chain_ids(list(diff_ids))), steps)


class Catalog:
    """The build steps of one containerd root's images, read once, on demand."""

    def __init__(self, state: State) -> None:
        self.store = ContentStore(state.blobs)
        self._targets = {(image.namespace, image.name): image.target
                         for image in (state.meta.images if state.meta else ())
                         if image.target}
        self._configs: dict[str, tuple[ImageConfig, ...]] = {}

    def steps(
        self, container: Container, layers: Sequence[ChainLayer]
    ) -> Mapping[int, BuildStep]:
        """Return {layer position: build step} for a container's layer stack."""
        keys = {layer.key: layer.position for layer in layers}
        try:
            config = self._matching_config(container, keys)
        except (OSError, ValueError) as exc:
            logger.debug(
                "image history of container %s not read: %s", container.id, exc
            )
            return {}
        if config is None:
            return {}
        return {
            keys[chain_id]: step
            for chain_id, step in zip(config.chain_ids, config.steps, strict=True)
            if chain_id in keys and step is not None
        }

    def _matching_config(
        self, container: Container, keys: Mapping[str, int]
    ) -> ImageConfig | None:
        """Find the config whose chain IDs are the container's layers.

        The container's own image comes first; an image that was re-tagged or
        removed since is found among the namespace's other images.
        """
        targets = self._targets
        own = targets.get((container.namespace, container.image or ""))
        others = [
            d for (ns, _), d in sorted(targets.items()) if ns == container.namespace
        ]
        for digest in ([own] if own else []) + [d for d in others if d != own]:
            for config in self._configs_of(digest):
                if config.chain_ids and config.chain_ids[-1] in keys:
                    return config
        return None

    def _configs_of(self, digest: str) -> tuple[ImageConfig, ...]:
        if digest not in self._configs:
            try:
                self._configs[digest] = tuple(self.store.configs(digest))
            except (OSError, ValueError) as exc:
                logger.debug(
                    "image %s not read from the content store: %s", digest, exc
                )
                self._configs[digest] = ()
        return self._configs[digest]

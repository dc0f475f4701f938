"""Images in containerd's content store: manifest, config, and the layer chain IDs.

An image's snapshots are named by chain IDs computed from its config's
``rootfs.diff_ids``: the first is the first diff ID, each next one is the sha256 of
``"<previous chain ID> <diff ID>"``. With them, an image's chain can be checked
layer by layer against both databases and the disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import stat
from typing import Any, Final

logger = logging.getLogger(__name__)

CONTENT_DIR: Final = "io.containerd.content.v1.content"
INDEX_TYPES: Final = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MAX_BLOB: Final = 4 * 1024 * 1024
"""Manifests and configs are small; anything larger is not read."""

_DIGEST: Final = re.compile(r"sha256:([0-9a-f]{64})")
_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def blob_path(blobs: str, digest: str) -> str:
    """Return a sha256 blob's path in ``blobs`` (the store's ``blobs/sha256`` folder)."""
    return os.path.join(blobs, digest.partition(":")[2])


def read_json(blobs: str, digest: str) -> dict[str, Any]:
    """Read a small JSON object blob; raise OSError or ValueError when it is not one.

    The digest must be a plain sha256 (no path tricks) and the blob is opened with
    ``O_NOFOLLOW`` and must be a regular file of at most :data:`MAX_BLOB` bytes.
    """
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise ValueError(f"digest {digest!r} is not a sha256 digest")
    fd = os.open(blob_path(blobs, digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                 | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BLOB:
            raise ValueError(f"blob {digest} is not a small regular file")
        with open(fd, "rb", closefd=False) as handle:
            parsed = json.loads(handle.read(MAX_BLOB + 1))
    finally:
        os.close(fd)
    if not isinstance(parsed, dict):
        raise ValueError(f"blob {digest} is not a JSON object")
    return parsed


def read_blob(blobs: str, digest: str) -> dict[str, Any] | None:
    """Read a JSON blob like :func:`read_json`; None when it is absent or unusable."""
    try:
        return read_json(blobs, digest)
    except (OSError, ValueError) as exc:
        logger.debug("content blob %s cannot be read: %s", digest, exc)
        return None


def chain_ids(diff_ids: list[str]) -> list[str]:
    """Turn a config's diff IDs into snapshot chain IDs, base layer first."""
    chain: list[str] = []
    for diff_id in diff_ids:
        if not chain:
            chain.append(diff_id)
            continue
        digest = hashlib.sha256(f"{chain[-1]} {diff_id}".encode()).hexdigest()
        chain.append(f"sha256:{digest}")
    return chain


@dataclasses.dataclass(frozen=True)
class ImageLayer:
    """One layer of an image: its snapshot chain ID, diff ID and blob digest."""

    chain_id: str
    diff_id: str
    digest: str | None


def image_layers(blobs: str, target: str) -> list[ImageLayer] | None:
    """Return an image's layers, base first; None when its content is not stored."""
    manifest, config = _manifest_and_config(blobs, target)
    diff_ids = ((config or {}).get("rootfs") or {}).get("diff_ids")
    if not manifest or not isinstance(diff_ids, list):
        return None
    digests = [layer.get("digest") for layer in manifest.get("layers") or []]
    digests += [None] * (len(diff_ids) - len(digests))
    return [ImageLayer(chain, diff, digest)
            for chain, diff, digest in zip(chain_ids(diff_ids), diff_ids, digests)]


def _manifest_and_config(blobs: str, target: str) -> tuple[dict | None, dict | None]:
    manifest = read_blob(blobs, target)
    if manifest and (manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest):
        manifest = _platform_manifest(blobs, manifest)
    if not manifest:
        return None, None
    return manifest, read_blob(blobs, (manifest.get("config") or {}).get("digest", ""))


def image_chain(blobs: str, target: str) -> list[str] | None:
    """Return the chain IDs of the image whose manifest or index is ``target``.

    For an index, the manifest for this machine's platform is used (the agent runs
    on the node). None means the content needed is not in the store.
    """
    _, config = _manifest_and_config(blobs, target)
    diff_ids = ((config or {}).get("rootfs") or {}).get("diff_ids")
    return chain_ids(list(diff_ids)) if isinstance(diff_ids, list) else None


def _platform_manifest(blobs: str, index: dict[str, Any]) -> dict[str, Any] | None:
    arch = _ARCH.get(platform.machine(), platform.machine())
    for entry in index.get("manifests") or []:
        wanted = entry.get("platform") or {}
        if wanted.get("os", "linux") == "linux" and wanted.get("architecture", arch) == arch:
            manifest = read_blob(blobs, entry.get("digest", ""))
            if manifest:
                return manifest
    return None

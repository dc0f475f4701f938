"""What file system a node path lives on, asked without touching what might hang.

A network or FUSE mount can block any ``stat`` for minutes when its server is gone,
so the mount table (see :mod:`.mounts`) is asked first: it names every mount point,
and a walker checks a path against it *before* it looks at the path. Only when no
mount table can be read does a walker fall back to ``fstatfs`` on a directory it has
already opened (whose magic number names the file system type).

The other questions here are asked of directories the caller chose to trust (the
runtime's own storage): whether the file system fills in ``d_type`` in directory
entries (overlayfs needs it, and refuses or misbehaves without it), and how many
bytes and inodes are free. ``d_type`` is read with the ``getdents64`` system call,
which only reads; no test file is ever created.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import struct
from typing import Final, Iterable

from .mounts import Mount

logger = logging.getLogger(__name__)

REMOTE_TYPES: Final = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "lustre",
        "gpfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "davfs",
        "coda",
        "ncpfs",
        "pvfs2",
        "orangefs",
        "autofs",
    }
)
"""File systems whose reads go over the network (or, for autofs, may start a mount)."""

FS_MAGIC: Final = {
    0xEF53: "ext4",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x01021994: "tmpfs",
    0x794C7630: "overlay",
    0x2FC12FC1: "zfs",
    0x6969: "nfs",
    0x517B: "smbfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb3",
    0x65735546: "fuse",
    0x00C36400: "ceph",
    0x01021997: "9p",
    0x5346414F: "afs",
    0x0BD00BD0: "lustre",
    0x01161970: "gfs2",
    0x7461636F: "ocfs2",
    0x73757245: "coda",
    0x0187: "autofs",
    0x858458F6: "ramfs",
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x4D44: "vfat",
    0xF2F52010: "f2fs",
}
"""``statfs`` magic numbers (linux/magic.h) of the file systems met on nodes."""

GETDENTS64: Final = {
    "x86_64": 217,
    "aarch64": 61,
    "riscv64": 61,
    "ppc64le": 202,
    "s390x": 220,
    "armv7l": 217,
}
"""The getdents64 system call's number per machine (there is no libc wrapper)."""

DT_UNKNOWN: Final = 0
_DIRENT: Final = struct.Struct("=QqHB")  # d_ino, d_off, d_reclen, d_type


def is_remote(fs_type: str) -> bool:
    """Tell whether a file system type is a network, FUSE or automount one."""
    return fs_type in REMOTE_TYPES or fs_type == "fuseblk" or fs_type.startswith("fuse")


def _within(path: str, root: str) -> bool:
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


class MountTable:
    """The node's mounts by mount point; ``known`` is False when none could be read."""

    def __init__(self, mounts: Iterable[Mount] | None) -> None:
        self.known = mounts is not None
        self.mounts = list(mounts or ())

    def at(self, node_path: str) -> Mount | None:
        """Return the mount on top at exactly ``node_path``, if any."""
        found = [m for m in self.mounts if m.mount_point == node_path]
        return found[-1] if found else None

    def containing(self, node_path: str) -> Mount | None:
        """Return the mount holding ``node_path`` (the deepest mount point above it)."""
        best: Mount | None = None
        for mount in self.mounts:
            if _within(node_path, mount.mount_point) and (
                best is None or len(mount.mount_point) >= len(best.mount_point)
            ):
                best = mount
        return best

    def remote_at(self, node_path: str) -> Mount | None:
        """Return the network or FUSE mount at ``node_path``, if one is there."""
        mount = self.at(node_path)
        return mount if mount is not None and is_remote(mount.fs_type) else None


def fs_type_of(fd: int) -> str | None:
    """Name the file system of an open directory with ``fstatfs``, or None."""
    buffer = ctypes.create_string_buffer(256)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.fstatfs(fd, buffer) != 0:
            logger.debug("fstatfs failed: %s", os.strerror(ctypes.get_errno()))
            return None
    except (OSError, AttributeError) as exc:
        logger.debug("fstatfs is not available: %s", exc)
        return None
    magic = struct.unpack_from("=q", buffer.raw)[0] & 0xFFFFFFFF
    return FS_MAGIC.get(magic, f"0x{magic:x}")


def d_type_support(path: str) -> bool | None:
    """Tell whether a directory's entries carry their type (``d_type``).

    None when it cannot be told: no entry besides '.' and '..', or no getdents64
    number for this machine.
    """
    number = GETDENTS64.get(platform.machine())
    if number is None:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _entries_typed(fd, number)
    finally:
        os.close(fd)


def _entries_typed(fd: int, number: int) -> bool | None:
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(32 * 1024)
    while True:
        size = libc.syscall(number, fd, buffer, len(buffer))
        if size < 0:
            raise OSError(ctypes.get_errno(), "getdents64 failed")
        if size == 0:
            return None
        offset = 0
        while offset < size:
            _, _, length, d_type = _DIRENT.unpack_from(buffer.raw, offset)
            name = buffer.raw[offset + _DIRENT.size : offset + length].split(b"\0", 1)[
                0
            ]
            if name not in (b".", b".."):
                return d_type != DT_UNKNOWN
            offset += length


def free_space(path: str) -> dict[str, int] | None:
    """Return free and total bytes and inodes of the file system holding ``path``."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            logger.debug("statvfs %s failed: %s", path, exc)
        return None
    return {
        "free_bytes": st.f_bavail * st.f_frsize,
        "total_bytes": st.f_blocks * st.f_frsize,
        "free_inodes": st.f_favail,
        "total_inodes": st.f_files,
    }

"""Read a BoltDB (bbolt) file from outside the process that owns it.

containerd keeps its metadata in bbolt files and holds an exclusive ``flock`` on each
for as long as it runs. bbolt's own readers would wait for that lock, so this module
never asks for it: it opens the file read-only and reads pages with ``os.pread``.

Reading without the lock means a writer may commit, and reuse pages, while we walk.
The design choice: trust no value from the file until it is checked (magic, version,
checksum, page ids, flags, bounds, key order, pages reached twice), walk the tree of
the newest valid meta page, then read both meta pages again and keep the result only
when the newest valid transaction is still the same one. bbolt reuses a page of
transaction N only after it has committed N+1, so an unchanged meta means that every
page we read belonged to N. Otherwise the walk is retried.

bbolt writes its structures in the CPU's byte order; only little-endian files (amd64,
arm64) are read here, and a big-endian file is named as such.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import struct
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

log = logging.getLogger(__name__)

MAGIC: Final = 0xED0CDAED
VERSION: Final = 2
_MAGIC_SWAPPED: Final = 0xEDDA0CED
_MAGIC_BYTES: Final = MAGIC.to_bytes(4, "little")

# On-disk structures, all little-endian and unpadded.
_HEADER: Final = struct.Struct("<QHHI")  # page id, flags, count, overflow
_META: Final = struct.Struct("<IIIIQQQQQQ")  # see _parse_meta for the fields
_BRANCH: Final = struct.Struct("<IIQ")  # pos, key size, child page id
_LEAF: Final = struct.Struct("<IIII")  # flags, pos, key size, value size
_BUCKET: Final = struct.Struct("<QQ")  # root page id (0 = inline), sequence
_ELEMENT_SIZE: Final = 16  # branch and leaf elements alike

_META_END: Final = _HEADER.size + _META.size  # a meta page's bytes that matter
_CHECKSUMMED: Final = slice(_HEADER.size, _META_END - 8)  # page bytes 16..71

_BRANCH_PAGE: Final = 0x01
_LEAF_PAGE: Final = 0x02
_META_PAGE: Final = 0x04
_BUCKET_VALUE: Final = 0x01  # leaf element flag: the value is a nested bucket

# bbolt looks for meta 1 at these offsets when meta 0 is bad; page sizes outside
# them are accepted from a valid meta 0 down to _MIN_PAGE_SIZE.
_PROBE_SIZES: Final = tuple(1024 << shift for shift in range(15))
_MIN_PAGE_SIZE: Final = 512
_MAX_PAGE_SIZE: Final = _PROBE_SIZES[-1]

# Levels of recursion (nested buckets plus B+tree height) before we give up. A
# sound containerd file nests buckets about 7 deep in trees of 1-4 levels; the cap
# keeps a hostile file far from Python's recursion limit of 1000 frames.
_MAX_DEPTH: Final = 100

_CORRUPT: Final = (
    "the file is damaged: copy it aside and run 'bbolt check COPY' to list every "
    "problem"
)
_TRUNCATED: Final = (
    "the file is truncated: was it copied or restored while being written?"
)


class BoltError(Exception):
    """Raised when a BoltDB file is corrupt, truncated or not a BoltDB file."""


class BoltBusyError(BoltError):
    """Raised when a writer committed during every attempt to read the file."""


@dataclasses.dataclass(frozen=True)
class Bucket:
    """One bucket: plain values, nested buckets and the ``NextSequence`` counter."""

    buckets: Mapping[bytes, Bucket]
    values: Mapping[bytes, bytes]
    sequence: int

    def bucket(self, *names: bytes) -> Bucket | None:
        """Return the bucket nested under ``names``, or None when one is missing."""
        bucket = self
        for name in names:
            child = bucket.buckets.get(name)
            if child is None:
                return None
            bucket = child
        return bucket

    def get(self, key: bytes) -> bytes | None:
        """Return the plain value of ``key``, or None (also for a nested bucket)."""
        return self.values.get(key)


@dataclasses.dataclass(frozen=True)
class Tree:
    """The whole content of one committed transaction, copied into memory."""

    path: str
    txid: int
    page_size: int
    root: Bucket


def read_tree(
    path: str | os.PathLike[str], *, retries: int = 5, retry_delay: float = 0.05
) -> Tree:
    """Read the newest committed state of a BoltDB file without taking its lock.

    A read that overlaps a commit, or that meets a bad page, is retried up to
    ``retries`` times, ``retry_delay`` seconds apart. Raises :class:`BoltError` when
    the file is not a sound BoltDB file, :class:`BoltBusyError` when it changed
    during every attempt, and ``OSError`` when it cannot be opened or read.
    """
    name = os.fspath(path)
    # O_NONBLOCK: a FIFO put where the file should be must not block the agent.
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BoltError(f"{name!r}: not a regular file, so not a BoltDB file; "
                            "look at what replaced it")
        return _read_stable(_File(name, fd), retries=retries, retry_delay=retry_delay)
    finally:
        os.close(fd)


def _read_stable(file: _File, *, retries: int, retry_delay: float) -> Tree:
    """Walk until one walk starts and ends on the same meta; raise the last error."""
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, not {retries}")
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _read_once(file)
        except BoltError as exc:
            failure = exc
        if attempt < attempts:
            log.debug("read %d of %d failed, retrying: %s", attempt, attempts, failure)
            time.sleep(retry_delay)
    raise failure


def _read_once(file: _File) -> Tree:
    """Walk the newest meta's tree once and check that the meta did not change."""
    meta = _newest_meta(file)
    try:
        root = _Walk(file, meta).run()
    except BoltError as exc:
        # A page rewritten under us shows as damage; the metas tell which it was.
        if _meta_now(file) != meta:
            raise _changed(file, meta) from exc
        raise
    if _meta_now(file) != meta:
        raise _changed(file, meta)
    return Tree(path=file.path, txid=meta.txid, page_size=meta.page_size, root=root)


def _changed(file: _File, meta: _Meta) -> BoltBusyError:
    return BoltBusyError(
        f"{file.path!r}: a newer commit replaced transaction {meta.txid} while it "
        "was being read, and no retries were left: the writer commits faster than "
        "the file can be read; try again, or pass a larger retries"
    )


class _File:
    """The open file: positional reads and errors that name it."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes; a short result means the file ended."""
        return os.pread(self.fd, length, offset)

    def error(self, where: str, problem: str, hint: str = _CORRUPT) -> BoltError:
        return BoltError(f"{self.path!r}: {where}: {problem}; {hint}")


# ---- meta pages


@dataclasses.dataclass(frozen=True)
class _Meta:
    """The fields of one valid meta page that a reader needs."""

    slot: int
    page_size: int
    root: int
    sequence: int
    high_water: int  # one more than the largest page id in use
    txid: int


class _BadMeta(Exception):
    """A meta page failed one check; the message says which and why."""


def _newest_meta(file: _File) -> _Meta:
    """Return the valid meta with the higher txid, as bbolt's ``DB.meta`` does."""
    page_size = _page_size(file)
    metas: list[_Meta] = []
    problems: list[str] = []
    for slot in (0, 1):
        raw = file.read(slot * page_size, _META_END)
        try:
            metas.append(_parse_meta(file, raw, slot=slot, page_size=page_size))
        except _BadMeta as bad:
            problems.append(f"meta page {slot}: {bad}")

    if not metas:
        raise file.error("no valid meta page", "; ".join(problems))
    for problem in problems:
        log.debug("%r: %s; using the other meta page", file.path, problem)
    return max(metas, key=lambda meta: meta.txid)


def _meta_now(file: _File) -> _Meta | None:
    """Return the newest valid meta as it is now, or None when there is none."""
    try:
        return _newest_meta(file)
    except BoltError:
        return None


def _page_size(file: _File) -> int:
    """Take the page size from meta 0, or find meta 1 the way bbolt probes for it."""
    size = file.size()
    if size == 0:
        raise file.error(
            "file",
            "empty (0 bytes), where a BoltDB file starts with two meta pages",
            "bbolt never initialised it: check the path",
        )
    try:
        return _parse_meta(file, file.read(0, _META_END), slot=0).page_size
    except _BadMeta as bad:
        first = f"meta page 0: {bad}"

    return _probe_page_size(file, size, first_problem=first)


def _probe_page_size(file: _File, size: int, *, first_problem: str) -> int:
    """Find meta 1 at each page size bbolt could have used, as bbolt does."""
    found: str | None = None
    for offset in _PROBE_SIZES:
        if offset >= size - 1024:
            break
        raw = file.read(offset, _META_END)
        try:
            return _parse_meta(file, raw, slot=1, page_size=offset).page_size
        except _BadMeta as bad:
            # Report the first page that at least carries the magic.
            magic = raw[_HEADER.size : _HEADER.size + len(_MAGIC_BYTES)]
            if found is None and magic == _MAGIC_BYTES:
                found = f"meta page 1 (at byte {offset}): {bad}"

    second = found or (
        "meta page 1: no page with the magic at a page size from "
        f"{_PROBE_SIZES[0]} to {_PROBE_SIZES[-1]} bytes ({size}-byte file)"
    )
    raise file.error("no valid meta page", f"{first_problem}; {second}")


def _parse_meta(
    file: _File, raw: bytes, *, slot: int, page_size: int | None = None
) -> _Meta:
    """Check one meta page in bbolt's order (magic, version, checksum), then more."""
    if len(raw) < _META_END:
        raise _BadMeta(f"the file ends {len(raw)} bytes into it, {_TRUNCATED}")
    pgid, flags, _, _ = _HEADER.unpack_from(raw)
    fields = _META.unpack_from(raw, _HEADER.size)
    magic, version, size, _, root, sequence, _, high_water, txid, checksum = fields

    if magic == _MAGIC_SWAPPED:
        raise file.error(
            f"meta page {slot}",
            f"magic reads 0x{magic:08x}, the byte-swapped 0x{MAGIC:08x}: the file was "
            "written on a big-endian machine (s390x, ppc64)",
            "this reader takes little-endian files only: read it on that architecture",
        )
    _expect("magic", magic, MAGIC, hexadecimal=True)
    _expect("version", version, VERSION)
    _expect("checksum", checksum, _fnv1a64(raw[_CHECKSUMMED]), hexadecimal=True)

    # bbolt stops here; a reader that walks pages gains from a few checks more.
    _expect("page header id", pgid, slot)
    _expect("page header flags", flags, _META_PAGE, hexadecimal=True)
    if page_size is not None:
        _expect("page size", size, page_size)
    if not _MIN_PAGE_SIZE <= size <= _MAX_PAGE_SIZE:
        raise _BadMeta(
            f"page size {size} is outside {_MIN_PAGE_SIZE}..{_MAX_PAGE_SIZE}"
        )
    if not 2 <= root < high_water:
        raise _BadMeta(f"root page {root} is outside 2..{high_water - 1}")
    return _Meta(slot, size, root, sequence, high_water, txid)


def _expect(
    field: str, actual: int, expected: int, *, hexadecimal: bool = False
) -> None:
    if actual != expected:
        shown = (
            (f"0x{actual:x}", f"0x{expected:x}") if hexadecimal else (actual, expected)
        )
        raise _BadMeta(f"{field} is {shown[0]}, expected {shown[1]}")


def _fnv1a64(data: bytes) -> int:
    """Hash with 64-bit FNV-1a, bbolt's meta checksum."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


# ---- the tree


@dataclasses.dataclass(frozen=True)
class _Page:
    """One node's bytes: a page with its overflow pages, or an inline bucket's."""

    label: str  # "page 12", or "inline page of bucket ..." in errors
    flags: int
    count: int
    data: bytes  # header included


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One leaf element, kept with its page for error messages."""

    label: str
    flags: int
    key: bytes
    value: bytes


class _Walk:
    """One walk of the tree of one meta; the first bad value raises BoltError."""

    def __init__(self, file: _File, meta: _Meta) -> None:
        self._file = file
        self._meta = meta
        self._seen: set[int] = set()
        # bbolt grows the file before it commits a meta, so this size holds every
        # page of ``meta``.
        self._size = file.size()
        # In a sound file every element, key and value has bytes of its own, so
        # their total fits in the file; past that, elements share bytes.
        self._budget = self._size

    def run(self) -> Bucket:
        meta = self._meta
        return self._bucket_at(meta.root, meta.sequence, depth=0, names=())

    def _bucket_at(
        self, pgid: int, sequence: int, *, depth: int, names: tuple[bytes, ...]
    ) -> Bucket:
        """Read the bucket whose B+tree starts at page ``pgid``."""
        entries: list[_Entry] = []
        where = f"root of bucket {_show(names)}"
        self._node(pgid, (None, None), entries, depth=depth, where=where)
        return self._make_bucket(entries, sequence, depth=depth, names=names)

    def _make_bucket(
        self,
        entries: list[_Entry],
        sequence: int,
        *,
        depth: int,
        names: tuple[bytes, ...],
    ) -> Bucket:
        buckets: dict[bytes, Bucket] = {}
        values: dict[bytes, bytes] = {}
        for entry in entries:
            if entry.flags & _BUCKET_VALUE:
                child = (*names, entry.key)
                buckets[entry.key] = self._child(entry, depth=depth + 1, names=child)
            else:
                values[entry.key] = entry.value
        return Bucket(MappingProxyType(buckets), MappingProxyType(values), sequence)

    def _child(self, entry: _Entry, *, depth: int, names: tuple[bytes, ...]) -> Bucket:
        """Open the nested bucket whose header is ``entry.value``."""
        self._check_depth(depth, entry.label)
        if len(entry.value) < _BUCKET.size:
            raise self._file.error(
                entry.label,
                f"bucket {_show(names)} has a {len(entry.value)}-byte value, "
                f"a bucket header needs {_BUCKET.size}",
            )
        root, sequence = _BUCKET.unpack_from(entry.value)
        if root != 0:
            return self._bucket_at(root, sequence, depth=depth, names=names)

        # An inline bucket: a one-leaf page follows the header inside the value.
        page = self._inline_page(entry.value[_BUCKET.size :], names)
        entries: list[_Entry] = []
        self._leaf(page, (None, None), entries)
        return self._make_bucket(entries, sequence, depth=depth, names=names)

    def _inline_page(self, data: bytes, names: tuple[bytes, ...]) -> _Page:
        label = f"inline page of bucket {_show(names)}"
        if len(data) < _HEADER.size:
            raise self._file.error(label, f"{len(data)} bytes, shorter than a header")
        pgid, flags, count, overflow = _HEADER.unpack_from(data)
        if (pgid, flags, overflow) != (0, _LEAF_PAGE, 0):
            raise self._file.error(
                label,
                f"header has id {pgid}, flags 0x{flags:04x}, overflow {overflow}; "
                f"expected id 0, flags 0x{_LEAF_PAGE:04x} (leaf), overflow 0",
            )
        self._spend(_HEADER.size, label)
        return _Page(label, flags, count, data)

    def _node(
        self,
        pgid: int,
        bounds: tuple[bytes | None, bytes | None],
        out: list[_Entry],
        *,
        depth: int,
        where: str,
    ) -> None:
        """Append the leaf entries under page ``pgid`` to ``out``, in key order."""
        self._check_depth(depth, f"page {pgid}")
        page = self._page(pgid, where=where)
        if page.flags == _BRANCH_PAGE:
            self._branch(page, bounds, out, depth=depth)
        elif page.flags == _LEAF_PAGE:
            self._leaf(page, bounds, out)
        else:
            raise self._file.error(
                page.label,
                f"flags are 0x{page.flags:04x}, expected 0x{_BRANCH_PAGE:04x} "
                f"(branch) or 0x{_LEAF_PAGE:04x} (leaf) ({where})",
            )

    def _page(self, pgid: int, *, where: str) -> _Page:
        """Read page ``pgid`` and its overflow pages once its header checks out."""
        label = f"page {pgid}"
        high_water = self._meta.high_water
        if not 2 <= pgid < high_water:
            raise self._file.error(
                label,
                f"id is outside 2..{high_water - 1}, the pages in use ({where})",
            )
        head = self._read(pgid, 1, where=where)
        found, flags, count, overflow = _HEADER.unpack_from(head)
        if found != pgid:
            raise self._file.error(
                label, f"header id is {found}, expected {pgid} ({where})"
            )
        if pgid + overflow >= high_water:
            raise self._file.error(
                label,
                f"overflow {overflow} runs past page {high_water - 1}, "
                f"the last page in use ({where})",
            )
        # Check the size before anything is allocated for the pages (a crafted
        # overflow count must fail at once, not after billions of page numbers).
        rest = self._read(pgid + 1, overflow, where=where) if overflow else b""
        self._visit(pgid, overflow, where=where)
        return _Page(label, flags, count, head + rest)

    def _read(self, pgid: int, pages: int, *, where: str) -> bytes:
        """Read ``pages`` whole pages from ``pgid``, refusing to read past the end."""
        page_size = self._meta.page_size
        offset, length = pgid * page_size, pages * page_size
        size = self._size
        data = self._file.read(offset, length) if offset + length <= size else b""
        if len(data) != length:
            raise self._file.error(
                f"page {pgid}",
                f"bytes {offset}..{offset + length} are past the end of the "
                f"{size}-byte file ({where})",
                _TRUNCATED,
            )
        return data

    def _visit(self, pgid: int, overflow: int, *, where: str) -> None:
        """Mark the pages of one node as read; reaching one twice is a cycle."""
        pages = range(pgid, pgid + overflow + 1)
        again = self._seen.intersection(pages)
        if again:
            raise self._file.error(
                f"page {pgid}",
                f"page {min(again)} is reached a second time ({where}): the tree "
                "has a cycle or shares pages",
            )
        self._seen.update(pages)

    def _branch(
        self,
        page: _Page,
        bounds: tuple[bytes | None, bytes | None],
        out: list[_Entry],
        *,
        depth: int,
    ) -> None:
        """Walk a branch page's children; each child's keys lie between two keys."""
        if page.count == 0:
            raise self._file.error(page.label, "branch page has no elements")
        elements = self._elements(page, _BRANCH)
        keys = [
            self._slice(page, index, pos, ksize)
            for index, (pos, ksize, _) in enumerate(elements)
        ]
        self._spend(sum(map(len, keys)), page.label)
        self._check_order(page, keys, bounds)

        # Child i holds keys from key i up to key i+1 (the parent's bound at the end).
        uppers = [*keys[1:], bounds[1]]
        for index, (_, _, child) in enumerate(elements):
            where = f"element {index} of branch {page.label}"
            child_bounds = (keys[index], uppers[index])
            self._node(child, child_bounds, out, depth=depth + 1, where=where)

    def _leaf(
        self,
        page: _Page,
        bounds: tuple[bytes | None, bytes | None],
        out: list[_Entry],
    ) -> None:
        """Append a leaf page's elements, with their keys and values, to ``out``."""
        keys: list[bytes] = []
        for index, (flags, pos, ksize, vsize) in enumerate(self._elements(page, _LEAF)):
            if flags & ~_BUCKET_VALUE:
                raise self._file.error(
                    page.label, f"element {index} has unknown flags 0x{flags:08x}"
                )
            data = self._slice(page, index, pos, ksize + vsize)
            # A nested bucket's bytes are charged when its own pages are read.
            self._spend(ksize if flags else ksize + vsize, page.label)
            keys.append(data[:ksize])
            out.append(_Entry(page.label, flags, data[:ksize], data[ksize:]))
        self._check_order(page, keys, bounds)

    def _elements(self, page: _Page, layout: struct.Struct) -> list[tuple[int, ...]]:
        """Unpack the element array after the header, which must fit the page."""
        end = _HEADER.size + page.count * layout.size
        if end > len(page.data):
            raise self._file.error(
                page.label,
                f"count {page.count} needs {end} bytes, the page has {len(page.data)}",
            )
        self._spend(end - _HEADER.size, page.label)
        return list(layout.iter_unpack(page.data[_HEADER.size : end]))

    def _slice(self, page: _Page, index: int, pos: int, length: int) -> bytes:
        """Return the bytes an element points at; pos counts from the element."""
        start = _HEADER.size + index * _ELEMENT_SIZE + pos
        if start + length > len(page.data):
            raise self._file.error(
                page.label,
                f"element {index} points at bytes {start}..{start + length}, "
                f"past the page's {len(page.data)}",
            )
        return page.data[start : start + length]

    def _check_order(
        self,
        page: _Page,
        keys: list[bytes],
        bounds: tuple[bytes | None, bytes | None],
    ) -> None:
        """Require non-empty keys, strictly ascending and inside the parent's bounds."""
        low, high = bounds
        for index, key in enumerate(keys):
            if not key:
                problem = "is empty"
            elif index and key <= keys[index - 1]:
                problem = f"is not above key {index - 1} ({keys[index - 1].hex()})"
            elif low is not None and key < low:
                problem = f"is below {low.hex()}, the parent's key for this page"
            elif high is not None and key >= high:
                problem = f"is not below {high.hex()}, the parent's next key"
            else:
                continue
            raise self._file.error(page.label, f"key {index} ({key.hex()}) {problem}")

    def _check_depth(self, depth: int, label: str) -> None:
        if depth > _MAX_DEPTH:
            raise self._file.error(
                label, f"more than {_MAX_DEPTH} levels of nested buckets and pages"
            )

    def _spend(self, length: int, label: str) -> None:
        """Charge bytes against the file size, which a sound tree never exceeds."""
        self._budget -= length
        if self._budget < 0:
            raise self._file.error(
                label,
                "the tree holds more bytes than the file: elements share bytes",
            )


def _show(names: tuple[bytes, ...]) -> str:
    """Render a bucket path for messages, e.g. 'v1/k8s.io/containers'."""
    if not names:
        return "(top level)"
    return repr(b"/".join(names).decode("utf-8", "backslashreplace"))

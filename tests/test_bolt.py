"""The stdlib BoltDB reader against files written by the real bbolt library.

Every file here is made by bbolt (through ``tests/rig/bolttool.py``); corruption tests
take such a file and change one field in its bytes. Live tests read while a bbolt
process commits to the same file and holds its exclusive lock.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import random
import signal
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubectl_crilinks.agent import bolt
from kubectl_crilinks.agent.bolt import BoltBusyError, BoltError, Bucket, read_tree
from tests.rig import bolttool
from tests.rig.bolttool import op, spec

pytestmark = pytest.mark.skipif(
    bolttool.missing_reason() is not None,
    reason=f"needs Go and bbolt to make real files: {bolttool.missing_reason()}",
)

# Corruption tests retry fast: the delay only matters for a live writer.
FAST: dict[str, Any] = {"retry_delay": 0.001}


def plain(bucket: Bucket) -> dict[str, Any]:
    """Return a Bucket in the shape of ``bolttool.decode``, for comparison."""
    return {
        "values": dict(bucket.values),
        "buckets": {name: plain(child) for name, child in bucket.buckets.items()},
        "sequence": bucket.sequence,
    }


def assert_reads_like_bbolt(path: Path) -> bolt.Tree:
    tree = read_tree(path)
    assert plain(tree.root) == bolttool.decode(bolttool.dump_db(path))
    return tree


def sub(bucket: Bucket, *names: bytes) -> Bucket:
    """Return a nested bucket that the test expects to exist."""
    found = bucket.bucket(*names)
    assert found is not None, names
    return found


def numbered(count: int, *, size: int = 20) -> dict[str, bytes]:
    return {f"key{i:06d}": (b"v%06d" % i).ljust(size, b".") for i in range(count)}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count inline pages, overflow pages and the deepest tree level a walk meets."""
    seen = {"inline": 0, "overflow": 0, "depth": 0}
    inline_page, page, node = (
        bolt._Walk._inline_page,
        bolt._Walk._page,
        bolt._Walk._node,
    )

    def spy_inline(self: bolt._Walk, *args: Any) -> bolt._Page:
        seen["inline"] += 1
        return inline_page(self, *args)

    def spy_page(self: bolt._Walk, pgid: int, **kwargs: Any) -> bolt._Page:
        found = page(self, pgid, **kwargs)
        seen["overflow"] += len(found.data) > self._meta.page_size
        return found

    def spy_node(self: bolt._Walk, *args: Any, depth: int, **kwargs: Any) -> None:
        seen["depth"] = max(seen["depth"], depth)
        node(self, *args, depth=depth, **kwargs)

    monkeypatch.setattr(bolt._Walk, "_inline_page", spy_inline)
    monkeypatch.setattr(bolt._Walk, "_page", spy_page)
    monkeypatch.setattr(bolt._Walk, "_node", spy_node)
    return seen


# ---- reading what bbolt wrote


def test_read_tree_matches_bbolt_dump_of_small_db(db: Path) -> None:
    bolttool.build_db(db, spec(buckets={"v1": spec({"version": b"\x06"})}))
    tree = assert_reads_like_bbolt(db)
    assert tree.root.bucket(b"v1") == Bucket({}, {b"version": b"\x06"}, 0)
    assert tree.path == str(db) and tree.page_size == os.sysconf("SC_PAGE_SIZE")
    assert tree.txid == 2  # bbolt's init writes txids 0 and 1, build commits once


def test_read_tree_reads_a_database_without_buckets(db: Path) -> None:
    bolttool.build_db(db, spec())
    assert read_tree(db).root == Bucket({}, {}, 0)


def test_read_tree_reads_nested_and_inline_buckets(
    db: Path, spy: dict[str, int]
) -> None:
    small = spec({"a": "1", "b": "2"}, sequence=3)
    big = spec(numbered(300), buckets={"deep": spec(buckets={"deeper": small})})
    bolttool.build_db(
        db, spec(buckets={"top": spec(buckets={"small": small, "big": big})})
    )

    tree = assert_reads_like_bbolt(db)
    assert tree.root.bucket(b"top", b"small") == Bucket({}, {b"a": b"1", b"b": b"2"}, 3)
    assert tree.root.bucket(b"top", b"big", b"deep", b"deeper", b"a") is None
    assert spy["inline"] == 2  # top/small and .../deeper; the others have pages


def test_read_tree_reads_empty_buckets(db: Path, spy: dict[str, int]) -> None:
    bolttool.build_db(
        db, spec(buckets={"empty": spec(), "outer": spec(buckets={"e": spec()})})
    )
    tree = assert_reads_like_bbolt(db)
    assert tree.root.bucket(b"empty") == Bucket({}, {}, 0)
    assert tree.root.bucket(b"outer", b"e") == Bucket({}, {}, 0)
    assert spy["inline"] == 2


def test_read_tree_reads_values_larger_than_a_page(
    db: Path, spy: dict[str, int]
) -> None:
    rng = random.Random(7)
    values = {f"v{size}": rng.randbytes(size) for size in (4000, 4097, 10_000, 300_000)}
    bolttool.build_db(db, spec(buckets={"blobs": spec(values)}))
    tree = assert_reads_like_bbolt(db)
    assert sub(tree.root, b"blobs").get(b"v300000") == values["v300000"]
    assert spy["overflow"] >= 1  # bbolt keeps four values in one leaf node


def test_read_tree_reads_thousands_of_keys_over_several_levels(
    db: Path, spy: dict[str, int]
) -> None:
    bolttool.build_db(
        db, spec(buckets={"many": spec(numbered(20_000))}), page_size=1024
    )
    tree = assert_reads_like_bbolt(db)
    assert len(sub(tree.root, b"many").values) == 20_000
    assert spy["depth"] >= 3  # root leaf, then at least two branch levels


def test_read_tree_keeps_bucket_sequences(db: Path) -> None:
    top = spec(
        buckets={
            "inline": spec(sequence=7),
            "paged": spec(numbered(500), sequence=2**64 - 1),
        },
        sequence=42,
    )
    bolttool.build_db(db, spec(buckets={"seq": top}))
    tree = assert_reads_like_bbolt(db)
    assert sub(tree.root, b"seq").sequence == 42
    assert sub(tree.root, b"seq", b"inline").sequence == 7
    assert sub(tree.root, b"seq", b"paged").sequence == 2**64 - 1


def test_read_tree_reads_binary_keys_and_empty_values(db: Path) -> None:
    keys = [b"\x00", b"\x00\x00", b"a/b", b"/", b"\xff" * 40, bytes(range(256))]
    values = {key: key[::-1] for key in keys} | {b"empty": b""}
    names = {b"\x00/\xff": spec(values), b"k8s.io/v1": spec({b"\x01": b"\x02"})}
    bolttool.build_db(db, spec(buckets=names))
    tree = assert_reads_like_bbolt(db)
    assert dict(sub(tree.root, b"\x00/\xff").values) == values


@pytest.mark.parametrize("page_size", [512, 1024, 16384, 65536])
def test_read_tree_reads_any_page_size(db: Path, page_size: int) -> None:
    blobs = spec({"big": b"x" * 3 * page_size, "small": "s"})
    bolttool.build_db(
        db, spec(buckets={"b": blobs, "n": spec(numbered(2000))}), page_size=page_size
    )
    assert assert_reads_like_bbolt(db).page_size == page_size


def test_read_tree_sees_the_newest_commit(db: Path) -> None:
    bolttool.build_db(db, spec(buckets={"a": spec(numbered(1000)), "gone": spec()}))
    bolttool.apply(
        db,
        [
            op("delete", ["a"], "key000005"),
            op("put", ["a"], "key000006", b"changed"),
            op("create-bucket", ["a"], "sub"),
            op("put", ["a", "sub"], "k", "v"),
            op("set-sequence", ["a", "sub"], sequence=9),
            op("delete-bucket", [], "gone"),
        ],
    )
    tree = assert_reads_like_bbolt(db)
    assert tree.txid == 3
    assert sub(tree.root, b"a").get(b"key000006") == b"changed"
    assert tree.root.bucket(b"a", b"sub") == Bucket({}, {b"k": b"v"}, 9)


def test_bucket_lookups_return_none_for_missing_names(db: Path) -> None:
    bolttool.build_db(db, spec(buckets={"a": spec({"k": "v"}, buckets={"b": spec()})}))
    root = read_tree(db).root
    assert root.bucket() is root
    assert root.bucket(b"a", b"nope") is None and root.bucket(b"a", b"b", b"c") is None
    assert sub(root, b"a").get(b"k") == b"v"
    assert sub(root, b"a").get(b"b") is None  # a bucket is not a value


def test_read_tree_raises_oserror_for_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_tree(tmp_path / "nothing.db")


# ---- damaged files: one field changed in a real file

META = {  # field: (offset in a meta page, struct format)
    "magic": (16, "<I"),
    "version": (20, "<I"),
    "checksum": (72, "<Q"),
}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things sit in the file made by the ``damaged`` fixture.

    The top level's root page ``top`` is a leaf whose one element is the bucket
    "big"; that bucket's root page ``branch`` is a branch page whose first child
    ``leaf`` is a leaf page of keys ``key000000``...
    """

    path: Path
    page_size: int
    high_water: int
    top: int
    branch: int
    leaf: int

    def read(self, offset: int, fmt: str) -> int:
        with self.path.open("rb") as file:
            file.seek(offset)
            return int(struct.unpack(fmt, file.read(struct.calcsize(fmt)))[0])

    def poke(self, offset: int, fmt: str, value: int) -> None:
        with self.path.open("r+b") as file:
            file.seek(offset)
            file.write(struct.pack(fmt, value))

    def meta(self, slot: int, field: str) -> tuple[int, str]:
        offset, fmt = META[field]
        return slot * self.page_size + offset, fmt

    def element(self, pgid: int, index: int) -> int:
        return pgid * self.page_size + 16 + 16 * index

    def key(self, pgid: int, index: int) -> int:
        """Offset of the first key byte of a leaf element (pos is at +4)."""
        element = self.element(pgid, index)
        return element + self.read(element + 4, "<I")

    def child(self, pgid: int, index: int) -> int:
        return self.read(self.element(pgid, index) + 8, "<Q")


def layout_of(path: Path) -> Layout:
    """Find the pages of a file with one bucket "big" of 2000 keys."""
    page_size = struct.unpack("<I", path.read_bytes()[24:28])[0]
    base = Layout(path, page_size, 0, 0, 0, 0)
    slot = max((0, 1), key=lambda s: base.read(s * page_size + 64, "<Q"))
    top = base.read(slot * page_size + 32, "<Q")
    value = base.key(top, 0) + len(b"big")
    branch = base.read(value, "<Q")
    layout = dataclasses.replace(
        base,
        high_water=base.read(slot * page_size + 56, "<Q"),
        top=top,
        branch=branch,
        leaf=base.child(branch, 0),
    )
    assert layout.read(layout.branch * page_size + 8, "<H") == 0x01  # a branch page
    return layout


@pytest.fixture
def damaged(db: Path) -> Layout:
    bolttool.build_db(db, spec(buckets={"big": spec(numbered(2000))}), page_size=4096)
    return layout_of(db)


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail a test that runs 30 s instead of letting a hang stall the suite."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("read_tree hung")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


Pokes = Callable[[Layout], list[tuple[int, str, int]]]
Parts = Callable[[Layout], list[str]]


def in_both_metas(field: str, change: Callable[[int], int]) -> Pokes:
    def pokes(at: Layout) -> list[tuple[int, str, int]]:
        places = [at.meta(slot, field) for slot in (0, 1)]
        return [(off, fmt, change(at.read(off, fmt))) for off, fmt in places]

    return pokes


DAMAGE = [
    pytest.param(
        in_both_metas("magic", lambda _: 0x12345678),
        lambda at: [
            "no valid meta page",
            "meta page 0: magic is 0x12345678, expected 0xed0cdaed",
            "meta page 1: no page with the magic at a page size from 1024",
        ],
        id="bad-magic-in-both-metas",
    ),
    pytest.param(
        in_both_metas("checksum", lambda old: old ^ 1),
        lambda at: [
            "no valid meta page",
            "meta page 0: checksum is 0x",
            "meta page 1 (at byte 4096): checksum is 0x",
        ],
        id="bad-checksum-in-both-metas",
    ),
    pytest.param(
        lambda at: [(at.element(at.branch, 0) + 8, "<Q", at.high_water)],
        lambda at: [
            f"page {at.high_water}: id is outside 2..{at.high_water - 1}",
            f"(element 0 of branch page {at.branch})",
        ],
        id="branch-element-past-high-water-mark",
    ),
    pytest.param(
        lambda at: [(at.leaf * at.page_size, "<Q", at.leaf + 1)],
        lambda at: [f"page {at.leaf}: header id is {at.leaf + 1}, expected {at.leaf}"],
        id="page-id-mismatch",
    ),
    pytest.param(
        lambda at: [(at.branch * at.page_size + 8, "<H", 0x20)],
        lambda at: [
            (
                f"page {at.branch}: flags are 0x0020, expected 0x0001 (branch) or "
                "0x0002 (leaf) (root of bucket 'big')"
            )
        ],
        id="unknown-page-flags",
    ),
    pytest.param(
        lambda at: [(at.element(at.branch, 1) + 8, "<Q", at.branch)],
        lambda at: [
            (
                f"page {at.branch}: page {at.branch} is reached a second time "
                f"(element 1 of branch page {at.branch}): the tree has a cycle"
            )
        ],
        id="branch-pointing-back-to-itself",
    ),
    pytest.param(
        lambda at: [(at.key(at.leaf, 1), "<B", 0x00)],
        lambda at: [
            f"page {at.leaf}: key 1 (00",
            f"is not above key 0 ({b'key000000'.hex()})",
        ],
        id="keys-out-of-order",
    ),
    pytest.param(
        lambda at: [(at.key(at.leaf, 0), "<B", ord("a"))],
        lambda at: [
            (
                f"page {at.leaf}: key 0 ({b'aey000000'.hex()}) is below "
                f"{b'key000000'.hex()}, the parent's key for this page"
            )
        ],
        id="key-below-its-branch-key",
    ),
    pytest.param(
        lambda at: [(at.leaf * at.page_size + 12, "<I", 0xFFFFFF)],
        lambda at: [
            f"page {at.leaf}: overflow 16777215 runs past page {at.high_water - 1}"
        ],
        id="overflow-past-high-water-mark",
    ),
    pytest.param(
        lambda at: [(at.leaf * at.page_size + 10, "<H", 0xFFFF)],
        lambda at: [
            f"page {at.leaf}: count 65535 needs 1048576 bytes, the page has 4096"
        ],
        id="count-larger-than-page",
    ),
    pytest.param(
        lambda at: [(at.element(at.leaf, 0), "<I", 0x04)],
        lambda at: [f"page {at.leaf}: element 0 has unknown flags 0x00000004"],
        id="unknown-leaf-element-flags",
    ),
    pytest.param(
        lambda at: [(at.element(at.leaf, 0) + 4, "<I", 0xFFFF)],
        lambda at: [
            f"page {at.leaf}: element 0 points at bytes 65551..",
            "past the page's 4096",
        ],
        id="element-pointing-past-its-page",
    ),
    pytest.param(
        lambda at: [(at.element(at.top, 0) + 12, "<I", 8)],
        lambda at: [
            f"page {at.top}: bucket 'big' has a 8-byte value, a bucket header needs 16"
        ],
        id="bucket-value-shorter-than-its-header",
    ),
]


@pytest.mark.parametrize(("pokes", "parts"), DAMAGE)
def test_read_tree_names_file_and_field_of_damage(
    damaged: Layout, deadline: None, pokes: Pokes, parts: Parts
) -> None:
    for offset, fmt, value in pokes(damaged):
        damaged.poke(offset, fmt, value)
    with pytest.raises(BoltError) as caught:
        read_tree(damaged.path, **FAST)
    message = str(caught.value)
    assert type(caught.value) is BoltError
    assert message.startswith(f"{str(damaged.path)!r}: ")
    for part in parts(damaged):
        assert part in message
    assert "run 'bbolt check COPY'" in message


def test_read_tree_names_a_truncated_file(damaged: Layout) -> None:
    cut = damaged.top * damaged.page_size
    os.truncate(damaged.path, cut)
    with pytest.raises(BoltError, match="truncated") as caught:
        read_tree(damaged.path, **FAST)
    assert str(caught.value).startswith(
        f"{str(damaged.path)!r}: page {damaged.top}: bytes {cut}..{cut + 4096} are "
        f"past the end of the {cut}-byte file (root of bucket (top level))"
    )


@pytest.mark.parametrize(
    ("content", "parts"),
    [
        pytest.param(b"", ["file: empty (0 bytes)", "never initialised"], id="empty"),
        pytest.param(
            bytes(16384),
            [
                "meta page 0: magic is 0x0, expected 0xed0cdaed",
                "no page with the magic",
            ],
            id="zeros",
        ),
        pytest.param(
            bytes(16) + bolt.MAGIC.to_bytes(4, "little"),
            ["meta page 0: the file ends 20 bytes into it", "truncated"],
            id="shorter-than-a-meta-page",
        ),
    ],
)
def test_read_tree_rejects_files_that_are_not_boltdb(
    db: Path, content: bytes, parts: list[str]
) -> None:
    db.write_bytes(content)
    with pytest.raises(BoltError) as caught:
        read_tree(db, **FAST)
    assert str(caught.value).startswith(f"{str(db)!r}: ")
    for part in parts:
        assert part in str(caught.value)


def test_read_tree_names_a_big_endian_file(damaged: Layout) -> None:
    offset, fmt = damaged.meta(0, "magic")
    damaged.poke(offset, ">I", damaged.read(offset, fmt))
    with pytest.raises(BoltError) as caught:
        read_tree(damaged.path, **FAST)
    assert "meta page 0: magic reads 0xedda0ced" in str(caught.value)
    assert "written on a big-endian machine" in str(caught.value)


# ---- choosing between the two meta pages


@pytest.mark.parametrize(
    ("field", "change"),
    [
        pytest.param("checksum", lambda old: old ^ 1, id="checksum"),
        pytest.param("version", lambda old: 3, id="version"),
        pytest.param("magic", lambda old: 0, id="magic"),
    ],
)
def test_read_tree_falls_back_to_older_meta_when_newer_meta_bad(
    damaged: Layout, field: str, change: Callable[[int], int]
) -> None:
    before = bolttool.decode(bolttool.dump_db(damaged.path))
    bolttool.apply(damaged.path, [op("delete-bucket", [], "big")])  # txid 3, meta 1
    offset, fmt = damaged.meta(1, field)
    damaged.poke(offset, fmt, change(damaged.read(offset, fmt)))

    tree = read_tree(damaged.path)
    assert tree.txid == 2
    assert plain(tree.root) == before


def test_read_tree_finds_page_size_from_meta_1_when_meta_0_bad(db: Path) -> None:
    bolttool.build_db(db, spec(buckets={"big": spec(numbered(2000))}), page_size=16384)
    bolttool.apply(db, [op("put", ["big"], "new", "value")])  # txid 3, meta 1
    at = layout_of(db)
    offset, fmt = at.meta(0, "checksum")
    at.poke(offset, fmt, at.read(offset, fmt) ^ 1)

    tree = read_tree(db)
    assert (tree.page_size, tree.txid) == (16384, 3)
    assert sub(tree.root, b"big").get(b"new") == b"value"


def test_read_tree_retries_a_damaged_read_before_reporting_it(
    damaged: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    damaged.poke(damaged.leaf * damaged.page_size, "<Q", damaged.leaf + 1)
    caplog.set_level("DEBUG", logger=bolt.__name__)
    with pytest.raises(BoltError, match="header id is"):
        read_tree(damaged.path, retries=3, retry_delay=0)
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert [message.split(",")[0] for message in retried] == [
        "read 1 of 4 failed",
        "read 2 of 4 failed",
        "read 3 of 4 failed",
    ]
    assert all(str(damaged.path) in message for message in retried)


# ---- reading while bbolt commits


def check_churn(tree: bolt.Tree) -> int:
    """Check the invariants boltedit's churn keeps after each commit; return gen."""
    churn = tree.root.bucket(b"churn")
    assert churn is not None
    gen = int(churn.get(b"gen") or b"")
    stamp = str(gen).encode()

    items = churn.bucket(b"items")
    assert items is not None and not items.buckets
    assert (len(items.values), items.sequence) == (int(churn.get(b"n") or b""), gen)
    assert all(value.startswith(stamp + b":") for value in items.values.values())

    subs = churn.bucket(b"sub")
    assert subs is not None and not subs.values
    assert len(subs.buckets) == int(churn.get(b"nsub") or b"")
    for child in subs.buckets.values():
        assert child.get(b"gen") == stamp
        inner = child.bucket(b"inner")
        assert inner is None or inner.get(b"gen") == stamp
    return gen


@dataclasses.dataclass
class LiveReads:
    reads: int = 0
    busy: int = 0
    busy_message: str = ""
    gens: list[int] = dataclasses.field(default_factory=list)


def read_while_churning(
    db: Path, *, seconds: float, retries: int, pause: float
) -> LiveReads:
    """Read ``db`` in a loop while boltedit commits to it; check every result."""
    bolttool.build_db(db, spec())
    writer = bolttool.churn(db, 1_000_000, pause=pause)
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n", (
            writer.stderr and writer.stderr.read()
        )
        assert_locked(db)
        seen = LiveReads()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            seen.reads += 1
            try:
                tree = read_tree(db, retries=retries, retry_delay=0.01)
            except BoltBusyError as busy:
                seen.busy += 1
                seen.busy_message = str(busy)
                continue
            seen.gens.append(check_churn(tree))
        assert writer.poll() is None, writer.stderr and writer.stderr.read()
    finally:
        writer.terminate()
        writer.wait(timeout=10)
    assert seen.gens == sorted(seen.gens)  # commits only move forward
    return seen


def assert_locked(db: Path) -> None:
    """Check that the writer holds the lock our reader must never wait for."""
    with db.open("rb") as file, pytest.raises(BlockingIOError):
        fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)


def test_read_tree_during_commits_returns_only_committed_states(db: Path) -> None:
    seen = read_while_churning(db, seconds=3, retries=5, pause=0.01)
    assert len(set(seen.gens)) > 5
    assert seen.busy * 2 < seen.reads  # retries absorb most overlaps


def test_read_tree_during_commits_never_reports_damage_that_is_a_commit(
    db: Path,
) -> None:
    # No retries and no pause: most reads overlap a commit and must say "busy".
    seen = read_while_churning(db, seconds=3, retries=0, pause=0.0)
    assert seen.busy > 0 and seen.gens
    assert seen.busy_message.startswith(f"{str(db)!r}: a newer commit replaced")


def test_read_tree_after_churn_matches_bbolt_dump(db: Path) -> None:
    bolttool.build_db(db, spec())
    writer = bolttool.churn(db, 300)
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0 and out.endswith("done 300\n"), err
    tree = assert_reads_like_bbolt(db)
    assert check_churn(tree) == 300


# ---- speed


def containerd_like(containers: int) -> dict[str, Any]:
    """A meta.db-shaped tree: one bucket per container, with labels and a spec."""
    rng = random.Random(3)
    tree: dict[str, dict[str, Any]] = {}
    for _ in range(containers):
        labels = {f"io.kubernetes.label{j}": f"value{j}" for j in range(6)}
        values: dict[str, str | bytes] = {
            "image": "docker.io/library/nginx:1",
            "spec": rng.randbytes(3000),
        }
        runtime = spec({"name": "io.containerd.runc.v2", "options": rng.randbytes(40)})
        tree[rng.randbytes(32).hex()] = spec(
            values, buckets={"labels": spec(labels), "runtime": runtime}
        )
    namespace = spec(buckets={"containers": spec(buckets=tree)})
    return spec(
        buckets={"v1": spec({"version": b"\x06"}, buckets={"k8s.io": namespace})}
    )


def test_read_tree_reads_5_mb_of_pages_well_under_a_second(db: Path) -> None:
    bolttool.build_db(db, containerd_like(1200))
    used = used_bytes(db)
    assert 4_500_000 < used < 6_500_000

    started = time.perf_counter()
    tree = read_tree(db)
    elapsed = time.perf_counter() - started
    assert len(sub(tree.root, b"v1", b"k8s.io", b"containers").buckets) == 1200
    assert elapsed < 1.0, f"read_tree took {elapsed:.3f}s for {used} bytes"


def used_bytes(path: Path) -> int:
    """Return the bytes in use (high-water mark times page size) per meta 0."""
    head = path.read_bytes()[:4096]
    page_size, high_water = struct.unpack_from("<I", head, 24)[0], head[56:64]
    return int(page_size) * int.from_bytes(high_water, "little")

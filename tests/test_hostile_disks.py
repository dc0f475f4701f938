"""A mounted node disk that fights back: FIFOs, crafted BoltDB pages, links out of
the disk, configs containerd accepts but nobody expects. Each case comes from an
attack that once hung the agent, crashed its report, or read outside the disk.

The disks are copies of real containerd state (made in a private node, containerd
stopped), altered the way the attack did, and read with ``--host-root``.
"""

from __future__ import annotations

import os
import shutil
import struct

import pytest

from tests.agent_helpers import findings_by_path, of_kind
from tests.test_discovery import IMAGE, LAYERS, agent_on_disk, disk_with  # noqa: F401
from tests.test_discovery import stopped_state  # noqa: F401 - a fixture

ROOT = "var/lib/containerd"
META_DB = f"{ROOT}/io.containerd.metadata.v1.bolt/meta.db"
OVERLAY = f"{ROOT}/io.containerd.snapshotter.v1.overlayfs"


@pytest.fixture
def disk(stopped_state, tmp_path):  # noqa: F811 - the fixture above
    return disk_with(tmp_path, stopped_state, "/var/lib/containerd")


def agent(disk, *args):
    return agent_on_disk(disk, "--pod", "web", "--namespace", "shop",
                         "--time-budget", "20", *args)


@pytest.mark.parametrize("where", [META_DB, "etc/hostname", "etc/containerd/config.toml"])
def test_a_fifo_in_place_of_a_file_does_not_block(disk, where):
    path = disk / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    os.mkfifo(path)

    records = agent(disk)

    assert records[-1]["kind"] == "summary"
    if where == META_DB:
        target = of_kind(records, "target")[0]
        assert target["status"] == "not-inspected"
        assert "not a regular file" in target["reason"]


def test_a_crafted_overflow_count_fails_fast_as_a_damaged_file(disk):
    data = bytearray((disk / META_DB).read_bytes())
    meta = struct.Struct("<IIIIQQQQQQ")
    page_size = meta.unpack_from(data, 16)[2]
    for slot in (0, 1):
        fields = list(meta.unpack_from(data, slot * page_size + 16))
        fields[7] = 1 << 40  # a high-water mark far past the file
        fields[9] = _fnv1a(struct.pack("<IIIIQQQQQ", *fields[:9]))
        meta.pack_into(data, slot * page_size + 16, *fields)
        struct.pack_into("<I", data, fields[4] * page_size + 12, 0xFFFFFFFF)
    (disk / META_DB).write_bytes(data)

    records = agent(disk)

    target = of_kind(records, "target")[0]
    assert target["status"] == "not-inspected"
    assert "past the end" in target["reason"]


def test_a_snapshots_folder_linked_out_of_the_disk_is_not_followed(disk, tmp_path):
    outside = tmp_path / "outside-the-disk"
    shutil.copytree(disk / OVERLAY / "snapshots", outside, symlinks=True)
    shutil.rmtree(disk / OVERLAY / "snapshots")
    (disk / OVERLAY / "snapshots").symlink_to(outside)  # absolute: means <disk>/...

    records = agent(disk)

    layers = of_kind(records, "target")[0]["layers"]
    assert layers and not any(layer["present"] for layer in layers)
    assert "/etc/broken" not in findings_by_path(records)  # read from outside: never
    assert {f["check"] for f in of_kind(records, "finding")} == {"layer.dir-missing"}


def test_a_layer_whose_files_are_a_link_is_a_missing_folder(disk, tmp_path):
    layer = sorted((disk / OVERLAY / "snapshots").iterdir())[0]
    shutil.rmtree(layer / "fs")
    (layer / "fs").symlink_to("/")

    records = agent(disk)

    missing = [f for f in of_kind(records, "finding") if f["check"] == "layer.dir-missing"]
    assert len(missing) == 1
    assert records[-1]["complete"] is False


def test_configs_containerd_accepts_do_not_cost_the_report(disk):
    conf = disk / "etc/containerd"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "config.toml").write_text(
        'version = 2\nimports = ["/etc/containerd/*.toml", "/etc/containerd/conf.d/*"]\n'
        'root = 5\n[grpc]\n  address = ["not", "a", "path"]\n')
    (conf / "conf.d" / "x\x1b]0;PWNED\x07.toml").write_text("this is = = not toml")

    records = agent(disk)

    target = of_kind(records, "target")[0]
    assert target["status"] == "inspected"
    assert target["address"] == "/run/containerd/containerd.sock"
    assert "/etc/broken" in findings_by_path(records)


def _fnv1a(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def test_warnings_that_quote_a_hostile_file_name_reach_the_terminal_escaped(disk):
    import subprocess
    import sys

    conf = disk / "etc/containerd"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "config.toml").write_text('version = 2\nimports = ["conf.d/*"]\n')
    (conf / "conf.d" / "x\x1b]0;PWNED\x07\x1b[31m.toml").write_text("not = = toml")

    done = subprocess.run(
        [sys.executable, "-c", "from kubectl_crilinks.cli import main; main()",
         "inspect", "pod/web", "-n",
         "shop", "--local", "--host-root", str(disk)],
        capture_output=True, text=True, timeout=120)

    assert "is not valid TOML" in done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr

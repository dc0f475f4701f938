"""What ``inspect`` prints: every ``-o`` format, the filters, progress and colour.

The formats and filters are checked on a real inspection (a pod with a dangling link
and a loop, read from a real containerd); progress and colour through the real
``kubectl`` with a terminal (a pty) on the stream that should show them.
"""

from __future__ import annotations

import json
import os
import pathlib
import pty
import subprocess
from typing import Any

import pytest
import yaml

from tests import plugin_records as rec
from tests.plugin_cluster import (
    EXPECTED,
    KUBECTL,
    Cluster,
    cluster,
    inspect,
    kubectl_env,
    node_cluster,
    plugin,
    records_of,
    target_pod,
    wait_no_debug_pod,
)

__all__ = ["cluster", "node_cluster"]  # fixtures, used by name

NodeCluster = tuple[Any, str, Any]


def test_every_output_format_carries_the_same_findings(
    node_cluster: NodeCluster,
) -> None:
    server, kubeconfig, _ = node_cluster
    base = ["pod/web", "--kubeconfig", kubeconfig]

    as_json = inspect(*base, "-o", "json")
    assert as_json.exit_code == 1, as_json.stderr
    document = json.loads(as_json.stdout)
    assert {f["path"]: f["check"] for f in document["findings"]} == EXPECTED

    as_yaml = inspect(*base, "-o", "yaml")
    assert as_yaml.exit_code == 1
    assert yaml.safe_load(as_yaml.stdout)["findings"] == document["findings"]

    as_jsonl = inspect(*base, "-o", "jsonl")
    records = records_of(as_jsonl.stdout)
    found = {r["path"]: r["check"] for r in records if r["kind"] == "finding"}
    assert found == EXPECTED and records[-1]["kind"] == "summary"

    wide = inspect(*base, "-o", "wide")
    assert wide.exit_code == 1
    assert "shop/web/app on node node-a, image example.com/broken:1: layers" in (
        wide.stdout
    )
    header = next(line for line in wide.stdout.splitlines() if "SEVERITY" in line)
    assert "TARGET" in header.split()
    row = next(
        line for line in wide.stdout.splitlines() if " /etc/ssl/cert.pem " in line
    )
    assert "certs/missing.crt" in row
    assert wait_no_debug_pod(server) == []


def test_severity_fail_on_checks_ignore_and_baseline_decide_what_counts(
    node_cluster: NodeCluster, tmp_path: pathlib.Path
) -> None:
    server, kubeconfig, _ = node_cluster
    base = ["pod/web", "--kubeconfig", kubeconfig]

    # --fail-on: the same two warnings fail the command, or not.
    assert inspect(*base, "--fail-on", "error").exit_code == 0
    assert inspect(*base, "--fail-on", "none").exit_code == 0

    # --severity error: nothing at error, the warnings are counted as hidden.
    hidden = inspect(*base, "--severity", "error")
    assert "2 below error not shown (see them with --severity info)" in hidden.stdout
    assert " /etc/ssl/cert.pem " not in hidden.stdout

    # --checks: only the loop.
    loop = inspect(*base, "--checks", "symlink.loop", "-o", "json")
    assert [f["check"] for f in json.loads(loop.stdout)["findings"]] == ["symlink.loop"]
    assert json.loads(loop.stdout)["summary"]["suppressed"]["checks"] == 1

    # --ignore CHECK:PATH accepts the certificate link, not the class.
    accepted = inspect(*base, "--ignore", "symlink.dangling:/etc/ssl/*")
    assert accepted.exit_code == 1
    assert " /etc/ssl/cert.pem " not in accepted.stdout
    assert "Left out: 1 by --ignore." in accepted.stdout

    # --baseline: a report saved earlier makes both findings old news.
    saved = tmp_path / "baseline.json"
    saved.write_text(inspect(*base, "-o", "json", "--severity", "info").stdout)
    again = inspect(*base, "--baseline", str(saved))
    assert again.exit_code == 0, again.stdout
    assert "Left out: 2 by --baseline." in again.stdout
    assert wait_no_debug_pod(server) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["--checks", "nope.*"], "--checks 'nope.*' matches no check id"),
        pytest.param(["--ignore", "symlink.loop:etc"], "must start with / or *"),
        pytest.param(["--baseline", "/no/such/file"], "--baseline '/no/such/file'"),
        pytest.param(["--agent-memory", "lots"], "is not a memory quantity"),
        pytest.param(["--parallel", "0"], "--parallel"),
        pytest.param(["--request-timeout", "soon"], "--request-timeout 'soon'"),
    ],
)
def test_bad_filter_and_limit_values_are_usage_errors(
    args: list[str], words: str
) -> None:
    result = inspect("pod/web", *args)
    assert result.exit_code == 2, result.stderr
    assert words in result.stderr


# -- progress and colour, on a terminal ---------------------------------------------------


def run_with_tty(
    args: list[str], *, tty: str, tmp: pathlib.Path, **env: str
) -> tuple[int, str, str]:
    """Run the real kubectl with a pty as stdout or stderr; return what each got."""
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    plugin()
    leader, follower = pty.openpty()
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, tty: follower}
    run = subprocess.Popen(
        [KUBECTL, *args],
        env=kubectl_env(tmp, **env),
        stdout=streams["stdout"],
        stderr=streams["stderr"],
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO once the last writer is gone
            break
        if not chunk:
            break
        seen += chunk
    out, err = run.communicate(timeout=120)
    os.close(leader)
    text = seen.decode(errors="replace")
    piped = (out or err or b"").decode(errors="replace")
    return (
        run.returncode,
        (text if tty == "stdout" else piped),
        (text if tty == "stderr" else piped),
    )


def test_progress_shows_on_a_terminal_and_not_with_quiet(
    cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    base = ["crilinks", "inspect", "pod/web", "--kubeconfig", kubeconfig]

    code, _, err = run_with_tty(base, tty="stderr", tmp=tmp_path)
    assert code == 3
    assert "node-a: starting the debug pod" in err
    assert "running the agent for pod shop/web on node 'node-a'" in err
    assert err.rstrip("\r\n").endswith("\x1b[K")  # the line is cleared at the end

    code, _, quiet = run_with_tty([*base, "-q"], tty="stderr", tmp=tmp_path)
    assert code == 3 and "starting the debug pod" not in quiet


def saved_findings(tmp: pathlib.Path) -> pathlib.Path:
    findings = [rec.dangling(), rec.dangling(path="/e", severity="error")]
    path = tmp / "node-a.jsonl"
    path.write_text(rec.lines(rec.stream(findings=findings)))
    return path


def test_colour_on_a_terminal_unless_no_color(tmp_path: pathlib.Path) -> None:
    args = ["crilinks", "render", str(saved_findings(tmp_path))]
    code, out, _ = run_with_tty(args, tty="stdout", tmp=tmp_path)
    assert code == 1
    assert "\x1b[31merror\x1b[0m" in out and "\x1b[33mwarning\x1b[0m" in out

    code, plain, _ = run_with_tty(args, tty="stdout", tmp=tmp_path, NO_COLOR="1")
    assert code == 1 and "\x1b[" not in plain and "error" in plain

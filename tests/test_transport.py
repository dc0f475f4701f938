"""Reading the agent's records from an exec stream, and telling a cut stream apart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubectl_crilinks import launcher, transport
from kubectl_crilinks.errors import AgentError
from tests import plugin_records as rec

NO_CONNECTION: Any = None  # the exec stream is replaced: no cluster is contacted
POD = launcher.DebugPod(
    name="crilinks-node-a-abcde",
    namespace="kube-system",
    node="node-a",
    image="docker.io/library/python:3.9-alpine",
)
SUCCESS = json.dumps({"metadata": {}, "status": "Success"}).encode()


def exit_status(code: int) -> bytes:
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    ).encode()


class ScriptedSocket:
    """A WSClient stand-in: each update() delivers the next batch of frames."""

    def __init__(self, frames: list[tuple[int, bytes]]) -> None:
        self._frames = list(frames)
        self._channels: dict[int, bytes] = {}
        self.open = True
        self.closed = False

    def is_open(self) -> bool:
        return self.open

    def update(self, timeout: float = 0) -> None:
        if not self._frames:
            self.open = False
            return
        channel, data = self._frames.pop(0)
        self._channels[channel] = self._channels.get(channel, b"") + data

    def read_channel(self, channel: int, timeout: float = 0) -> bytes:
        return self._channels.pop(channel, b"")

    def close(self) -> None:
        self.closed = True


def run(
    frames: list[tuple[int, bytes]], monkeypatch: pytest.MonkeyPatch
) -> tuple[transport.AgentRun, list[dict[str, Any]], ScriptedSocket]:
    socket = ScriptedSocket(frames)
    monkeypatch.setattr(transport, "_open", lambda *a, **k: socket)
    seen: list[dict[str, Any]] = []
    result = transport.run_agent(
        NO_CONNECTION,
        pod=POD,
        args=[],
        on_record=seen.append,
        timeout=30,
        where="pod shop/web on node 'node-a'",
    )
    return result, seen, socket


def chopped(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(1, data[i : i + size]) for i in range(0, len(data), size)]


def test_records_split_across_frames_arrive_whole_and_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = rec.stream(findings=[rec.dangling(), rec.dangling(path="/b")], progress=2)
    frames = chopped(rec.lines(records).encode(), 7) + [
        (2, b"note: slow disk\n"),
        (3, SUCCESS),
    ]
    result, seen, socket = run(frames, monkeypatch)
    assert [r["seq"] for r in seen] == list(range(1, len(records) + 1))
    assert result.summary is not None and result.summary["records"] == len(records) - 1
    assert result.exit_code == 0 and "slow disk" in result.stderr
    assert socket.closed


def test_stream_cut_before_the_summary_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = rec.stream(findings=[rec.dangling()])[:-1]
    seen: list[dict[str, Any]] = []
    socket = ScriptedSocket(chopped(rec.lines(records).encode(), 50))
    monkeypatch.setattr(transport, "_open", lambda *a, **k: socket)
    with pytest.raises(AgentError) as caught:
        transport.run_agent(
            NO_CONNECTION,
            pod=POD,
            args=[],
            on_record=seen.append,
            timeout=30,
            where="pod shop/web on node 'node-a'",
        )
    message = str(caught.value)
    assert "pod shop/web" in message and "without its summary" in message
    assert "after record 2" in message and "summary are missing" in message
    assert len(seen) == 2  # what arrived is kept for the partial report


def test_a_gap_in_sequence_numbers_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    records = rec.stream(findings=[rec.dangling(), rec.dangling(path="/b")])
    del records[1]
    with pytest.raises(AgentError, match="jumped from 1 to 3"):
        run([(1, rec.lines(records).encode()), (3, SUCCESS)], monkeypatch)


def test_a_line_that_is_not_json_is_an_error_quoting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(AgentError, match="not JSON: 'Traceback"):
        run(
            [(1, b"Traceback (most recent call last):\n"), (3, exit_status(1))],
            monkeypatch,
        )


def test_too_old_python_names_the_image_and_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = [
        (2, b"crilinks-agent: python 3.9 is too old, need 3.11\n"),
        (3, exit_status(3)),
    ]
    with pytest.raises(AgentError) as caught:
        run(frames, monkeypatch)
    message = str(caught.value)
    assert "python 3.9" in message and POD.image in message and "--image" in message


def test_agent_failing_before_any_record_shows_its_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = [(2, b"Traceback: boom\n"), (3, exit_status(1))]
    with pytest.raises(
        AgentError, match="exit code 1 before its first record: Traceback: boom"
    ):
        run(frames, monkeypatch)


def test_agent_killed_by_sigkill_is_reported_as_memory_with_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = rec.lines(rec.stream()).splitlines()[0]
    frames = [(1, first.encode() + b"\n"), (3, exit_status(137))]
    with pytest.raises(AgentError) as caught:
        run(frames, monkeypatch)
    message = str(caught.value)
    assert "killed for memory after 1 records" in message
    assert "SIGKILL (exit code 137)" in message and "--agent-memory" in message


def test_an_agent_still_running_past_the_deadline_is_abandoned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Endless(ScriptedSocket):
        def update(self, timeout: float = 0) -> None:
            pass

    socket = Endless([])
    monkeypatch.setattr(transport, "_open", lambda *a, **k: socket)
    with pytest.raises(AgentError, match="did not finish in time"):
        transport.run_agent(
            NO_CONNECTION,
            pod=POD,
            args=[],
            on_record=lambda r: None,
            timeout=0.2,
            where="pod shop/web",
        )
    assert socket.closed


def test_line_splitter_keeps_a_partial_line_until_its_end_arrives() -> None:
    splitter = transport.LineSplitter()
    assert splitter.feed(b'{"a":') == []
    assert splitter.feed(b'1}\n{"b"') == ['{"a":1}']
    assert splitter.rest() == '{"b"'


def test_a_container_oomkilled_as_a_whole_is_named_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # cgroup v2 with memory.oom.group: the kubelet reports the whole container killed.
    oomkilled = {
        "status": {
            "containerStatuses": [
                {
                    "name": "agent",
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ]
        }
    }
    socket = ScriptedSocket([(2, b"")])  # the stream just ends: no status at all
    monkeypatch.setattr(transport, "_open", lambda *a, **k: socket)
    with pytest.raises(AgentError) as caught:
        transport.run_agent(
            NO_CONNECTION,
            pod=POD,
            args=[],
            on_record=lambda r: None,
            timeout=30,
            where="node 'node-a'",
            memory="512Mi",
            read_pod=lambda: oomkilled,
        )
    message = str(caught.value)
    assert "the debug container was OOMKilled (exit code 137, OOMKilled)" in message
    assert "memory limit of 512Mi" in message and "--agent-memory" in message

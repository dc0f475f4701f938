"""Run the agent in the debug pod over an exec stream, and bring its records out.

The exec stream is read as it arrives: stdout (channel 1) is split into lines, each is
checked by :class:`~kubectl_crilinks.agent.records.StreamReader` (schema version,
sequence without gaps) and handed to the caller at once, so ``-o jsonl`` and progress
show records while the agent still works. Stderr (channel 2) is kept for error messages
and the exit status comes from channel 3.

A stream that ends without the agent's summary is never taken for a complete report:
:class:`AgentRun` keeps what arrived, and :func:`run_agent` raises an
:class:`~kubectl_crilinks.errors.AgentError` that says how far the records got.

An agent killed with SIGKILL (exit code 137) ran out of memory in nearly every case:
on cgroup v1 the kernel's OOM killer takes the biggest process of the debug container
(the agent) and leaves the container running; on cgroup v2 the whole container dies
and shows ``OOMKilled``. Either way the error names the memory limit and the
``--agent-memory`` flag that raises it.

Each run opens its own ``ApiClient``, because the client's ``stream()`` swaps the
``call_api`` of the client it is given for the duration of the call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any, Final

from kubectl_crilinks import interrupts
from kubectl_crilinks.agent.records import StreamError, StreamReader, dumps
from kubectl_crilinks.errors import AgentError
from kubectl_crilinks.kubeconfig import Connection
from kubectl_crilinks.launcher import DebugPod, Fleet, killed_for_memory

logger = logging.getLogger(__name__)

STDOUT: Final = 1
STDERR: Final = 2
STATUS: Final = 3

POLL_SECONDS: Final = 0.5
STDERR_KEEP: Final = 16 * 1024
"""Bytes of the agent's stderr kept for messages: its tail, where the error is."""

TOO_OLD: Final = re.compile(r"crilinks-agent: python (\d+\.\d+) is too old")
EXIT_TOO_OLD: Final = 3
EXIT_KILLED: Final = 137
"""128 + SIGKILL: how a process killed by the OOM killer (or kill -9) exits."""

Record = dict[str, Any]


@dataclasses.dataclass
class AgentRun:
    """What one agent run produced: the summary if it came, stderr, the exit code."""

    summary: Record | None = None
    records: int = 0
    stderr: str = ""
    exit_code: int | None = None


class LineSplitter:
    """Cut a byte stream into text lines, whatever the frame boundaries."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buffer.extend(data)
        *lines, rest = bytes(self._buffer).split(b"\n")
        self._buffer = bytearray(rest)
        return [line.decode("utf-8", "replace") for line in lines if line.strip()]

    def rest(self) -> str:
        """Return an unterminated last line, if the stream ended inside one."""
        return bytes(self._buffer).decode("utf-8", "replace").strip()


class RecordFeed:
    """Check each line with a StreamReader and pass every record to ``on_record``."""

    def __init__(self, on_record: Callable[[Record], None], *, where: str) -> None:
        self.reader = StreamReader()
        self._on_record = on_record
        self._where = where

    def lines(self, lines: list[str]) -> None:
        for line in lines:
            try:
                record = self.reader.feed(line)
            except StreamError as exc:
                raise AgentError(
                    f"agent output for {self._where} is unusable: {exc}"
                ) from exc
            self._on_record(record)

    def record(self, record: Record) -> None:
        """Take a record from an in-process agent, checked as if it came as a line."""
        self.lines([dumps(record)])

    def finish(self, *, missing: str) -> Record:
        """Return the summary, or raise naming what never arrived."""
        try:
            return self.reader.finish()
        except StreamError as exc:
            raise AgentError(f"{self._where}: {exc}; {missing}") from exc


def run_agent(
    connection: Connection,
    *,
    pod: DebugPod,
    args: list[str],
    on_record: Callable[[Record], None],
    timeout: float,
    where: str,
    memory: str = "256Mi",
    fleet: Fleet | None = None,
    read_pod: Callable[[], dict[str, Any] | None] | None = None,
) -> AgentRun:
    """Exec the agent in ``pod`` and feed its records to ``on_record`` as they arrive.

    ``timeout`` bounds the whole run; ``where`` names the inspected object in errors;
    ``memory`` is the debug pod's limit, named when the agent is killed for memory,
    and ``read_pod`` reads the debug pod to see whether it was OOMKilled. Returns the
    run with the agent's summary; raises AgentError when the agent failed, was too
    old, was killed, or its stream ended before its summary.
    """
    from kubectl_crilinks.agent import bundle

    feed = RecordFeed(on_record, where=where)
    run = AgentRun()
    socket = _open(connection, pod=pod, command=bundle.exec_command(args), where=where)
    try:
        _pump(
            socket,
            feed=feed,
            run=run,
            deadline=time.monotonic() + timeout,
            where=where,
            fleet=fleet,
        )
        run.exit_code = _exit_code(socket)
    finally:
        socket.close()
    run.records = feed.reader.last_seq

    _raise_for_exit(run, pod=pod, where=where)
    if run.exit_code in (EXIT_KILLED, None) and feed.reader.summary is None:
        oom = killed_for_memory(read_pod() if read_pod else None)
        if oom or run.exit_code == EXIT_KILLED:
            raise AgentError(_killed(run, where=where, memory=memory, oom=oom))
    run.summary = feed.finish(missing=_missing_note(run))
    if run.exit_code not in (0, None):
        logger.info(
            "agent for %s exited with %s after a complete stream", where, run.exit_code
        )
    return run


def _open(
    connection: Connection, *, pod: DebugPod, command: list[str], where: str
) -> Any:
    from kubernetes import client
    from kubernetes.stream import stream

    from kubectl_crilinks.api import translate

    core = client.CoreV1Api(connection.api_client())
    logger.info("exec agent in pod %s/%s for %s", pod.namespace, pod.name, where)
    try:
        return stream(
            core.connect_get_namespaced_pod_exec,
            pod.name,
            pod.namespace,
            container=pod.container,
            command=command,
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            binary=True,
            _preload_content=False,
        )
    except Exception as exc:
        # An interrupt (seen by the main thread) stops the command: say only that.
        if interrupts.received() is not None:
            raise AgentError(
                f"interrupted while starting the agent for {where}"
            ) from exc
        raise translate(
            exc,
            connection=connection,
            verb="create",
            resource="pods/exec",
            namespace=pod.namespace,
            name=pod.name,
        ) from exc


def _pump(
    socket: Any,
    *,
    feed: RecordFeed,
    run: AgentRun,
    deadline: float,
    where: str,
    fleet: Fleet | None = None,
) -> None:
    """Read stdout and stderr until the agent ends, the stream breaks or time is up."""
    from websocket import WebSocketException

    out, err = LineSplitter(), bytearray()
    while socket.is_open():
        if fleet is not None:
            fleet.check()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AgentError(
                f"the agent for {where} did not finish in time ({feed.reader.last_seq} "
                "records so far); allow longer with --timeout"
            )
        try:
            socket.update(timeout=min(POLL_SECONDS, remaining))
        except (WebSocketException, OSError) as exc:
            logger.debug("exec stream for %s broke: %r", where, exc)
            break
        feed.lines(out.feed(socket.read_channel(STDOUT)))
        err.extend(socket.read_channel(STDERR))
        del err[:-STDERR_KEEP]

    # Frames that came with the close are still buffered.
    feed.lines(out.feed(socket.read_channel(STDOUT)))
    err.extend(socket.read_channel(STDERR))
    feed.lines([out.rest()] if out.rest() else [])
    run.stderr = bytes(err[-STDERR_KEEP:]).decode("utf-8", "replace")


def _exit_code(socket: Any) -> int | None:
    """Read the exit code from the status channel; ``None`` when none was sent."""
    raw = socket.read_channel(STATUS)
    if not raw:
        return None
    try:
        status = json.loads(raw)
    except ValueError:
        logger.debug("unreadable exec status: %r", raw[:200])
        return None
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", -1))
    raise AgentError(f"the exec of the agent failed: {status.get('message') or status}")


def _raise_for_exit(run: AgentRun, *, pod: DebugPod, where: str) -> None:
    too_old = TOO_OLD.search(run.stderr)
    if run.exit_code == EXIT_TOO_OLD and too_old:
        raise AgentError(
            f"image {pod.image!r} has python {too_old.group(1)}, but the agent needs "
            "python >= 3.11: pass an image with a newer python3 with --image, e.g. "
            "--image docker.io/library/python:3.12-alpine"
        )
    if run.exit_code not in (0, None, EXIT_KILLED) and run.records == 0:
        raise AgentError(
            f"the agent for {where} failed with exit code {run.exit_code} before its "
            f"first record: {_tail(run.stderr)}"
        )


def _killed(run: AgentRun, *, where: str, memory: str, oom: str | None) -> str:
    """Say that the agent was killed, most likely for memory, and what to raise."""
    how = (
        f"the debug container was OOMKilled ({oom})"
        if oom
        else f"it was killed with SIGKILL (exit code {EXIT_KILLED}), which is the "
        "kernel's OOM killer in nearly every case"
    )
    return (
        f"the agent for {where} was killed for memory after {run.records} records: "
        f"{how}, at the debug pod's memory limit of {memory}; run it again with a "
        "higher limit, e.g. --agent-memory 1Gi"
    )


def _missing_note(run: AgentRun) -> str:
    ended = (
        "the exec stream closed"
        if run.exit_code is None
        else f"the agent exited with {run.exit_code}"
    )
    note = (
        f"{ended} after record {run.records}; the records after it and the summary are "
        "missing"
    )
    if run.stderr.strip():
        note += f"; agent stderr: {_tail(run.stderr)}"
    if run.exit_code in (137, None):
        note += (
            " (the pod may have been killed for memory or by its deadline: try again, "
            "or with a longer --timeout)"
        )
    return note


def _tail(text: str, *, lines: int = 5) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "no output on stderr"

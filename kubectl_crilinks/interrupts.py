"""Turn SIGINT and SIGTERM into exceptions, so that ``finally`` blocks clean up.

Python raises ``KeyboardInterrupt`` on SIGINT but simply dies on SIGTERM, which would
leave a privileged debug pod behind whenever a CI job or a terminal multiplexer stops
the plugin. Inside :func:`handled`, both signals raise :class:`Interrupted` (a
``KeyboardInterrupt``), and :func:`received` tells which one came, also after a library
swallowed the exception (the Kubernetes client wraps a ``KeyboardInterrupt`` raised
while it opens a websocket into an ``ApiException``).

While cleanup runs, :func:`deferred` keeps a second Ctrl-C from cutting the delete
request short; the signal is remembered and re-raised when cleanup is over. Python
runs signal handlers in the main thread only, so deferring concerns the main thread:
in a worker thread :func:`deferred` does nothing (no signal can interrupt it there).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None
_deferring = False
_pending: int | None = None


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def received() -> int | None:
    """Return the signal number that interrupted the command, if one did."""
    return _received


def _handler(signum: int, frame: FrameType | None) -> None:
    global _received, _pending
    _received = signum
    if _deferring:
        _pending = signum
        logger.warning(
            "%s received: finishing the cleanup first", signal.Signals(signum).name
        )
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Raise :class:`Interrupted` on SIGINT and SIGTERM inside the block."""
    global _received, _pending
    _received = _pending = None
    previous = {signum: signal.signal(signum, _handler) for signum in _SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs (a cleanup that must finish).

    Only effective inside :func:`handled`; outside it the default handlers stay.
    """
    global _deferring, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer = _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = outer
    if _pending is not None and not outer:
        signum, _pending = _pending, None
        raise Interrupted(signum)

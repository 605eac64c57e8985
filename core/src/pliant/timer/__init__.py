"""Timers: deadlines a worker arms around code that must not hang.

``with expires(after=30): step()`` asks a :class:`TimerClient` to arm a
deadline; a :class:`TimerServer` in the agent (chosen with ``--timer NAME``
from the plugins; pliant-core's ``local`` by default) acts when it passes.

The client is, in order: the ``client`` argument, the one set with
:func:`configure`, else one built from the environment the agent gives its
workers: ``TORCHELASTIC_TIMER_FILE``, a named pipe that takes torch's
``FileTimerClient`` requests (see :mod:`pliant.timer.fifo`). With none of
these, ``expires`` is a no-op, so the same code runs under any launcher.

Workers import this module, so it imports next to nothing.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

from pliant.timer.types import TIMER_FILE_ENV, ExpiredTimer, TimerClient, TimerServer

TYPE_CHECKING = False  # not typing's: typing alone costs a worker milliseconds of start-up
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "TIMER_FILE_ENV",
    "ExpiredTimer",
    "TimerClient",
    "TimerServer",
    "configure",
    "expires",
]

_client: TimerClient | None = None
_from_env: tuple[str, TimerClient] | None = None


def configure(client: TimerClient | None) -> None:
    """Set the client :func:`expires` uses; None goes back to the environment's."""
    global _client
    _client = client


def _env_client() -> TimerClient | None:
    """The client for the agent's timer pipe named in the environment, built once."""
    global _from_env
    path = os.environ.get(TIMER_FILE_ENV)
    if not path:
        return None
    if _from_env is None or _from_env[0] != path:
        from pliant.timer.fifo import FifoTimerClient

        _from_env = (path, FifoTimerClient(path))
    return _from_env[1]


@contextmanager
def expires(after: float, scope: str | None = None, client: TimerClient | None = None,
            ) -> Iterator[None]:
    """Arm a deadline ``after`` seconds from now for the enclosed block.

    ``scope`` names the deadline (one per scope and process); by default it is
    the caller's ``file#line``, as in torch.
    """
    chosen = client or _client or _env_client()
    if chosen is None:
        yield
        return
    if scope is None:
        caller = sys._getframe(2)  # this generator, contextlib's __enter__, the caller
        scope = f"{caller.f_code.co_filename}#{caller.f_lineno}"
    chosen.acquire(scope, time.time() + after)
    try:
        yield
    finally:
        chosen.release(scope)

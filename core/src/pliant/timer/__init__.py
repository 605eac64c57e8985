"""Timers: deadlines a worker arms around code that must not hang.

``with expires(after=30): step()`` asks the configured :class:`TimerClient`
to arm a deadline; a :class:`TimerServer` in the agent (chosen with
``--timer NAME`` from the plugins) acts when it passes. With no client
configured, ``expires`` is a no-op, so the same code runs under any launcher.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["TimerClient", "TimerServer", "configure", "expires"]


class TimerClient(ABC):
    """The worker side: arms and disarms deadlines."""

    @abstractmethod
    def acquire(self, scope_id: str, expiration_time: float) -> None: ...

    @abstractmethod
    def release(self, scope_id: str) -> None: ...


class TimerServer(ABC):
    """The agent side: watches deadlines and acts on the expired ones."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def worker_env(self) -> dict[str, str]:
        """Environment the workers need to reach this server."""
        return {}


_client: TimerClient | None = None


def configure(client: TimerClient | None) -> None:
    global _client
    _client = client


@contextmanager
def expires(after: float, scope: str | None = None, client: TimerClient | None = None,
            ) -> Iterator[None]:
    """Arm a deadline ``after`` seconds from now for the enclosed block."""
    import time

    chosen: Any = client or _client
    if chosen is None:
        yield
        return
    scope_id = scope or "default"
    chosen.acquire(scope_id, time.time() + after)
    try:
        yield
    finally:
        chosen.release(scope_id)

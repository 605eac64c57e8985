"""What a timer backend implements, and what it reports: the worker's client, the agent's
server, an expired deadline.

Workers import this module (through :mod:`pliant.timer`), so it imports next to nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

TYPE_CHECKING = False  # not typing's: typing alone costs a worker milliseconds of start-up
if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["TIMER_FILE_ENV", "ExpiredTimer", "TimerClient", "TimerServer"]

#: The named pipe of the agent's timer, as torch's launcher names it for ``FileTimerClient``.
TIMER_FILE_ENV = "TORCHELASTIC_TIMER_FILE"


class TimerClient(ABC):
    """The worker side: arms and disarms deadlines."""

    @abstractmethod
    def acquire(self, scope_id: str, expiration_time: float) -> None: ...

    @abstractmethod
    def release(self, scope_id: str) -> None: ...


class ExpiredTimer:
    """A deadline that passed: who armed it (``pid``), for what, when, and the signal asked
    for (torch's ``FileTimerClient`` field: 0 or less asks that the worker not be killed)."""

    __slots__ = ("expiration_time", "pid", "scope_id", "signal")

    def __init__(self, pid: int, scope_id: str, expiration_time: float, signal: int) -> None:
        self.pid = pid
        self.scope_id = scope_id
        self.expiration_time = expiration_time
        self.signal = signal

    def __repr__(self) -> str:
        return (f"ExpiredTimer(pid={self.pid}, scope_id={self.scope_id!r}, "
                f"expiration_time={self.expiration_time}, signal={self.signal})")


class TimerServer(ABC):
    """The agent side: watches deadlines and acts on the expired ones.

    A server may run on its own (a thread, another process) and need only
    :meth:`start`, :meth:`stop` and :meth:`worker_env`. A server the agent
    drives instead returns a descriptor from :meth:`fileno`: the agent's
    selector then wakes when it turns readable and when :meth:`next_deadline`
    passes, calls :meth:`poll` and acts on what it returns: it kills the
    worker that armed each expired timer and reports that as the worker's
    failure. No thread, no polling loop.
    """

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def worker_env(self) -> dict[str, str]:
        """Environment the workers need to reach this server."""
        return {}

    def fileno(self) -> int | None:
        """A descriptor that turns readable when requests arrive, if the agent drives this
        server; None (the default) if it runs on its own."""
        return None

    def next_deadline(self) -> float | None:
        """The earliest armed deadline (``time.time()`` seconds), or None."""
        return None

    def poll(self, now: float) -> list[ExpiredTimer]:
        """Take in the requests that arrived (without blocking); return the timers expired by
        ``now``, which are then disarmed."""
        return []

    def forget(self, pids: Collection[int]) -> None:
        """Disarm every deadline of these processes (they exited)."""
        return None

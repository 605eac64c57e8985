"""The agent's timer servers: started and stopped with the run, watched by its selector.

A server the agent drives (``fileno()`` not None) wakes the agent's selector when
requests arrive, and the selector's timeout is cut short to wake when the earliest
deadline passes (:meth:`AgentTimers.timeout`); no thread, no polling. What expired
comes back as :class:`Expiry` values, one per running worker to act on; the agent
kills the worker and reports that as its failure.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from pliant.agent.processes import WorkerProcess
from pliant.timer import ExpiredTimer, TimerServer

__all__ = ["AgentTimers", "Expiry"]

log = logging.getLogger("pliant.agent")


@dataclass(frozen=True)
class Expiry:
    """A deadline of the worker at ``local_rank`` (or of a child in its process group)
    that passed."""

    local_rank: int
    timer: ExpiredTimer

    @property
    def kill(self) -> bool:
        """Whether the worker is killed: torch's "do not kill" is a signal of 0 or less."""
        return self.timer.signal > 0

    def cause(self, worker_pid: int) -> str:
        """Why the worker failed, for its :class:`~pliant.agent.api.ProcessFailure`."""
        expired = self.timer
        by = "" if expired.pid == worker_pid else f" (armed by pid {expired.pid}, a child)"
        return (f"timer expired: scope {expired.scope_id!r}{by} passed its deadline "
                f"{iso(expired.expiration_time)}; the agent killed the worker (SIGKILL)")


class AgentTimers:
    """The timer servers of one agent; ``None`` is pliant's ``local`` one, so that
    ``pliant.timer.expires`` works in the workers without any setup."""

    def __init__(self, servers: Sequence[TimerServer] | None) -> None:
        if servers is None:
            from pliant.timer.fifo import LocalTimerServer

            servers = [LocalTimerServer()]
        self._servers = list(servers)
        self._started: list[TimerServer] = []
        self._selector: selectors.BaseSelector | None = None
        self.worker_env: dict[str, str] = {}
        """What the workers need to reach the servers."""

    def start(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        for server in self._servers:
            self.worker_env.update(server.worker_env())
            server.start()
            self._started.append(server)
            fd = server.fileno()
            if fd is not None:
                selector.register(fd, selectors.EVENT_READ, server)

    def stop(self) -> None:
        """Stop what was started, last first (a server that failed to start is not)."""
        while self._started:
            server = self._started.pop()
            fd = server.fileno()
            if fd is not None and self._selector is not None and fd in self._selector.get_map():
                self._selector.unregister(fd)
            server.stop()

    def timeout(self, timeout: float | None) -> float | None:
        """``timeout``, shortened to wake when the earliest deadline passes."""
        deadlines = [d for s in self._started if (d := s.next_deadline()) is not None]
        if not deadlines:
            return timeout
        wait = max(min(deadlines) - time.time(), 0.0)
        return wait if timeout is None else min(timeout, wait)

    def expired(self, readable: Collection[TimerServer], procs: Sequence[WorkerProcess],
                killed: Collection[int]) -> list[Expiry]:
        """Take in the requests that arrived (``readable``: the servers the selector found
        readable) and return the passed deadlines of running workers among ``procs``.

        Deadlines of other processes, of workers that already exited, and of workers
        in ``killed`` (or killed by an earlier one returned here) are dropped.
        """
        now = time.time()
        found: list[Expiry] = []
        taken = set(killed)
        for server in self._started:
            deadline = server.next_deadline()
            if server not in readable and (deadline is None or deadline > now):
                continue
            for timer in server.poll(now):  # always taken in, also with no worker to act on
                if not procs:
                    continue
                local_rank = _owner(procs, timer.pid)
                if local_rank is None or local_rank in taken:
                    log.debug("dropping %r: not a running worker's", timer)
                    continue
                if procs[local_rank].poll() is not None:  # its exit is handled as such
                    continue
                expiry = Expiry(local_rank, timer)
                if expiry.kill:
                    taken.add(local_rank)
                found.append(expiry)
        return found

    def forget(self, pids: Iterable[int]) -> None:
        """Drop the deadlines of these processes, once they are gone."""
        if self._started:
            gone = set(pids)
            for server in self._started:
                server.poll(float("-inf"))  # take in what they sent before they died
                server.forget(gone)


def _owner(procs: Sequence[WorkerProcess], pid: int) -> int | None:
    """The local rank of the worker that is ``pid``, or leads its process group."""
    ranks = {proc.pid: i for i, proc in enumerate(procs)}
    if pid in ranks:
        return ranks[pid]
    try:
        return ranks.get(os.getpgid(pid))
    except OSError:  # gone
        return None


def iso(when: float) -> str:
    """``time.time()`` seconds as UTC ISO 8601, to the millisecond."""
    from datetime import datetime, timezone

    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")

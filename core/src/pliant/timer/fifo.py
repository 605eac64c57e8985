"""The ``local`` timer: a named pipe from the workers to their agent, in torch's format.

The agent makes one FIFO in a private temporary directory and names it to
every worker in ``TORCHELASTIC_TIMER_FILE``, the variable torch's launcher uses
for its file timer. A worker writes one JSON line per request, exactly as
torch's ``FileTimerClient`` does, so that client works unchanged::

    {"version": 1, "pid": 4242, "scope_id": "train.py#57",
     "expiration_time": 1767225600.5, "signal": 9}

``expiration_time`` is ``time.time()`` seconds; -1 releases the scope. A line
is far shorter than ``PIPE_BUF``, so each write is atomic, whoever else writes.

The agent holds both ends of the pipe open for its whole run: a worker's
non-blocking open never fails for want of a reader, and the reader never sees
end-of-file. Its selector wakes when a line arrives (the pipe turns
readable) and when the earliest deadline passes (a heap); nothing polls.
"""

from __future__ import annotations

import heapq
import os
import sys
from select import PIPE_BUF

from pliant.timer.types import TIMER_FILE_ENV, ExpiredTimer, TimerClient, TimerServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = ["FifoTimerClient", "LocalTimerServer"]

_SIGKILL = 9
_READ_SIZE = 65536
#: Characters a scope may hold and still be written into JSON as is (else json.dumps).
_PLAIN = frozenset(map(chr, range(0x20, 0x7F))) - {'"', "\\"}


def _request(pid: int, scope_id: str, expiration_time: float, signal: int) -> bytes:
    """One request line, byte for byte what torch's ``FileTimerRequest.to_json`` writes.

    Formatted by hand: a worker that arms its first deadline should not pay for
    importing json (milliseconds); a scope with unusual characters still goes
    through it.
    """
    if _PLAIN.issuperset(scope_id):
        scope = f'"{scope_id}"'
    else:
        import json

        scope = json.dumps(scope_id)
    return (f'{{"version": 1, "pid": {pid}, "scope_id": {scope}, '
            f'"expiration_time": {expiration_time!r}, "signal": {signal}}}\n').encode()


class FifoTimerClient(TimerClient):
    """Writes torch's ``FileTimerClient`` requests to the agent's pipe at ``path``.

    Each request opens the pipe write-only and non-blocking, writes one line and
    closes it, as torch's client does: torch's own server only reads on when
    every writer has closed. The write never waits, unless the pipe is full (the
    agent reads it as requests arrive); then it waits for room rather than lose
    the request. Without a reader (no agent, or one shutting down), the
    deadline is not watched: a warning says so once, and the worker goes on.
    """

    def __init__(self, path: str, signal: int = _SIGKILL) -> None:
        self.path = path
        self.signal = signal
        self._warned = False

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self._send(scope_id, expiration_time, self.signal)

    def release(self, scope_id: str) -> None:
        self._send(scope_id, -1, 0)

    def _send(self, scope_id: str, expiration_time: float, signal: int) -> None:
        data = _request(os.getpid(), scope_id, expiration_time, signal)
        if len(data) > PIPE_BUF:  # a longer write would not be atomic
            raise ValueError(f"timer scope {scope_id[:80]!r}... is too long: a request "
                             f"must fit in {PIPE_BUF} bytes")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            self._unreachable(exc)
            return
        try:
            try:
                os.write(fd, data)
            except BlockingIOError:  # the pipe is full: wait for the agent to read
                os.set_blocking(fd, True)
                os.write(fd, data)
        except OSError as exc:
            self._unreachable(exc)
        finally:
            os.close(fd)

    def _unreachable(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            print(f"pliant.timer: cannot reach the agent's timer pipe {self.path} "
                  f"({exc.strerror or exc}); deadlines are not watched", file=sys.stderr)


class LocalTimerServer(TimerServer):
    """The agent's end of the pipe and the deadlines armed through it.

    One deadline per (pid, scope): a new request for the same pair replaces it,
    a release removes it. The agent drives this server (see
    :class:`~pliant.timer.TimerServer`); it runs no thread.
    """

    def __init__(self) -> None:
        self._dir = ""
        self._read_fd = -1
        self._write_fd = -1
        self._partial = b""
        # (pid, scope) -> (deadline, serial, signal); the heap holds (deadline, serial, pid,
        # scope) and may hold replaced or released entries, skipped by their serial.
        self._armed: dict[tuple[int, str], tuple[float, int, int]] = {}
        self._heap: list[tuple[float, int, int, str]] = []
        self._serial = 0

    @property
    def path(self) -> str:
        return os.path.join(self._dir, "timer.fifo") if self._dir else ""

    def worker_env(self) -> dict[str, str]:
        self._make_fifo()
        return {TIMER_FILE_ENV: self.path}

    def _make_fifo(self) -> None:
        if not self._dir:
            import tempfile

            self._dir = tempfile.mkdtemp(prefix="pliant-timer-")  # mode 0700: ours alone
            os.mkfifo(self.path, 0o600)

    def start(self) -> None:
        self._make_fifo()
        if self._read_fd < 0:
            self._read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._write_fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)

    def stop(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1
        if self._dir:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""
        self._armed.clear()
        self._heap.clear()

    def fileno(self) -> int | None:
        return self._read_fd if self._read_fd >= 0 else None

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, serial, pid, scope = heap[0]
            armed = self._armed.get((pid, scope))
            if armed is not None and armed[1] == serial:
                return deadline
            heapq.heappop(heap)
        return None

    def poll(self, now: float) -> list[ExpiredTimer]:
        self._read()
        expired = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, _, pid, scope = heapq.heappop(self._heap)
            _, _, signal = self._armed.pop((pid, scope))
            expired.append(ExpiredTimer(pid, scope, deadline, signal))
        return expired

    def forget(self, pids: Collection[int]) -> None:
        for key in [key for key in self._armed if key[0] in pids]:
            del self._armed[key]

    def _read(self) -> None:
        if self._read_fd < 0:
            return
        data = self._partial
        while True:
            try:
                chunk = os.read(self._read_fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
            if len(chunk) < _READ_SIZE:
                break
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if line.strip():
                self._take(line)
        if len(self._heap) > 2 * len(self._armed) + 64:  # mostly released entries: rebuild
            self._heap = [(deadline, serial, pid, scope)
                          for (pid, scope), (deadline, serial, _) in self._armed.items()]
            heapq.heapify(self._heap)

    def _take(self, line: bytes) -> None:
        """Apply one request line; a malformed one is logged and ignored."""
        import json

        try:
            request = json.loads(line)
            pid, scope = int(request["pid"]), str(request["scope_id"])
            deadline = float(request["expiration_time"])
            signal = int(request.get("signal", _SIGKILL))
        except (ValueError, KeyError, TypeError) as exc:
            import logging

            logging.getLogger("pliant.timer").warning(
                "ignoring a malformed timer request %r: %s", line[:200], exc)
            return
        if deadline < 0:
            self._armed.pop((pid, scope), None)
            return
        self._serial += 1
        self._armed[(pid, scope)] = (deadline, self._serial, signal)
        heapq.heappush(self._heap, (deadline, self._serial, pid, scope))

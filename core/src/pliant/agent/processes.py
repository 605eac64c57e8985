"""Worker processes: start them, hear when they exit, stop their whole tree.

Each worker leads its own session (so a signal reaches its children too, via
its process group) and is told by the kernel to die with the agent
(``PR_SET_PDEATHSIG``), so a SIGKILLed agent leaves no orphans. Python
workers set that themselves in :mod:`pliant._bootstrap`; other programs get it
between fork and exec here, which costs subprocess its fast spawn path. An exit is
announced by a file descriptor the agent's selector waits on: a pidfd where
the kernel has one, else a pipe written by a waiter thread. Nothing polls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import IO, Any

__all__ = ["WorkerProcess", "signal_tree"]

_PR_SET_PDEATHSIG = 1
_libc: Any = None


def _die_with(agent_pid: int) -> None:
    """Runs in the child between fork and exec: die when the agent dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != agent_pid:  # the agent died before prctl took effect
        os._exit(1)


def signal_tree(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid``, or to ``pid`` alone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class WorkerProcess:
    """A started worker; ``exit_fd`` turns readable when it exits.

    A warm standby (:mod:`pliant.agent.standby`) is one too, from its start: when it is
    handed its assignment, the same object watches it as the worker it becomes.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str],
                 stdout: int | IO[bytes] | None, stderr: int | IO[bytes] | None,
                 sets_own_deathsig: bool = False, pass_fds: Sequence[int] = ()) -> None:
        global _libc
        agent_pid = os.getpid()
        env = {**env, "PLIANT_AGENT_PID": str(agent_pid)}
        preexec = None
        if not sets_own_deathsig:
            if _libc is None:
                import ctypes

                _libc = ctypes.CDLL(None, use_errno=True)
            preexec = lambda: _die_with(agent_pid)  # noqa: E731
        self.popen = subprocess.Popen(
            list(argv),
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=preexec,
            pass_fds=tuple(pass_fds),
        )
        self.pid = self.popen.pid
        self._waiter_pipe: tuple[int, int] | None = None
        try:
            self.exit_fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd: a thread waits and writes to a pipe
            read_end, write_end = os.pipe()
            self._waiter_pipe = (read_end, write_end)
            self.exit_fd = read_end
            threading.Thread(target=self._wait_then_notify, args=(write_end,), daemon=True,
                             name=f"pliant-wait-{self.pid}").start()

    def _wait_then_notify(self, write_end: int) -> None:
        self.popen.wait()
        os.write(write_end, b"x")

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def reap(self) -> int:
        """Collect the exit status; call once ``exit_fd`` is readable."""
        return self.popen.wait()

    def poll(self) -> int | None:
        return self.popen.poll()

    def send(self, sig: int) -> None:
        if self.popen.returncode is None:
            signal_tree(self.pid, sig)

    def close(self) -> None:
        fds = [self.exit_fd] if self._waiter_pipe is None else list(self._waiter_pipe)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

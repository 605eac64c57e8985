"""Warm standbys: per local rank, a Python process that has imported the preload list and
waits to become that rank's next worker.

A cold worker spends seconds in ``import torch`` and in what its first
``DistributedDataParallel(...)`` imports lazily; a standby has done that already. The
pool owns the standbys' lives: it starts one per local rank at agent start (before the
rendezvous, so the imports overlap it), hands one its assignment at a worker start
(:meth:`StandbyPool.take`: the worker's environment, argv, cwd and stdout/stderr fds over
a Unix socketpair; the standby's side is :func:`pliant._bootstrap.standby`), replaces
consumed ones once the new group has started (:meth:`StandbyPool.refill`), and kills
them at the end. A standby that is not ready, dead, or whose preload failed gives no
worker: that rank starts cold, with the same result.

Each standby is a :class:`~pliant.agent.processes.WorkerProcess` from its start: its own
session, ``PR_SET_PDEATHSIG`` (set by the standby itself) so a SIGKILLed agent leaves
none behind; the agent hears its messages (ready, failed, gone) on its socket in the one
selector the agent sleeps in.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress

from pliant._bootstrap import FAILED, READY, STANDBY_COMMAND, STANDBY_FD_ENV, STANDBY_PRELOAD_ENV
from pliant.agent.processes import WorkerProcess

__all__ = ["READY_WAIT", "Standby", "StandbyPool"]

log = logging.getLogger("pliant.agent")

#: How long a worker start waits for its standby to finish importing. A standby still
#: importing has been at it since before this start: waiting beats a cold worker that would
#: import the same modules beside it, on the same cores. Past this, the worker starts cold.
READY_WAIT = 30.0


class Standby:
    """One standby process and the agent's end of its socket."""

    def __init__(self, local_rank: int, env: dict[str, str], preload: str) -> None:
        self.local_rank = local_rank
        self.ready = False
        self.failure: str | None = None  # what the standby reported when its preload failed
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = WorkerProcess(
                [sys.executable, *STANDBY_COMMAND],
                {**env, STANDBY_FD_ENV: str(theirs.fileno()), STANDBY_PRELOAD_ENV: preload},
                # Until its hand-off a standby has nothing to say; its failure comes by socket.
                subprocess.DEVNULL, subprocess.DEVNULL,
                sets_own_deathsig=True, pass_fds=(theirs.fileno(),))
        except BaseException:
            self.sock.close()
            raise
        finally:
            theirs.close()
        self.sock.setblocking(False)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and self.failure is None

    def read(self) -> bool:
        """Take what the standby sent; False once it is gone (or failed)."""
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if data.startswith(READY):
            self.ready = True
            return True
        if data.startswith(FAILED):
            self.failure = data[len(FAILED):].decode(errors="replace")
        return False

    def wait_ready(self, deadline: float, wake_fd: int) -> bool:
        """Block until the standby is ready (True), gone or failed (False), ``deadline``
        (monotonic) passes or the agent is woken, by a signal (True, not ready: the byte on
        ``wake_fd`` is left for the agent's selector)."""
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            readable, _, _ = select.select([self.sock.fileno(), wake_fd], [], [], left)
            if wake_fd in readable:
                return True
            if self.sock.fileno() in readable and not self.read():
                return False
        return True

    def hand_off(self, env: dict[str, str], argv: Sequence[str], fds: Sequence[int]) -> bool:
        """Send the assignment; False when the standby is gone before taking it."""
        payload = marshal.dumps({"env": dict(env), "argv": list(argv), "cwd": os.getcwd()})
        try:
            self.sock.setblocking(True)
            socket.send_fds(self.sock, [len(payload).to_bytes(8, "big")], list(fds))
            self.sock.sendall(payload)
        except OSError:
            return False
        finally:
            self.sock.close()
        return True

    def kill(self) -> None:
        """Kill and reap it (a standby holds nothing worth a graceful stop)."""
        self.proc.send(signal.SIGKILL)
        self.proc.reap()
        self.proc.close()
        self.sock.close()


class StandbyPool:
    """The standbys of one agent, at most one per local rank.

    ``env_for(local_rank)`` is the standby's environment: the worker's, less what only the
    rendezvous and the attempt decide (ranks, world sizes, master address, restart count,
    per-attempt files); those arrive at the hand-off. ``preload`` is the setting's value
    (module names, or ``("auto",)``).
    """

    def __init__(self, local_world_size: int, env_for: Callable[[int], dict[str, str]],
                 preload: Sequence[str], selector: selectors.BaseSelector) -> None:
        self._size = local_world_size
        self._env_for = env_for
        self._preload = ",".join(preload)
        self._selector = selector
        self._standbys: dict[int, Standby] = {}
        self._disabled = False

    @property
    def size(self) -> int:
        """How many standbys there are (ready or still importing)."""
        return len(self._standbys)

    def refill(self) -> None:
        """Start a standby for every local rank that has none."""
        for local_rank in range(self._size):
            if self._disabled or local_rank in self._standbys:
                continue
            try:
                standby = Standby(local_rank, self._env_for(local_rank), self._preload)
            except OSError as exc:
                log.warning("cannot start a warm standby (%s); workers start cold", exc)
                self._disabled = True
                return
            self._standbys[local_rank] = standby
            self._selector.register(standby.sock, selectors.EVENT_READ, standby)

    def on_readable(self, standby: Standby) -> None:
        """The standby wrote (ready, failed) or went away."""
        if not standby.read():
            self._drop(standby)

    def take(self, local_rank: int, env: dict[str, str], argv: Sequence[str],
             fds: Sequence[int], wake_fd: int) -> WorkerProcess | None:
        """Make ``local_rank``'s standby its worker; None when there is none, or it is not
        ready within :data:`READY_WAIT` (or a signal came first)."""
        standby = self._standbys.get(local_rank)
        if standby is None:
            return None
        self.on_readable(standby)  # what it sent (or that it died) since the selector looked
        if standby.alive and not standby.ready and not standby.wait_ready(
                time.monotonic() + READY_WAIT, wake_fd):
            self._drop(standby)
            return None
        if not (standby.ready and standby.alive):
            return None  # not yet ready: it stays, for the next start
        self._drop(standby, kill=False)
        if not standby.hand_off(env, argv, fds):
            standby.kill()
            return None
        return standby.proc

    def _drop(self, standby: Standby, kill: bool = True) -> None:
        if self._standbys.get(standby.local_rank) is not standby:
            return
        del self._standbys[standby.local_rank]
        with suppress(KeyError, ValueError):
            self._selector.unregister(standby.sock)
        if kill:
            standby.kill()
        if standby.failure is not None and not self._disabled:
            self._disabled = True  # the next one would fail the same way
            log.warning(
                "warm standby: cannot preload %s; workers start cold. Install what is "
                "missing, or choose the modules with --preload MODULES (PLIANT_PRELOAD, config "
                "key preload); --preload '' starts no standby", standby.failure)

    def close(self) -> None:
        """Kill every standby (the end of the run)."""
        for standby in list(self._standbys.values()):
            if not standby.ready and standby.proc.returncode is None:
                self.on_readable(standby)  # a failure it reported is still worth a warning
            self._drop(standby)

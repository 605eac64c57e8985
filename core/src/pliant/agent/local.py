"""The local elastic agent: rendezvous, spawn, watch, stop, restart, report.

One attempt is: join a rendezvous round, derive the ranks, start the
workers, then sleep in one selector until something happens (a worker
exits, a worker writes output, a signal arrives). A failure stops the whole
group and, while the restart budget lasts, starts the next attempt with a
fresh rendezvous point and fresh per-attempt log files.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from pliant import events, metrics
from pliant._bootstrap import COMMAND as BOOTSTRAP
from pliant._delivery import handlers as delivery
from pliant._delivery.context import set_context
from pliant._delivery.dispatcher import dispatcher
from pliant._delivery.relay import Relay
from pliant.agent.api import (
    ProcessFailure,
    RunResult,
    Worker,
    WorkerGroup,
    WorkerSpec,
    WorkerState,
    std_for,
)
from pliant.agent.health import HEALTH_CHECK_PORT_ENV, HealthCheckServer
from pliant.agent.logs import LogsDest, LogsSpecs, make_run_dir
from pliant.agent.output import STDERR, STDOUT, StreamRoute, line_prefix, route_stream
from pliant.agent.processes import WorkerProcess, signal_tree
from pliant.agent.restarts import RestartBudget, attempt_folder
from pliant.agent.standby import Standby, StandbyPool
from pliant.agent.timers import AgentTimers, Expiry, iso
from pliant.defaults import (
    HEALTH_CHECK_HEARTBEAT,
    HEALTH_CHECK_TIMEOUT,
    STANDBY_DELAY,
    START_METHOD,
    START_METHODS,
)
from pliant.defaults import SIGNALS as DEFAULT_SIGNALS
from pliant.errorfile import ERROR_FILE_ENV, error_timestamp, read_error_file
from pliant.errors import UsageError
from pliant.rendezvous.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousInfo,
    RoundEnd,
)
from pliant.timer import TimerServer

__all__ = ["DEFAULT_SIGNALS", "LocalElasticAgent", "SignalException"]

log = logging.getLogger("pliant.agent")


class SignalException(Exception):
    """The agent received a signal it handles; its workers were stopped."""

    def __init__(self, msg: str, sigval: signal.Signals) -> None:
        super().__init__(msg)
        self.sigval = sigval


@dataclass
class _Attempt:
    """The processes, output routes and files of one attempt (one group of workers).

    ``restart_count`` is the attempt's number; ``regroup`` counts the groups that
    membership changes formed before it at that count (see :mod:`pliant.agent.restarts`).
    """

    restart_count: int
    regroup: int
    directory: str
    procs: list[WorkerProcess] = field(default_factory=list)
    routes: list[StreamRoute] = field(default_factory=list)
    failures: dict[int, ProcessFailure] = field(default_factory=dict)
    stopping: bool = False
    expired: dict[int, Expiry] = field(default_factory=dict)  # killed by a timer
    filtered: list[IO[bytes]] = field(default_factory=list)  # --duplicate-std*-filters files
    error_files: dict[int, str] = field(default_factory=dict)  # by local rank


class LocalElasticAgent:
    """Runs ``spec.local_world_size`` workers on this node and keeps them running.

    ``run()`` returns a :class:`~pliant.agent.api.RunResult`: succeeded once
    every worker exited 0, failed when a worker failed and no restart is left.
    A handled signal stops the workers and raises :class:`SignalException`.
    ``exit_barrier_timeout`` is accepted for torch compatibility and not used:
    one node has no exit barrier to wait at. ``start_method`` is only checked:
    ``spawn`` and ``forkserver`` both start a fresh interpreter. ``timers`` are
    the timer servers to run (see :class:`~pliant.agent.timers.AgentTimers`); a
    worker whose deadline passes is killed and counts as failed.
    ``metric_handlers`` and ``event_handlers`` are where the workers' metrics and events go
    (default: this process's handlers, as :func:`pliant.metrics.configure` and
    :func:`pliant.events.configure` set them); the agent's own go to this process's.
    ``preload``: the modules warm standbys import (see :mod:`pliant.agent.standby`), or
    ``("auto",)`` for torch and what a DDP first step imports, where the workers can import
    torch; empty (the default here; ``pliant run`` defaults to auto): no standby, every
    worker starts cold. Only script and ``-m`` entrypoints run warm. ``standbys_early``:
    start the standbys with the agent, so that their imports overlap a rendezvous that
    waits for other nodes (``pliant run`` does on several nodes); otherwise they start
    ``standby_delay`` seconds into a group started cold, so that a short job is never slowed
    by them and a long one restarts warm. After a warm start, replacements start at once.
    ``run_dir``: the folder for this run's per-attempt files, made (and kept) by the caller
    (``pliant run`` makes it before its start line, which names it); by default the agent
    makes one when it runs. ``shutdown_timeout_source``: where ``shutdown_timeout`` was set
    (``"flag --shutdown-timeout"``), named by the line a handled signal prints.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        logs_specs: LogsSpecs | None = None,
        start_method: str = START_METHOD,
        exit_barrier_timeout: float = 300.0,
        log_line_prefix_template: str | None = None,
        shutdown_timeout: float | None = None,
        health_check_server: HealthCheckServer | None = None,
        uninterruptible_state_timeout: float | None = None,
        *,
        signals_to_handle: Sequence[signal.Signals] = DEFAULT_SIGNALS,
        console: tuple[BinaryIO, BinaryIO] | None = None,
        timers: Sequence[TimerServer] | None = None,
        metric_handlers: Sequence[metrics.MetricHandler] | None = None,
        event_handlers: Sequence[events.EventHandler] | None = None,
        preload: Sequence[str] = (),
        standbys_early: bool = False,
        standby_delay: float = STANDBY_DELAY,
        run_dir: str | None = None,
        shutdown_timeout_source: str | None = None,
    ) -> None:
        if logs_specs is not None and not callable(getattr(logs_specs, "reify", None)):
            raise TypeError(f"LocalElasticAgent(spec, {logs_specs!r}): the second argument is "
                            "logs_specs, a LogsSpecs, as in torch; pass start_method= by keyword")
        if start_method not in START_METHODS:
            raise ValueError(f"start_method {start_method!r}: expected spawn, forkserver or fork")
        if start_method == "fork" and callable(spec.entrypoint):
            # Programs and scripts ignore the start method, as under torchrun.
            raise ValueError(
                "start_method 'fork' is not supported for function entrypoints: a forked worker "
                "would inherit the agent's state; use 'spawn' (or 'forkserver', the same here)")
        self._spec = spec
        self._logs_specs = logs_specs
        self._log_line_prefix_template = log_line_prefix_template
        if shutdown_timeout is not None:
            spec.shutdown_timeout = shutdown_timeout
        self._health_check_server = health_check_server
        self._last_progress = time.time()  # the agent's heartbeat, for the health check
        self._signals = tuple(signals_to_handle)
        self._console = console or (sys.stdout.buffer, sys.stderr.buffer)
        self._worker_group = WorkerGroup(spec)
        self._budget = RestartBudget(spec.max_restarts)
        self._hostname = socket.gethostname()
        self._given_run_dir = run_dir
        self._run_dir = ""
        self._keep_run_dir = spec.log_dir is not None and logs_specs is None
        self._shutdown_timeout_source = shutdown_timeout_source
        self._stop_announced = False  # the line a handled signal prints, printed once
        self._selector: selectors.BaseSelector | None = None
        self._attempt: _Attempt | None = None
        self._signal_received: list[signal.Signals] = []
        self._wake_r, self._wake_w = -1, -1
        self._notified = False
        self._in_rendezvous = False
        self._timers = AgentTimers(timers)
        self._metric_handlers = None if metric_handlers is None else list(metric_handlers)
        self._event_handlers = None if event_handlers is None else list(event_handlers)
        if metric_handlers is not None or event_handlers is not None:
            given = [*(metric_handlers or ()), *(event_handlers or ())]
            dispatcher.handlers_of(lambda: given)  # closed at exit like the process's own
        self._relay: Relay | None = None
        self._preload = tuple(preload)
        self._standbys_early = standbys_early
        self._standby_delay = standby_delay
        self._refill_at: float | None = None  # when the standbys are started (monotonic)
        self._standbys: StandbyPool | None = None

    def get_worker_group(self, role: str = "default") -> WorkerGroup:
        """This node's workers. ``role`` (here and in :meth:`run`) is torch's: an agent runs
        the one role of its spec."""
        return self._worker_group

    @property
    def run_dir(self) -> str:
        """Where this run's per-attempt files live (a temporary one without ``log_dir``)."""
        return self._run_dir

    @property
    def _restart_count(self) -> int:
        """The current attempt's number (see :mod:`pliant.agent.restarts`)."""
        return self._budget.used

    @property
    def restart_count(self) -> int:
        """The restart count of the current (or last) attempt: 0 for the first, one more
        after each restarted failure, also when :meth:`run` ended by a signal."""
        return self._budget.used

    # -- the run -----------------------------------------------------------------

    def run(self, role: str = "default") -> RunResult:
        spec = self._spec
        assert spec.rdzv_handler is not None
        run_id = spec.rdzv_handler.get_run_id()
        if self._given_run_dir is not None:  # the caller made it, and named it
            self._run_dir, self._keep_run_dir = self._given_run_dir, True
        else:
            self._keep_run_dir = self._logs_specs is None and bool(
                spec.log_dir is not None or spec.redirects or spec.tee)
            self._run_dir = make_run_dir(run_id, None if self._logs_specs is not None
                                         else spec.log_dir)
            if self._keep_run_dir:
                log.info("worker logs: %s", self._run_dir)
        self._selector = selectors.DefaultSelector()
        try:
            self._start_health_check()
            self._timers.start(self._selector)
            self._start_relay()
            self._start_standbys()
            with self._signals_handled():
                result = self._invoke_run()
            self._record_metrics(result)
            if result.is_failed() and self._logs_specs is None:
                self._keep_run_dir = True  # the report points at the error files in it
            return result
        finally:
            if self._attempt is not None:
                self._stop(self._attempt, signal.SIGTERM)
            if self._standbys is not None:
                self._standbys.close()
            self._timers.stop()
            if self._health_check_server is not None:
                self._health_check_server.stop()
            self._stop_relay()
            self._selector.close()
            # What this run recorded has reached the handlers when run() returns.
            metrics.flush(timeout=2.0)
            if not self._keep_run_dir:
                import shutil

                shutil.rmtree(self._run_dir, ignore_errors=True)

    def _invoke_run(self) -> RunResult:
        spec = self._spec
        handler = spec.rdzv_handler
        assert handler is not None
        last: _Attempt | None = None
        while True:
            if self._signal_received:  # it came while the last group stopped: start nothing
                self._on_signal()
            try:
                info = self._rendezvous()
            except RendezvousGracefulExitError as exc:
                log.info("[%s] leaving without running: %s", spec.role, exc)
                self._worker_group.state = WorkerState.SUCCEEDED
                return RunResult(WorkerState.SUCCEEDED, restart_count=self._restart_count)
            attempt = last = self._start_workers(info, last)
            outcome = self._monitor(attempt)
            if outcome == WorkerState.SUCCEEDED:
                self._close_attempt(attempt)
                self._report_success()
                self._worker_group.state = WorkerState.SUCCEEDED
                self._emit("run_succeeded")
                return RunResult(WorkerState.SUCCEEDED, self._return_values(attempt),
                                 restart_count=self._restart_count)
            self._stop(attempt, signal.SIGTERM)
            root = None if outcome == WorkerState.UNHEALTHY else \
                min(attempt.failures.values(), key=lambda f: f.timestamp)
            if self._signal_received:  # it came while the group stopped: no new attempt
                if root is not None:
                    log.info("[%s] worker group failed (%s); not restarting: stopping on %s",
                             spec.role, _failure_text(root.as_dict()),
                             self._signal_received[0].name)
                self._on_signal()
            if root is None:
                end = handler.round_end()
            else:
                end = handler.report_failure(root.as_dict(), restart=not self._budget.exhausted)
            if end is None:  # a handler that cannot notify: nodes are waiting to join
                log.info("[%s] new nodes are waiting; restarting the group to admit them",
                         spec.role)
                continue
            if end.restart:
                self._on_restart(end)
                continue
            return self._on_round_failed(end, attempt)

    def _report_success(self) -> None:
        """Tell the rendezvous that every worker here succeeded. As with torch's exit
        barrier, an error there (the store gone) is logged: the run succeeded all the same."""
        assert self._spec.rdzv_handler is not None
        try:
            self._spec.rdzv_handler.report_success()
        except SignalException:
            raise
        except Exception as exc:
            log.warning("[%s] every worker succeeded, but telling the rendezvous failed: %s",
                        self._spec.role, exc)

    def _on_restart(self, end: RoundEnd) -> None:
        spec = self._spec
        if end.reason == "failure":
            # Counted here on every backend; one that counts for the job confirms it at the
            # next rendezvous (RestartBudget.for_round).
            self._budget = self._budget.after_failure()
            failure = end.failure or {}
            log.info("[%s] worker group failed (%s); restarting, %s", spec.role,
                     _failure_text(failure), self._budget.progress())
            self._emit("restart", reason=end.message[:500], failed_rank=failure.get("rank", -1))
            metrics.put_metric("restarts", 1, "pliant.agent")
        else:
            log.info("[%s] membership change: %s; forming a new round", spec.role, end.message)
            self._emit("membership_change", reason=end.reason, message=end.message[:500],
                       survivors=end.survivors)
            metrics.put_metric("membership_changes", 1, "pliant.agent")

    def _on_round_failed(self, end: RoundEnd, attempt: _Attempt) -> RunResult:
        """The round ended and no new one follows: a job-wide failure, or an error."""
        self._worker_group.state = WorkerState.FAILED
        self._emit("run_failed", reason=end.reason)
        if end.reason in ("failure", "failed"):
            failures = dict(attempt.failures)
            if end.failure is not None:
                # The failure that ended the round, wherever it was: every node then names the
                # same root cause, also when its own workers failed in its wake.
                remote = ProcessFailure.from_dict(end.failure)
                failures.setdefault(remote.global_rank, remote)
            return RunResult(WorkerState.FAILED, failures=failures,
                             restart_count=self._restart_count)
        errors: dict[str, type[RendezvousError]] = {"store": RendezvousConnectionError,
                                                    "closed": RendezvousClosedError}
        raise errors.get(end.reason, RendezvousError)(end.message)

    # -- rendezvous and start ----------------------------------------------------------

    def _rendezvous(self) -> RendezvousInfo:
        spec = self._spec
        assert spec.rdzv_handler is not None
        start = time.perf_counter()
        spec.rdzv_handler.local_world_size = spec.local_world_size
        spec.rdzv_handler.role = spec.role
        spec.rdzv_handler.max_restarts = spec.max_restarts
        self._emit("rendezvous_joined")
        self._in_rendezvous = True  # a signal now interrupts the wait (see _handle_signal)
        try:
            info = spec.rdzv_handler.next_rendezvous()
        finally:
            self._in_rendezvous = False
        self._budget = self._budget.for_round(info.restart_count)
        self._notified = spec.rdzv_handler.on_change(self._wake)
        group = self._worker_group
        group.group_rank, group.group_world_size = info.rank, info.world_size
        # WorkerSpec's master address and port, when given, win over the rendezvous's (torch).
        group.master_addr = spec.master_addr or info.master_addr
        group.master_port = spec.master_port or info.master_port
        group.store = info.store
        # Without node_sizes (node_roles) every node runs as many workers as this one (its role).
        sizes = info.node_sizes or (spec.local_world_size,) * info.world_size
        roles = info.node_roles or (spec.role,) * info.world_size
        base, world, role_base, role_world = assign_ranks(sizes, roles, info.rank)
        for worker in group.workers:
            worker.global_rank = base + worker.local_rank
            worker.role_rank = role_base + worker.local_rank
            worker.world_size, worker.role_world_size = world, role_world
        took_ms = (time.perf_counter() - start) * 1000
        set_context(restart_count=self._restart_count)
        self._emit("rendezvous_completed", round=info.round, node_rank=info.rank,
                   world_size=info.world_size, workers=world, duration_ms=round(took_ms, 3))
        metrics.put_metric("rendezvous.duration.ms", took_ms, "pliant.agent")
        metrics.put_metric("rendezvous.world_size", info.world_size, "pliant.agent")
        metrics.put_metric("workers", world, "pliant.agent")
        return info

    def _node_env(self, local_rank: int) -> dict[str, str]:
        """What a worker's environment holds before the rendezvous: all but its ranks, world
        sizes, master address and per-attempt files. A warm standby starts with it."""
        spec = self._spec
        assert spec.rdzv_handler is not None
        env = dict(os.environ)
        if spec.local_world_size > 1 and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = "1"
        env.update({
            "LOCAL_RANK": "0" if spec.virtual_local_rank else str(local_rank),
            "ROLE_NAME": spec.role,
            "LOCAL_WORLD_SIZE": str(spec.local_world_size),
            "TORCHELASTIC_MAX_RESTARTS": str(spec.max_restarts),
            "TORCHELASTIC_RUN_ID": spec.rdzv_handler.get_run_id(),
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": os.environ.get("TORCH_NCCL_ASYNC_ERROR_HANDLING",
                                                              "1"),
        })
        if spec.virtual_local_rank:
            env["CUDA_VISIBLE_DEVICES"] = _own_device(local_rank)
        env.update(self._timers.worker_env)
        if self._relay is not None:
            env.update(self._relay.worker_env())
        env.update(spec.env)
        return env

    def _worker_env(self, worker_rank: int, attempt_dir: str) -> dict[str, str]:
        spec = self._spec
        group = self._worker_group
        worker = group.workers[worker_rank]
        assert spec.rdzv_handler is not None
        env = self._node_env(worker.local_rank)
        env.update({
            "RANK": str(worker.global_rank),
            "GROUP_RANK": str(group.group_rank),
            "ROLE_RANK": str(worker.role_rank),
            "WORLD_SIZE": str(worker.world_size),
            "GROUP_WORLD_SIZE": str(group.group_world_size),
            "ROLE_WORLD_SIZE": str(worker.role_world_size),
            "MASTER_ADDR": str(group.master_addr),
            "MASTER_PORT": str(group.master_port),
            "TORCHELASTIC_RESTART_COUNT": str(self._restart_count),
            "TORCHELASTIC_USE_AGENT_STORE": str(spec.rdzv_handler.use_agent_store),
            ERROR_FILE_ENV: os.path.join(attempt_dir, "error.json"),
            "PLIANT_RETURN_FILE": os.path.join(attempt_dir, "return.pkl"),
        })
        env.update(spec.env)  # the user's word is last, as for the node's part
        return env

    def _argv(self) -> list[str]:
        entrypoint = self._spec.entrypoint
        if isinstance(entrypoint, str):
            return [entrypoint, *map(str, self._spec.args)]
        # A function: pickle it once per run, by reference, with spawn's preparation data.
        path = os.path.join(self._run_dir, "entrypoint.pkl")
        if not os.path.exists(path):
            import multiprocessing.spawn
            import pickle

            preparation = multiprocessing.spawn.get_preparation_data("pliant-worker")
            preparation.pop("authkey", None)  # workers get no multiprocessing secret
            with open(path, "wb") as f:
                pickle.dump(preparation, f)
                pickle.dump((entrypoint, self._spec.args), f)
        return [sys.executable, *BOOTSTRAP, "function", path]

    def _start_workers(self, info: RendezvousInfo, last: _Attempt | None) -> _Attempt:
        assert self._selector is not None
        count = self._restart_count
        regroup = last.regroup + 1 if last is not None and last.restart_count == count else 0
        attempt = _Attempt(count, regroup,
                           os.path.join(self._run_dir, attempt_folder(count, regroup)))
        self._attempt = attempt
        argv = self._argv()
        bootstrapped = argv[1:1 + len(BOOTSTRAP)] == list(BOOTSTRAP)
        cold = False
        duplicates = self._open_filtered(attempt)
        envs: dict[int, dict[str, str]] = {}
        for worker in self._worker_group.workers:
            rank_dir = os.path.join(attempt.directory, str(worker.local_rank))
            os.makedirs(rank_dir, mode=0o700)  # its logs and error file: the user's alone
            envs[worker.local_rank] = self._worker_env(worker.local_rank, rank_dir)
        dest = self._logs_specs.reify(envs) if self._logs_specs is not None else None
        for worker in self._worker_group.workers:
            env = envs[worker.local_rank]
            rank_dir = os.path.join(attempt.directory, str(worker.local_rank))
            out, err = self._routes(worker, info.rank, rank_dir, dest, duplicates)
            attempt.error_files[worker.local_rank] = env.get(ERROR_FILE_ENV, "")
            warm = self._start_warm(worker.local_rank, env, argv, out, err)
            if warm is not None:
                proc, pipes = warm
            else:
                cold = True
                try:
                    proc = WorkerProcess(argv, env, out.child, err.child,
                                         sets_own_deathsig=bootstrapped)
                except OSError as exc:
                    raise UsageError(f"cannot start worker {worker.local_rank} with "
                                     f"{argv[0]!r}: {exc.strerror or exc}; check that it exists "
                                     "and is executable") from exc
                pipes = (proc.popen.stdout, proc.popen.stderr)
            for route, pipe in zip((out, err), pipes, strict=True):
                route.attach(pipe)
                if route.file is not None and route.pipe_fd is None:
                    route.file.close()  # the worker holds its own copy
                    route.file = None
                if route.pipe_fd is not None:
                    self._selector.register(route.pipe_fd, selectors.EVENT_READ, route)
                attempt.routes.append(route)
            worker.id = proc.pid
            attempt.procs.append(proc)
            self._selector.register(proc.exit_fd, selectors.EVENT_READ, worker.local_rank)
            self._emit("worker_started", rank=worker.global_rank, local_rank=worker.local_rank,
                       pid=proc.pid, attempt=count, warm=warm is not None)
        if self._standbys is not None:
            # A cold worker imports now: the replacements wait, not to take its cores. A warm
            # group has done its imports, so they start at once, ready for the next failure.
            self._refill_at = time.monotonic() + (self._standby_delay if cold else 0.0)
        self._worker_group.state = WorkerState.HEALTHY
        self._emit("workers_started", attempt=count)
        return attempt

    def _open_filtered(self, attempt: _Attempt,
                       ) -> list[tuple[IO[bytes], tuple[str, ...]] | None]:
        """The attempt's ``filtered_stdout.log`` and ``filtered_stderr.log`` with their
        filters (``--duplicate-stdout-filters``, ...), each None when not asked for."""
        spec = self._spec
        os.makedirs(attempt.directory, exist_ok=True)
        duplicates: list[tuple[IO[bytes], tuple[str, ...]] | None] = []
        for name, filters in (("filtered_stdout.log", spec.duplicate_stdout_filters),
                              ("filtered_stderr.log", spec.duplicate_stderr_filters)):
            file = open(os.path.join(attempt.directory, name), "wb") if filters else None  # noqa: SIM115
            if file is not None:
                attempt.filtered.append(file)
            duplicates.append(None if file is None else (file, filters))
        return duplicates

    def _routes(self, worker: Worker, node_rank: int, rank_dir: str, dest: LogsDest | None,
                duplicates: list[tuple[IO[bytes], tuple[str, ...]] | None],
                ) -> tuple[StreamRoute, StreamRoute]:
        """Where the worker's stdout and stderr go: as the given LogsSpecs placed them, else
        as the spec's redirects, tee and filter say, in the worker's folder of the attempt.
        ``duplicates``: the attempt's filtered stdout and stderr files and their filters."""
        spec = self._spec
        rank = worker.local_rank
        prefix, templated = self._prefix(worker, node_rank)
        if dest is None:
            shown = not spec.local_ranks_filter or rank in spec.local_ranks_filter
            redirects, tee = std_for(spec.redirects, rank), std_for(spec.tee, rank)
            out, err = (route_stream(stream, redirects, tee, shown, console,
                                     os.path.join(rank_dir, name), prefix, templated, duplicate)
                        for stream, console, name, duplicate in (
                            (STDOUT, self._console[0], "stdout.log", duplicates[0]),
                            (STDERR, self._console[1], "stderr.log", duplicates[1])))
            return out, err

        def placed(paths: dict[int, str], tees: dict[int, str], console: BinaryIO) -> StreamRoute:
            path = paths.get(rank, "")
            if path == os.devnull:
                return StreamRoute(None, None, prefix)
            if not path:
                return StreamRoute(console, None, prefix)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            shown = console if rank in tees and tees[rank] != os.devnull else None
            return StreamRoute(shown, open(path, "wb"), prefix)

        return (placed(dest.stdouts, dest.tee_stdouts, self._console[0]),
                placed(dest.stderrs, dest.tee_stderrs, self._console[1]))

    def _prefix(self, worker: Worker, node_rank: int) -> tuple[bytes, bool]:
        """A console line's prefix, and whether a template made it: the agent's
        ``log_line_prefix_template``, else ``TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE``, else
        ``[node:rank] `` (see :func:`~pliant.agent.output.line_prefix`)."""
        template = self._log_line_prefix_template
        if template is None:
            return line_prefix(node_rank, self._spec.role, worker.global_rank,
                               worker.local_rank)
        from string import Template

        return Template(template).safe_substitute(
            role_name=self._spec.role, rank=worker.global_rank,
            local_rank=worker.local_rank).encode(), True

    # -- warm standbys -----------------------------------------------------------------

    def _start_standbys(self) -> None:
        """One standby per local rank, now: their imports overlap the rendezvous."""
        warm_argv = self._warm_argv()
        if not self._preload or warm_argv is None:
            return
        if self._preload == ("auto",) and not _may_use_torch(warm_argv):
            # A standby importing torch for a script that never does would only take CPU
            # from the workers (and seconds from a short job).
            log.debug("no warm standbys: %s does not import torch", warm_argv[1])
            return
        assert self._selector is not None
        self._standbys = StandbyPool(self._spec.local_world_size, self._node_env,
                                     self._preload, self._selector)
        if self._standbys_early:
            self._refill_standbys()

    def _refill_standbys(self) -> None:
        """Start a standby for each local rank without one (the selector's deadline)."""
        assert self._standbys is not None
        self._refill_at = None
        self._standbys.refill()
        metrics.put_metric("standbys", self._standbys.size, "pliant.agent")

    # -- the health check -------------------------------------------------------------

    def _start_health_check(self) -> None:
        """Serve the health check given, or the one ``TORCHELASTIC_HEALTH_CHECK_PORT`` asks
        for (see :mod:`pliant.agent.health`)."""
        if self._health_check_server is None:
            text = os.environ.get(HEALTH_CHECK_PORT_ENV, "").strip()
            if not text:
                return
            try:
                port = int(text)
                if not 0 <= port <= 65535:
                    raise ValueError
            except ValueError:
                raise UsageError(f"{HEALTH_CHECK_PORT_ENV}={text!r} is not a port: set it to a "
                                 "number from 0 to 65535, or unset it") from None
            self._health_check_server = HealthCheckServer(
                self._alive_time, port, HEALTH_CHECK_TIMEOUT, self._health_status)
        try:
            self._health_check_server.start()
        except OSError as exc:
            port_text = os.environ.get(HEALTH_CHECK_PORT_ENV) or self._health_check_server.port
            raise UsageError(f"cannot serve the health check on port {port_text} (from env "
                             f"{HEALTH_CHECK_PORT_ENV}): {exc.strerror or exc}; choose a free "
                             "port, or unset the variable") from exc

    def _alive_time(self) -> int:
        """The agent's last heartbeat (seconds since the epoch), as torch's callback gives
        it; while the agent waits in a rendezvous, now (the rendezvous has its own timeout)."""
        if self._in_rendezvous:
            return int(time.time())
        return int(self._last_progress)

    def _health_status(self) -> dict[str, Any]:
        spec, group = self._spec, self._worker_group
        attempt = self._attempt
        procs = attempt.procs if attempt is not None else []
        return {
            "state": "RENDEZVOUS" if self._in_rendezvous else group.state.value,
            "role": spec.role,
            "run_id": spec.rdzv_handler.get_run_id() if spec.rdzv_handler else None,
            "restart_count": self._restart_count,
            "max_restarts": spec.max_restarts,
            "group_rank": group.group_rank,
            "pid": os.getpid(),
            "workers": [{"local_rank": w.local_rank, "rank": w.global_rank, "pid": p.pid,
                         "running": p.returncode is None}
                        for w, p in zip(group.workers, procs, strict=False)],
        }

    def _until_refill(self, timeout: float | None) -> float | None:
        """``timeout``, shortened to wake when the standbys are due."""
        if self._refill_at is None:
            return timeout
        wait = max(self._refill_at - time.monotonic(), 0.0)
        return wait if timeout is None else min(timeout, wait)

    def _warm_argv(self) -> list[str] | None:
        """What a standby runs as the worker (MODE TARGET ARGS...); None where none can: a
        program (--no-python), another interpreter, a function entrypoint."""
        spec = self._spec
        head = len(BOOTSTRAP)
        if spec.entrypoint != sys.executable or tuple(spec.args[:head]) != BOOTSTRAP:
            return None
        rest = [str(arg) for arg in spec.args[head:]]
        return rest if rest[:1] in (["script"], ["module"]) else None

    def _start_warm(self, local_rank: int, env: dict[str, str], argv: list[str],
                    out: StreamRoute, err: StreamRoute,
                    ) -> tuple[WorkerProcess, tuple[IO[bytes] | None, ...]] | None:
        """Hand ``local_rank``'s standby its worker; None when it has no ready one."""
        warm_argv = self._warm_argv()
        if self._standbys is None or warm_argv is None:
            return None
        child_fds: list[int] = []
        ours: list[int] = []  # what the agent closes once the standby has its copies
        pipes: list[IO[bytes] | None] = []
        for route in (out, err):
            if route.child == subprocess.PIPE:
                read_end, write_end = os.pipe()
                child_fds.append(write_end)
                ours.append(write_end)
                pipes.append(open(read_end, "rb", buffering=0))  # noqa: SIM115
            elif isinstance(route.child, int) and route.child >= 0:  # the agent's terminal
                child_fds.append(route.child)
                pipes.append(None)
            elif route.child == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_WRONLY)
                child_fds.append(fd)
                ours.append(fd)
                pipes.append(None)
            else:
                assert not isinstance(route.child, int)
                child_fds.append(route.child.fileno())
                pipes.append(None)
        env = {**env, "PLIANT_AGENT_PID": str(os.getpid())}  # as WorkerProcess gives a cold one
        try:
            proc = self._standbys.take(local_rank, env, warm_argv, child_fds, self._wake_r)
        finally:
            for fd in ours:
                os.close(fd)
        if proc is None:
            for pipe in pipes:
                if pipe is not None:
                    pipe.close()
            return None
        return proc, tuple(pipes)

    # -- monitoring ---------------------------------------------------------------

    def _monitor(self, attempt: _Attempt) -> WorkerState:
        """Sleep until the group succeeds, a worker fails, or nodes wait to join."""
        spec = self._spec
        assert self._selector is not None and spec.rdzv_handler is not None
        poll = spec.rdzv_handler.polls_membership and not self._notified
        running = len(attempt.procs)
        while True:
            if self._signal_received:  # also one that arrived while the last group stopped
                self._on_signal()
            exited = self._next_events(spec.monitor_interval if poll else None)
            for local_rank in exited:
                running -= 1
                self._on_exit(attempt, local_rank)
            if attempt.failures:
                # A sibling that failed on its own in the same instant is a failure too,
                # not a worker this agent stopped.
                for proc, worker in zip(attempt.procs, self._worker_group.workers, strict=True):
                    if proc.returncode is None and proc.poll() is not None:
                        self._selector.unregister(proc.exit_fd)
                        self._on_exit(attempt, worker.local_rank)
                self._worker_group.state = WorkerState.FAILED
                return WorkerState.FAILED
            if running == 0:
                return WorkerState.SUCCEEDED
            if self._notified and spec.rdzv_handler.round_end() is not None:
                return WorkerState.UNHEALTHY
            if poll and spec.rdzv_handler.num_nodes_waiting() > 0:
                return WorkerState.UNHEALTHY

    def _next_events(self, timeout: float | None) -> list[int]:
        """Wait for activity and pass worker output on; return the local ranks that exited
        (no longer watched). A signal that woke us is left in ``_signal_received``."""
        assert self._selector is not None
        exited = []
        readable_timers = []
        if self._health_check_server is not None:  # wake for the heartbeat
            timeout = HEALTH_CHECK_HEARTBEAT if timeout is None else min(
                timeout, HEALTH_CHECK_HEARTBEAT)
        ready = self._selector.select(self._timers.timeout(self._until_refill(timeout)))
        self._last_progress = time.time()
        for key, _ in ready:
            if isinstance(key.data, StreamRoute):
                if not key.data.pump():
                    self._selector.unregister(key.fd)
            elif key.data is None:  # the signal pipe
                self._read_wake()
            elif isinstance(key.data, Standby):
                assert self._standbys is not None
                self._standbys.on_readable(key.data)
            elif isinstance(key.data, TimerServer):
                readable_timers.append(key.data)
            else:
                self._selector.unregister(key.fd)
                exited.append(key.data)
        self._on_timers(readable_timers)
        if self._refill_at is not None and time.monotonic() >= self._refill_at:
            self._refill_standbys()
        return exited

    def _on_timers(self, readable: list[TimerServer]) -> None:
        """Kill each worker whose deadline passed (its whole process group); its exit is
        then an ordinary failure. While the workers stop there is nothing to act on."""
        attempt = self._attempt
        if attempt is None or attempt.stopping:
            self._timers.expired(readable, (), ())  # taken in all the same
            return
        for expiry in self._timers.expired(readable, attempt.procs, attempt.expired):
            local_rank, timer = expiry.local_rank, expiry.timer
            proc = attempt.procs[local_rank]
            if expiry.kill:
                attempt.expired[local_rank] = expiry
                proc.send(signal.SIGKILL)
            worker = self._worker_group.workers[local_rank]
            log.warning("[%s] timer %r of rank %d (local rank %d, pid %d) expired at %s; %s",
                        self._spec.role, timer.scope_id, worker.global_rank, local_rank,
                        proc.pid, iso(timer.expiration_time),
                        "killing the worker (SIGKILL)" if expiry.kill else
                        f"not killing the worker: its request asked for signal {timer.signal}")
            self._emit("watchdog", pid=proc.pid, timer_pid=timer.pid, local_rank=local_rank,
                       rank=worker.global_rank, scope=timer.scope_id,
                       expired_at=timer.expiration_time, killed=expiry.kill)

    def _on_exit(self, attempt: _Attempt, local_rank: int) -> None:
        proc = attempt.procs[local_rank]
        code = proc.reap()
        now = time.time()
        worker = self._worker_group.workers[local_rank]
        if code == 0 or attempt.stopping:
            self._emit("worker_succeeded" if code == 0 else "worker_stopped",
                       rank=worker.global_rank, local_rank=local_rank, pid=proc.pid,
                       exitcode=code)
            return
        failure = ProcessFailure(
            local_rank=local_rank,
            global_rank=worker.global_rank,
            pid=proc.pid,
            exitcode=code,
            hostname=self._hostname,
            timestamp=now,
            error_file=attempt.error_files.get(local_rank, ""),
            restart_count=self._restart_count,
        )
        if local_rank in attempt.expired:
            failure.cause = attempt.expired[local_rank].cause(proc.pid)
        failure.error_file_data = (read_error_file(failure.error_file)
                                   if failure.error_file else None)
        # As torch: when the worker wrote an error file, the failure is dated by it.
        written = error_timestamp(failure.error_file_data)
        if written is not None:
            failure.timestamp = written
        attempt.failures[worker.global_rank] = failure
        self._emit("worker_failed", rank=worker.global_rank, exitcode=code,
                   signal=failure.signal, message=failure.message[:500])

    def _return_values(self, attempt: _Attempt) -> dict[int, Any]:
        import pickle  # only function entrypoints return values

        values: dict[int, Any] = {}
        for worker in self._worker_group.workers:
            path = os.path.join(attempt.directory, str(worker.local_rank), "return.pkl")
            value = None
            if os.path.exists(path):
                with open(path, "rb") as f:
                    value = pickle.load(f)
            values[worker.global_rank] = value
        return values

    # -- stopping -----------------------------------------------------------------

    def _stop(self, attempt: _Attempt, sig: int) -> None:
        """Signal every live worker's tree, wait up to ``shutdown_timeout``, then SIGKILL."""
        if attempt.stopping and not any(p.returncode is None for p in attempt.procs):
            self._close_attempt(attempt)
            return
        assert self._selector is not None
        attempt.stopping = True
        for proc in attempt.procs:
            proc.send(sig)
        deadline = time.monotonic() + self._spec.shutdown_timeout
        waiting = {i for i, p in enumerate(attempt.procs) if p.returncode is None}
        forced = False
        while waiting and (left := deadline - time.monotonic()) > 0:
            for local_rank in self._next_events(left):
                waiting.discard(local_rank)
                attempt.procs[local_rank].reap()
            if self._signal_received:  # also one that came while a failed group stops
                self._announce_stop(self._signal_received[0])
            if len(self._signal_received) > 1:
                # A second Ctrl-C does not wait out --shutdown-timeout, whichever stop it
                # interrupts (the first one's, or a failed group's).
                log.warning("second signal (%s): killing the workers now (SIGKILL)",
                            self._signal_received[-1].name)
                forced = True
                break
        for proc in attempt.procs:
            if proc.returncode is None:
                if not forced:  # after a second signal, the line above said so
                    log.warning("worker pid %d is still running after signal %d; sending "
                                "SIGKILL", proc.pid, sig)
                proc.send(signal.SIGKILL)
                proc.reap()
            signal_tree(proc.pid, signal.SIGKILL)  # what the worker left behind in its group
        self._close_attempt(attempt)
        self._worker_group.state = WorkerState.STOPPED

    def _close_attempt(self, attempt: _Attempt) -> None:
        assert self._selector is not None
        for route in attempt.routes:
            route.drain()
            if route.pipe_fd is not None and route.pipe_fd in self._selector.get_map():
                self._selector.unregister(route.pipe_fd)
            route.close()
        for proc in attempt.procs:
            if proc.exit_fd in self._selector.get_map():
                self._selector.unregister(proc.exit_fd)
            proc.close()
        self._timers.forget(proc.pid for proc in attempt.procs)
        attempt.routes.clear()
        for file in attempt.filtered:
            file.close()
        attempt.filtered.clear()
        if self._attempt is attempt:
            self._attempt = None

    # -- the workers' metrics and events --------------------------------------------

    def _start_relay(self) -> None:
        """When this agent has metric or event handlers, its workers' records come through
        it to them (see :mod:`pliant._delivery.relay`)."""
        to_metrics, to_events = self._metric_handlers, self._event_handlers
        if to_metrics is None:
            metrics.get_handlers()  # builds those named in the environment, if none were set
        if to_events is None:
            events.get_handlers()
        if not ((delivery.metric_handlers.all() if to_metrics is None else to_metrics)
                or (delivery.event_handlers.all() if to_events is None else to_events)):
            return
        try:
            # None: the process's handlers (metrics by group), the relay's default.
            relay = Relay(
                on_metric=None if to_metrics is None else functools.partial(
                    delivery.metric_handlers.send, to=to_metrics),
                on_event=None if to_events is None else functools.partial(
                    delivery.event_handlers.send, to=to_events))
        except OSError as exc:
            log.warning("the workers' metrics and events will not reach the handlers: cannot "
                        "create a socket for them: %s", exc)
            return
        relay.start()
        self._relay = relay

    def _stop_relay(self) -> None:
        """After the workers are gone: hand on what they sent last, then close."""
        if self._relay is not None:
            self._relay.stop()
            self._relay = None

    # -- signals --------------------------------------------------------------------

    @contextmanager
    def _signals_handled(self) -> Iterator[None]:
        """Signals, and the rendezvous's notifications, wake the selector through one pipe."""
        import threading

        assert self._selector is not None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        previous = {}
        if threading.current_thread() is threading.main_thread():
            # only the main thread may install signal handlers
            previous = {sig: signal.signal(sig, self._handle_signal) for sig in self._signals}
        try:
            yield
        finally:
            assert self._spec.rdzv_handler is not None
            self._spec.rdzv_handler.on_change(None)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            wake_w, self._wake_w = self._wake_w, -1
            os.close(self._wake_r)
            os.close(wake_w)

    def _handle_signal(self, signum: int, frame: Any) -> None:
        sig = signal.Signals(signum)
        self._signal_received.append(sig)
        self._wake()
        if self._in_rendezvous:  # no workers to stop: leave the rendezvous wait at once
            self._in_rendezvous = False
            log.info("received %s while waiting in the rendezvous; leaving", sig.name)
            raise SignalException(f"agent received {sig.name}", sig)

    def _wake(self) -> None:
        """Wake the selector (from a signal handler or another thread)."""
        with suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _read_wake(self) -> None:
        with suppress(BlockingIOError):
            os.read(self._wake_r, 512)

    def _on_signal(self) -> None:
        sig = self._signal_received[0]
        if self._attempt is not None:
            self._announce_stop(sig, forwarded=True)
            self._stop(self._attempt, sig)
        raise SignalException(f"agent received {sig.name}", sig)

    def _announce_stop(self, sig: signal.Signals, forwarded: bool = False) -> None:
        """Say once, when the first handled signal is seen, what happens next: how long the
        workers have, where that is set, and that a second signal cuts the wait short.
        A warning, so that ``--quiet`` shows it too: it answers what the user just did."""
        if self._stop_announced:
            return
        self._stop_announced = True
        timeout = self._spec.shutdown_timeout
        source = self._shutdown_timeout_source
        where = ("shutdown_timeout" if source is None else
                 "the default of --shutdown-timeout" if source == "default" else
                 f"shutdown_timeout from {source}")
        again = "Ctrl-C again" if sig == signal.SIGINT else "a second signal"
        log.warning("received %s%s; waiting up to %g s (%s) for them to exit, then SIGKILL; "
                    "%s kills them at once", sig.name, ", passed on to the workers" if forwarded
                    else " while the workers stop", timeout, where, again)

    # -- reporting ---------------------------------------------------------------------

    def get_event_succeeded(self) -> events.Event:
        """torch's ``torchelastic.worker.status.SUCCEEDED`` event for this agent."""
        return self._status_event("SUCCEEDED")

    def get_event_failed(self) -> events.Event:
        """torch's ``torchelastic.worker.status.FAILED`` event for this agent, with the
        exception being handled (if any) as ``raw_error``."""
        import traceback

        return self._status_event("FAILED", raw_error=traceback.format_exc())

    def _status_event(self, state: str, raw_error: str | None = None) -> events.Event:
        spec, group = self._spec, self._worker_group
        assert spec.rdzv_handler is not None
        md = {"group_world_size": group.group_world_size,
              "entry_point": spec.get_entrypoint_name()}
        metadata: dict[str, events.EventMetadataValue] = {
            "run_id": spec.rdzv_handler.get_run_id(), "global_rank": None,
            "group_rank": group.group_rank, "worker_id": None, "role": spec.role,
            "hostname": socket.getfqdn(), "state": state, "total_run_time": 0,
            "rdzv_backend": spec.rdzv_handler.get_backend(), "raw_error": raw_error,
            "metadata": json.dumps(md), "agent_restarts": self._restart_count,
            "duration_ms": None}
        return events.Event(f"torchelastic.worker.status.{state}",
                            source=events.EventSource.AGENT, metadata=metadata)

    def _record_metrics(self, result: RunResult) -> None:
        """torch's per-run metrics, under its names (group ``torchelastic``): run_total,
        one of the four run_{success,failed}_{with,no}_retries set to 1 (the others 0), and
        flakiness (100 for a failed run, else the share of the restart budget used)."""
        role, failed = self._spec.role, result.is_failed()
        retried = self._restart_count > 0
        metrics.put_metric(f"workers.{role}.run_total", 1)
        for name, happened in (("run_success_with_retries", not failed and retried),
                               ("run_success_no_retries", not failed and not retried),
                               ("run_failed_with_retries", failed and retried),
                               ("run_failed_no_retries", failed and not retried)):
            metrics.put_metric(f"workers.{role}.{name}", int(happened))
        flakiness = 100.0 if failed else \
            100.0 * self._restart_count / (self._spec.max_restarts + 1)
        metrics.put_metric(f"workers.{role}.flakiness", int(flakiness))

    def _emit(self, name: str, **metadata: events.EventMetadataValue) -> None:
        if not events.get_handlers():
            return
        spec = self._spec
        assert spec.rdzv_handler is not None
        md: dict[str, events.EventMetadataValue] = {
            "run_id": spec.rdzv_handler.get_run_id(),
            "node": self._hostname,
            "group_rank": self._worker_group.group_rank,
            "role": spec.role,
            "restart_count": self._restart_count,
        }
        md.update(metadata)
        events.record(events.Event(name=f"pliant.agent.{name}",
                                   source=events.EventSource.AGENT, metadata=md))


def _failure_text(failure: dict[str, Any]) -> str:
    """A failure, as the console's restart line names it: ``rank 1 on vm: <message>``."""
    message = (str(failure.get("message") or "?").splitlines() or ["?"])[0][:200]
    return f"rank {failure.get('rank', '?')} on {failure.get('hostname', '?')}: {message}"


def assign_ranks(sizes: Sequence[int], roles: Sequence[str], group_rank: int,
                 ) -> tuple[int, int, int, int]:
    """Node ``group_rank``'s first global rank, the world size, its first rank within its role
    and its role's size, as torch's ``_assign_worker_ranks``: nodes in rank order, each
    holding ``sizes[i]`` workers of role ``roles[i]``."""
    role = roles[group_rank]
    role_sizes = [size for size, r in zip(sizes, roles, strict=True) if r == role]
    before = [size for size, r in zip(sizes[:group_rank], roles[:group_rank], strict=True)
              if r == role]
    return sum(sizes[:group_rank]), sum(sizes), sum(before), sum(role_sizes)


_TORCH_IMPORT = re.compile(rb"^[ \t]*(?:import|from)[ \t]+torch\b", re.MULTILINE)


def _may_use_torch(warm_argv: Sequence[str]) -> bool:
    """Whether ``auto`` preloads for this entrypoint: a script that imports torch itself (a
    line ``import torch...`` or ``from torch...``), or a module (``-m``), whose source the
    agent does not look for; the standby then preloads only if torch is importable."""
    mode, target = warm_argv[0], warm_argv[1]
    if mode != "script":
        return True
    try:
        with open(target, "rb") as f:
            return _TORCH_IMPORT.search(f.read()) is not None
    except OSError:
        return False


def _own_device(local_rank: int) -> str:
    """``--virtual-local-rank``: the one GPU a worker sees, as torch's agent picks it (its
    entry in the agent's CUDA_VISIBLE_DEVICES, else its local rank)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(local_rank)
    devices = visible.split(",")
    if local_rank >= len(devices):
        raise UsageError(f"--virtual-local-rank: local rank {local_rank} has no GPU of its own in "
                         f"CUDA_VISIBLE_DEVICES={visible!r}; list one per worker, or run fewer "
                         "workers")
    return devices[local_rank].strip()

"""The agent's vocabulary: what to run (:class:`WorkerSpec`), what runs
(:class:`Worker`, :class:`WorkerGroup`, :class:`WorkerState`) and how it ended
(:class:`RunResult`, :class:`ProcessFailure`). Names and fields follow torch's
``torch.distributed.elastic.agent.server.api``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pliant import defaults
from pliant.rendezvous.api import RendezvousHandler

__all__ = [
    "ProcessFailure",
    "RunResult",
    "Std",
    "Worker",
    "WorkerGroup",
    "WorkerSpec",
    "WorkerState",
]

#: torchrun's redirect/tee level: 0 none, 1 stdout, 2 stderr, 3 both; or per local rank.
Std = int | dict[int, int]


def std_for(std: Std, local_rank: int) -> int:
    return std.get(local_rank, 0) if isinstance(std, dict) else std


class WorkerState(str, Enum):
    """The state of a worker group (torch's names)."""

    UNKNOWN = "UNKNOWN"
    INIT = "INIT"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @staticmethod
    def is_running(state: WorkerState) -> bool:
        return state in (WorkerState.HEALTHY, WorkerState.UNHEALTHY)


@dataclass
class WorkerSpec:
    """What to run on this node, and how often to try.

    ``entrypoint`` is a program (``str``, run with ``args``) or a Python
    function (run in a fresh interpreter with ``args``; it must be importable,
    as with multiprocessing's spawn). The positional order is torch's. ``master_addr`` and
    ``master_port``, when given, are the workers' ``MASTER_ADDR``/``MASTER_PORT`` in every
    round, instead of the rendezvous's, as in torch.
    """

    role: str = "default"
    local_world_size: int = 1
    rdzv_handler: RendezvousHandler | None = None
    fn: Callable[..., Any] | None = None
    entrypoint: str | Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    max_restarts: int = defaults.MAX_RESTARTS
    monitor_interval: float = defaults.MONITOR_INTERVAL
    master_port: int | None = None
    master_addr: str | None = None
    local_addr: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    log_dir: str | None = None
    redirects: Std = 0
    tee: Std = 0
    local_ranks_filter: frozenset[int] = frozenset()
    shutdown_timeout: float = defaults.SHUTDOWN_TIMEOUT

    def __post_init__(self) -> None:
        if self.local_world_size < 1:
            raise ValueError(f"local_world_size must be >= 1, got {self.local_world_size}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.rdzv_handler is None:
            raise ValueError("WorkerSpec needs an rdzv_handler")
        if self.fn is not None:  # torch's deprecated spelling
            self.entrypoint = self.entrypoint or self.fn
        if self.entrypoint is None:
            raise ValueError("WorkerSpec needs an entrypoint (a program or a function)")
        self.args = tuple(self.args)

    def get_entrypoint_name(self) -> str:
        if isinstance(self.entrypoint, str):
            return self.entrypoint.rsplit("/", 1)[-1]
        return getattr(self.entrypoint, "__qualname__", repr(self.entrypoint))


@dataclass
class Worker:
    """One worker process and its ranks; ``id`` is its pid once started."""

    local_rank: int
    global_rank: int = -1
    role_rank: int = -1
    world_size: int = -1
    role_world_size: int = -1
    id: int | None = None


@dataclass
class WorkerGroup:
    """This node's workers for one attempt."""

    spec: WorkerSpec
    workers: list[Worker] = field(default_factory=list)
    group_rank: int | None = None
    group_world_size: int | None = None
    master_addr: str | None = None
    master_port: int | None = None
    state: WorkerState = WorkerState.INIT
    store: Any = None

    def __post_init__(self) -> None:
        if not self.workers:
            self.workers = [Worker(local_rank=i) for i in range(self.spec.local_world_size)]


@dataclass
class ProcessFailure:
    """How one worker failed: exit code or signal, where, when, and its error file."""

    local_rank: int
    global_rank: int
    pid: int
    exitcode: int
    hostname: str
    timestamp: float = field(default_factory=time.time)
    error_file: str = ""
    error_file_data: dict[str, Any] | None = None
    restart_count: int = 0
    #: Why the agent killed this worker, when it did (a timer of the worker's expired).
    cause: str = ""

    @property
    def signal(self) -> str | None:
        """The signal's name when the worker was killed by one (exit code < 0)."""
        if self.exitcode >= 0:
            return None
        try:
            return signal.Signals(-self.exitcode).name
        except ValueError:
            return f"signal {-self.exitcode}"

    def signal_name(self) -> str:
        return self.signal or "<N/A>"

    @property
    def message(self) -> str:
        """Why the agent killed the worker, else its exception message, or how it exited."""
        if self.cause:
            return self.cause
        msg = self._message_field("message")
        if isinstance(msg, str) and msg:
            return msg
        if self.signal:
            return f"killed by {self.signal}"
        return f"exited with code {self.exitcode}"

    @property
    def traceback(self) -> str | None:
        extra = self._message_field("extraInfo")
        if isinstance(extra, dict) and isinstance(extra.get("py_callstack"), str):
            return str(extra["py_callstack"])
        return None

    def _message_field(self, key: str) -> Any:
        data = self.error_file_data or {}
        message = data.get("message")
        if isinstance(message, dict):
            return message.get(key)
        if key == "message" and isinstance(message, str):
            return message
        return None

    def timestamp_iso(self) -> str:
        when = datetime.fromtimestamp(self.timestamp, timezone.utc)
        return when.isoformat(timespec="milliseconds")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessFailure:
        """The inverse of :meth:`as_dict`: a failure reported by another node."""
        extra = {"py_callstack": data["traceback"]} if data.get("traceback") else {}
        return cls(
            local_rank=int(data.get("local_rank", -1)),
            global_rank=int(data.get("rank", -1)),
            pid=int(data.get("pid", 0)),
            exitcode=int(data.get("exitcode", 1)),
            hostname=str(data.get("hostname", "?")),
            timestamp=float(data.get("timestamp", time.time())),
            error_file=str(data.get("error_file", "")),
            error_file_data={"message": {"message": str(data.get("message", "")),
                                         "extraInfo": extra}},
            restart_count=int(data.get("restart_count", 0)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rank": self.global_rank,
            "local_rank": self.local_rank,
            "pid": self.pid,
            "exitcode": self.exitcode,
            "signal": self.signal,
            "hostname": self.hostname,
            "timestamp": self.timestamp,
            "error_file": self.error_file,
            "message": self.message,
            "traceback": self.traceback,
            "restart_count": self.restart_count,
        }


@dataclass
class RunResult:
    """How a run ended: its final state, failures by global rank, return values by rank."""

    state: WorkerState
    return_values: dict[int, Any] = field(default_factory=dict)
    failures: dict[int, ProcessFailure] = field(default_factory=dict)
    restart_count: int = 0

    def is_failed(self) -> bool:
        return self.state == WorkerState.FAILED

    def root_cause(self) -> ProcessFailure | None:
        """The first failure observed (earliest timestamp), or None."""
        if not self.failures:
            return None
        return min(self.failures.values(), key=lambda f: (f.timestamp, f.global_rank))

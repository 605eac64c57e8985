"""The agent's vocabulary: what to run (:class:`WorkerSpec`), what runs
(:class:`Worker`, :class:`WorkerGroup`, :class:`WorkerState`) and how it ended
(:class:`RunResult`, :class:`ProcessFailure`, :class:`ChildFailedError`). Names and
fields follow torch's ``torch.distributed.elastic.agent.server.api`` (and, for
:class:`ChildFailedError`, ``torch.distributed.elastic.multiprocessing.errors``).
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum, IntFlag
from string import Template
from typing import Any

from pliant import defaults
from pliant.rendezvous.api import RendezvousHandler

__all__ = [
    "ChildFailedError",
    "ProcessFailure",
    "RunResult",
    "Std",
    "Worker",
    "WorkerGroup",
    "WorkerSpec",
    "WorkerState",
]

class Std(IntFlag):
    """torchrun's redirect/tee level (torch's ``Std``): 0 none, 1 stdout, 2 stderr, 3 both."""

    NONE = 0
    OUT = 1
    ERR = 2
    ALL = OUT | ERR

    @classmethod
    def from_str(cls, text: str) -> Std | dict[int, Std]:
        """``"3"`` -> ``Std.ALL``; ``"0:3,1:0"`` -> ``{0: Std.ALL, 1: Std.NONE}``."""
        try:
            if ":" not in text:
                return cls(int(text))
            return {int(rank): cls(int(level)) for rank, level in
                    (item.split(":") for item in text.split(","))}
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a Std: expected 0-3 or LOCAL_RANK:LEVEL,...; "
                             f"{exc}") from exc


#: A level for every local rank, or a level per local rank (missing ones: none).
Streams = int | dict[int, int]


def std_for(std: Streams, local_rank: int) -> int:
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
    redirects: Streams = 0
    tee: Streams = 0
    local_ranks_filter: frozenset[int] = frozenset()
    shutdown_timeout: float = defaults.SHUTDOWN_TIMEOUT
    #: torch's: tee'd lines containing any of these also go to the attempt's
    #: ``filtered_stdout.log`` / ``filtered_stderr.log``, all local ranks together.
    duplicate_stdout_filters: tuple[str, ...] = ()
    duplicate_stderr_filters: tuple[str, ...] = ()
    #: torch's: every worker sees ``LOCAL_RANK=0`` and only its own GPU.
    virtual_local_rank: bool = False

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
        self.duplicate_stdout_filters = tuple(self.duplicate_stdout_filters or ())
        self.duplicate_stderr_filters = tuple(self.duplicate_stderr_filters or ())

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

    def timestamp_isoformat(self) -> str:
        """torch's form: local time, ``YYYY-MM-DD_HH:MM:SS``."""
        return datetime.fromtimestamp(int(self.timestamp)).isoformat(sep="_")

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


_FAILURE_TEMPLATE = """[${idx}]:
  time      : ${time}
  host      : ${hostname}
  rank      : ${rank} (local_rank: ${local_rank})
  exitcode  : ${exitcode} (pid: ${pid}) ${signal_name}
  error_file: ${error_file}
  traceback : ${message}"""

_MESSAGE_TEMPLATE = """
${boarder}
${title}
${section}
Failures:
${other_failures}
${section}
Root Cause (first observed failure):
${root_failure}
${boarder}"""


class ChildFailedError(Exception):
    """torch's ``ChildFailedError(name, failures)``: workers failed, keyed by global rank.

    ``failures`` holds :class:`ProcessFailure` values (pliant's or torch's); the message
    is :meth:`format_msg`, laid out as torch lays it out; the root cause is the failure
    with the earliest timestamp (:meth:`get_first_failure`).
    """

    def __init__(self, name: str, failures: dict[int, Any]) -> None:
        if not failures:
            raise ValueError("ChildFailedError needs at least one failure")
        self.name = name
        self.failures = failures
        super().__init__(self.format_msg())

    def get_first_failure(self) -> tuple[int, Any]:
        rank = min(self.failures, key=lambda r: self.failures[r].timestamp)
        return rank, self.failures[rank]

    def format_msg(self, boarder_delim: str = "=", section_delim: str = "-") -> str:
        title = f"{self.name} FAILED"
        root_rank, _ = self.get_first_failure()
        root, others, width = "", [], len(title)
        for idx, (rank, failure) in enumerate(self.failures.items()):
            text = _format_failure(idx, rank, failure)
            width = max(width, *(len(line) for line in text.split("\n")))
            if rank == root_rank:
                root = text
            else:
                others.append(text)
        width = min(width, 60)
        return Template(_MESSAGE_TEMPLATE).substitute(
            boarder=boarder_delim * width, title=title, section=section_delim * width,
            root_failure=root, other_failures="\n".join(others or ["  <NO_OTHER_FAILURES>"]))


def _format_failure(idx: int, rank: int, failure: Any) -> str:
    """One failure in torch's layout: the traceback when there is one, else the message."""
    if isinstance(failure, ProcessFailure):
        data = failure.error_file_data
        error_file = failure.error_file if data else "<N/A>"
        if not data:  # torch's wording for a failure without an error file
            message = (f"Signal {-failure.exitcode} ({failure.signal}) received by PID "
                       f"{failure.pid}" if failure.signal else
                       "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html")
        elif isinstance(data.get("message"), dict):
            message = (failure.traceback or failure.message).replace("\n", "\n  ")
        else:
            message = failure.message
    else:  # torch's own ProcessFailure
        message, error_file = failure.message, failure.error_file
        if isinstance(message, dict):
            extra = message.get("extraInfo", {})
            message = extra.get("py_callstack", message.get("message", "<N/A>"))
            message = message.replace("\n", "\n  ")
    signal_name = failure.signal_name()
    return Template(_FAILURE_TEMPLATE).substitute(
        idx=idx, time=failure.timestamp_isoformat(), hostname=socket.getfqdn(), rank=rank,
        local_rank=failure.local_rank, exitcode=failure.exitcode, pid=failure.pid,
        signal_name=f" ({signal_name})" if signal_name != "<N/A>" else "",
        error_file=error_file, message=message)

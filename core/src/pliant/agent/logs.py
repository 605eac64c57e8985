"""Where workers' output and error files go: torch's ``LogsSpecs`` and ``DefaultLogsSpecs``.

A :class:`LogsSpecs` given to the agent decides, each attempt, the files of every local
rank (:meth:`LogsSpecs.reify` returns a :class:`LogsDest`): ``stdouts``/``stderrs`` hold a
path, ``""`` for the console or ``os.devnull`` to drop the stream; a rank in
``tee_stdouts``/``tee_stderrs`` also reaches the console; ``error_files`` are the workers'
``TORCHELASTIC_ERROR_FILE``. Without one the agent places its files itself from the
``WorkerSpec`` (``log_dir``, ``redirects``, ``tee``, ``local_ranks_filter``), in the same
layout. The semantics are torch's (``torch.distributed.elastic.multiprocessing.api``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

from pliant.agent.api import Std, Streams, std_for
from pliant.errorfile import ERROR_FILE_ENV

__all__ = ["DefaultLogsSpecs", "LogsDest", "LogsSpecs", "make_run_dir"]

log = logging.getLogger("pliant.agent")


def make_run_dir(run_id: str, log_dir: str | None) -> str:
    """A new folder for one run's per-attempt files: ``<log_dir>/<run_id>_<random>`` (torch's
    layout), or a temporary ``pliant-<run_id>-<random>`` without ``log_dir``. Made by the
    agent when it runs, or before by ``pliant run``, whose start line names it."""
    if log_dir is None:
        return tempfile.mkdtemp(prefix=f"pliant-{run_id}-")
    os.makedirs(log_dir, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{run_id}_", dir=log_dir)


@dataclass
class LogsDest:
    """For each kind of log, a path by local rank (see the module's docstring)."""

    stdouts: dict[int, str] = field(default_factory=dict)
    stderrs: dict[int, str] = field(default_factory=dict)
    tee_stdouts: dict[int, str] = field(default_factory=dict)
    tee_stderrs: dict[int, str] = field(default_factory=dict)
    error_files: dict[int, str] = field(default_factory=dict)
    filtered_stdout: str = ""
    filtered_stderr: str = ""


class LogsSpecs(ABC):
    """How workers' logs are placed; subclass it and implement :meth:`reify` (torch's)."""

    def __init__(self, log_dir: str | None = None, redirects: Streams = Std.NONE,
                 tee: Streams = Std.NONE, local_ranks_filter: Iterable[int] | None = None,
                 ) -> None:
        self._root_log_dir = log_dir
        self._redirects = redirects
        self._tee = tee
        self._local_ranks_filter = set(local_ranks_filter) if local_ranks_filter else None

    @abstractmethod
    def reify(self, envs: dict[int, dict[str, str]]) -> LogsDest:
        """The destinations of one attempt, given each local rank's environment (it may set
        ``TORCHELASTIC_ERROR_FILE`` there)."""

    @property
    @abstractmethod
    def root_log_dir(self) -> str:
        """The folder under which the logs go."""


class DefaultLogsSpecs(LogsSpecs):
    """torch's default: ``<log_dir>/<run_id>_<random>/attempt_<n>/<local_rank>/`` holds
    ``stdout.log``, ``stderr.log`` (when redirected or teed) and ``error.json``. Without
    ``log_dir`` a temporary folder is made (and kept); ``os.devnull`` writes no file."""

    def __init__(self, log_dir: str | None = None, redirects: Streams = Std.NONE,
                 tee: Streams = Std.NONE, local_ranks_filter: Iterable[int] | None = None,
                 ) -> None:
        if log_dir != os.devnull:
            if not log_dir:
                log_dir = tempfile.mkdtemp(prefix="torchelastic_")
            elif os.path.isfile(log_dir):
                raise NotADirectoryError(f"log_dir: {log_dir} is a file")
            else:
                os.makedirs(log_dir, exist_ok=True)
        super().__init__(log_dir, redirects, tee, local_ranks_filter)
        self._run_log_dir: str | None = None

    @property
    def root_log_dir(self) -> str:
        return str(self._root_log_dir)

    def reify(self, envs: dict[int, dict[str, str]]) -> LogsDest:
        nprocs = len(envs)
        first = envs.get(0, {})
        run_id = first.get("TORCHELASTIC_RUN_ID", "test_run_id")
        restart_count = first.get("TORCHELASTIC_RESTART_COUNT", "0")
        devnull = self._root_log_dir == os.devnull
        attempt_dir = os.devnull
        if not devnull:
            if self._run_log_dir is None:
                root = self._root_log_dir or tempfile.mkdtemp(prefix="torchelastic_")
                os.makedirs(root, exist_ok=True)
                self._run_log_dir = tempfile.mkdtemp(prefix=f"{run_id}_", dir=root)
                log.info("log directory set to: %s", self._run_log_dir)
            attempt_dir = os.path.join(self._run_log_dir, f"attempt_{restart_count}")
            shutil.rmtree(attempt_dir, ignore_errors=True)
            os.makedirs(attempt_dir)
        dest = LogsDest(stdouts=dict.fromkeys(range(nprocs), ""),
                        stderrs=dict.fromkeys(range(nprocs), ""),
                        filtered_stdout=os.path.join(attempt_dir, "filtered_stdout.log"),
                        filtered_stderr=os.path.join(attempt_dir, "filtered_stderr.log"))
        for rank in range(nprocs):
            if devnull:
                dest.tee_stdouts[rank] = dest.tee_stderrs[rank] = os.devnull
                dest.error_files[rank] = os.devnull
                envs[rank][ERROR_FILE_ENV] = ""
                continue
            rank_dir = os.path.join(attempt_dir, str(rank))
            os.mkdir(rank_dir)
            tee = std_for(self._tee, rank)
            redirect = std_for(self._redirects, rank) | tee  # a tee reads its file back
            for flag, files, tees, name in ((Std.OUT, dest.stdouts, dest.tee_stdouts, "stdout"),
                                            (Std.ERR, dest.stderrs, dest.tee_stderrs, "stderr")):
                if redirect & flag:
                    files[rank] = os.path.join(rank_dir, f"{name}.log")
                if tee & flag:
                    tees[rank] = files[rank]
                if self._local_ranks_filter and rank not in self._local_ranks_filter:
                    tees.pop(rank, None)  # written to its file, not shown
                    if files[rank] == "":
                        files[rank] = os.devnull
            dest.error_files[rank] = envs[rank][ERROR_FILE_ENV] = os.path.join(
                rank_dir, "error.json")
        return dest

    def __repr__(self) -> str:
        return (f"DefaultLogsSpecs(root_log_dir={self._root_log_dir}, "
                f"redirects={self._redirects}, tee={self._tee}, "
                f"local_ranks_filter={self._local_ranks_filter})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DefaultLogsSpecs) and (
            (self._root_log_dir, self._redirects, self._tee, self._local_ranks_filter)
            == (other._root_log_dir, other._redirects, other._tee, other._local_ranks_filter))

    __hash__ = None  # type: ignore[assignment]

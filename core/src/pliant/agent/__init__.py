"""The elastic agent: what runs on each node and keeps its workers running."""

from __future__ import annotations

from pliant.agent.api import (
    ChildFailedError,
    ProcessFailure,
    RunResult,
    Std,
    Worker,
    WorkerGroup,
    WorkerSpec,
    WorkerState,
)
from pliant.agent.health import HealthCheckServer, create_healthcheck_server
from pliant.agent.local import DEFAULT_SIGNALS, LocalElasticAgent, SignalException
from pliant.agent.logs import DefaultLogsSpecs, LogsDest, LogsSpecs

__all__ = [
    "DEFAULT_SIGNALS",
    "ChildFailedError",
    "DefaultLogsSpecs",
    "HealthCheckServer",
    "LocalElasticAgent",
    "LogsDest",
    "LogsSpecs",
    "ProcessFailure",
    "RunResult",
    "SignalException",
    "Std",
    "Worker",
    "WorkerGroup",
    "WorkerSpec",
    "WorkerState",
    "create_healthcheck_server",
]

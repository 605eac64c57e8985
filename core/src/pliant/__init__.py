"""pliant: an elastic, fault-tolerant launcher for PyTorch distributed training.

Everything public is importable from here. Heavy parts (the plugin manager,
the agent) load on first use, so a worker that imports :func:`record` pays
for little more than this file.
"""

from __future__ import annotations

from pliant._lazy import face
from pliant._version import __version__

# Not `from typing import TYPE_CHECKING`: every worker imports this package, and
# typing alone costs milliseconds of start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from pliant.agent import (
        ChildFailedError,
        DefaultLogsSpecs,
        HealthCheckServer,
        LocalElasticAgent,
        LogsSpecs,
        ProcessFailure,
        RunResult,
        Worker,
        WorkerGroup,
        WorkerSpec,
        WorkerState,
    )
    from pliant.errorfile import record
    from pliant.errors import ConfigError, PliantError, PluginError, UsageError
    from pliant.hookspecs import PROJECT, hookimpl, hookspec
    from pliant.plugins import PluginManager
    from pliant.registrations import (
        EventBackend,
        MetricBackend,
        Registration,
        RendezvousBackend,
        TimerBackend,
    )
    from pliant.settings import Setting

_LAZY = {
    "ChildFailedError": "pliant.agent",
    "DefaultLogsSpecs": "pliant.agent",
    "HealthCheckServer": "pliant.agent",
    "LogsSpecs": "pliant.agent",
    "LocalElasticAgent": "pliant.agent",
    "ProcessFailure": "pliant.agent",
    "RunResult": "pliant.agent",
    "Worker": "pliant.agent",
    "WorkerGroup": "pliant.agent",
    "WorkerSpec": "pliant.agent",
    "WorkerState": "pliant.agent",
    "record": "pliant.errorfile",
    "ConfigError": "pliant.errors",
    "PliantError": "pliant.errors",
    "PluginError": "pliant.errors",
    "UsageError": "pliant.errors",
    "PROJECT": "pliant.hookspecs",
    "hookimpl": "pliant.hookspecs",
    "hookspec": "pliant.hookspecs",
    "PluginManager": "pliant.plugins",
    "EventBackend": "pliant.registrations",
    "MetricBackend": "pliant.registrations",
    "Registration": "pliant.registrations",
    "RendezvousBackend": "pliant.registrations",
    "TimerBackend": "pliant.registrations",
    "Setting": "pliant.settings",
}

__all__ = [
    "PROJECT",
    "ChildFailedError",
    "ConfigError",
    "DefaultLogsSpecs",
    "EventBackend",
    "HealthCheckServer",
    "LocalElasticAgent",
    "LogsSpecs",
    "MetricBackend",
    "PliantError",
    "PluginError",
    "PluginManager",
    "ProcessFailure",
    "Registration",
    "RendezvousBackend",
    "RunResult",
    "Setting",
    "TimerBackend",
    "UsageError",
    "Worker",
    "WorkerGroup",
    "WorkerSpec",
    "WorkerState",
    "__version__",
    "hookimpl",
    "hookspec",
    "record",
]


__getattr__ = face("pliant", _LAZY)

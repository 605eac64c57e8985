"""Metrics: named values in groups, sent to the configured handlers.

The seed API: implement :class:`MetricHandler`, call :func:`configure`, and
:func:`put_metric` (or :func:`prof`) reaches it. Plugins provide handlers by
name (``--metrics NAME``); a handler that raises never stops the caller.

``put_metric`` only queues the value: handlers are called from a background
thread, so a slow sink never slows training. Each value carries ``tags``: the
run id, node, role, restart count and, in a worker, its rank. In a worker
started by ``pliant run``, values go to the agent, which hands them to the
handlers it was given (``--metrics``).

This is the face of the package: :mod:`pliant.metrics.types` holds what a
handler implements, :mod:`pliant.metrics.api` the calls, and each loads on
first use, so ``import pliant.metrics`` costs next to nothing. Loading the
calls also gives them the plugin registry as the way to build the handlers
``PLIANT_METRICS`` names: this face is the one module above both.
"""

from __future__ import annotations

from pliant._lazy import face

# Not typing's TYPE_CHECKING: typing alone costs milliseconds of a worker's start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from pliant.metrics.api import (
        MetricsConfig,
        MetricStream,
        configure,
        flush,
        get_elapsed_time_ms,
        get_handlers,
        getStream,
        prof,
        publish_metric,
        put_metric,
    )
    from pliant.metrics.console import ConsoleMetricHandler
    from pliant.metrics.types import MetricData, MetricHandler, NullMetricHandler

_LAZY = {
    "ConsoleMetricHandler": "pliant.metrics.console",
    "MetricData": "pliant.metrics.types",
    "MetricHandler": "pliant.metrics.types",
    "NullMetricHandler": "pliant.metrics.types",
    "MetricStream": "pliant.metrics.api",
    "MetricsConfig": "pliant.metrics.api",
    "configure": "pliant.metrics.api",
    "flush": "pliant.metrics.api",
    "getStream": "pliant.metrics.api",
    "get_elapsed_time_ms": "pliant.metrics.api",
    "get_handlers": "pliant.metrics.api",
    "prof": "pliant.metrics.api",
    "publish_metric": "pliant.metrics.api",
    "put_metric": "pliant.metrics.api",
}

__all__ = [
    "ConsoleMetricHandler",
    "MetricData",
    "MetricHandler",
    "MetricStream",
    "MetricsConfig",
    "NullMetricHandler",
    "configure",
    "flush",
    "getStream",
    "get_elapsed_time_ms",
    "get_handlers",
    "prof",
    "publish_metric",
    "put_metric",
]


def _prepare(module: str) -> None:
    """Before the calls load: they build the handlers ``PLIANT_METRICS`` names through the
    plugin registry, which only this face may import."""
    if module == "pliant.metrics.api":
        from pliant._delivery.handlers import metric_handlers

        metric_handlers.load_with(_handlers_from_env)


__getattr__ = face("pliant.metrics", _LAZY, prepare=_prepare)


def _handlers_from_env() -> list[Any]:
    import os

    if not os.environ.get("PLIANT_METRICS", "").strip():
        return []  # nothing named: a process without handlers never loads the registry
    from pliant.plugins import handlers_from_env

    return handlers_from_env("metrics", os.environ)

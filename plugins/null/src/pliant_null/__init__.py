"""pliant-null: handlers that do nothing, registered like any third-party plugin.

This is the smallest complete pliant plugin. It provides a ``null`` metric
handler, a ``null`` event handler and a ``null`` timer backend. Two things
make it a plugin:

1. the ``[project.entry-points.pliant]`` table in its ``pyproject.toml``,
   which points pliant at this module;
2. the ``@hookimpl`` functions below, each returning typed registrations
   whose factories build a handler only when a user selects it.

It imports pliant only from :mod:`pliant.plugin`, the plugin author's surface, and says
which version of that contract it is written for in ``PLUGIN_API``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pliant.plugin import (
    Event,
    EventBackend,
    EventHandler,
    MetricBackend,
    MetricData,
    MetricHandler,
    Settings,
    TimerBackend,
    TimerServer,
    hookimpl,
)

__all__ = ["PLUGIN_API", "NullEventHandler", "NullMetricHandler", "NullTimerServer"]

#: The version of pliant's plugin contract (:mod:`pliant.plugin`) this module is written for.
PLUGIN_API = 1


class NullMetricHandler(MetricHandler):
    """Drops every metric."""

    def emit(self, metric_data: MetricData) -> None:
        pass


class NullEventHandler(EventHandler):
    """Drops every event."""

    def record(self, event: Event) -> None:
        pass


class NullTimerServer(TimerServer):
    """Watches no deadlines."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _null_metrics(settings: Settings) -> NullMetricHandler:
    return NullMetricHandler()


def _null_events(settings: Settings) -> NullEventHandler:
    return NullEventHandler()


def _null_timer(settings: Settings) -> NullTimerServer:
    return NullTimerServer()


@hookimpl
def pliant_metric_handlers() -> Sequence[MetricBackend]:
    return [MetricBackend("null", _null_metrics, description="Drops every metric.")]


@hookimpl
def pliant_event_handlers() -> Sequence[EventBackend]:
    return [EventBackend("null", _null_events, description="Drops every event.")]


@hookimpl
def pliant_timer_backends() -> Sequence[TimerBackend]:
    return [TimerBackend("null", _null_timer, description="Watches no deadlines.")]

"""pliant-core's own backends, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pliant.hookspecs import hookimpl
from pliant.registrations import EventBackend, MetricBackend, RendezvousBackend, TimerBackend
from pliant.rendezvous.embedded import EMBEDDED_SETTINGS, create_embedded_handler
from pliant.rendezvous.static import STATIC_SETTINGS, create_static_handler


@hookimpl
def pliant_rendezvous_backends() -> Sequence[RendezvousBackend]:
    return [
        RendezvousBackend(
            name="embedded",
            factory=create_embedded_handler,
            settings=EMBEDDED_SETTINGS,
            description="One node, no server: ranks 0..N-1 and a fresh port every attempt.",
        ),
        RendezvousBackend(
            name="static",
            factory=create_static_handler,
            settings=STATIC_SETTINGS,
            description="torchrun's default: --nnodes N nodes with fixed --node-rank; node "
                        "rank 0 hosts the store at --master-addr:--master-port, shared by "
                        "the workers.",
        ),
    ]


def _local_timer(settings: Any) -> Any:
    from pliant.timer.fifo import LocalTimerServer

    return LocalTimerServer()


@hookimpl
def pliant_timer_backends() -> Sequence[TimerBackend]:
    return [
        TimerBackend(
            name="local",
            factory=_local_timer,
            description="The default: the agent kills a worker whose expires() deadline "
                        "passed, through a named pipe; torch's FileTimerClient works too.",
        )
    ]


def _console(settings: Mapping[str, Any]) -> Any:
    from pliant.metrics.console import ConsoleMetricHandler

    return ConsoleMetricHandler(settings)


def _jsonl(settings: Mapping[str, Any]) -> Any:
    from pliant.events.jsonl import JsonlEventHandler

    return JsonlEventHandler(settings)


@hookimpl
def pliant_metric_handlers() -> Sequence[MetricBackend]:
    from pliant.metrics.console import CONSOLE_SETTINGS

    return [MetricBackend("console", _console, settings=CONSOLE_SETTINGS,
                          description="Prints every value on stderr, for debugging.")]


@hookimpl
def pliant_event_handlers() -> Sequence[EventBackend]:
    from pliant.events.jsonl import JSONL_SETTINGS

    return [EventBackend("jsonl", _jsonl, settings=JSONL_SETTINGS,
                         description="Appends every event to a JSON-lines file, for debugging.")]

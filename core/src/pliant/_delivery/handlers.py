"""Which handlers a record goes to: one :class:`HandlerSet` for metrics, one for events.

A process's handlers are those :meth:`HandlerSet.configure` set or, until it is called,
those its environment names, looked up once, on first use: in a worker of ``pliant run``,
the relay to its agent (``PLIANT_RELAY``); otherwise what the set's loader builds. The
loader is given by a module above this one (the ``pliant.metrics`` and ``pliant.events``
faces give the plugin registry's ``handlers_from_env``), so delivery never imports plugins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pliant._delivery.dispatcher import dispatcher
from pliant._delivery.relay_client import client_from_env
from pliant.events.types import Event, EventHandler
from pliant.metrics.types import MetricData, MetricHandler

__all__ = ["HandlerSet", "event_handlers", "metric_handlers"]

log = logging.getLogger("pliant.sinks")

H = TypeVar("H")  # the kind of handler
R = TypeVar("R")  # the kind of record it takes


class HandlerSet(Generic[H, R]):
    """The handlers of one kind, and how a record is queued for them.

    Lists are replaced, never changed in place: a record queued earlier keeps the handlers
    it had. ``call(handler, record)`` hands one record to one handler, on the dispatcher's
    thread; a handler that raises is counted as a drop and the others still get the record.
    """

    def __init__(self, kind: str, call: Callable[[H, R], None]) -> None:
        self.kind = kind
        self._call = call
        #: Handlers for every record (every metric group without its own).
        self.default: list[H] = []
        #: Metrics only: handlers of a group that has its own.
        self.by_group: dict[str, list[H]] = {}
        #: Whether the environment's choice was looked up, or configure() made it moot.
        self.looked_up = False
        self._loader: Callable[[], list[H]] | None = None
        dispatcher.handlers_of(self.all)  # flushed and closed at exit

    def load_with(self, loader: Callable[[], list[H]]) -> None:
        """How to build the handlers the environment names, when no relay is given."""
        self._loader = loader

    def configure(self, handlers: Sequence[H], group: str | None = None) -> None:
        """Records (of metric ``group``, when given) go to ``handlers`` from now on."""
        self.looked_up = True  # chosen here: the environment's choice no longer applies
        if group is None:
            self.default = list(handlers)
        else:
            self.by_group = {**self.by_group, group: list(handlers)}

    def get(self, group: str | None = None) -> list[H]:
        """The handlers a record (of metric ``group``) goes to."""
        if not self.looked_up:
            self._look_up()
        return self.by_group.get(group, self.default) if group is not None else self.default

    def all(self) -> list[H]:
        """Every handler of the set, default and per group (none built here)."""
        return [*self.default, *(h for hs in self.by_group.values() for h in hs)]

    def send(self, record: R, group: str | None = None, to: Sequence[H] | None = None) -> None:
        """Queue ``record`` for ``to``, or for the handlers of ``group``; never blocks."""
        handlers = self.get(group) if to is None else to
        if handlers:
            dispatcher.put(self.deliver, (handlers, record))

    def deliver(self, item: tuple[Sequence[H], R]) -> None:
        """On the dispatcher's thread: hand one record to each of its handlers."""
        handlers, record = item
        for handler in handlers:
            try:
                self._call(handler, record)
            except Exception:  # a broken sink must never stop anything
                dispatcher.dropped += 1
                log.debug("%s handler %r failed", self.kind, handler, exc_info=True)

    def _look_up(self) -> None:
        self.looked_up = True
        relay: Any = client_from_env()  # a handler of either kind
        if relay is not None:  # a worker: its agent holds the handlers
            self.default = [relay]
        elif self._loader is not None:
            self.default = self._loader()


def _emit(handler: MetricHandler, data: MetricData) -> None:
    handler.emit(data)


def _record(handler: EventHandler, event: Event) -> None:
    handler.record(event)


#: The process's metric handlers.
metric_handlers: HandlerSet[MetricHandler, MetricData] = HandlerSet("metrics", _emit)
#: The process's event handlers.
event_handlers: HandlerSet[EventHandler, Event] = HandlerSet("events", _record)

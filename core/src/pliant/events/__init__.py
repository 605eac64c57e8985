"""Events: what happened, when and where, sent to the configured handlers.

The seed API: :class:`Event`, :class:`EventSource`, :class:`EventHandler`,
:func:`configure` and :func:`record`. Plugins provide handlers by name
(``--events NAME``); a handler that raises never stops the caller.

``record`` only queues the event (see :mod:`pliant._dispatch`); handlers are
called from a background thread. The event's metadata gains where it comes from:
``run_id``, ``node``, ``role``, ``restart_count`` and, in a worker, ``rank``
(values the caller set win). In a worker started by ``pliant run``, events go to
the agent, which hands them to the handlers it was given (``--events``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from pliant._dispatch import context, dispatcher

__all__ = [
    "Event",
    "EventHandler",
    "EventMetadataValue",
    "EventSource",
    "NullEventHandler",
    "configure",
    "construct_and_record_rdzv_event",
    "flush",
    "get_handlers",
    "record",
]

log = logging.getLogger(__name__)

EventMetadataValue = str | int | float | bool | None


class EventSource(str, Enum):
    """Who recorded the event."""

    AGENT = "AGENT"
    WORKER = "WORKER"


@dataclass
class Event:
    """A named occurrence with its source, time (seconds since the epoch) and metadata."""

    name: str
    source: EventSource
    timestamp: float = field(default_factory=time.time)
    metadata: dict[str, EventMetadataValue] = field(default_factory=dict)

    def serialize(self) -> str:
        data = asdict(self)
        data["source"] = self.source.value
        return json.dumps(data)

    @staticmethod
    def deserialize(text: str) -> Event:
        data: dict[str, Any] = json.loads(text)
        data["source"] = EventSource(data["source"])
        return Event(**data)


class EventHandler(ABC):
    """Receives every event; implement :meth:`record` to publish it.

    ``record`` is called from one background thread. An optional ``close()`` is called once
    at the process's exit, to send what the handler still holds within a few seconds (a
    handler without it gets ``flush()``, if it has one).
    """

    @abstractmethod
    def record(self, event: Event) -> None: ...


class NullEventHandler(EventHandler):
    """Drops every event (the seed's default)."""

    def record(self, event: Event) -> None:
        pass


_handlers: list[EventHandler] = []
_from_env = False  # whether the handlers named in the environment were looked for


def configure(handler: EventHandler | list[EventHandler]) -> None:
    """Send every event to ``handler`` (one or several)."""
    global _from_env, _handlers
    _from_env = True
    # A new list, never changed in place: an event queued earlier keeps the handlers it had.
    _handlers = list(handler) if isinstance(handler, list) else [handler]


def get_handlers() -> list[EventHandler]:
    global _from_env, _handlers
    if not _from_env:
        _from_env = True
        from pliant._sinks import handlers_from_env

        _handlers = handlers_from_env("events")
    return list(_handlers)


dispatcher.handlers_of(get_handlers)


def _deliver(item: tuple[list[EventHandler], Event]) -> None:
    handlers, event = item
    for handler in handlers:
        try:
            handler.record(event)
        except Exception:  # a broken sink must never stop training
            dispatcher.dropped += 1
            log.debug("event handler %r failed", handler, exc_info=True)


def record(event: Event) -> None:
    """Queue ``event`` for every configured handler; returns at once, never raises."""
    handlers = _handlers if _from_env else get_handlers()
    if handlers:
        event.metadata = {**context(), **event.metadata}
        dispatcher.put(_deliver, (handlers, event))


def _forward(event: Event) -> None:
    """Queue an event a worker sent through the agent's relay, its metadata kept as it is."""
    handlers = _handlers if _from_env else get_handlers()
    if handlers:
        dispatcher.put(_deliver, (handlers, event))


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event recorded so far reached the handlers (True), or ``timeout``."""
    return dispatcher.flush(timeout)


def construct_and_record_rdzv_event(
    run_id: str,
    message: str,
    node_state: str,
    name: str = "",
    hostname: str = "",
    pid: int | None = None,
    master_endpoint: str = "",
    local_id: int | None = None,
    rank: int | None = None,
) -> None:
    """Record a rendezvous event with the seed's fields."""
    if not get_handlers():
        return
    record(Event(
        name=name or "rendezvous",
        source=EventSource.AGENT,
        metadata={
            "run_id": run_id,
            "message": message,
            "node_state": node_state,
            "hostname": hostname or socket.getfqdn(),
            "pid": pid if pid is not None else os.getpid(),
            "master_endpoint": master_endpoint,
            "local_id": local_id,
            "rank": rank,
        },
    ))

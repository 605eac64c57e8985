"""Events: what happened, when and where, sent to the configured handlers.

The seed API: :class:`Event`, :class:`EventSource`, :class:`EventHandler`,
:func:`configure` and :func:`record`. Plugins provide handlers by name
(``--events NAME``); a handler that raises never stops the caller.
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

__all__ = [
    "Event",
    "EventHandler",
    "EventMetadataValue",
    "EventSource",
    "NullEventHandler",
    "configure",
    "construct_and_record_rdzv_event",
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
    """Receives every event; implement :meth:`record` to publish it."""

    @abstractmethod
    def record(self, event: Event) -> None: ...


class NullEventHandler(EventHandler):
    """Drops every event (the seed's default)."""

    def record(self, event: Event) -> None:
        pass


_handlers: list[EventHandler] = []


def configure(handler: EventHandler | list[EventHandler]) -> None:
    """Send every event to ``handler`` (one or several)."""
    _handlers[:] = list(handler) if isinstance(handler, list) else [handler]


def get_handlers() -> list[EventHandler]:
    return list(_handlers)


def record(event: Event) -> None:
    """Hand ``event`` to every configured handler; a failing handler is logged, not raised."""
    for handler in _handlers:
        try:
            handler.record(event)
        except Exception:
            log.debug("event handler %r failed", handler, exc_info=True)


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
    if not _handlers:
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

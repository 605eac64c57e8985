"""What an event handler plugin implements: :class:`EventHandler`, and the :class:`Event`
it receives."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["Event", "EventHandler", "EventMetadataValue", "EventSource", "NullEventHandler"]

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

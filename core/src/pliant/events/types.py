"""What an event handler plugin implements: :class:`EventHandler`, and the :class:`Event`
it receives; torch's rendezvous event, :class:`RdzvEvent`, and its :class:`NodeState`."""

from __future__ import annotations

import json
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
    "NodeState",
    "NullEventHandler",
    "RdzvEvent",
]

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

    def __str__(self) -> str:
        return self.serialize()

    def serialize(self) -> str:
        data = asdict(self)
        data["source"] = self.source.value
        return json.dumps(data)

    @staticmethod
    def deserialize(data: str | Event) -> Event:
        """The event ``serialize`` wrote; an :class:`Event` is returned as it is (torch's)."""
        if isinstance(data, Event):
            return data
        fields: dict[str, Any] = json.loads(data)
        fields["source"] = EventSource[fields["source"]]
        return Event(**fields)


class NodeState(str, Enum):
    """Where a node stands in the rendezvous (torch's states)."""

    INIT = "INIT"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass
class RdzvEvent:
    """torch's rendezvous event; :func:`pliant.events.record_rdzv_event` hands it to the
    event handlers as an :class:`Event` (see :meth:`as_event`)."""

    name: str
    run_id: str
    message: str
    hostname: str
    pid: int
    node_state: NodeState
    master_endpoint: str = ""
    rank: int | None = None
    local_id: int | None = None
    error_trace: str = ""

    def __str__(self) -> str:
        return self.serialize()

    def serialize(self) -> str:
        data = asdict(self)
        data["node_state"] = NodeState(self.node_state).value
        return json.dumps(data)

    @staticmethod
    def deserialize(data: str | RdzvEvent) -> RdzvEvent:
        if isinstance(data, RdzvEvent):
            return data
        fields: dict[str, Any] = json.loads(data)
        fields["node_state"] = NodeState[fields["node_state"]]
        return RdzvEvent(**fields)

    def as_event(self) -> Event:
        """An agent :class:`Event` of this name whose metadata are the other fields
        (``node_state`` as its text)."""
        metadata: dict[str, EventMetadataValue] = {
            k: v for k, v in asdict(self).items() if k != "name"}
        metadata["node_state"] = NodeState(self.node_state).value
        return Event(self.name, EventSource.AGENT, metadata=metadata)


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

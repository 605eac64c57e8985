"""The built-in ``jsonl`` event handler (``--events jsonl``), for looking at a run on one
machine: it appends each event as one JSON line to a file that the agent and its workers
may share. Each line is one ``write`` on a file opened for appending, so lines from
several processes do not mix."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from pliant.events.types import Event, EventHandler
from pliant.settings import Setting, parse_str

__all__ = ["JSONL_SETTINGS", "JsonlEventHandler"]

JSONL_SETTINGS: tuple[Setting, ...] = (
    Setting("path", parse_str, "pliant-events.jsonl",
            "File the events are appended to, one JSON object a line; relative to the "
            "directory pliant runs in.", metavar="FILE"),
)


class JsonlEventHandler(EventHandler):
    """Appends each event to ``path`` as a JSON line."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.path = os.path.abspath(str(settings.get("path") or "pliant-events.jsonl"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def record(self, event: Event) -> None:
        # The fields of Event.serialize(), in its order, but metadata a worker set to
        # something JSON cannot hold is written as its str() instead of failing.
        source = getattr(event.source, "value", event.source)
        line = json.dumps({"name": event.name, "source": source, "timestamp": event.timestamp,
                           "metadata": event.metadata}, default=str) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

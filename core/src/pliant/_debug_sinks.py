"""Sinks for looking at a run on one machine: ``--metrics console`` and ``--events jsonl``.

Both are built in. ``console`` prints each value on the process's stderr (a worker's goes
through pliant's output handling, prefixed with its rank). ``jsonl`` appends each event as
one JSON line to a file that the agent and its workers share: each line is one ``write``
on a file opened for appending, so lines from several processes do not mix.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from pliant.events import Event, EventHandler
from pliant.metrics import MetricData, MetricHandler
from pliant.settings import Setting, parse_choice, parse_str

__all__ = ["CONSOLE_SETTINGS", "JSONL_SETTINGS", "ConsoleMetricHandler", "JsonlEventHandler"]

CONSOLE_SETTINGS: tuple[Setting, ...] = (
    Setting("stream", parse_choice("stderr", "stdout"), "stderr", "Where values are printed."),
)
JSONL_SETTINGS: tuple[Setting, ...] = (
    Setting("path", parse_str, "pliant-events.jsonl",
            "File the events are appended to, one JSON object a line; relative to the "
            "directory pliant runs in.", metavar="FILE"),
)


class ConsoleMetricHandler(MetricHandler):
    """Prints ``group.name = value  {tags}``, one line a value."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self._stream = sys.stdout if settings.get("stream") == "stdout" else sys.stderr

    def emit(self, metric_data: MetricData) -> None:
        tags = " ".join(f"{k}={v}" for k, v in sorted(metric_data.tags.items()))
        print(f"[metric] {metric_data.group_name}.{metric_data.name} = {metric_data.value:g}"
              f"  {tags}", file=self._stream, flush=True)


class JsonlEventHandler(EventHandler):
    """Appends each event to ``path`` as a JSON line."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.path = os.path.abspath(str(settings.get("path") or "pliant-events.jsonl"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def record(self, event: Event) -> None:
        line = (json.dumps({**json.loads(event.serialize())}, default=str) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

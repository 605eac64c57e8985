"""The built-in ``console`` metric handler (``--metrics console``), for looking at a run
on one machine: it prints each value on the process's stderr (or stdout)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from pliant.metrics.types import MetricData, MetricHandler
from pliant.settings import Setting, parse_choice

__all__ = ["CONSOLE_SETTINGS", "ConsoleMetricHandler"]

CONSOLE_SETTINGS: tuple[Setting, ...] = (
    Setting("stream", parse_choice("stderr", "stdout"), "stderr", "Where values are printed."),
)


class ConsoleMetricHandler(MetricHandler):
    """Prints ``group.name = value  {tags}``, one line a value."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        stream = (settings or {}).get("stream")
        self._stream = sys.stdout if stream == "stdout" else sys.stderr

    def emit(self, metric_data: MetricData) -> None:
        tags = " ".join(f"{k}={v}" for k, v in sorted(metric_data.tags.items()))
        print(f"[metric] {metric_data.group_name}.{metric_data.name} = {metric_data.value:g}"
              f"  {tags}", file=self._stream, flush=True)

"""What a metric handler plugin implements: :class:`MetricHandler`, and the
:class:`MetricData` it receives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["MetricData", "MetricHandler", "NullMetricHandler"]


@dataclass(frozen=True)
class MetricData:
    """One value: when, in which group, its name and value, and where it comes from
    (``tags``: ``run_id``, ``node``, ``role``, ``restart_count``, ``rank`` in a worker)."""

    timestamp: float
    group_name: str | None
    name: str
    value: float
    tags: Mapping[str, str] = field(default_factory=dict)


class MetricHandler(ABC):
    """Receives every metric; implement :meth:`emit` to push it to your sink.

    ``emit`` is called from one background thread. An optional ``close()`` is called once
    at the process's exit, to send what the handler still holds within a few seconds (a
    handler without it gets ``flush()``, if it has one).
    """

    @abstractmethod
    def emit(self, metric_data: MetricData) -> None: ...


class NullMetricHandler(MetricHandler):
    """Drops every metric (the seed's default)."""

    def emit(self, metric_data: MetricData) -> None:
        pass

"""Metrics: named values in groups, sent to the configured handlers.

The seed API, unchanged: implement :class:`MetricHandler`, call
:func:`configure`, and :func:`put_metric` (or :func:`prof`) reaches it. Plugins
provide handlers by name (``--metrics NAME``); a handler that raises never
stops the caller.
"""

from __future__ import annotations

import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "MetricData",
    "MetricHandler",
    "NullMetricHandler",
    "configure",
    "get_handlers",
    "prof",
    "put_metric",
]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class MetricData:
    """One value: when, in which group, its name and value."""

    timestamp: float
    group_name: str | None
    name: str
    value: float


class MetricHandler(ABC):
    """Receives every metric; implement :meth:`emit` to push it to your sink."""

    @abstractmethod
    def emit(self, metric_data: MetricData) -> None: ...


class NullMetricHandler(MetricHandler):
    """Drops every metric (the seed's default)."""

    def emit(self, metric_data: MetricData) -> None:
        pass


_default: list[MetricHandler] = []
_by_group: dict[str, list[MetricHandler]] = {}


def configure(handler: MetricHandler | list[MetricHandler], group: str | None = None) -> None:
    """Send metrics of ``group`` (all groups when None) to ``handler`` (one or several)."""
    handlers = list(handler) if isinstance(handler, list) else [handler]
    if group is None:
        _default[:] = handlers
    else:
        _by_group[group] = handlers


def get_handlers(group: str | None = None) -> list[MetricHandler]:
    return _by_group.get(group, _default) if group is not None else _default


def put_metric(name: str, value: float, metric_group: str = "torchelastic") -> None:
    """Emit ``value`` under ``metric_group.name`` to the configured handlers."""
    handlers = get_handlers(metric_group)
    if not handlers:
        return
    data = MetricData(time.time(), metric_group, name, value)
    for handler in handlers:
        try:
            handler.emit(data)
        except Exception:  # a broken sink must never stop training
            log.debug("metric handler %r failed", handler, exc_info=True)


@contextmanager
def _timed(name: str, group: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        put_metric(f"{name}.failure", 1, group)
        raise
    put_metric(f"{name}.success", 1, group)
    put_metric(f"{name}.duration.ms", (time.perf_counter() - start) * 1000.0, group)


def prof(fn: F | None = None, group: str = "torchelastic", name: str | None = None) -> Any:
    """Time a function (as a decorator) or a block (``with prof(name="step"):``).

    Emits ``<name>.success`` or ``<name>.failure`` and ``<name>.duration.ms``.
    """
    if fn is None and name is not None:
        return _timed(name, group)

    def decorate(func: F) -> F:
        key = name or func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _timed(key, group):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate

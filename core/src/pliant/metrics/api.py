"""Putting metrics: :func:`put_metric`, :func:`prof`, and choosing the handlers.

``put_metric`` only queues the value (see :mod:`pliant._delivery.dispatcher`): handlers
are called from a background thread, so a slow sink never slows training.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pliant._delivery.context import context
from pliant._delivery.dispatcher import dispatcher
from pliant._delivery.handlers import metric_handlers as _handlers
from pliant.metrics.types import MetricData, MetricHandler

__all__ = ["configure", "flush", "get_handlers", "prof", "put_metric"]

F = TypeVar("F", bound=Callable[..., Any])


def configure(handler: MetricHandler | list[MetricHandler], group: str | None = None) -> None:
    """Send metrics of ``group`` (all groups when None) to ``handler`` (one or several)."""
    _handlers.configure(handler if isinstance(handler, list) else [handler], group)


def get_handlers(group: str | None = None) -> list[MetricHandler]:
    """The handlers metrics of ``group`` go to (those the environment names, until
    :func:`configure` is called)."""
    return _handlers.get(group)


_deliver = _handlers.deliver  # bound once: put_metric is on training's hot path


def put_metric(name: str, value: float, metric_group: str = "torchelastic") -> None:
    """Emit ``value`` under ``metric_group.name`` to the configured handlers. Returns at once:
    the value is delivered from a background thread, and is dropped (and counted) only when
    more than :data:`pliant._delivery.dispatcher.CAPACITY` values wait."""
    # get()'s work inlined once the handlers are known: each attribute costs on this path.
    hs = _handlers
    handlers = (hs.by_group.get(metric_group, hs.default) if hs.looked_up
                else hs.get(metric_group))
    if handlers:
        dispatcher.put(_deliver, (handlers, MetricData(time.time(), metric_group, name, value,
                                                       context())))


def flush(timeout: float = 5.0) -> bool:
    """Wait until every value put so far reached the handlers (True), or ``timeout`` passed."""
    return dispatcher.flush(timeout)


def _report_dropped(count: int) -> None:
    put_metric("dropped", count, metric_group="pliant")


dispatcher.report_drops_with(_report_dropped)


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

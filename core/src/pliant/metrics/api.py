"""Putting metrics: :func:`put_metric`, :func:`prof`, and choosing the handlers.

The names are torch's (``torch.distributed.elastic.metrics.api``), :func:`getStream`,
:class:`MetricStream`, :func:`publish_metric` and :func:`get_elapsed_time_ms` included.

``put_metric`` only queues the value (see :mod:`pliant._delivery.dispatcher`): handlers
are called from a background thread, so a slow sink never slows training.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pliant._delivery.context import context
from pliant._delivery.dispatcher import dispatcher
from pliant._delivery.handlers import metric_handlers as _handlers
from pliant.metrics.types import MetricData, MetricHandler

__all__ = [
    "MetricStream",
    "MetricsConfig",
    "configure",
    "flush",
    "getStream",
    "get_elapsed_time_ms",
    "get_handlers",
    "prof",
    "publish_metric",
    "put_metric",
]

F = TypeVar("F", bound=Callable[..., Any])


def configure(handler: MetricHandler | list[MetricHandler], group: str | None = None) -> None:
    """Send metrics of ``group`` (all groups when None) to ``handler`` (one or several)."""
    _handlers.configure(handler if isinstance(handler, list) else [handler], group)


def get_handlers(group: str | None = None) -> list[MetricHandler]:
    """The handlers metrics of ``group`` go to (those the environment names, until
    :func:`configure` is called)."""
    return _handlers.get(group)


_deliver = _handlers.deliver  # bound once: put_metric is on training's hot path


def put_metric(metric_name: str, metric_value: float, metric_group: str = "torchelastic",
               ) -> None:
    """Emit ``metric_value`` under ``metric_group.metric_name`` to the configured handlers
    (torch's signature). Returns at once: the value is delivered from a background thread,
    and is dropped (and counted) only when more than
    :data:`pliant._delivery.dispatcher.CAPACITY` values wait."""
    # get()'s work inlined once the handlers are known: each attribute costs on this path.
    hs = _handlers
    handlers = (hs.by_group.get(metric_group, hs.default) if hs.looked_up
                else hs.get(metric_group))
    if handlers:
        dispatcher.put(_deliver, (handlers, MetricData(time.time(), metric_group, metric_name,
                                                       metric_value, context())))


class MetricStream:
    """torch's stream of one group's values: ``add_value(metric_name, metric_value)``.

    With a ``handler`` the value goes to it at once, as torch's does; without one (what
    :func:`getStream` returns) it goes where :func:`put_metric` sends it.
    """

    def __init__(self, group_name: str, handler: MetricHandler | None = None) -> None:
        self.group_name = group_name
        self.handler = handler

    def add_value(self, metric_name: str, metric_value: float) -> None:
        if self.handler is None:
            put_metric(metric_name, metric_value, self.group_name)
        else:
            self.handler.emit(MetricData(time.time(), self.group_name, metric_name,
                                         metric_value, context()))


def getStream(group: str) -> MetricStream:
    """The stream of ``group``'s values (torch's ``getStream``)."""
    return MetricStream(group)


def publish_metric(metric_group: str, metric_name: str, metric_value: float) -> None:
    """torch's deprecated spelling of :func:`put_metric` (with a ``FutureWarning``)."""
    warnings.warn("Deprecated, use `put_metric(metric_group)(metric_name, metric_value)` "
                  "instead", FutureWarning, stacklevel=2)
    put_metric(metric_name, metric_value, metric_group)


class MetricsConfig:
    """torch's metrics configuration holder: ``params``, a dict (accepted, unused)."""

    __slots__ = ["params"]

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = params if params is not None else {}


def get_elapsed_time_ms(start_time_in_seconds: float) -> int:
    """Milliseconds since ``start_time_in_seconds`` (a ``time.time()``), as torch's."""
    return int((time.time() - start_time_in_seconds) * 1000)


def flush(timeout: float = 5.0) -> bool:
    """Wait until every value put so far reached the handlers (True), or ``timeout`` passed."""
    return dispatcher.flush(timeout)


def _report_dropped(count: int) -> None:
    put_metric("dropped", count, metric_group="pliant")


dispatcher.report_drops_with(_report_dropped)


@contextmanager
def _timed(name: str, group: str) -> Iterator[None]:
    """As torch's ``prof``: ``.success`` or, on an ``Exception``, ``.failure``; then
    ``.duration.ms`` whatever happened (a ``KeyboardInterrupt`` gets only that)."""
    start = time.perf_counter()
    try:
        yield
        put_metric(f"{name}.success", 1, group)
    except Exception:
        put_metric(f"{name}.failure", 1, group)
        raise
    finally:
        put_metric(f"{name}.duration.ms", (time.perf_counter() - start) * 1000.0, group)


def metric_name(fn: Callable[..., Any]) -> str:
    """torch's name for ``fn``'s metrics: ``Class.method``, ``outer.<locals>.inner``, and
    for a module-level function the module's last part and its name (``train.step``)."""
    qualname: str = fn.__qualname__
    if "." in qualname or not fn.__module__:
        return qualname
    return f"{fn.__module__.split('.')[-1]}.{qualname}"


def prof(fn: F | None = None, group: str = "torchelastic", name: str | None = None) -> Any:
    """Time a function (as a decorator, as torch's) or a block (``with prof(name="step"):``).

    Emits ``<name>.success`` or ``<name>.failure``, then ``<name>.duration.ms`` (a float,
    milliseconds); ``<name>`` is :func:`metric_name` of the function unless given.
    """
    if fn is None and name is not None:
        return _timed(name, group)

    def decorate(func: F) -> F:
        key = name or metric_name(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _timed(key, group):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate

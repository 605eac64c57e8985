"""Metrics: named values in groups, sent to the configured handlers.

The seed API: implement :class:`MetricHandler`, call :func:`configure`, and
:func:`put_metric` (or :func:`prof`) reaches it. Plugins provide handlers by
name (``--metrics NAME``); a handler that raises never stops the caller.

``put_metric`` only queues the value (see :mod:`pliant._dispatch`): handlers are
called from a background thread, so a slow sink never slows training. Each
value carries ``tags``: the run id, node, role, restart count and, in a worker,
its rank. In a worker started by ``pliant run``, values go to the agent, which
hands them to the handlers it was given (``--metrics``); see :mod:`pliant._relay`.
"""

from __future__ import annotations

import functools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pliant._dispatch import context, dispatcher

__all__ = [
    "MetricData",
    "MetricHandler",
    "NullMetricHandler",
    "configure",
    "flush",
    "get_handlers",
    "prof",
    "put_metric",
]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


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


_default: list[MetricHandler] = []
_by_group: dict[str, list[MetricHandler]] = {}


_from_env = False  # whether the handlers named in the environment were looked for


def configure(handler: MetricHandler | list[MetricHandler], group: str | None = None) -> None:
    """Send metrics of ``group`` (all groups when None) to ``handler`` (one or several)."""
    global _from_env, _default, _by_group
    _from_env = True  # chosen here: the environment's choice no longer applies
    # New lists, never changed in place: a value queued earlier keeps the handlers it had.
    handlers = list(handler) if isinstance(handler, list) else [handler]
    if group is None:
        _default = handlers
    else:
        _by_group = {**_by_group, group: handlers}


def get_handlers(group: str | None = None) -> list[MetricHandler]:
    if not _from_env:
        _configure_from_env()
    return _by_group.get(group, _default) if group is not None else _default


def _configure_from_env() -> None:
    """In a worker: build the handlers the agent names in ``PLIANT_METRICS``."""
    global _from_env, _default
    _from_env = True
    from pliant._sinks import handlers_from_env

    _default = handlers_from_env("metrics")


def _all_handlers() -> list[MetricHandler]:
    return [*_default, *(h for hs in _by_group.values() for h in hs)]


dispatcher.handlers_of(_all_handlers)


def _deliver(item: tuple[list[MetricHandler], MetricData]) -> None:
    handlers, data = item
    for handler in handlers:
        try:
            handler.emit(data)
        except Exception:  # a broken sink must never stop training
            dispatcher.dropped += 1
            log.debug("metric handler %r failed", handler, exc_info=True)


def put_metric(name: str, value: float, metric_group: str = "torchelastic") -> None:
    """Emit ``value`` under ``metric_group.name`` to the configured handlers. Returns at once:
    the value is delivered from a background thread, and is dropped (and counted) only when
    more than :data:`pliant._dispatch.CAPACITY` values wait."""
    handlers = _by_group.get(metric_group, _default) if _from_env else get_handlers(metric_group)
    if handlers:
        dispatcher.put(_deliver, (handlers, MetricData(time.time(), metric_group, name, value,
                                                       context())))


def _forward(data: MetricData) -> None:
    """Queue a value a worker sent through the agent's relay, its tags kept as they are."""
    handlers = get_handlers(data.group_name)
    if handlers:
        dispatcher.put(_deliver, (handlers, data))


def flush(timeout: float = 5.0) -> bool:
    """Wait until every value put so far reached the handlers (True), or ``timeout`` passed."""
    return dispatcher.flush(timeout)


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

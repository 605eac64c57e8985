"""Recording events: :func:`record`, the rendezvous events, and choosing the handlers.

``record`` only queues the event (see :mod:`pliant._delivery.dispatcher`); handlers are
called from a background thread.
"""

from __future__ import annotations

import os
import socket

from pliant._delivery.context import context
from pliant._delivery.dispatcher import dispatcher
from pliant._delivery.handlers import event_handlers as _handlers
from pliant.events.types import Event, EventHandler, EventSource

__all__ = ["configure", "construct_and_record_rdzv_event", "flush", "get_handlers", "record"]


def configure(handler: EventHandler | list[EventHandler]) -> None:
    """Send every event to ``handler`` (one or several)."""
    _handlers.configure(handler if isinstance(handler, list) else [handler])


def get_handlers() -> list[EventHandler]:
    """The handlers events go to (those the environment names, until :func:`configure` is
    called)."""
    return list(_handlers.get())


_deliver = _handlers.deliver  # bound once: record is on training's hot path


def record(event: Event) -> None:
    """Queue ``event`` for every configured handler; returns at once, never raises."""
    hs = _handlers
    handlers = hs.default if hs.looked_up else hs.get()  # get() inlined: the hot path
    if handlers:
        event.metadata = {**context(), **event.metadata}
        dispatcher.put(_deliver, (handlers, event))


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event recorded so far reached the handlers (True), or ``timeout``."""
    return dispatcher.flush(timeout)


def construct_and_record_rdzv_event(
    run_id: str,
    message: str,
    node_state: str,
    name: str = "",
    hostname: str = "",
    pid: int | None = None,
    master_endpoint: str = "",
    local_id: int | None = None,
    rank: int | None = None,
) -> None:
    """Record a rendezvous event with the seed's fields."""
    if not _handlers.get():
        return
    record(Event(
        name=name or "rendezvous",
        source=EventSource.AGENT,
        metadata={
            "run_id": run_id,
            "message": message,
            "node_state": node_state,
            "hostname": hostname or socket.getfqdn(),
            "pid": pid if pid is not None else os.getpid(),
            "master_endpoint": master_endpoint,
            "local_id": local_id,
            "rank": rank,
        },
    ))

"""Recording events: :func:`record`, the rendezvous events, and choosing the handlers.

``record`` only queues the event (see :mod:`pliant._delivery.dispatcher`); handlers are
called from a background thread. The calls are torch's
(``torch.distributed.elastic.events``): ``record(event, destination)``,
:func:`record_rdzv_event` and :func:`construct_and_record_rdzv_event`.
"""

from __future__ import annotations

import inspect
import os
import socket
import sys
import traceback

from pliant._delivery.context import context
from pliant._delivery.dispatcher import dispatcher
from pliant._delivery.handlers import event_handlers as _handlers
from pliant.events.types import Event, EventHandler, NodeState, RdzvEvent

__all__ = [
    "DESTINATIONS",
    "configure",
    "construct_and_record_rdzv_event",
    "flush",
    "get_handlers",
    "record",
    "record_rdzv_event",
]

#: torch's logging destinations. Whichever is named, the event goes to the configured
#: handlers; ``console`` also prints it, serialized, on stderr, as torch's does.
DESTINATIONS = ("null", "console", "dynamic_rendezvous")


def configure(handler: EventHandler | list[EventHandler]) -> None:
    """Send every event to ``handler`` (one or several)."""
    _handlers.configure(handler if isinstance(handler, list) else [handler])


def get_handlers() -> list[EventHandler]:
    """The handlers events go to (those the environment names, until :func:`configure` is
    called)."""
    return list(_handlers.get())


_deliver = _handlers.deliver  # bound once: record is on training's hot path


def record(event: Event, destination: str = "null") -> None:
    """Queue ``event`` for every configured handler; returns at once. ``destination`` is
    torch's (see :data:`DESTINATIONS`); another one raises ``ValueError``."""
    if destination != "null":
        if destination not in DESTINATIONS:
            raise ValueError(f"events.record(destination={destination!r}): expected one of "
                             f"{', '.join(DESTINATIONS)}")
        if destination == "console":
            print(event.serialize(), file=sys.stderr, flush=True)
    hs = _handlers
    handlers = hs.default if hs.looked_up else hs.get()  # get() inlined: the hot path
    if handlers:
        event.metadata = {**context(), **event.metadata}
        dispatcher.put(_deliver, (handlers, event))


def record_rdzv_event(event: RdzvEvent) -> None:
    """Queue a rendezvous event for the configured handlers, as :meth:`RdzvEvent.as_event`."""
    if _handlers.get():
        record(event.as_event())


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event recorded so far reached the handlers (True), or ``timeout``."""
    return dispatcher.flush(timeout)


def construct_and_record_rdzv_event(
    run_id: str,
    message: str,
    node_state: NodeState | str,
    name: str = "",
    hostname: str = "",
    pid: int | None = None,
    master_endpoint: str = "",
    local_id: int | None = None,
    rank: int | None = None,
) -> None:
    """Build and record an :class:`RdzvEvent` as torch does: named ``file:function`` of the
    caller (``name`` replaces the function), with this host and pid unless given, and the
    traceback being handled when ``node_state`` is ``FAILED``."""
    if not _handlers.get():
        return  # as torch's: no work when nothing would receive it
    caller = inspect.currentframe()
    code = caller.f_back.f_code if caller is not None and caller.f_back is not None else None
    del caller  # a frame held on to keeps its locals alive
    filename = os.path.basename(code.co_filename) if code else "no_file"
    name = name or (code.co_name if code else "")
    state = NodeState(node_state)
    record_rdzv_event(RdzvEvent(
        name=f"{filename}:{name}", run_id=run_id, message=message,
        hostname=hostname or socket.getfqdn(), pid=pid or os.getpid(), node_state=state,
        master_endpoint=master_endpoint, rank=rank, local_id=local_id,
        error_trace=traceback.format_exc() if state == NodeState.FAILED else ""))

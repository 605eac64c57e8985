"""Events: what happened, when and where, sent to the configured handlers.

The seed API: :class:`Event`, :class:`EventSource`, :class:`EventHandler`,
:func:`configure` and :func:`record`. Plugins provide handlers by name
(``--events NAME``); a handler that raises never stops the caller.

``record`` only queues the event; handlers are called from a background thread.
The event's metadata gains where it comes from: ``run_id``, ``node``, ``role``,
``restart_count`` and, in a worker, ``rank`` (values the caller set win). In a
worker started by ``pliant run``, events go to the agent, which hands them to
the handlers it was given (``--events``).

This is the face of the package: :mod:`pliant.events.types` holds what a
handler implements, :mod:`pliant.events.api` the calls, and each loads on
first use, so ``import pliant.events`` costs next to nothing. Loading the
calls also gives them the plugin registry as the way to build the handlers
``PLIANT_EVENTS`` names: this face is the one module above both.
"""

from __future__ import annotations

from pliant._lazy import face

# Not typing's TYPE_CHECKING: typing alone costs milliseconds of a worker's start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from pliant.events.api import (
        DESTINATIONS,
        configure,
        construct_and_record_rdzv_event,
        flush,
        get_handlers,
        record,
        record_rdzv_event,
    )
    from pliant.events.types import (
        Event,
        EventHandler,
        EventMetadataValue,
        EventSource,
        NodeState,
        NullEventHandler,
        RdzvEvent,
    )

_LAZY = {
    "DESTINATIONS": "pliant.events.api",
    "Event": "pliant.events.types",
    "EventHandler": "pliant.events.types",
    "EventMetadataValue": "pliant.events.types",
    "EventSource": "pliant.events.types",
    "NodeState": "pliant.events.types",
    "NullEventHandler": "pliant.events.types",
    "RdzvEvent": "pliant.events.types",
    "configure": "pliant.events.api",
    "construct_and_record_rdzv_event": "pliant.events.api",
    "flush": "pliant.events.api",
    "get_handlers": "pliant.events.api",
    "record": "pliant.events.api",
    "record_rdzv_event": "pliant.events.api",
}

__all__ = [
    "DESTINATIONS",
    "Event",
    "EventHandler",
    "EventMetadataValue",
    "EventSource",
    "NodeState",
    "NullEventHandler",
    "RdzvEvent",
    "configure",
    "construct_and_record_rdzv_event",
    "flush",
    "get_handlers",
    "record",
    "record_rdzv_event",
]


def _prepare(module: str) -> None:
    """Before the calls load: they build the handlers ``PLIANT_EVENTS`` names through the
    plugin registry, which only this face may import."""
    if module == "pliant.events.api":
        from pliant._delivery.handlers import event_handlers

        event_handlers.load_with(_handlers_from_env)


__getattr__ = face("pliant.events", _LAZY, prepare=_prepare)


def _handlers_from_env() -> list[Any]:
    import os

    if not os.environ.get("PLIANT_EVENTS", "").strip():
        return []  # nothing named: a process without handlers never loads the registry
    from pliant.plugins import handlers_from_env

    return handlers_from_env("events", os.environ)

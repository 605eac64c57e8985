"""torch's rendezvous handler registry, and handlers written for torch run by pliant's agent.

Launcher scripts written for torchrun call ``rendezvous_handler_registry.register(backend,
creator)`` with ``creator(params) -> RendezvousHandler``; third-party packages register
such creators in the ``torchrun.handlers`` entry-point group (see :mod:`pliant.plugins`).
A handler they create may be torch's kind, whose ``next_rendezvous()`` returns torch's
``RendezvousInfo`` (``store``, ``rank``, ``world_size``, ``bootstrap_store_info``):
:func:`as_pliant_handler` wraps it so that pliant's agent reads that as its own
:class:`~pliant.rendezvous.api.RendezvousInfo`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pliant.rendezvous.api as api
from pliant.rendezvous.api import (
    RendezvousError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
)

__all__ = [
    "RendezvousHandlerCreator",
    "RendezvousHandlerRegistry",
    "TorchHandler",
    "as_pliant_handler",
    "rendezvous_handler_registry",
]

#: torch's creator: ``creator(params) -> RendezvousHandler``.
RendezvousHandlerCreator = Callable[[Any], Any]


class RendezvousHandlerRegistry:
    """torch's registry of creators by backend name (``register``, ``create_handler``).

    A backend it does not hold is built by pliant's backends (built-in, plugins and
    ``torchrun.handlers``) through ``fallback``, which :mod:`pliant.rendezvous` sets.
    """

    def __init__(self) -> None:
        self._registry: dict[str, RendezvousHandlerCreator] = {}
        self.fallback: Callable[[RendezvousParameters], RendezvousHandler] | None = None

    def register(self, backend: str, creator: RendezvousHandlerCreator) -> None:
        """Register ``creator`` for ``backend``; another creator for a taken name raises."""
        if not backend:
            raise ValueError("The rendezvous backend name must be a non-empty string.")
        current = self._registry.get(backend)
        if current is not None and current != creator:
            raise ValueError(f"The rendezvous backend '{backend}' cannot be registered with "
                             f"'{creator}' as it is already registered with '{current}'.")
        self._registry[backend] = creator

    def creator(self, backend: str) -> RendezvousHandlerCreator | None:
        return self._registry.get(backend)

    def names(self) -> list[str]:
        return sorted(self._registry)

    def create_handler(self, params: Any) -> RendezvousHandler:
        """The handler for ``params.backend``: its registered creator's, checked to be of
        that backend as torch checks, else pliant's backend of that name."""
        creator = self._registry.get(params.backend)
        if creator is None:
            if self.fallback is None:
                raise ValueError(f"The rendezvous backend '{params.backend}' is not registered. "
                                 "Did you forget to call `register`?")
            return self.fallback(params)
        handler = creator(params)
        if handler.get_backend() != params.backend:
            raise RuntimeError(f"The rendezvous backend '{handler.get_backend()}' does not match "
                               f"the requested backend '{params.backend}'.")
        return as_pliant_handler(handler)


#: The registry launcher scripts use, as torch's ``rendezvous_handler_registry``.
rendezvous_handler_registry = RendezvousHandlerRegistry()


def as_pliant_handler(handler: Any) -> RendezvousHandler:
    """``handler`` itself when it is pliant's kind, else :class:`TorchHandler` around it."""
    return handler if isinstance(handler, RendezvousHandler) else TorchHandler(handler)


class TorchHandler(RendezvousHandler):
    """A handler written for torch, run by pliant's agent: every call goes to it, and its
    rounds' ``RendezvousInfo`` become pliant's (the workers meet at the bootstrap store's
    address, as torch's agent has them do)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def get_backend(self) -> str:
        return str(self.handler.get_backend())

    def next_rendezvous(self) -> RendezvousInfo:
        try:
            info = self.handler.next_rendezvous()
        except RendezvousError:
            raise
        except Exception as exc:
            raise _as_pliant_error(exc) from exc
        if isinstance(info, RendezvousInfo):
            return info
        store_info = getattr(info, "bootstrap_store_info", None)
        if store_info is None:
            raise RendezvousStateError(
                f"rendezvous handler {self.get_backend()!r} returned {info!r} without a "
                "bootstrap_store_info: pliant's agent needs the workers' master address and port")
        return RendezvousInfo(rank=int(info.rank), world_size=int(info.world_size),
                              master_addr=str(store_info.master_addr),
                              master_port=int(store_info.master_port), store=info.store)

    def is_closed(self) -> bool:
        return bool(self.handler.is_closed())

    def set_closed(self) -> None:
        self.handler.set_closed()

    def num_nodes_waiting(self) -> int:
        return int(self.handler.num_nodes_waiting())

    def get_run_id(self) -> str:
        return str(self.handler.get_run_id())

    def shutdown(self) -> bool:
        return bool(self.handler.shutdown())

    @property
    def use_agent_store(self) -> bool:
        return bool(getattr(self.handler, "use_agent_store", False))


def _as_pliant_error(exc: Exception) -> Exception:
    """torch's rendezvous error as pliant's of the same name (a closed rendezvous, a graceful
    exit, ...), so that the agent acts on it as on its own; any other error as it is."""
    for cls in type(exc).__mro__:
        ours = getattr(api, cls.__name__, None) if cls.__name__.startswith("Rendezvous") else None
        if isinstance(ours, type) and issubclass(ours, RendezvousError):
            return ours(str(exc))
    return exc

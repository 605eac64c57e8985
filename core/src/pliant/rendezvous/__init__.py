"""Rendezvous: how the nodes of a job find each other, and the backend registry.

:func:`create_handler` builds a backend by name: one registered in this process with
torch's ``rendezvous_handler_registry.register(backend, creator)``, else pliant-core's or a
plugin's (``torchrun.handlers`` entry points included). ``get_rendezvous_handler`` is
torch's name for it.
"""

from __future__ import annotations

from pliant.rendezvous.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousTimeoutError,
    RoundEnd,
)
from pliant.rendezvous.registry import RendezvousHandlerRegistry, rendezvous_handler_registry

__all__ = [
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousGracefulExitError",
    "RendezvousHandler",
    "RendezvousHandlerRegistry",
    "RendezvousInfo",
    "RendezvousParameters",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "RoundEnd",
    "create_handler",
    "get_rendezvous_handler",
    "rendezvous_handler_registry",
]


def create_handler(params: RendezvousParameters, source: str = "RendezvousParameters.backend",
                   ) -> RendezvousHandler:
    """Build the handler for ``params.backend``: a creator registered in
    ``rendezvous_handler_registry`` builds it from ``params``; otherwise the installed
    backend of that name does, ``params.config`` validated against its settings and handed
    to its factory parsed."""
    if rendezvous_handler_registry.creator(params.backend) is not None:
        return rendezvous_handler_registry.create_handler(params)
    return _from_backends(params, source)


def _from_backends(params: RendezvousParameters, source: str = "RendezvousParameters.backend",
                   ) -> RendezvousHandler:
    from pliant.plugins import PluginManager

    conf = {k: str(v) for k, v in params.config.items()}
    selected = PluginManager().select("rendezvous", params.backend, source, conf,
                                      "RendezvousParameters")
    handler: RendezvousHandler = selected.create(params)
    return handler


#: torch's name (``torch.distributed.elastic.rendezvous.registry.get_rendezvous_handler``).
get_rendezvous_handler = create_handler
rendezvous_handler_registry.fallback = _from_backends

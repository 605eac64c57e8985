"""Rendezvous: how the nodes of a job find each other, and the backend registry."""

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

__all__ = [
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousGracefulExitError",
    "RendezvousHandler",
    "RendezvousInfo",
    "RendezvousParameters",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "RoundEnd",
    "create_handler",
]


def create_handler(params: RendezvousParameters, source: str = "RendezvousParameters.backend",
                   ) -> RendezvousHandler:
    """Build the handler for ``params.backend`` from the installed plugins; ``params.config``
    is validated against the backend's settings, and its factory receives them parsed."""
    from pliant.plugins import PluginManager

    conf = {k: str(v) for k, v in params.config.items()}
    selected = PluginManager().select("rendezvous", params.backend, source, conf,
                                      "RendezvousParameters")
    handler: RendezvousHandler = selected.create(params)
    return handler

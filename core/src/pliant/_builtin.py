"""pliant-core's own backends, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Sequence

from pliant.hookspecs import hookimpl
from pliant.registrations import RendezvousBackend
from pliant.rendezvous.embedded import EMBEDDED_SETTINGS, create_embedded_handler


@hookimpl
def pliant_rendezvous_backends() -> Sequence[RendezvousBackend]:
    return [
        RendezvousBackend(
            name="embedded",
            factory=create_embedded_handler,
            settings=EMBEDDED_SETTINGS,
            description="One node, no server: ranks 0..N-1 and a fresh port every attempt.",
        )
    ]

"""The rendezvous protocol's wire format: where each value lives and how it is written.

Every key of a run lives under ``pliant/<run_id>/`` (see
:mod:`pliant.rendezvous.elastic` for what each holds). Values are compact JSON
objects carrying :data:`PROTOCOL_VERSION`; a value written by another version
is refused, never misread. A job with a token seals each value on top of this
(:mod:`pliant.rendezvous.auth`): :func:`decode` sees the payload once it verified.
"""

from __future__ import annotations

import json
from typing import Any

from pliant.rendezvous.api import RendezvousStateError

__all__ = ["CLOSED", "PROTOCOL_VERSION", "Keys", "decode", "encode"]

#: Stored in every value; a value with another version is refused, not misread.
PROTOCOL_VERSION = 1
#: Added to a round's join counter to close it: a node whose number is above it knows the
#: round is closed without another read. (The same amount marks a heartbeat counter whose
#: node left: :data:`pliant.rendezvous.store.LEFT`.)
CLOSED = 1 << 40


class Keys:
    """The names of a run's keys."""

    def __init__(self, run_id: str) -> None:
        self.prefix = f"pliant/{run_id}/"
        p = self.prefix
        self.meta, self.current, self.closed = p + "meta", p + "round", p + "closed"

    def of(self, k: int, name: str) -> str:
        return f"{self.prefix}{k}/{name}"

    def slot(self, k: int, i: int) -> str:
        return f"{self.prefix}{k}/join/{i}"

    def beat(self, node_id: str) -> str:
        return f"{self.prefix}beat/{node_id}"


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **value}, separators=(",", ":")).encode()


def decode(key: str, value: bytes, endpoint: str) -> dict[str, Any]:
    """The object stored at ``key``; ``RendezvousStateError`` naming the key and the store's
    ``endpoint`` for anything this protocol version did not write."""
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise RendezvousStateError(
            f"{key} at {endpoint} holds {value[:60]!r}, which is not a pliant rendezvous "
            "value; the store is shared with something else, or corrupt")
    if data.get("v") != PROTOCOL_VERSION:
        raise RendezvousStateError(
            f"{key} at {endpoint} was written by rendezvous protocol version "
            f"{data.get('v')!r}; this pliant speaks version {PROTOCOL_VERSION}. Run the same "
            "pliant version on every node, or use another --rdzv-id")
    return data

"""The embedded single-node rendezvous: no server, no torch, no waiting.

With one node there is nobody to meet: this node is rank 0 of 1. Each round
still hands the workers a *fresh* port, so nothing a failed attempt left
behind (a half-written store, a dead worker's address) can reach the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pliant.errors import ConfigError, install_hint
from pliant.rendezvous.api import (
    RendezvousClosedError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
)
from pliant.rendezvous.net import free_port
from pliant.settings import Setting, parse_bool, parse_float, parse_int, parse_str

__all__ = ["EMBEDDED_SETTINGS", "EmbeddedRendezvousHandler", "create_embedded_handler"]

_COMPAT = "Accepted for torchrun compatibility; one node never waits, so it has no effect."

#: torchrun's c10d keys, accepted so a torchrun command line runs unchanged.
EMBEDDED_SETTINGS: tuple[Setting, ...] = (
    Setting("join_timeout", parse_float(minimum=0.0), 600.0, _COMPAT),
    Setting("last_call_timeout", parse_float(minimum=0.0), 0.0, _COMPAT),
    Setting("close_timeout", parse_float(minimum=0.0), 0.0, _COMPAT),
    Setting("read_timeout", parse_float(minimum=0.0), 60.0, _COMPAT),
    Setting("timeout", parse_float(minimum=0.0), 600.0, _COMPAT),
    Setting("keep_alive_interval", parse_float(minimum=0.0), 5.0, _COMPAT),
    Setting("keep_alive_max_attempt", parse_int(minimum=1), 3, _COMPAT),
    Setting("is_host", parse_bool, True, _COMPAT),
    Setting("heartbeat_timeout", parse_float(minimum=0.0), 30.0, _COMPAT),
    Setting("store_type", parse_str, "tcp", _COMPAT),
    Setting("use_libuv", parse_bool, True, _COMPAT),
)


class EmbeddedRendezvousHandler(RendezvousHandler):
    """Rank 0 of 1, a fresh port each round (unless ``master_port`` is fixed)."""

    polls_membership = False

    def __init__(self, run_id: str, master_addr: str = "127.0.0.1",
                 master_port: int | None = None) -> None:
        self._run_id = run_id
        self._addr = master_addr
        self._port = master_port
        self._round = -1
        self._closed = False

    def get_backend(self) -> str:
        return "embedded"

    def next_rendezvous(self) -> RendezvousInfo:
        if self._closed:
            raise RendezvousClosedError(f"rendezvous for run {self._run_id!r} is closed")
        self._round += 1
        port = self._port if self._port is not None else free_port(self._addr)
        return RendezvousInfo(rank=0, world_size=1, master_addr=self._addr, master_port=port,
                              round=self._round)

    def is_closed(self) -> bool:
        return self._closed

    def set_closed(self) -> None:
        self._closed = True

    def num_nodes_waiting(self) -> int:
        return 0

    def get_run_id(self) -> str:
        return self._run_id


def create_embedded_handler(params: RendezvousParameters, settings: Mapping[str, Any] | None = None,
                            ) -> EmbeddedRendezvousHandler:
    """The factory; ``settings`` (torchrun's keys) change nothing for one node."""
    if params.max_nodes != 1:
        raise ConfigError(
            f"the embedded rendezvous runs one node, but --nnodes asks for "
            f"{params.min_nodes}:{params.max_nodes}; for several nodes choose a multi-node "
            f"backend with --rdzv-backend, such as c10d: {install_hint('pliant-c10d')}")
    port: Any = params.get("master_port")
    return EmbeddedRendezvousHandler(
        run_id=params.run_id,
        master_addr=params.get("master_addr") or params.local_addr or "127.0.0.1",
        master_port=int(port) if port is not None else None,
    )

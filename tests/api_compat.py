"""What the torch_compat/test_api_* files share: a one-node rendezvous handler and a spec."""

from __future__ import annotations

import sys
from typing import Any

from pliant.agent import WorkerSpec
from pliant.rendezvous import RendezvousHandler, RendezvousInfo
from pliant_e2e import free_port


class OneNode(RendezvousHandler):
    """A user-written one-node handler: what a launcher script passes in its WorkerSpec."""

    polls_membership = False

    def __init__(self) -> None:
        self.rounds = 0

    def get_backend(self) -> str:
        return "one-node"

    def next_rendezvous(self) -> RendezvousInfo:
        self.rounds += 1
        return RendezvousInfo(rank=0, world_size=1, master_addr="127.0.0.1",
                              master_port=free_port())

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        pass

    def num_nodes_waiting(self) -> int:
        return 0

    def get_run_id(self) -> str:
        return "api-compat"


def python_spec(code: str, nproc: int = 1, **kwargs: Any) -> WorkerSpec:
    """A spec whose workers run ``python -c code``."""
    kwargs.setdefault("max_restarts", 0)
    return WorkerSpec(role="trainer", local_world_size=nproc, rdzv_handler=OneNode(),
                      entrypoint=sys.executable, args=("-c", code), **kwargs)

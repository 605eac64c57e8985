"""What the torch_compat/test_api_* files share: a one-node rendezvous handler and a spec."""

from __future__ import annotations

import os
import sys
from pathlib import Path
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


def write_distribution(site: Path, name: str, entry_points: str, modules: dict[str, str],
                       ) -> dict[str, str]:
    """An installed distribution in ``site`` (its dist-info and modules), as pip leaves one:
    ``entry_points`` is the text of its entry_points.txt. Returns the environment that puts
    ``site`` on the path of the processes a test starts."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    for module, text in modules.items():
        (site / f"{module}.py").write_text(text)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

"""torch's rendezvous handler registry, and handlers written for torch run by pliant: from
``rendezvous_handler_registry`` and from the ``torchrun.handlers`` entry-point group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from api_compat import write_distribution
from pliant.agent import LocalElasticAgent, WorkerSpec
from pliant.errors import PluginError
from pliant.rendezvous import (
    RendezvousHandlerRegistry,
    RendezvousParameters,
    create_handler,
    get_rendezvous_handler,
    rendezvous_handler_registry,
)
from pliant_e2e import PLIANT, run_pliant
from torch.distributed.elastic.rendezvous import api as torch_rdzv

TORCHRUN = str(Path(sys.executable).parent / "torchrun")

# A rendezvous written for torch: one node, the workers meet at a port of its choosing,
# and what --rdzv-conf gave it is shown.
HANDLER = '''
import sys
from torch.distributed import TCPStore
from torch.distributed.elastic.rendezvous import RendezvousHandler, RendezvousInfo
from torch.distributed.elastic.rendezvous.api import RendezvousStoreInfo
from torch.distributed.elastic.utils.distributed import get_free_port


class OneNode(RendezvousHandler):
    def __init__(self, params):
        self.params = params
        self.store = None

    def get_backend(self):
        return self.params.backend

    def next_rendezvous(self):
        port = get_free_port()
        self.store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
        return RendezvousInfo(self.store, 0, 1, RendezvousStoreInfo("127.0.0.1", port))

    def is_closed(self):
        return False

    def set_closed(self):
        pass

    def num_nodes_waiting(self):
        return 0

    def get_run_id(self):
        return self.params.run_id

    def shutdown(self):
        return True


def create(params):
    print(f"creator got greeting={params.get('greeting')} backend={params.backend}",
          file=sys.stderr, flush=True)
    return OneNode(params)


def get_handler():
    return create
'''

# Real torch.distributed over the port the handler chose.
ALL_REDUCE = '''
import os
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
# one write(2) per line: two workers share torchrun's stdout, and print() may split a line
os.write(1, f"rank {dist.get_rank()} of {dist.get_world_size()} sum {int(t.item())} "
            f"port {os.environ['MASTER_PORT']}\\n".encode())
dist.destroy_process_group()
'''


def test_registry_behaves_as_torchs() -> None:
    def creator(params: Any) -> Any:
        return None

    def other(params: Any) -> Any:
        return None

    ours, theirs = RendezvousHandlerRegistry(), torch_rdzv.RendezvousHandlerRegistry()
    for registry in (ours, theirs):
        registry.register("mine", creator)
        registry.register("mine", creator)  # the same creator again: fine
    errors = []
    for registry in (ours, theirs):
        with pytest.raises(ValueError) as raised:
            registry.register("mine", other)
        errors.append(str(raised.value))
        with pytest.raises(ValueError) as raised:
            registry.register("", creator)
        errors.append(str(raised.value))
        with pytest.raises(ValueError) as raised:
            registry.create_handler(torch_rdzv.RendezvousParameters("absent", "", "r", 1, 1))
        errors.append(str(raised.value))
    assert errors[:3] == errors[3:]


def test_a_creators_handler_of_another_backend_is_refused_as_torch(tmp_path: Path) -> None:
    sys.path.insert(0, str(tmp_path))
    (tmp_path / "torch_style.py").write_text(HANDLER)
    try:
        import torch_style  # type: ignore[import-not-found]

        def wrong(params: Any) -> Any:
            return torch_style.OneNode(torch_rdzv.RendezvousParameters("else", "", "r", 1, 1))

        messages = []
        for registry in (RendezvousHandlerRegistry(), torch_rdzv.RendezvousHandlerRegistry()):
            registry.register("asked", wrong)
            with pytest.raises(RuntimeError) as raised:
                registry.create_handler(torch_rdzv.RendezvousParameters("asked", "", "r", 1, 1))
            messages.append(str(raised.value))
        assert messages[0] == messages[1]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("torch_style", None)


def test_registered_torch_handler_runs_real_workers(tmp_path: Path) -> None:
    (tmp_path / "torch_style.py").write_text(HANDLER)
    (tmp_path / "all_reduce.py").write_text(ALL_REDUCE)
    sys.path.insert(0, str(tmp_path))
    try:
        import torch_style

        rendezvous_handler_registry.register("scripted", torch_style.create)
        params = RendezvousParameters("scripted", "", "reg-run", 1, 1, greeting="hello")
        handler = create_handler(params)
        assert get_rendezvous_handler is create_handler
        assert handler.get_backend() == "scripted" and handler.get_run_id() == "reg-run"
        spec = WorkerSpec(role="trainer", local_world_size=2, rdzv_handler=handler,
                          entrypoint=sys.executable, args=(str(tmp_path / "all_reduce.py"),),
                          max_restarts=0)
        console = (tmp_path / "out").open("w+b"), (tmp_path / "err").open("w+b")
        result = LocalElasticAgent(spec, None, console=console).run()
        assert not result.is_failed(), (tmp_path / "err").read_text()
        console[0].seek(0)
        lines = sorted(line.split("] ", 1)[1] for line in console[0].read().decode().splitlines())
        assert [line.rsplit(" port ", 1)[0] for line in lines] == [
            "rank 0 of 2 sum 3", "rank 1 of 2 sum 3"]
    finally:
        rendezvous_handler_registry._registry.pop("scripted", None)
        sys.path.remove(str(tmp_path))
        sys.modules.pop("torch_style", None)


ENTRY_POINTS = """[torchrun.handlers]
onenode = torchstyle_rdzv:get_handler
broken = brokenrdzv:get_handler
"""


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    return write_distribution(tmp_path / "site", "torchstyle-rdzv", ENTRY_POINTS, {
        "torchstyle_rdzv": HANDLER,
        "brokenrdzv": "raise ImportError('brokenrdzv needs libbar')\n"})


def test_torchrun_handlers_entry_point_works_with_rdzv_backend_as_under_torchrun(
        tmp_path: Path, installed: dict[str, str]) -> None:
    script = tmp_path / "all_reduce.py"
    script.write_text(ALL_REDUCE)
    outputs = {}
    for launcher in ("torchrun", "pliant"):
        argv = ([TORCHRUN] if launcher == "torchrun" else [PLIANT, "run"]) + [
            "--nproc-per-node", "2", "--rdzv-backend", "onenode", "--rdzv-conf",
            "greeting=hi", "--rdzv-id", "ep-run", str(script)]
        done = subprocess.run(argv, env={**os.environ, **installed}, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert "creator got greeting=hi backend=onenode" in done.stderr
        outputs[launcher] = sorted(
            line.split("]", 1)[-1].strip(": ").rsplit(" port ", 1)[0]
            for line in done.stdout.splitlines() if "sum" in line)
    assert outputs["pliant"] == outputs["torchrun"] == ["rank 0 of 2 sum 3", "rank 1 of 2 sum 3"]


def test_torchrun_handlers_are_listed_and_load_errors_reported(
        tmp_path: Path, installed: dict[str, str]) -> None:
    listed = run_pliant("plugins", env=installed)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "torchstyle-rdzv" in rows["torchrun.handlers:onenode"]
    assert "loaded" in rows["torchrun.handlers:onenode"]
    assert "failed" in rows["torchrun.handlers:broken"]
    assert ("torchrun.handlers:broken: failed: load failed: ImportError: brokenrdzv needs libbar"
            in listed.stdout)
    script = tmp_path / "never.py"
    script.write_text("print('never')\n")
    done = run_pliant("run", "--rdzv-backend", "broken", str(script), env=installed)
    assert done.returncode != 0 and "never" not in done.stdout
    assert "unknown rendezvous backend 'broken' (from flag --rdzv-backend)" in done.stderr
    assert "torchrun.handlers:broken" in done.stderr
    assert "ImportError: brokenrdzv needs libbar" in done.stderr
    assert "onenode" in done.stderr  # among the available names


def test_create_handler_names_an_unknown_backend() -> None:
    with pytest.raises(PluginError, match="unknown rendezvous backend 'nowhere'"):
        create_handler(RendezvousParameters("nowhere", "", "r", 1, 1))


def test_torchs_rendezvous_errors_become_pliants() -> None:
    from pliant import rendezvous as ours
    from pliant.rendezvous.registry import as_pliant_handler

    class Raising(torch_rdzv.RendezvousHandler):
        def __init__(self, error: Exception) -> None:
            self.error = error

        def get_backend(self) -> str:
            return "raising"

        def next_rendezvous(self) -> Any:
            raise self.error

        def is_closed(self) -> bool:
            return False

        def set_closed(self) -> None:
            pass

        def num_nodes_waiting(self) -> int:
            return 0

        def get_run_id(self) -> str:
            return "r"

        def shutdown(self) -> bool:
            return True

    for theirs, expected in ((torch_rdzv.RendezvousClosedError("closed"),
                              ours.RendezvousClosedError),
                             (torch_rdzv.RendezvousGracefulExitError("bye"),
                              ours.RendezvousGracefulExitError),
                             (torch_rdzv.RendezvousTimeoutError("slow"),
                              ours.RendezvousTimeoutError)):
        with pytest.raises(expected, match=str(theirs)):
            as_pliant_handler(Raising(theirs)).next_rendezvous()
    with pytest.raises(KeyError):
        as_pliant_handler(Raising(KeyError("other"))).next_rendezvous()

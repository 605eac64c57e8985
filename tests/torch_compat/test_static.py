"""The static rendezvous: torchrun's ``--nnodes N --node-rank R --master-addr A --master-port P``
command line, with real agents on loopback, side by side with torchrun where it works.

Every agent is a real ``pliant run`` (or ``torchrun``) subprocess; the workers record their
environment and join a gloo group (tests/workers/static_ranks.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from pliant_e2e import PLIANT, WORKERS, Agent, free_port, wait_for

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
SCRIPT = str(WORKERS / "static_ranks.py")
SEEN = ("RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE",
        "WORLD_SIZE", "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR",
        "TORCHELASTIC_USE_AGENT_STORE", "allreduce")


def run_nodes(launcher: str, out: Path, nodes: Sequence[Sequence[str]],
              env: dict[str, str] | None = None, timeout: float = 120,
              ) -> list[subprocess.CompletedProcess[str]]:
    """Start one agent per argument list at once, in reverse order (the last node first, so
    that node ranks cannot come from the order of arrival); wait for all of them."""
    out.mkdir(exist_ok=True)
    full_env = {**os.environ, "OUT_DIR": str(out), **(env or {})}
    command = [PLIANT, "run"] if launcher == "pliant" else [TORCHRUN]
    procs = [subprocess.Popen([*command, *args, SCRIPT], env=full_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in reversed(nodes)]
    results = []
    for proc in reversed(procs):
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            stdout, stderr = proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results


def records(out: Path, attempt: int = 0) -> dict[int, dict[str, str]]:
    """What each worker of ``attempt`` saw, by global rank."""
    found = {}
    for path in out.glob(f"{attempt}_*.json"):
        record = json.loads(path.read_text())
        found[int(record["RANK"])] = record
    return found


def static_nodes(port: int, sizes: Sequence[int], *extra: str) -> list[list[str]]:
    return [["--nnodes", str(len(sizes)), "--node-rank", str(rank), "--nproc-per-node",
             str(size), "--master-addr", "127.0.0.1", "--master-port", str(port), *extra]
            for rank, size in enumerate(sizes)]


def assert_all_ok(results: list[subprocess.CompletedProcess[str]]) -> None:
    for i, result in enumerate(results):
        assert result.returncode == 0, f"node {i} exit {result.returncode}\n{result.stderr}"


def compare_with_torchrun(tmp_path: Path, nodes: Callable[[int], list[list[str]]]) -> None:
    """Run the same command lines under pliant and torchrun; the workers must see the same."""
    seen = {}
    for launcher in ("pliant", "torchrun"):
        port = free_port()
        out = tmp_path / launcher
        assert_all_ok(run_nodes(launcher, out, nodes(port)))
        got = records(out)
        assert {r["MASTER_PORT"] for r in got.values()} == {str(port)}, launcher
        seen[launcher] = {rank: {k: r[k] for k in SEEN} for rank, r in got.items()}
    assert seen["pliant"] == seen["torchrun"]


def test_two_nodes_of_different_sizes_see_what_torchrun_gives(tmp_path: Path) -> None:
    compare_with_torchrun(tmp_path, lambda port: static_nodes(port, [1, 2], "--rdzv-backend",
                                                              "static"))
    got = records(tmp_path / "pliant")
    assert [(r["GROUP_RANK"], r["LOCAL_WORLD_SIZE"]) for _, r in sorted(got.items())] == \
        [("0", "1"), ("1", "2"), ("1", "2")]
    assert {r["allreduce"] for r in got.values()} == {6.0}  # 1 + 2 + 3


def test_torchruns_default_command_line_is_static_on_three_nodes(tmp_path: Path) -> None:
    """No --rdzv-backend: torchrun's default, static; GROUP_RANK is --node-rank and every
    worker meets at --master-port, the one port the job uses."""
    compare_with_torchrun(tmp_path, lambda port: static_nodes(port, [1, 2, 1]))
    got = records(tmp_path / "pliant")
    assert {rank: (r["GROUP_RANK"], r["LOCAL_RANK"], r["LOCAL_WORLD_SIZE"], r["WORLD_SIZE"],
                   r["GROUP_WORLD_SIZE"]) for rank, r in got.items()} == {
        0: ("0", "0", "1", "4", "3"), 1: ("1", "0", "2", "4", "3"),
        2: ("1", "1", "2", "4", "3"), 3: ("2", "0", "1", "4", "3")}
    assert {r["allreduce"] for r in got.values()} == {10.0}  # 1 + 2 + 3 + 4


def test_endpoint_names_the_store(tmp_path: Path) -> None:
    port = free_port()
    nodes = [["--nnodes", "2", "--node-rank", str(rank), "--rdzv-backend", "static",
              "--rdzv-endpoint", f"127.0.0.1:{port}"] for rank in (0, 1)]
    assert_all_ok(run_nodes("pliant", tmp_path / "out", nodes))
    got = records(tmp_path / "out")
    assert {(r["GROUP_RANK"], r["MASTER_PORT"]) for r in got.values()} == \
        {("0", str(port)), ("1", str(port))}


def test_worker_failure_restarts_every_node_with_the_same_ranks(tmp_path: Path) -> None:
    """Under torchrun 2.13 this case fails: the restarted workers read the dead worker's gloo
    address from the last attempt's keys in the shared store and cannot connect. pliant
    clears the workers' keys before the next round."""
    port = free_port()
    results = run_nodes("pliant", tmp_path / "out",
                        static_nodes(port, [1, 2], "--max-restarts", "1"),
                        env={"FAIL_RANK": "1"})
    assert_all_ok(results)
    first, second = records(tmp_path / "out", 0), records(tmp_path / "out", 1)
    assert len(first) == len(second) == 3
    for rank in range(3):
        assert {k: second[rank][k] for k in SEEN} == {k: first[rank][k] for k in SEEN}
        assert second[rank]["TORCHELASTIC_RESTART_COUNT"] == "1"
    assert "worker group failed (rank 1" in results[0].stderr  # node 0 was told at once


def test_a_stopped_agent_stops_the_other_nodes(tmp_path: Path, start_agent: Callable[..., Agent],
                                               ) -> None:
    port = free_port()
    env = {"OUT_DIR": str(tmp_path), "HOLD": "1"}
    nodes = static_nodes(port, [1, 1])
    agents = [start_agent(f"node{rank}", "run", *args, str(WORKERS / "node_worker.py"),
                          env={**env, "NODE": f"node{rank}"})
              for rank, args in enumerate(nodes)]
    wait_for(lambda: len(list(tmp_path.glob("*.json"))) == 2, timeout=60)
    agents[1].send_signal(signal.SIGTERM)
    assert agents[1].wait() == 128 + signal.SIGTERM
    assert agents[0].wait() == 1, agents[0].describe()
    assert ("pliant: rendezvous error: the agent of node rank 1" in agents[0].stderr and
            "stopped before its workers finished" in agents[0].stderr), agents[0].describe()


def test_two_agents_with_one_node_rank_are_refused(tmp_path: Path,
                                                   start_agent: Callable[..., Agent]) -> None:
    port = free_port()
    env = {"OUT_DIR": str(tmp_path)}
    nodes = static_nodes(port, [1, 1, 1])  # node rank 2 never comes: the round stays open
    start_agent("node0", "run", *nodes[0], SCRIPT, env=env)
    first = start_agent("node1", "run", *nodes[1], SCRIPT, env=env)
    wait_for(lambda: _joined(port, 1), timeout=30)
    second = start_agent("again", "run", *nodes[1], SCRIPT, env=env)
    assert second.wait() == 1, second.describe()
    assert "node rank 1 of run 'none' is already taken by the agent on" in second.stderr
    assert first.returncode is None  # the first one still waits for node rank 2


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _joined(port: int, rank: int) -> bool:
    """Whether node ``rank`` has written its record for round 0 in the store at ``port``."""
    if not _listening(port):
        return False
    from datetime import timedelta

    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=5))
    return bool(store.check([f"pliant/static/none/0/node/{rank}"]))


def test_a_failure_without_restarts_fails_every_node(tmp_path: Path) -> None:
    port = free_port()
    results = run_nodes("pliant", tmp_path / "out", static_nodes(port, [1, 1]),
                        env={"FAIL_RANK": "1"})
    assert [r.returncode for r in results] == [3, 3]
    for result in results:  # the same root cause on both nodes
        assert "rank       : 1 (local rank 0)" in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--nnodes", "2", "--node-rank", "2"], {},
     "--node-rank 2 is not a node rank of --nnodes 2: give each node a rank from 0 to 1"),
    (["--nnodes", "3"], {"PET_NODE_RANK": "5"},
     "--node-rank 5 (from env PET_NODE_RANK) is not a node rank of --nnodes 3: give each node "
     "a rank from 0 to 2"),
    (["--nnodes", "2", "--master-addr", "192.0.2.1"], {},
     "no --node-rank was given, so this node is node rank 0 and would host the store, but "
     "'192.0.2.1' (from --master-addr and --master-port (the default)) is not an address of "
     "this machine; give each node its --node-rank (0 on 192.0.2.1)"),
    (["--nnodes", "1:2", "--rdzv-backend", "static"], {},
     "--nnodes 1:2: the static rendezvous runs a fixed number of nodes; give --nnodes N"),
    (["--nnodes", "2", "--rdzv-backend", "static", "--rdzv-endpoint", "127.0.0.1"], {},
     "--rdzv-endpoint '127.0.0.1' has no port; the static rendezvous needs HOST:PORT"),
])
def test_bad_static_command_lines_are_refused(tmp_path: Path, args: list[str],
                                              env: dict[str, str], message: str) -> None:
    result = subprocess.run([PLIANT, "run", *args, SCRIPT], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "OUT_DIR": str(tmp_path), **env})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_unreachable_master_is_named_after_join_timeout(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [PLIANT, "run", "--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "--rdzv-conf", "join_timeout=2", SCRIPT],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "OUT_DIR": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert (f"cannot reach node rank 0's store at 127.0.0.1:{port} (from --master-addr and "
            "--master-port) within join_timeout=2s") in result.stderr


def test_node_rank_1_without_master_addr_says_so(tmp_path: Path) -> None:
    """torchrun's default --master-addr is 127.0.0.1: kept, but named when nothing is there."""
    result = subprocess.run(
        [PLIANT, "run", "--nnodes", "2", "--node-rank", "1", "--master-port", str(free_port()),
         "--rdzv-conf", "join_timeout=1", SCRIPT], capture_output=True, text=True, timeout=60,
        env={**os.environ, "OUT_DIR": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert ("(from --master-addr (the default) and --master-port)" in result.stderr and
            "--master-addr was not given, so node rank 1 looked for node rank 0 on 127.0.0.1 "
            "(torchrun's default): give node rank 0's address" in result.stderr), result.stderr


def test_node_rank_0_on_a_busy_port_is_named(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([PLIANT, "run", *static_nodes(port, [1, 1])[0], SCRIPT],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "OUT_DIR": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert f"node rank 0 cannot start the store at 127.0.0.1:{port}" in result.stderr
    assert "choose a free --master-port" in result.stderr


def test_a_missing_node_is_named_after_join_timeout(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [PLIANT, "run", *static_nodes(port, [1, 1])[0], "--rdzv-conf", "join_timeout=2",
         SCRIPT], capture_output=True, text=True, timeout=60,
        env={**os.environ, "OUT_DIR": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert ("node rank(s) 1 of --nnodes 2 did not join within join_timeout=2s"
            in result.stderr)


# -- roles and nodes of different sizes ----------------------------------------------------


def roles_nodes(port: int) -> list[list[str]]:
    """Three nodes: two trainers and a parameter server between them, of different sizes."""
    return [[*node, "--role", role] for node, role in
            zip(static_nodes(port, [2, 1, 1]), ("trainer", "ps", "trainer"), strict=True)]


def test_role_ranks_count_within_each_role_as_under_torchrun(tmp_path: Path) -> None:
    compare_with_torchrun(tmp_path, roles_nodes)
    got = records(tmp_path / "pliant")
    assert {rank: (r["ROLE_NAME"], r["ROLE_RANK"], r["ROLE_WORLD_SIZE"], r["WORLD_SIZE"])
            for rank, r in got.items()} == {
        0: ("trainer", "0", "3", "4"), 1: ("trainer", "1", "3", "4"),
        2: ("ps", "0", "1", "4"), 3: ("trainer", "2", "3", "4")}


def test_role_ranks_on_c10d(tmp_path: Path) -> None:
    """The elastic rendezvous shares each node's role too (node ranks: the order of joining)."""
    port = free_port()
    nodes = [["--nnodes", "2", "--nproc-per-node", str(size), "--role", role,
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
              "--rdzv-id", "roles"] for size, role in ((2, "trainer"), (1, "ps"))]
    assert_all_ok(run_nodes("pliant", tmp_path / "out", nodes))
    got = records(tmp_path / "out")
    by_role: dict[str, list[tuple[str, str]]] = {}
    for _, r in sorted(got.items()):
        by_role.setdefault(r["ROLE_NAME"], []).append((r["ROLE_RANK"], r["ROLE_WORLD_SIZE"]))
    assert by_role == {"trainer": [("0", "2"), ("1", "2")], "ps": [("0", "1")]}
    assert {r["WORLD_SIZE"] for r in got.values()} == {"3"}


#: torch's own expectation (test/distributed/elastic/agent/server/test/api_test.py,
#: test_assign_worker_ranks): (local rank, role rank, global rank, world size, role world size).
TORCH_ROLES = [("parameter_server", 4), ("trainer", 1), ("trainer", 2), ("trainer", 3),
               ("parameter_server", 5)]
TORCH_EXPECTED = [
    [(0, 0, 0, 15, 9), (1, 1, 1, 15, 9), (2, 2, 2, 15, 9), (3, 3, 3, 15, 9)],
    [(0, 0, 4, 15, 6)],
    [(0, 1, 5, 15, 6), (1, 2, 6, 15, 6)],
    [(0, 3, 7, 15, 6), (1, 4, 8, 15, 6), (2, 5, 9, 15, 6)],
    [(0, 4, 10, 15, 9), (1, 5, 11, 15, 9), (2, 6, 12, 15, 9), (3, 7, 13, 15, 9),
     (4, 8, 14, 15, 9)],
]


def test_rank_assignment_is_torchs() -> None:
    """pliant's rank assignment against torch's test case, and against torch's own
    ``_assign_worker_ranks`` run on a real store, one thread per agent."""
    from multiprocessing.pool import ThreadPool
    from types import SimpleNamespace

    import torch.distributed as dist
    from pliant.agent.local import assign_ranks
    from torch.distributed.elastic.agent.server.api import SimpleElasticAgent

    sizes, roles = [n for _, n in TORCH_ROLES], [r for r, _ in TORCH_ROLES]
    ours = []
    for group_rank, size in enumerate(sizes):
        base, world, role_base, role_world = assign_ranks(sizes, roles, group_rank)
        ours.append([(i, role_base + i, base + i, world, role_world) for i in range(size)])
    assert ours == TORCH_EXPECTED

    store = dist.HashStore()

    def torchs(node: tuple[int, tuple[str, int]]) -> list[tuple[int, ...]]:
        group_rank, (role, size) = node
        spec = SimpleNamespace(role=role, local_world_size=size)
        workers = SimpleElasticAgent._assign_worker_ranks(None, store, group_rank,  # type: ignore[arg-type]
                                                          len(TORCH_ROLES), spec)
        return [(w.local_rank, w.role_rank, w.global_rank, w.world_size, w.role_world_size)
                for w in workers]

    with ThreadPool(len(TORCH_ROLES)) as pool:
        assert pool.map(torchs, enumerate(TORCH_ROLES)) == TORCH_EXPECTED


# -- WorkerSpec.master_addr / master_port ---------------------------------------------------

PLIANT_AGENT = """
import sys
from pliant.agent import LocalElasticAgent, WorkerSpec
from pliant.rendezvous import RendezvousParameters, create_handler

handler = create_handler(RendezvousParameters("embedded", "", "spec", 1, 1))
spec = WorkerSpec(role="default", local_world_size=2, rdzv_handler=handler,
                  entrypoint=sys.executable, args=({script!r},), max_restarts=0,
                  master_addr="localhost", master_port={port})
sys.exit(1 if LocalElasticAgent(spec).run().is_failed() else 0)
"""

TORCH_AGENT = """
import sys
from torch.distributed.elastic.agent.server.api import WorkerSpec
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.rendezvous import RendezvousParameters, registry

handler = registry.get_rendezvous_handler(
    RendezvousParameters("c10d", "localhost:0", "spec", 1, 1))
spec = WorkerSpec(role="default", local_world_size=2, rdzv_handler=handler,
                  entrypoint=sys.executable, args=({script!r},), max_restarts=0,
                  master_addr="localhost", master_port={port})
result = LocalElasticAgent(spec, DefaultLogsSpecs(log_dir={logs!r})).run()
sys.exit(1 if result.is_failed() else 0)
"""


def test_worker_spec_master_address_and_port_override_the_rendezvous(tmp_path: Path) -> None:
    """torch: ``WorkerSpec(master_addr=..., master_port=...)`` is what the workers get."""
    seen = {}
    for name, template in (("pliant", PLIANT_AGENT), ("torch", TORCH_AGENT)):
        out, port = tmp_path / name, free_port()
        out.mkdir()
        code = template.format(script=str(WORKERS / "env_dump.py"), port=port,
                               logs=str(tmp_path / "logs"))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "OUT_DIR": str(out)})
        assert result.returncode == 0, result.stderr
        found = [json.loads(p.read_text())["env"] for p in sorted(out.glob("0_*.json"))]
        assert [(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in found] == \
            [("localhost", str(port))] * 2, name
        seen[name] = [{k: e[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")}
                      for e in found]
    assert seen["pliant"] == seen["torch"]


def test_worker_spec_master_port_is_where_the_workers_meet(tmp_path: Path) -> None:
    """The overridden port is the one the workers' gloo group forms on (pliant's embedded
    rendezvous: worker rank 0 hosts the store there)."""
    port = free_port()
    code = PLIANT_AGENT.format(script=SCRIPT, port=port).replace('"localhost"', '"127.0.0.1"')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "OUT_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    got = records(tmp_path)
    assert {(r["MASTER_PORT"], r["allreduce"]) for r in got.values()} == {(str(port), 3.0)}


# -- the API, with torch's parameters ----------------------------------------------------------


def test_static_handler_from_torchs_rendezvous_parameters() -> None:
    """``RendezvousParameters("static", "host:port", run_id, N, N, rank=R)``, as a script
    written for torch's static handler builds them; two nodes on threads, one real store."""
    import threading

    from pliant.rendezvous import RendezvousParameters, create_handler

    port = free_port()
    infos = {}

    def node(rank: int) -> None:
        handler = create_handler(RendezvousParameters("static", f"127.0.0.1:{port}", "api", 2,
                                                      2, rank=rank, timeout=30))
        infos[rank] = handler.next_rendezvous()
        handler.report_success()
        handler.shutdown()

    threads = [threading.Thread(target=node, args=(rank,)) for rank in (1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert {r: (i.rank, i.world_size, i.master_addr, i.master_port) for r, i in infos.items()} \
        == {0: (0, 2, "127.0.0.1", port), 1: (1, 2, "127.0.0.1", port)}


def test_node_rank_on_c10d_is_ignored_with_a_warning(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [PLIANT, "run", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
         "--node-rank", "1", str(WORKERS / "env_dump.py")], capture_output=True, text=True,
        timeout=60, env={**os.environ, "OUT_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert ("--node-rank 1 (from flag --node-rank) is only used by the static rendezvous; the "
            "c10d backend assigns node ranks itself") in result.stderr
    assert json.loads(next(tmp_path.glob("0_0.json")).read_text())["env"]["GROUP_RANK"] == "0"

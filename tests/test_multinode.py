"""`pliant run` across several nodes, end to end: real agents on 127.0.0.1 meeting over the
c10d rendezvous (pliant-c10d), real worker processes.

Every agent gets its own label (NODE, passed on to its workers) so that what a worker
records can be traced to the node that ran it; see workers/node_worker.py. The rendezvous
timeouts are short (--rdzv-conf), so that dead nodes and last calls cost about a second.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pliant_e2e import (
    WORKERS,
    Agent,
    free_port,
    pid_alive,
    run_pliant,
    wait_for,
    without_own_lines,
)

StartAgent = Callable[..., Agent]

WORKER = str(WORKERS / "node_worker.py")
#: A node is dead after 1.5 s without a heartbeat (0.5 s x 3); the first round's last call
#: lasts 1 s; a node missing for 20 s fails the job instead of hanging the test.
FAST = "keep_alive_interval=0.5,last_call_timeout=1,join_timeout=20"


def new_run_id() -> str:
    return f"mn-{uuid.uuid4().hex[:10]}"


def rdzv(endpoint: str, run_id: str, nnodes: str, conf: str = FAST) -> list[str]:
    """`run` and the flags that put an agent in the multi-node job ``run_id``."""
    return ["run", "--nnodes", nnodes, "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
            "--rdzv-id", run_id, "--rdzv-conf", conf]


def records(out: Path) -> list[dict]:
    """What every worker started so far recorded (workers/node_worker.py)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def exit_codes(agents: Sequence[Agent], timeout: float = 120) -> list[int]:
    return [agent.wait(timeout) for agent in agents]


def describe(agents: Sequence[Agent]) -> str:
    return "\n".join(agent.describe() for agent in agents)


def by_node(recs: list[dict]) -> dict[str, list[dict]]:
    nodes: dict[str, list[dict]] = {}
    for rec in recs:
        nodes.setdefault(rec["node"], []).append(rec["env"])
    return nodes


def one_round(recs: list[dict], nodes: int, run_id: str, agents: Sequence[Agent]) -> list[dict]:
    """Check that ``nodes`` one-worker nodes ran together in one first round; their envs."""
    assert sorted(r["node"] for r in recs) == [f"n{i}" for i in range(nodes)], describe(agents)
    envs = [r["env"] for r in recs]
    assert sorted(int(e["RANK"]) for e in envs) == list(range(nodes))
    assert sorted(int(e["GROUP_RANK"]) for e in envs) == list(range(nodes))
    assert {e["WORLD_SIZE"] for e in envs} == {str(nodes)}
    assert {e["GROUP_WORLD_SIZE"] for e in envs} == {str(nodes)}
    assert {e["LOCAL_RANK"] for e in envs} == {"0"}
    assert {e["TORCHELASTIC_RESTART_COUNT"] for e in envs} == {"0"}
    assert {e["TORCHELASTIC_RUN_ID"] for e in envs} == {run_id}
    return envs


def kill_third_node(a: Agent, b: Agent, c: Agent, out: Path) -> None:
    """Three nodes of a ``2:3`` job run; ``c`` gets SIGKILL. Check that ``a`` and ``b`` go on
    at world size 2 without using a restart, and finish."""
    wait_for(lambda: len(records(out)) == 3, timeout=60)
    first = {r["node"]: r for r in records(out)}
    assert {r["env"]["WORLD_SIZE"] for r in first.values()} == {"3"}, describe([a, b, c])

    c.kill()
    assert exit_codes([a, b]) == [0, 0], describe([a, b, c])
    # The killed agent's worker did not outlive it.
    wait_for(lambda: not pid_alive(first["c"]["pid"]), timeout=15)

    second = {node: [e for e in envs if e["WORLD_SIZE"] == "2"]
              for node, envs in by_node(records(out)).items()}
    assert [len(second[n]) for n in ("a", "b", "c")] == [1, 1, 0], second
    assert sorted(int(second[n][0]["RANK"]) for n in ("a", "b")) == [0, 1]
    assert second["a"][0]["MASTER_PORT"] == second["b"][0]["MASTER_PORT"]
    assert {r["env"]["TORCHELASTIC_RESTART_COUNT"] for r in records(out)} == {"0"}
    for agent in (a, b):
        assert "continuing with 2 nodes" in agent.stderr, describe([a, b, c])


def two_separate_jobs(recs: list[dict], jobs: dict[str, str]) -> None:
    """Jobs "a" and "b" (run ids in ``jobs``), of nodes a0, a1 and b0, b1, each ran once at
    world size 2 with its own nodes: they did not mix."""
    nodes = by_node(recs)
    assert sorted(nodes) == ["a0", "a1", "b0", "b1"]
    assert all(len(envs) == 1 for envs in nodes.values()), nodes
    for job, run_id in jobs.items():
        envs = [nodes[f"{job}{i}"][0] for i in (0, 1)]
        assert {e["TORCHELASTIC_RUN_ID"] for e in envs} == {run_id}
        assert {e["WORLD_SIZE"] for e in envs} == {"2"}
        assert sorted(e["RANK"] for e in envs) == ["0", "1"]
        assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]
        assert {e["TORCHELASTIC_RESTART_COUNT"] for e in envs} == {"0"}


def open_store_client(endpoint: str) -> Any:
    """A client of the TCPStore at ``endpoint`` (it waits for the store to listen)."""
    from torch.distributed import TCPStore

    host, port = endpoint.rsplit(":", 1)
    return TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=30))


def wait_for_key(endpoint: str, key: str) -> None:
    store = open_store_client(endpoint)
    wait_for(lambda: bool(store.check([key])), timeout=60)


# -- forming a job -----------------------------------------------------------------------------


@pytest.mark.parametrize("nodes", [2, 3])
def test_agents_form_one_round(start_agent: StartAgent, free_port: int, out: Path,
                               nodes: int) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port}", new_run_id()
    # No is_host: the agents race to host the store, as they would on one machine.
    agents = [start_agent(f"n{i}", *rdzv(endpoint, run_id, str(nodes)), WORKER,
                          env={"OUT_DIR": str(out), "NODE": f"n{i}"}) for i in range(nodes)]
    assert exit_codes(agents) == [0] * nodes, describe(agents)

    envs = one_round(records(out), nodes, run_id, agents)
    assert len({(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs}) == 1, envs
    assert int(envs[0]["MASTER_PORT"]) > 0


def test_third_node_scales_a_running_job_up(start_agent: StartAgent, free_port: int,
                                            out: Path) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port}", new_run_id()

    def start(name: str) -> Agent:
        # Workers of a 2-node round wait to be stopped; those of a 3-node round finish.
        return start_agent(name, *rdzv(endpoint, run_id, "2:3"), WORKER,
                           env={"OUT_DIR": str(out), "NODE": name, "EXIT_AT_WORLD": "3"})

    first = [start("a"), start("b")]
    wait_for(lambda: len(records(out)) == 2, timeout=60)
    before = {r["node"]: r["env"] for r in records(out)}
    assert {e["WORLD_SIZE"] for e in before.values()} == {"2"}

    agents = [*first, start("c")]
    assert exit_codes(agents) == [0, 0, 0], describe(agents)

    final = {node: [e for e in envs if e["WORLD_SIZE"] == "3"]
             for node, envs in by_node(records(out)).items()}
    assert sorted(final) == ["a", "b", "c"]
    assert all(len(envs) == 1 for envs in final.values()), final
    after = {node: envs[0] for node, envs in final.items()}
    assert sorted(int(e["RANK"]) for e in after.values()) == [0, 1, 2]
    assert len({e["MASTER_PORT"] for e in after.values()}) == 1
    assert {e["MASTER_PORT"] for e in after.values()} != {e["MASTER_PORT"] for e in before.values()}
    # The nodes already running keep their ranks; the newcomer takes the next one.
    for node in ("a", "b"):
        assert after[node]["GROUP_RANK"] == before[node]["GROUP_RANK"]
    assert after["c"]["GROUP_RANK"] == "2"
    # A membership change is not a failure: it costs none of the (zero) restart budget.
    assert {r["env"]["TORCHELASTIC_RESTART_COUNT"] for r in records(out)} == {"0"}
    for agent in first:
        assert "membership change" in agent.stderr and "arrived" in agent.stderr, describe(agents)


def test_killed_node_is_dropped_and_the_rest_finish(start_agent: StartAgent, free_port: int,
                                                    out: Path) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port}", new_run_id()
    # A long last call: the first round waits for all three nodes, however slowly they start
    # (it completes as soon as the third joins).
    conf = FAST.replace("last_call_timeout=1", "last_call_timeout=30")

    def start(name: str, is_host: bool) -> Agent:
        # Workers of a 3-node round wait to be stopped; those of a 2-node round finish.
        return start_agent(name, *rdzv(endpoint, run_id, "2:3", f"{conf},is_host={is_host}"),
                           WORKER, env={"OUT_DIR": str(out), "NODE": name, "EXIT_AT_WORLD": "2"})

    # "a" hosts the store, so that killing "c" loses a node, not the store.
    kill_third_node(start("a", True), start("b", False), start("c", False), out)


def test_worker_failure_restarts_every_node(start_agent: StartAgent, free_port: int,
                                            out: Path) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port}", new_run_id()
    # Global rank 3 (the second worker of group rank 1) fails once, after all 4 started.
    agents = [start_agent(name, *rdzv(endpoint, run_id, "2"), "--nproc-per-node", "2",
                          "--max-restarts", "1", WORKER,
                          env={"OUT_DIR": str(out), "NODE": name, "FAIL_RANK": "3"})
              for name in ("a", "b")]
    assert exit_codes(agents) == [0, 0], describe(agents)

    recs = records(out)
    attempts: dict[str, list[dict]] = {}
    for rec in recs:
        attempts.setdefault(rec["env"]["TORCHELASTIC_RESTART_COUNT"], []).append(rec)
    assert sorted(attempts) == ["0", "1"], describe(agents)
    for count, group in attempts.items():
        assert sorted(int(r["env"]["RANK"]) for r in group) == [0, 1, 2, 3], (count, group)
        assert {r["env"]["WORLD_SIZE"] for r in group} == {"4"}
        assert len({r["env"]["MASTER_PORT"] for r in group}) == 1
    # Both nodes restarted (two workers each in the second attempt), with their group rank.
    for node in ("a", "b"):
        group_ranks = {count: {r["env"]["GROUP_RANK"] for r in group if r["node"] == node}
                       for count, group in attempts.items()}
        assert len(group_ranks["1"]) == 1 and group_ranks["0"] == group_ranks["1"], group_ranks
        assert sum(r["node"] == node for r in attempts["1"]) == 2
    assert attempts["0"][0]["env"]["MASTER_PORT"] != attempts["1"][0]["env"]["MASTER_PORT"]
    for agent in agents:
        assert "restarting, attempt 2 of 2" in agent.stderr, describe(agents)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_agent_signalled_while_waiting_to_join_leaves_the_rendezvous(
        start_agent: StartAgent, pliant_store: str, out: Path, sig: signal.Signals) -> None:
    run_id = new_run_id()

    def start(name: str) -> Agent:
        return start_agent(name, *rdzv(pliant_store, run_id, "2"), WORKER,
                           env={"OUT_DIR": str(out), "NODE": name})

    lone = start("lone")
    # Its join record is in the store: it waits in the rendezvous for a second node.
    wait_for_key(pliant_store, f"pliant/{run_id}/0/join/1")
    lone.send_signal(sig)
    # Far sooner than join_timeout (20 s), after which it would fail on its own.
    assert lone.wait(timeout=15) == 128 + sig, lone.describe()
    assert "Traceback" not in lone.stderr, lone.describe()
    assert records(out) == []

    # The run id is still good, and the round forms without the node that left.
    agents = [start("a"), start("b")]
    assert exit_codes(agents) == [0, 0], describe([lone, *agents])
    nodes = by_node(records(out))
    assert sorted(nodes) == ["a", "b"], nodes
    envs = [nodes[name][0] for name in ("a", "b")]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert sorted(e["RANK"] for e in envs) == ["0", "1"]
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"]


# -- losing the store, and refusing to start -------------------------------------------------


def test_killed_store_host_stops_the_other_node(start_agent: StartAgent, free_port: int,
                                                out: Path) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port}", new_run_id()
    host, other = (
        start_agent(name, *rdzv(endpoint, run_id, "2", f"{FAST},is_host={is_host}"), WORKER,
                    env={"OUT_DIR": str(out), "NODE": name, "HOLD": "1"})
        for name, is_host in (("host", True), ("other", False)))
    wait_for(lambda: len(records(out)) == 2, timeout=60)
    pids = {r["node"]: r["pid"] for r in records(out)}

    host.kill()
    code = other.wait()
    assert code == 1, other.describe()
    assert f"pliant: rendezvous error: lost the rendezvous store at {endpoint}" in other.stderr, (
        other.describe())
    assert "Traceback" not in other.stderr
    # No worker outlives its agent: the other node stopped its own, the host's died with it.
    wait_for(lambda: not pid_alive(pids["other"]) and not pid_alive(pids["host"]), timeout=15)


@pytest.mark.parametrize(
    ("endpoint", "conf", "named"),
    [
        pytest.param(None, "is_host=false,read_timeout=1", None, id="unreachable"),
        pytest.param("127.0.0.1:99999", "", "'99999'", id="port-out-of-range"),
        pytest.param("127.0.0.1:abc", "", "'abc'", id="port-not-a-number"),
        pytest.param("no-such-host.invalid:29400", "", "'no-such-host.invalid'",
                     id="unresolvable-host"),
    ],
)
def test_bad_endpoint_is_a_clear_error(free_port: int, endpoint: str | None, conf: str,
                                       named: str | None) -> None:
    if endpoint is None:  # nothing listens there, and the agent may not host the store
        endpoint = named = f"127.0.0.1:{free_port}"
    args = ["run", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
            "--rdzv-id", new_run_id()]
    result = run_pliant(*args, *(["--rdzv-conf", conf] if conf else []), WORKER,
                        env={"OUT_DIR": "/nonexistent"}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "pliant: error:" in result.stderr and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_unreachable_endpoint_prints_only_pliants_error(free_port: int) -> None:
    result = run_pliant("run", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                        f"127.0.0.1:{free_port}", "--rdzv-id", new_run_id(), "--rdzv-conf",
                        "is_host=false,read_timeout=1", WORKER, timeout=60)
    # Not preceded by torch's C++ log of the failed connect and its stack trace.
    assert result.returncode == 2
    assert without_own_lines(result.stderr).startswith("pliant: error:"), result.stderr
    assert "frame #" not in result.stderr and "Exception raised from" not in result.stderr


def test_min_nodes_above_max_nodes_is_a_clear_error() -> None:
    result = run_pliant("run", "--nnodes", "3:2", "--rdzv-endpoint", "127.0.0.1:29400",
                        "--rdzv-id", new_run_id(), WORKER)
    assert result.returncode == 2, result.stderr
    assert "pliant: error:" in result.stderr and "'3:2'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_agent_disagreeing_on_nnodes_is_refused(start_agent: StartAgent, free_port: int,
                                                out: Path) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port}", new_run_id()

    def start(name: str, nnodes: str, is_host: bool) -> Agent:
        return start_agent(name, *rdzv(endpoint, run_id, nnodes, f"{FAST},is_host={is_host}"),
                           WORKER, env={"OUT_DIR": str(out), "NODE": name})

    first = start("first", "2", True)
    # The first agent has registered the job's --nnodes: the second one comes in second.
    wait_for_key(endpoint, f"pliant/{run_id}/meta")

    wrong = start("wrong", "3", False)
    assert wrong.wait() == 1, wrong.describe()
    assert f"agents disagree on --nnodes for run '{run_id}'" in wrong.stderr, wrong.describe()
    assert "Traceback" not in wrong.stderr
    assert not list(out.glob("wrong_*")), "the refused agent started workers"

    # The refused agent left no trace in the job: a right one completes it.
    right = start("right", "2", False)
    assert exit_codes([first, right]) == [0, 0], describe([first, wrong, right])
    assert sorted(r["node"] for r in records(out)) == ["first", "right"]


# -- a standalone store -------------------------------------------------------------------------


def test_two_jobs_share_one_store(start_agent: StartAgent, pliant_store: str,
                                  out: Path) -> None:
    jobs = {"a": new_run_id(), "b": new_run_id()}
    agents = [start_agent(f"{job}{i}", *rdzv(pliant_store, run_id, "2"), WORKER,
                          env={"OUT_DIR": str(out), "NODE": f"{job}{i}"})
              for job, run_id in jobs.items() for i in (0, 1)]
    assert exit_codes(agents) == [0] * 4, describe(agents)
    two_separate_jobs(records(out), jobs)


def test_closed_rendezvous_refuses_an_agent(start_agent: StartAgent, pliant_store: str,
                                            out: Path) -> None:
    from pliant.rendezvous import RendezvousParameters, create_handler

    run_id = new_run_id()
    handler = create_handler(RendezvousParameters("c10d", pliant_store, run_id, 2, 2))
    try:
        handler.set_closed()
        assert handler.is_closed()
    finally:
        handler.shutdown()

    agent = start_agent("late", *rdzv(pliant_store, run_id, "2"), WORKER,
                        env={"OUT_DIR": str(out), "NODE": "late"})
    assert agent.wait() == 1, agent.describe()
    assert f"run '{run_id}'" in agent.stderr and "is closed" in agent.stderr, agent.describe()
    assert "Traceback" not in agent.stderr
    assert records(out) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(b"garbage", "not a pliant rendezvous value", id="garbage"),
        pytest.param(b'{"v": 99, "min": 2, "max": 2}', "protocol version 99",
                     id="other-protocol-version"),
    ],
)
def test_foreign_value_in_the_store_is_refused(start_agent: StartAgent, pliant_store: str,
                                               out: Path, value: bytes, message: str) -> None:
    run_id = new_run_id()
    store = open_store_client(pliant_store)
    store.set(f"pliant/{run_id}/meta", value)
    del store

    agent = start_agent("n0", *rdzv(pliant_store, run_id, "2"), WORKER,
                        env={"OUT_DIR": str(out), "NODE": "n0"})
    assert agent.wait() == 1, agent.describe()
    assert "pliant: rendezvous error:" in agent.stderr, agent.describe()
    assert message in agent.stderr and f"pliant/{run_id}/meta" in agent.stderr, agent.describe()
    assert "Traceback" not in agent.stderr
    assert records(out) == []


# -- a real training ----------------------------------------------------------------------------


def train_on_two_nodes(start_agent: StartAgent, join: Callable[[str], list[str]], tmp: Path,
                       restarts: str, *extra: str) -> tuple[Path, list[Agent]]:
    """ddp_checkpoint.py on 2 nodes of 1 worker each; returns the final weights' file.
    ``join(run_id)`` gives the flags that put an agent in the job."""
    tmp.mkdir()
    weights = tmp / "weights.pt"
    run_id = new_run_id()
    agents = [start_agent(f"{tmp.name}{i}", *join(run_id), "--max-restarts", restarts,
                          str(WORKERS / "ddp_checkpoint.py"), "--checkpoint",
                          str(tmp / "ckpt.pt"), "--out", str(weights), *extra)
              for i in (0, 1)]
    assert exit_codes(agents, timeout=240) == [0, 0], describe(agents)
    return weights, agents


def test_ddp_on_two_nodes_survives_a_worker_crash(start_agent: StartAgent,
                                                  tmp_path: Path) -> None:
    import torch

    ports: dict[str, int] = {}

    def join(run_id: str) -> list[str]:  # a store of its own for each run
        return rdzv(f"127.0.0.1:{ports.setdefault(run_id, free_port())}", run_id, "2")

    clean, _ = train_on_two_nodes(start_agent, join, tmp_path / "clean", "0")
    # Global rank 1, on the second node, dies (os._exit) right after step 5's checkpoint.
    resumed, agents = train_on_two_nodes(start_agent, join, tmp_path / "crashy", "1",
                                          "--crash-at", "5")
    stdout = "".join(agent.stdout for agent in agents)
    for rank in (0, 1):
        assert f"rank {rank} attempt 0 starts at step 0" in stdout, describe(agents)
        assert f"rank {rank} attempt 1 starts at step 5" in stdout, describe(agents)
    expected, got = torch.load(clean), torch.load(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key



def test_nodes_may_run_different_numbers_of_workers(start_agent: StartAgent, free_port: int,
                                                    out: Path) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port}", new_run_id()
    nproc = {"one": 1, "two": 2}
    agents = [start_agent(name, *rdzv(endpoint, run_id, "2"), "--nproc-per-node", str(n),
                          WORKER, env={"OUT_DIR": str(out), "NODE": name})
              for name, n in nproc.items()]
    assert exit_codes(agents) == [0, 0], describe(agents)

    nodes = by_node(records(out))
    assert {name: len(envs) for name, envs in nodes.items()} == nproc
    envs = [e for group in nodes.values() for e in group]
    assert {e["WORLD_SIZE"] for e in envs} == {"3"}
    assert sorted(int(e["RANK"]) for e in envs) == [0, 1, 2]
    # Ranks are node-major: the node of group rank 0 has the first ones, whatever its size.
    first, second = sorted(nodes.values(), key=lambda group: group[0]["GROUP_RANK"])
    assert max(int(e["RANK"]) for e in first) < min(int(e["RANK"]) for e in second)
    for name, group in nodes.items():
        assert {e["LOCAL_WORLD_SIZE"] for e in group} == {str(nproc[name])}
        assert sorted(int(e["LOCAL_RANK"]) for e in group) == list(range(nproc[name]))


def test_run_id_of_a_finished_job_is_refused(start_agent: StartAgent, pliant_store: str,
                                             out: Path) -> None:
    run_id = new_run_id()
    agents = [start_agent(name, *rdzv(pliant_store, run_id, "2"), WORKER,
                          env={"OUT_DIR": str(out), "NODE": name}) for name in ("a", "b")]
    assert exit_codes(agents) == [0, 0], describe(agents)

    late = start_agent("late", *rdzv(pliant_store, run_id, "2"), WORKER,
                       env={"OUT_DIR": str(out), "NODE": "late"})
    assert late.wait() == 1, late.describe()
    assert f"run '{run_id}'" in late.stderr and "ended" in late.stderr, late.describe()
    assert "Traceback" not in late.stderr
    assert "late" not in by_node(records(out))

"""`pliant run --rdzv-backend etcd` across several nodes, end to end: real agents on 127.0.0.1
meeting on real etcd members (pliant_etcd.testing.EtcdCluster), real worker processes.

The c10d tests (test_multinode.py) have the same shape: every agent gets its own label (NODE,
passed on to its workers, see workers/node_worker.py), and the rendezvous timeouts are short,
so that a dead node costs about two seconds (the lease of a node lives
ceil(keep_alive_interval x keep_alive_max_attempt) = 2 s without a heartbeat).

Some tests look at a running job before letting it finish: their workers are
workers/node_worker.py followed by a wait for a "gate" file (see the ``gated`` fixture).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from pliant_e2e import Agent, gated_worker, pid_alive, run_pliant, wait_for, without_own_lines
from pliant_etcd.testing import EtcdCluster
from test_multinode import (
    FAST,
    WORKER,
    describe,
    exit_codes,
    kill_third_node,
    new_run_id,
    one_round,
    records,
    train_on_two_nodes,
    two_separate_jobs,
)

StartAgent = Callable[..., Agent]

PASSWORD = "s3cret-pw"


def rdzv(endpoint: str, run_id: str, nnodes: str, conf: str | None = FAST) -> list[str]:
    """`run` and the flags that put an agent in the etcd job ``run_id``."""
    args = ["run", "--nnodes", nnodes, "--rdzv-backend", "etcd", "--rdzv-endpoint", endpoint,
            "--rdzv-id", run_id]
    return [*args, "--rdzv-conf", conf] if conf is not None else args


def run_keys(cluster: EtcdCluster, run_id: str) -> list[str]:
    """Every key in the cluster that names ``run_id``, wherever it lives."""
    return [k.decode() for k in cluster.keys("") if run_id.encode() in k]


def agent_libraries(pid: int) -> str:
    """The files mapped into a running process (its loaded shared libraries among them)."""
    return Path(f"/proc/{pid}/maps").read_text()


def members_in_use(cluster: EtcdCluster, pids: Sequence[int]) -> set[int]:
    """The members the processes hold an established TCP connection to (from /proc)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return {m.index for m in cluster.members if m.client_port in ports}


def victim(cluster: EtcdCluster, pids: Sequence[int]) -> int:
    """The member to kill: the leader if an agent talks to it, else one an agent talks to
    (the agents pick members at random), so that the kill always breaks a connection."""
    used, leader = members_in_use(cluster, pids), cluster.leader()
    assert used, "the agents hold no connection to any etcd member"
    return leader if leader in used else min(used)


def assert_run_left_nothing(cluster: EtcdCluster, run_id: str, agents: Sequence[Agent]) -> None:
    assert run_keys(cluster, run_id) == [], describe(agents)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    """One etcd member for this module's ordinary cases (each uses its own run id)."""
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdCluster]:
    """One member serving TLS that requires client certificates (made for the test)."""
    with EtcdCluster(1, tls=True, client_cert_auth=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdCluster]:
    """One member with authentication on: user alice may read and write every key."""
    with EtcdCluster(1, user="alice", password=PASSWORD) as cluster:
        yield cluster


@pytest.fixture
def gated(tmp_path: Path) -> tuple[str, Path]:
    """A worker that does what workers/node_worker.py does, then waits for the gate file
    before exiting 0; returns the script and the gate. The test looks at the running job,
    then creates the gate."""
    return gated_worker(tmp_path, WORKER)


# -- forming and finishing a job ------------------------------------------------------------


@pytest.mark.parametrize("nodes", [2, 3])
def test_agents_form_one_round_and_leave_nothing(start_agent: StartAgent, etcd: EtcdCluster,
                                                 out: Path, gated: tuple[str, Path],
                                                 nodes: int) -> None:
    worker, gate = gated
    run_id = new_run_id()
    agents = [start_agent(f"n{i}", *rdzv(etcd.endpoint, run_id, str(nodes)), worker,
                          env={"OUT_DIR": str(out), "NODE": f"n{i}"}) for i in range(nodes)]
    wait_for(lambda: len(records(out)) == nodes, timeout=60)

    # While the job runs: the agents talk to etcd (gRPC is loaded) but never loaded torch.
    for agent in agents:
        maps = agent_libraries(agent.pid)
        assert "cygrpc" in maps, agent.describe()
        assert not re.search(r"/torch/|libtorch", maps), f"agent {agent.name} loaded torch"
    assert run_keys(etcd, run_id), "the running job keeps nothing in etcd?"
    gate.touch()
    assert exit_codes(agents) == [0] * nodes, describe(agents)

    envs = one_round(records(out), nodes, run_id, agents)
    # One round: every worker meets at the same place, on this machine.
    assert {(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs} == {
        ("127.0.0.1", envs[0]["MASTER_PORT"])}, envs
    assert int(envs[0]["MASTER_PORT"]) > 0
    # A finished run leaves nothing behind.
    assert_run_left_nothing(etcd, run_id, agents)
    assert not [k for k in etcd.keys("/pliant/") if run_id.encode() in k]


def test_two_jobs_share_one_cluster(start_agent: StartAgent, etcd: EtcdCluster, out: Path,
                                    gated: tuple[str, Path]) -> None:
    worker, gate = gated
    jobs = {"a": new_run_id(), "b": new_run_id()}
    agents = [start_agent(f"{job}{i}", *rdzv(etcd.endpoint, run_id, "2"), worker,
                          env={"OUT_DIR": str(out), "NODE": f"{job}{i}"})
              for i in (0, 1) for job, run_id in jobs.items()]
    # Both jobs run at once: every worker has started before any may finish.
    wait_for(lambda: len(records(out)) == 4, timeout=60)
    gate.touch()
    assert exit_codes(agents) == [0] * 4, describe(agents)
    two_separate_jobs(records(out), jobs)
    for run_id in jobs.values():
        assert_run_left_nothing(etcd, run_id, agents)


def test_custom_key_prefix(start_agent: StartAgent, etcd: EtcdCluster, out: Path,
                           gated: tuple[str, Path]) -> None:
    worker, gate = gated
    run_id = new_run_id()
    conf = f"{FAST},key_prefix=/teams/a/pliant/"
    agents = [start_agent(name, *rdzv(etcd.endpoint, run_id, "2", conf), worker,
                          env={"OUT_DIR": str(out), "NODE": name}) for name in ("a", "b")]
    wait_for(lambda: len(records(out)) == 2, timeout=60)

    running = run_keys(etcd, run_id)
    assert running, describe(agents)
    assert all(k.startswith(f"/teams/a/pliant/{run_id}/") for k in running), running
    assert f"/teams/a/pliant/{run_id}/meta" in running
    assert not [k for k in etcd.keys("/pliant/") if run_id.encode() in k]

    gate.touch()
    assert exit_codes(agents) == [0, 0], describe(agents)
    assert {r["env"]["WORLD_SIZE"] for r in records(out)} == {"2"}
    assert etcd.keys(f"/teams/a/pliant/{run_id}/") == []
    assert_run_left_nothing(etcd, run_id, agents)


# -- a real training --------------------------------------------------------------------------




def test_ddp_on_two_nodes_survives_a_worker_crash(start_agent: StartAgent, etcd: EtcdCluster,
                                                  tmp_path: Path) -> None:
    import torch

    def join(run_id: str) -> list[str]:
        return rdzv(etcd.endpoint, run_id, "2")

    clean, _ = train_on_two_nodes(start_agent, join, tmp_path / "clean", "0")
    # Global rank 1, on the second node, dies (os._exit) right after step 5's checkpoint.
    resumed, agents = train_on_two_nodes(start_agent, join, tmp_path / "crashy", "1",
                                          "--crash-at", "5")
    stdout = "".join(agent.stdout for agent in agents)
    for rank in (0, 1):
        assert f"rank {rank} attempt 0 starts at step 0" in stdout, describe(agents)
        assert f"rank {rank} attempt 1 starts at step 5" in stdout, describe(agents)
    for agent in agents:
        assert "restarting, attempt 2 of 2" in agent.stderr, describe(agents)
    expected, got = torch.load(clean), torch.load(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# -- losing a node, an etcd member, or etcd -------------------------------------------------


def test_killed_node_is_dropped_and_the_rest_finish(start_agent: StartAgent,
                                                    etcd: EtcdCluster, out: Path) -> None:
    run_id = new_run_id()
    # A long last call: the first round waits for all three nodes, however slowly they start
    # (it completes as soon as the third joins).
    conf = FAST.replace("last_call_timeout=1", "last_call_timeout=30")

    def start(name: str) -> Agent:
        # Workers of a 3-node round wait to be stopped; those of a 2-node round finish.
        return start_agent(name, *rdzv(etcd.endpoint, run_id, "2:3", conf), WORKER,
                           env={"OUT_DIR": str(out), "NODE": name, "EXIT_AT_WORLD": "2"})

    a, b, c = start("a"), start("b"), start("c")
    kill_third_node(a, b, c, out)  # SIGKILL: its lease is never revoked, etcd expires it
    assert_run_left_nothing(etcd, run_id, [a, b, c])


def test_job_survives_losing_etcd_members(start_agent: StartAgent, out: Path,
                                          gated: tuple[str, Path]) -> None:
    """One member is killed while a node waits in the rendezvous, another (after the first
    came back) while the workers run: the job neither fails nor restarts."""
    worker, gate = gated
    run_id = new_run_id()
    with EtcdCluster(3) as cluster:
        def start(name: str) -> Agent:
            return start_agent(name, *rdzv(cluster.endpoint, run_id, "2"), worker,
                               env={"OUT_DIR": str(out), "NODE": name})

        a = start("a")
        # "a" joined round 0 and waits (on an etcd watch) for a second node.
        wait_for(lambda: f"/pliant/{run_id}/0/join/1" in run_keys(cluster, run_id), timeout=60)
        during_rendezvous = victim(cluster, [a.pid])
        cluster.kill(during_rendezvous)
        time.sleep(1.0)  # a new leader is elected; "a" notices its stream broke
        b = start("b")
        wait_for(lambda: len(records(out)) == 2, timeout=60)
        cluster.start(during_rendezvous)
        recs = {r["node"]: r for r in records(out)}
        assert {r["env"]["WORLD_SIZE"] for r in recs.values()} == {"2"}, describe([a, b])
        assert sorted(r["env"]["RANK"] for r in recs.values()) == ["0", "1"]

        during_run = victim(cluster, [a.pid, b.pid])
        cluster.kill(during_run)
        # Twice the nodes' lease (2 s): had their heartbeats stopped, they would be dead.
        time.sleep(4.0)
        assert [a.returncode, b.returncode] == [None, None], describe([a, b])
        assert all(pid_alive(r["pid"]) for r in recs.values()), describe([a, b])
        assert len(records(out)) == 2, describe([a, b])  # no worker was restarted

        gate.touch()
        assert exit_codes([a, b]) == [0, 0], (during_rendezvous, during_run, describe([a, b]))
        assert {r["node"]: r["pid"] for r in records(out)} == {
            n: r["pid"] for n, r in recs.items()}
        assert {r["env"]["TORCHELASTIC_RESTART_COUNT"] for r in records(out)} == {"0"}
        for agent in (a, b):
            assert "membership change" not in agent.stderr, describe([a, b])
            assert "restarting" not in agent.stderr, describe([a, b])
            assert "Traceback" not in agent.stderr, describe([a, b])
        assert_run_left_nothing(cluster, run_id, [a, b])


def test_etcd_down_stops_every_agent(start_agent: StartAgent, out: Path) -> None:
    run_id = new_run_id()
    with EtcdCluster(1) as cluster:
        endpoint = cluster.endpoint
        agents = [start_agent(name, *rdzv(endpoint, run_id, "2", f"{FAST},read_timeout=3"),
                              WORKER, env={"OUT_DIR": str(out), "NODE": name, "HOLD": "1"})
                  for name in ("a", "b")]
        wait_for(lambda: len(records(out)) == 2, timeout=60)
        pids = [r["pid"] for r in records(out)]

        cluster.kill(0)
        killed = time.monotonic()
        codes = exit_codes(agents, timeout=60)
        took = time.monotonic() - killed
    assert codes == [1, 1], describe(agents)
    # read_timeout (3 s) of retries, then stopping the workers: far below torch's minutes.
    assert took < 15, (took, describe(agents))
    for agent in agents:
        assert "pliant: rendezvous error:" in agent.stderr, agent.describe()
        assert f"cannot reach etcd at {endpoint} within read_timeout=3s" in agent.stderr, (
            agent.describe())
        assert "Traceback" not in agent.stderr, agent.describe()
    # No worker outlives its agent.
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=10)


def test_nothing_listening_is_a_clear_error(free_port: int) -> None:
    endpoint = f"127.0.0.1:{free_port}"
    started = time.monotonic()
    result = run_pliant(*rdzv(endpoint, new_run_id(), "2", "read_timeout=2"), WORKER,
                        env={"OUT_DIR": "/nonexistent"}, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert without_own_lines(result.stderr).startswith(
        f"pliant: error: cannot reach etcd at {endpoint} within read_timeout=2s"), result.stderr
    assert "Traceback" not in result.stderr
    assert took < 2 + 4, took  # read_timeout, plus starting Python (on a busy box)


# -- TLS and authentication -------------------------------------------------------------------


def test_tls_with_client_certificates(start_agent: StartAgent, tls_etcd: EtcdCluster,
                                      out: Path) -> None:
    run_id = new_run_id()
    conf = (f"{FAST},cacert={tls_etcd.ca_file},cert={tls_etcd.cert_file},"
            f"key={tls_etcd.key_file}")
    agents = [start_agent(name, *rdzv(tls_etcd.endpoint, run_id, "2", conf), WORKER,
                          env={"OUT_DIR": str(out), "NODE": name}) for name in ("a", "b")]
    assert exit_codes(agents) == [0, 0], describe(agents)
    envs = [r["env"] for r in records(out)]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert sorted(e["RANK"] for e in envs) == ["0", "1"]
    assert_run_left_nothing(tls_etcd, run_id, agents)


def test_tls_without_a_client_certificate_is_a_clear_error(tls_etcd: EtcdCluster) -> None:
    started = time.monotonic()
    result = run_pliant(*rdzv(tls_etcd.endpoint, new_run_id(), "2",
                              f"read_timeout=2,cacert={tls_etcd.ca_file}"), WORKER,
                        env={"OUT_DIR": "/nonexistent"}, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    # The one line, without gRPC's own log of the failed handshake before it.
    assert without_own_lines(result.stderr).startswith(
        f"pliant: error: cannot reach etcd at https://{tls_etcd.endpoint} within "
        "read_timeout=2s"), result.stderr
    assert "TLS settings" in result.stderr
    assert "Traceback" not in result.stderr
    assert took < 2 + 4, took


def test_missing_cacert_is_a_config_error(tls_etcd: EtcdCluster, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    result = run_pliant(*rdzv(tls_etcd.endpoint, new_run_id(), "2", f"cacert={missing}"),
                        WORKER, env={"OUT_DIR": "/nonexistent"}, timeout=60)
    assert result.returncode == 2, result.stderr
    error = without_own_lines(result.stderr)
    assert error.startswith(f"pliant: error: cacert={missing} "), result.stderr
    assert "no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_credentials_from_the_environment_and_the_config_file(
        start_agent: StartAgent, auth_etcd: EtcdCluster, out: Path, tmp_path: Path) -> None:
    run_id = new_run_id()
    # No --rdzv-conf flag: it would replace these settings, not add to them.
    from_env = start_agent("env", *rdzv(auth_etcd.endpoint, run_id, "2", None), WORKER,
                           env={"OUT_DIR": str(out), "NODE": "env",
                                "PLIANT_RDZV_CONF": f"{FAST},user=alice,password={PASSWORD}"})
    config = tmp_path / "pliant.toml"
    settings = "\n".join(f"{k} = {v}" for k, v in (kv.split("=") for kv in FAST.split(",")))
    config.write_text(f'[rdzv_conf]\n{settings}\nuser = "alice"\npassword = "{PASSWORD}"\n')
    # --debug: not even debug logging shows the password.
    from_file = start_agent("file", "run", "--config", str(config), "--debug",
                            *rdzv(auth_etcd.endpoint, run_id, "2", None)[1:], WORKER,
                            env={"OUT_DIR": str(out), "NODE": "file"})
    agents = [from_env, from_file]
    assert exit_codes(agents) == [0, 0], describe(agents)
    envs = [r["env"] for r in records(out)]
    assert {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert sorted(e["RANK"] for e in envs) == ["0", "1"]
    for agent in agents:
        assert PASSWORD not in agent.stdout + agent.stderr, agent.describe()
    assert_run_left_nothing(auth_etcd, run_id, agents)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_wrong_password_is_refused_without_showing_it(auth_etcd: EtcdCluster,
                                                      debug: bool) -> None:
    wrong = "wr0ng-pw-7f3a"
    args = rdzv(auth_etcd.endpoint, new_run_id(), "2", None)
    if debug:
        args = [args[0], "--debug", *args[1:]]
    conf = f"read_timeout=5,user=alice,password={wrong}"
    result = run_pliant(*args, WORKER, env={"OUT_DIR": "/nonexistent", "PLIANT_RDZV_CONF": conf},
                        timeout=60)
    assert result.returncode != 0, result.stderr
    assert f"etcd at {auth_etcd.endpoint} refused user 'alice'" in result.stderr, result.stderr
    assert wrong not in result.stdout + result.stderr, result.stderr
    if not debug:
        assert result.returncode == 2, result.stderr
        assert without_own_lines(result.stderr).startswith("pliant: error:"), result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("source", ["env", "file"])
def test_pliant_config_hides_the_password(auth_etcd: EtcdCluster, tmp_path: Path,
                                          source: str) -> None:
    args = ["config", "--rdzv-backend", "etcd", "--rdzv-endpoint", auth_etcd.endpoint]
    env = {"PLIANT_RDZV_CONF": f"user=alice,password={PASSWORD}"}
    origin = "env PLIANT_RDZV_CONF"
    if source == "file":
        config = tmp_path / "pliant.toml"
        config.write_text(f'[rdzv_conf]\nuser = "alice"\npassword = "{PASSWORD}"\n')
        args, env, origin = [*args, "--config", str(config)], {}, f"{config} key 'rdzv_conf'"
    result = run_pliant(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert f"rdzv_conf.user = alice  # {origin}" in result.stdout, result.stdout
    assert f"rdzv_conf.password = <hidden>  # {origin}" in result.stdout, result.stdout
    # The raw rdzv_conf line too.
    assert "'password': '<hidden>'" in result.stdout, result.stdout
    assert PASSWORD not in result.stdout + result.stderr, result.stdout

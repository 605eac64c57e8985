"""`pliant status` against real running jobs: two agents on 127.0.0.1 meeting over c10d (the
store hosted by one of them) and over etcd (a real member, records signed with a token).

Each job runs a worker that holds until the test lets it go (workers/node_worker.py, then a
wait for a gate file); global rank 1 fails on the first attempt once the test says so, so
that status is read before and after a restart. That the status reads left the job alone
is checked by what the job does next: it finishes with exit 0, in exactly two rounds.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pliant_e2e import Agent, free_port, gated_worker, run_pliant, wait_for
from pliant_etcd.testing import EtcdCluster
from test_multinode import FAST, WORKER, describe, exit_codes, new_run_id, records

StartAgent = Callable[..., Agent]


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
def job(tmp_path: Path, out: Path) -> dict[str, Any]:
    """The worker script, its gate, the file that makes rank 1 fail, and their environment."""
    script, gate = gated_worker(tmp_path, WORKER)
    fail = tmp_path / "fail"
    env = {"OUT_DIR": str(out), "FAIL_RANK": "1", "FAIL_AFTER": str(fail)}
    return {"script": script, "gate": gate, "fail": fail, "env": env}


def status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_pliant("status", *args, timeout=timeout)


def status_json(*args: str) -> dict[str, Any]:
    result = status(*args, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def agent_pid(member: dict[str, Any]) -> int:
    """The agent's pid, from its node id (``<host>-<pid>-<random>``)."""
    return int(member["id"].rsplit("-", 2)[1])


def started(out: Path, attempt: int) -> list[dict[str, Any]]:
    return [r for r in records(out) if r["env"]["TORCHELASTIC_RESTART_COUNT"] == str(attempt)]


def check_members(data: dict[str, Any], agents: Sequence[Agent], out: Path, attempt: int,
                  ) -> None:
    """The members are the two agents, on this host, in the node ranks their workers got."""
    members = data["members"]
    assert [m["node_rank"] for m in members] == [0, 1], data
    assert {m["host"] for m in members} == {socket.gethostname()}
    assert {m["addr"] for m in members} == {"127.0.0.1"}
    assert [m["left"] for m in members] == [False, False]
    pid_of = {agent.name: agent.pid for agent in agents}
    ranks = {pid_of[r["node"]]: int(r["env"]["GROUP_RANK"]) for r in started(out, attempt)}
    assert {agent_pid(m): m["node_rank"] for m in members} == ranks, (data, ranks)


def watch_a_failing_job(start_agent: StartAgent, job: dict[str, Any], out: Path,
                        join: Sequence[str], read: Sequence[str],
                        while_running: Callable[[dict[str, Any]], None] | None = None,
                        ) -> list[Agent]:
    """Two agents (``join``: their rendezvous flags) run the job; status (``read``: its flags,
    ``--rdzv-id`` last) is read before and after rank 1 fails and the job restarts; the job
    then finishes. ``while_running`` gets the first status, for checks of the caller's."""
    agents = [start_agent(name, "run", "--nnodes", "2", *join, "--max-restarts", "2",
                          job["script"], env={**job["env"], "NODE": name})
              for name in ("a", "b")]
    wait_for(lambda: len(started(out, 0)) == 2, timeout=60)

    first = status_json(*read)
    assert first["state"] == "running", first
    assert (first["round"], first["restart_count"]) == (0, 0), first
    assert (first["max_restarts"], first["restarts_left"]) == (2, 2), first
    assert (first["min_nodes"], first["max_nodes"], first["waiting"]) == (2, 2, 0), first
    assert first["last_outcome"] is None, first
    check_members(first, agents, out, 0)

    table = status(*read)
    assert table.returncode == 0, table.stderr
    assert f"({first['backend']}): running" in table.stdout, table.stdout
    assert "restarts      0 of 2 used (2 left)" in table.stdout, table.stdout
    for member in first["members"]:
        assert member["id"] in table.stdout, table.stdout

    # Another run id at the same store: a clear error.
    unknown = status(*read[:-1], "no-such-run")
    assert unknown.returncode == 2, unknown.stderr
    assert f"no run 'no-such-run' at {first['endpoint']} ({first['backend']} rendezvous)" \
        in unknown.stderr, unknown.stderr
    assert "Check --rdzv-id" in unknown.stderr and "Traceback" not in unknown.stderr
    if while_running is not None:
        while_running(first)

    job["fail"].touch()  # rank 1 fails: round 0 ends, the job restarts in round 1
    wait_for(lambda: len(started(out, 1)) == 2, timeout=60)
    second = status_json(*read)
    assert second["state"] == "running", second
    assert (second["round"], second["restart_count"]) == (1, 1), second
    assert (second["max_restarts"], second["restarts_left"]) == (2, 1), second
    outcome = second["last_outcome"]
    assert (outcome["round"], outcome["reason"], outcome["restart"]) == (0, "failure", True)
    assert "rank 1 failed" in outcome["message"], outcome
    check_members(second, agents, out, 1)
    assert {agent_pid(m) for m in second["members"]} == {a.pid for a in agents}

    job["gate"].touch()
    assert exit_codes(agents) == [0, 0], describe(agents)
    # Status left the job alone: two rounds, two workers in each, no other round.
    assert len(records(out)) == 4, records(out)
    for agent in agents:
        assert "rendezvous round 1 of run" in agent.stderr, agent.describe()
        assert "rendezvous round 2 " not in agent.stderr, agent.describe()
    return agents


def test_status_of_a_c10d_job(start_agent: StartAgent, job: dict[str, Any], out: Path) -> None:
    endpoint, run_id = f"127.0.0.1:{free_port()}", new_run_id()
    where = ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint]
    watch_a_failing_job(start_agent, job, out, [*where, "--rdzv-id", run_id, "--rdzv-conf", FAST],
                        [*where, "--rdzv-id", run_id])

    # The agent that hosted the store has gone with it: a clear error, not a hang.
    gone = status(*where, "--rdzv-id", run_id, "--timeout", "1")
    assert gone.returncode == 2, gone.stderr
    assert (f"cannot read run {run_id!r}: the c10d rendezvous store at {endpoint} did not "
            "answer within --timeout 1s") in gone.stderr, gone.stderr
    assert "check --rdzv-endpoint" in gone.stderr.lower() and "Traceback" not in gone.stderr


def test_status_of_an_etcd_job_signed_with_a_token(start_agent: StartAgent,
                                                   job: dict[str, Any], out: Path,
                                                   etcd: EtcdCluster, tmp_path: Path) -> None:
    token, other = tmp_path / "token", tmp_path / "other"
    for path, secret in ((token, "the job's secret"), (other, "another secret")):
        path.write_text(secret + "\n")
        path.chmod(0o600)
    run_id = new_run_id()
    where = ["--rdzv-backend", "etcd", "--rdzv-endpoint", etcd.endpoint]
    signed = ["--rdzv-conf", f"token_file={token}"]

    def without_the_token(verified: dict[str, Any]) -> None:
        assert (verified["signed"], verified["verified"], verified["rejected"]) == (
            True, True, 0), verified
        # No token: shown, marked unverified.
        data = status_json(*where, "--rdzv-id", run_id)
        assert (data["signed"], data["verified"]) == (True, False), data
        assert data["members"] == verified["members"]
        assert "no token was given: what is shown is unverified" in data["notes"][0]
        assert "signed, NOT verified (no token)" in status(*where, "--rdzv-id", run_id).stdout
        # Another token: refused.
        wrong = status(*where, "--rdzv-conf", f"token_file={other}", "--rdzv-id", run_id)
        assert wrong.returncode == 2, wrong.stderr
        assert "another token than the job's" in wrong.stderr, wrong.stderr

    watch_a_failing_job(start_agent, job, out,
                        [*where, "--rdzv-id", run_id, "--rdzv-conf", f"{FAST},token_file={token}"],
                        [*where, *signed, "--rdzv-id", run_id], without_the_token)
    # A finished etcd job deleted its keys: the run is unknown now.
    finished = status(*where, *signed, "--rdzv-id", run_id)
    assert finished.returncode == 2, finished.stderr
    assert f"no run {run_id!r} at {etcd.endpoint} (etcd rendezvous)" in finished.stderr


def test_status_of_an_unreachable_etcd() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    result = status("--rdzv-backend", "etcd", "--rdzv-endpoint", endpoint, "--rdzv-id", "x",
                    "--timeout", "1")
    assert result.returncode == 2, result.stderr
    assert (f"cannot read run 'x': the etcd rendezvous store at {endpoint} did not answer "
            "within --timeout 1s") in result.stderr, result.stderr
    assert "check --rdzv-endpoint" in result.stderr.lower() and "Traceback" not in result.stderr

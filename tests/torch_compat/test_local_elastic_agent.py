"""torch's ``test/distributed/elastic/agent/server/test/local_elastic_agent_test.py``
ported to :class:`pliant.agent.LocalElasticAgent`.

Each torch case (a ``LocalElasticAgentTest`` method that torch's ``test_<case>_<backend>``
wrappers run once per rendezvous backend) is one test of the same name, run once. Cases
with one agent run it in this process on pliant's one-node ``embedded`` rendezvous;
cases with several run each agent in its own process (``bin/local_agent.py``, torch's
``run_agent`` in an ``mp.Process``) on the ``c10d`` rendezvous (``pliant_c10d``), agent 0
hosting the store as torch's ``is_host`` has it. The function entrypoints are torch's,
in ``bin/agent_functions.py``. Workers are scaled down to at most 2 per agent (torch: up
to 8), and the seven-agent rank cases to five agents; the assertions are torch's, against
the scaled sizes. CASES.md lists every case.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pliant import record
from pliant.agent import (
    ChildFailedError,
    DefaultLogsSpecs,
    LocalElasticAgent,
    RunResult,
    Std,
    WorkerSpec,
    WorkerState,
)
from pliant.agent.health import HEALTH_CHECK_PORT_ENV as TORCHELASTIC_HEALTH_CHECK_PORT
from pliant.rendezvous import RendezvousParameters, create_handler
from pliant.rendezvous.embedded import EmbeddedRendezvousHandler
from pliant.timer import TIMER_FILE_ENV as TORCHELASTIC_TIMER_FILE
from pliant_e2e import children, free_port, pid_alive, wait_for

pytestmark = pytest.mark.timeout(180)

BIN = Path(__file__).parent / "bin"
NPROC = 2
#: A first round stays open 1 s for late agents; an agent missing for 60 s fails the job
#: instead of hanging the test. A dead agent is noticed after pliant's default 3 s.
FAST = {"last_call_timeout": "1", "join_timeout": "60"}


@pytest.fixture(autouse=True)
def _importable_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers import the entrypoints by reference (spawn's rule), and this process
    unpickles what they return (``RankInfo``)."""
    monkeypatch.syspath_prepend(str(BIN))


def _fn(name: str) -> Any:
    import agent_functions  # type: ignore[import-not-found]

    return getattr(agent_functions, name)


@dataclass
class Conf:
    """torch's ``Conf``: one agent's arguments (``entrypoint`` names a function of
    ``bin/agent_functions.py``)."""

    entrypoint: str
    local_world_size: int
    args: tuple[Any, ...] = ()
    role: str = "default"
    redirects: Std = Std.NONE
    tee: Std = Std.NONE


# -- one agent, in this process (torch's get_worker_spec, get_agent, run_agent) -------------


def get_worker_spec(conf: Conf, max_restarts: int = 0, monitor_interval: float = 0.01,
                    master_addr_override: str | None = None,
                    master_port_override: int | None = None) -> WorkerSpec:
    handler = create_handler(RendezvousParameters(
        backend="embedded", endpoint="", run_id=uuid.uuid4().hex[:8], min_nodes=1,
        max_nodes=1))
    return WorkerSpec(role=conf.role, local_world_size=conf.local_world_size,
                      entrypoint=_fn(conf.entrypoint), args=conf.args, rdzv_handler=handler,
                      max_restarts=max_restarts, monitor_interval=monitor_interval,
                      master_addr=master_addr_override, master_port=master_port_override)


def get_agent(spec: WorkerSpec, conf: Conf, log_dir: Path, exit_barrier_timeout: float = 5,
              **kwargs: Any) -> LocalElasticAgent:
    return LocalElasticAgent(
        spec, start_method="spawn", exit_barrier_timeout=exit_barrier_timeout,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir), redirects=conf.redirects,
                                    tee=conf.tee),
        **kwargs)


@record
def run_agent(conf: Conf, log_dir: Path, **spec_args: Any) -> RunResult:
    """torch's ``run_agent`` in the test's process: the result, or ChildFailedError."""
    spec = get_worker_spec(conf, **spec_args)
    result = get_agent(spec, conf, log_dir).run()
    assert spec.rdzv_handler is not None
    spec.rdzv_handler.shutdown()
    if result.is_failed():
        raise ChildFailedError(spec.get_entrypoint_name(), result.failures)
    return result


# -- several agents, each in its own process (torch's run_job) ---------------------------------


class AgentProcess:
    """One ``bin/local_agent.py`` in the background; its output goes to files."""

    def __init__(self, conf: Conf, index: int, job: Job, min_nodes: int, max_nodes: int,
                 max_restarts: int, is_host: bool, exit_barrier_timeout: float = 5,
                 monitor_interval: float = 0.01,
                 log_line_prefix_template: str | None = None) -> None:
        self.name = f"agent{index}-{uuid.uuid4().hex[:4]}"
        self.out = job.dir / f"{self.name}.pkl"
        agent_conf = {
            "entrypoint": conf.entrypoint, "args": list(conf.args), "role": conf.role,
            "local_world_size": conf.local_world_size, "tee": int(conf.tee),
            "endpoint": job.endpoint, "run_id": job.run_id, "min_nodes": min_nodes,
            "max_nodes": max_nodes, "max_restarts": max_restarts, "is_host": is_host,
            "rdzv_conf": FAST, "monitor_interval": monitor_interval,
            "exit_barrier_timeout": exit_barrier_timeout,
            "log_line_prefix_template": log_line_prefix_template,
            "log_dir": str(job.dir / "logs"), "out": str(self.out)}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
        self.stdout_path = job.dir / f"{self.name}.stdout"
        self.stderr_path = job.dir / f"{self.name}.stderr"
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(BIN / "local_agent.py"), json.dumps(agent_conf)],
                env=env, stdout=stdout, stderr=stderr)
        job.agents.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still runs after {timeout}s\n"
                                 f"{self.describe()}") from None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def result(self) -> tuple[str, RunResult] | None:
        """What the agent put in torch's results queue: (role, RunResult), if it got there."""
        if not self.out.exists():
            return None
        with open(self.out, "rb") as f:
            value: tuple[str, RunResult] = pickle.load(f)
        return value

    def describe(self) -> str:
        return (f"--- {self.name} (exit {self.proc.poll()}) stdout:\n"
                f"{self.stdout_path.read_text()[-2000:]}\nstderr:\n"
                f"{self.stderr_path.read_text()[-6000:]}")


@dataclass
class Job:
    """One multi-agent job: its rendezvous point, run id and files."""

    dir: Path
    endpoint: str
    run_id: str
    agents: list[AgentProcess]

    def describe(self) -> str:
        return "\n".join(agent.describe() for agent in self.agents)


@pytest.fixture
def job(tmp_path: Path) -> Iterator[Job]:
    """A fresh endpoint and run id; agents left running at teardown are killed (their
    workers die with them)."""
    the_job = Job(tmp_path, f"127.0.0.1:{free_port()}", uuid.uuid4().hex[:8], [])
    yield the_job
    for agent in the_job.agents:
        if agent.proc.poll() is None:
            agent.kill()


def run_job(job: Job, node_configs: list[Conf], exit_barrier_timeout: float = 5,
            log_line_prefix_template: str | None = None) -> dict[str, list[RunResult]]:
    """torch's ``run_job``: one agent per config (agent 0 hosts the store), no restarts;
    the results by role."""
    nnodes = len(node_configs)
    agents = [AgentProcess(conf, i, job, nnodes, nnodes, max_restarts=0, is_host=i == 0,
                           exit_barrier_timeout=exit_barrier_timeout,
                           log_line_prefix_template=log_line_prefix_template)
              for i, conf in reversed(list(enumerate(node_configs)))]
    for agent in agents:
        agent.wait()
    results: dict[str, list[RunResult]] = {}
    for agent in agents:
        found = agent.result()
        if found is not None:
            results.setdefault(found[0], []).append(found[1])
    return results


def wait_for_workers(agent: AgentProcess, job: Job, count: int = NPROC) -> None:
    """Until ``agent``'s ``count`` workers run (its rendezvous completed)."""
    try:
        wait_for(lambda: len(children(agent.pid)) == count, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{job.describe()}") from None


# -- the cases ------------------------------------------------------------------------------


def test_dummy_compute(tmp_path: Path) -> None:
    """torch: dummy_compute (test_dummy_compute_c10d/_etcd/_etcd_v2)."""
    import torch

    res = run_agent(Conf(entrypoint="dummy_compute", local_world_size=2), tmp_path)
    assert not res.is_failed()
    for return_value in res.return_values.values():
        assert isinstance(return_value, torch.Tensor)
        assert return_value.shape == (100, 100)


def test_run_happy_function(tmp_path: Path) -> None:
    """torch: run_happy_function (test_run_happy_function_c10d/_etcd/_etcd_v2)."""
    res = run_agent(Conf(entrypoint="_happy_function", local_world_size=2), tmp_path)
    assert not res.is_failed()
    assert res.return_values[0] is None
    assert res.return_values[1] is None


def test_check_master_addr_port_override(tmp_path: Path) -> None:
    """torch: check_master_addr_port_override (_etcd/_etcd_v2): the WorkerSpec's master
    address and port are the workers' MASTER_ADDR/MASTER_PORT. (torch's worker check
    fails only when both differ; this one when either does.)"""
    master_addr, master_port = "test_host", 42
    res = run_agent(Conf(entrypoint="_check_master_port_addr_override",
                         args=(master_addr, master_port), local_world_size=1), tmp_path,
                    master_addr_override=master_addr, master_port_override=master_port)
    assert not res.is_failed()
    assert res.return_values[0] is None


def test_run_check_env_function(tmp_path: Path) -> None:
    """torch: run_check_env_function (_etcd): every variable torch's agent sets is set."""
    res = run_agent(Conf(entrypoint="_check_env_function", local_world_size=1), tmp_path)
    assert not res.is_failed()


def test_run_check_nccl_async_error_handling_env(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: run_check_nccl_async_error_handling_env (_c10d): the agent's
    TORCH_NCCL_ASYNC_ERROR_HANDLING is honoured."""
    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")
    res = run_agent(Conf(entrypoint="_check_env_value", local_world_size=1,
                         args=("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")), tmp_path)
    assert not res.is_failed()


def test_run_check_nccl_async_error_handling_env_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: run_check_nccl_async_error_handling_env_default (_c10d): unset, it is 1."""
    monkeypatch.delenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", raising=False)
    res = run_agent(Conf(entrypoint="_check_env_value", local_world_size=1,
                         args=("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")), tmp_path)
    assert not res.is_failed()


def _run_watchdog_check(tmp_path: Path, key: str, should_exist: bool,
                        **agent_args: Any) -> RunResult:
    conf = Conf(entrypoint="_check_local_watchdog_setup", local_world_size=1,
                args=(key, should_exist))
    spec = get_worker_spec(conf, max_restarts=2)
    return get_agent(spec, conf, tmp_path, **agent_args).run()


def test_run_agent_local_watchdog_setup_enabled(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: run_agent_local_watchdog_setup_enabled (_etcd/_c10d): with
    TORCHELASTIC_TIMER_FILE set for the agent, its workers have it. (torch serves its file
    timer at the path given; pliant's workers get the pipe of pliant's ``local`` timer,
    which takes the same requests: docs/user-guide.md, Hang detection.)"""
    monkeypatch.setenv(TORCHELASTIC_TIMER_FILE, f"/tmp/watchdog_timer_{uuid.uuid4()}")
    res = _run_watchdog_check(tmp_path, TORCHELASTIC_TIMER_FILE, True)
    assert not res.is_failed()


def test_run_agent_local_watchdog_setup_disabled(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: run_agent_local_watchdog_setup_disabled (_etcd/_c10d). Deliberate
    difference (docs/migration.md): torch's agent runs a timer server only when
    TORCHELASTIC_TIMER_FILE is set for it; pliant's runs its ``local`` timer by default, so
    the workers have the variable (and ``pliant.timer.expires`` works without setup). With
    no timer (``timers=[]``, ``pliant run --timer ''``) they do not, as in torch's case."""
    monkeypatch.delenv(TORCHELASTIC_TIMER_FILE, raising=False)
    res = _run_watchdog_check(tmp_path, TORCHELASTIC_TIMER_FILE, False, timers=[])
    assert not res.is_failed()
    # pliant's default: the local timer's pipe
    res = _run_watchdog_check(tmp_path, TORCHELASTIC_TIMER_FILE, True)
    assert not res.is_failed()


def test_run_agent_healthcheck_setup_enabled(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: run_agent_healthcheck_setup_enabled (_etcd/_c10d), on a free port where
    torch's uses 12345."""
    monkeypatch.setenv(TORCHELASTIC_HEALTH_CHECK_PORT, str(free_port()))
    res = _run_watchdog_check(tmp_path, TORCHELASTIC_HEALTH_CHECK_PORT, True)
    assert not res.is_failed()


def test_run_agent_healthcheck_setup_disabled(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: run_agent_healthcheck_setup_disabled (_etcd/_c10d)."""
    monkeypatch.delenv(TORCHELASTIC_HEALTH_CHECK_PORT, raising=False)
    res = _run_watchdog_check(tmp_path, TORCHELASTIC_HEALTH_CHECK_PORT, False)
    assert not res.is_failed()


def test_run_function_with_return_value(tmp_path: Path) -> None:
    """torch: run_function_with_return_value (_c10d/_etcd/_etcd_v2)."""
    res = run_agent(Conf(entrypoint="_echo", args=("foo",), local_world_size=2), tmp_path)
    assert not res.is_failed()
    assert res.return_values[0] == "foo"
    assert res.return_values[1] == "foo"


def test_simple_dist_sum(tmp_path: Path) -> None:
    """torch: simple_dist_sum (_c10d/_etcd/_etcd_v2); ``_dist_sum`` checks the sum."""
    res = run_agent(Conf(entrypoint="_dist_sum", local_world_size=2), tmp_path)
    assert not res.is_failed()


def _distributed_sum_homogeneous(job: Job, log_line_prefix_template: str | None = None) -> None:
    node_configs = [Conf(role="sum", entrypoint="_dist_sum", local_world_size=NPROC,
                         tee=Std.ALL) for _ in range(2)]
    res = run_job(job, node_configs, log_line_prefix_template=log_line_prefix_template)
    assert len(res.get("sum", [])) == 2, job.describe()
    ranks = set()
    for run_results in res["sum"]:
        assert not run_results.is_failed()
        ranks.update(run_results.return_values.keys())
    assert ranks == set(range(NPROC + NPROC))


def test_run_distributed_sum_homogeneous(job: Job) -> None:
    """torch: run_distributed_sum_homogeneous (_c10d/_etcd/_etcd_v2): two agents of
    NPROC workers each sum their ranks."""
    _distributed_sum_homogeneous(job)


def test_run_with_custom_log_lines(job: Job) -> None:
    """torch: test_run_with_custom_log_lines: the same with a log line prefix template."""
    _distributed_sum_homogeneous(job, "[${role_name}-${local_rank}:${rank}]:")


def test_run_distributed_sum_heterogeneous(job: Job) -> None:
    """torch: run_distributed_sum_heterogeneous (_c10d/_etcd/_etcd_v2): agents of
    different sizes (here 1 and 2 workers; torch: 1, 2 and 3) sum all ranks."""
    sizes = (1, 2)
    node_configs = [Conf(role="sum", entrypoint="_dist_sum", local_world_size=size)
                    for size in sizes]
    res = run_job(job, node_configs)
    assert len(res.get("sum", [])) == len(sizes), job.describe()
    ranks = set()
    for run_results in res["sum"]:
        assert not run_results.is_failed()
        ranks.update(run_results.return_values.keys())
    assert ranks == set(range(sum(sizes)))


def test_run_sad_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: run_sad_function (_c10d/_etcd/_etcd_v2): error propagation. ``@record`` on
    the function that raises ChildFailedError copies the root-cause worker's error file to
    the caller's TORCHELASTIC_ERROR_FILE."""
    replyfile = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(replyfile))
    with pytest.raises(ChildFailedError) as cm:
        run_agent(Conf(entrypoint="_sad_function", local_world_size=2), tmp_path / "logs")
    rank, failure = cm.value.get_first_failure()
    failure_data = failure.error_file_data["message"]
    data = json.loads(replyfile.read_text())["message"]
    # ran two; both failed; first failure is either rank 0 or 1
    assert rank in {0, 1}
    assert failure.local_rank in {0, 1}
    assert failure.exitcode == 1
    assert data["message"] == failure_data["message"]
    assert int(data["extraInfo"]["timestamp"]) == failure.timestamp


def test_run_bipolar_function(tmp_path: Path) -> None:
    """torch: run_bipolar_function (_c10d/_etcd/_etcd_v2): odd ranks always fail; the
    restart budget is used up. torch reads the private ``_remaining_restarts`` (0) and
    ``_total_execution_time``; here the result's ``restart_count`` is the budget."""
    conf = Conf(entrypoint="_bipolar_function", local_world_size=NPROC)
    spec = get_worker_spec(conf, max_restarts=2)
    agent = get_agent(spec, conf, tmp_path)
    run_result = agent.run()
    assert run_result.is_failed()
    assert run_result.restart_count == spec.max_restarts
    assert agent.get_worker_group().state == WorkerState.FAILED


def _assert_ranks_sequential(ranks_pairs: list[tuple[int, int]], rank_idx: int) -> None:
    ranks = sorted(pair[rank_idx] for pair in ranks_pairs)
    assert ranks == list(range(ranks[0], ranks[-1] + 1))


def _assert_rank_consistency(run_results: dict[str, list[RunResult]],
                             expected_role_world_sizes: dict[str, int]) -> None:
    """torch's assert_rank_consistency: ranks cover the world, role ranks each role, and
    every agent's ranks and role ranks are consecutive."""
    global_ranks: list[int] = []
    role_ranks: dict[str, list[int]] = {}
    grouped_ranks: dict[int, list[tuple[int, int]]] = {}
    expected_world_size = sum(expected_role_world_sizes.values())
    for role, results in run_results.items():
        for result in results:
            for role_info in result.return_values.values():
                assert role_info.world_size == expected_world_size
                assert role_info.role_world_size == expected_role_world_sizes[role]
                grouped_ranks.setdefault(role_info.group_rank, []).append(
                    (role_info.rank, role_info.role_rank))
                role_ranks.setdefault(role, []).append(role_info.role_rank)
                global_ranks.append(role_info.rank)
    assert sorted(global_ranks) == list(range(expected_world_size))
    for role, expected_role_world_size in expected_role_world_sizes.items():
        assert sorted(role_ranks[role]) == list(range(expected_role_world_size))
    for ranks_lst in grouped_ranks.values():
        _assert_ranks_sequential(ranks_lst, 0)
        _assert_ranks_sequential(ranks_lst, 1)


def _rank_job(job: Job, roles: list[tuple[str, int]]) -> None:
    results = run_job(job, [Conf(role=role, entrypoint="_get_role_info", local_world_size=size)
                            for role, size in roles])
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for role, size in roles:
        counts[role] = counts.get(role, 0) + 1
        sizes[role] = sizes.get(role, 0) + size
    assert {role: len(found) for role, found in results.items()} == counts, job.describe()
    _assert_rank_consistency(results, expected_role_world_sizes=sizes)


def test_correct_rank_assignment_heterogeneous(job: Job) -> None:
    """torch: correct_rank_assignment_heterogeneous (_etcd/_etcd_v2): three roles on agents
    of different sizes (here 5 agents: master 2; trainer 1, 2; ps 2, 1. torch: 7 agents,
    master 8; trainer 1, 2, 3, 4; ps 5, 2), on c10d."""
    _rank_job(job, [("master", 2), ("trainer", 1), ("trainer", 2), ("ps", 2), ("ps", 1)])


def test_correct_rank_assignment_homogeneous(job: Job) -> None:
    """torch: correct_rank_assignment_homogeneous (_etcd/_etcd_v2): the agents of a role
    have one size (here master 1; trainer 2 x 2; ps 1 x 2. torch: master 1; trainer 4 x 4;
    ps 3 x 2), on c10d."""
    _rank_job(job, [("master", 1), ("trainer", 2), ("trainer", 2), ("ps", 1), ("ps", 1)])


def test_double_agent_fault_tolerance(job: Job) -> None:
    """torch: double_agent_fault_tolerance (_etcd/_etcd_v2), on c10d: of two agents, the
    odd one is killed right after it starts, and started again; both finish with exit code
    0. (Killed later, once the job runs, its death would leave fewer than min_nodes: pliant
    then fails the job at once naming the dead node, where torch waits for a replacement;
    a deliberate difference, docs/migration.md, "a dead node".)"""
    nnodes, wait = 2, 2
    conf = Conf(entrypoint="_dist_sum", args=(wait,), local_world_size=NPROC)
    agent_args: dict[str, Any] = {"min_nodes": nnodes, "max_nodes": nnodes,
                                  "max_restarts": 2}
    procs = [AgentProcess(conf, i, job, is_host=i == 0, **agent_args) for i in range(nnodes)]
    # restart odd agents
    for i in range(nnodes):
        if i % 2 != 0:
            procs[i].kill()
            procs[i] = AgentProcess(conf, i, job, is_host=False, **agent_args)
    for p in procs:
        assert p.wait() == 0, job.describe()


def test_no_exit_barrier_on_failure(job: Job) -> None:
    """torch: no_exit_barrier_on_failure: two agents whose even ranks sleep and odd ranks
    fail, exit_barrier_timeout 300. Both agents fail without waiting out the barrier or the
    sleep. torch measures how far apart they exit (a timed assertion); here the sleepers
    sleep 300 s and both agents must be done well within it, their runs failed by the odd
    ranks. (pliant has no exit barrier: docs/migration.md.)"""
    nnodes, wait = 2, 300
    conf = Conf(entrypoint="_bipolar_sleep_function", args=(wait,), local_world_size=NPROC)
    procs = [AgentProcess(conf, i, job, min_nodes=nnodes, max_nodes=nnodes, max_restarts=0,
                          is_host=i == 0, exit_barrier_timeout=300, monitor_interval=0.5)
             for i in range(nnodes)]
    for p in procs:
        assert p.wait(timeout=90) != 0, job.describe()
    for p in procs:
        found = p.result()
        assert found is not None, job.describe()
        failed = found[1]
        assert failed.is_failed()
        assert {rank % 2 for rank in failed.failures} == {1}, failed.failures


def test_double_agent_elastic(job: Job) -> None:
    """torch: double_agent_elastic (_c10d/_etcd/_etcd_v2): of two agents of a 1:2 job, the
    odd one is killed and not restarted; the other scales down and finishes. torch kills
    it right after starting it; here once its workers run, so that the survivor's group
    loses a running member and forms a round alone."""
    min_nodes, max_nodes, wait = 1, 2, 2
    conf = Conf(entrypoint="_dist_sum", args=(wait,), local_world_size=NPROC)
    procs = [AgentProcess(conf, i, job, min_nodes=min_nodes, max_nodes=max_nodes,
                          max_restarts=2, is_host=i == 0) for i in range(max_nodes)]
    for i in range(max_nodes):
        if i % 2 != 0:
            wait_for_workers(procs[i], job)
            procs[i].kill()
    for i, p in enumerate(procs):
        if i % 2 == 0:
            assert p.wait() == 0, job.describe()
        else:
            assert p.wait() == -signal.SIGKILL


def test_torch_rpc(job: Job) -> None:
    """torch: torch_rpc (_c10d/_etcd/_etcd_v2): two one-worker agents, roles master and
    worker; the master's worker calls rpc_sync on the other."""
    msg = "hello world"
    node_configs = [
        Conf(role="master", entrypoint="rpc_master", args=(msg,), local_world_size=1,
             tee=Std.ALL),
        Conf(role="worker", entrypoint="rpc_worker", local_world_size=1, tee=Std.ALL),
    ]
    results = run_job(job, node_configs)
    assert "master" in results, job.describe()
    master_retvals = results["master"][0].return_values
    # there is only one master but the global rank is not stable
    assert list(master_retvals.values()) == [f"{msg} from worker"]


def _drift_job(job: Job, sleeps: tuple[float, float], exit_barrier_timeout: float) -> None:
    node_configs = [Conf(role="zzz", entrypoint="_sleep", args=(s,), local_world_size=1)
                    for s in sleeps]
    results = run_job(job, node_configs, exit_barrier_timeout=exit_barrier_timeout)
    assert len(results.get("zzz", [])) == 2, job.describe()
    for run_results in results["zzz"]:
        assert not run_results.is_failed()
        for rank, output in run_results.return_values.items():
            # _sleep() returns its own rank
            assert rank == output


def test_workers_drift_success(job: Job) -> None:
    """torch: workers_drift_success (_etcd/_etcd_v2), on c10d: two one-worker agents finish
    2 s apart, exit_barrier_timeout 4 s."""
    sec = 1
    _drift_job(job, (0 * sec, 2 * sec), exit_barrier_timeout=2 * 2 * sec)


def test_workers_drift_fail(job: Job) -> None:
    """torch: workers_drift_fail (_etcd/_etcd_v2), on c10d: finishing 4 s apart with
    exit_barrier_timeout 0 does not fail the job. (pliant has no exit barrier: the timeout
    has no effect, docs/migration.md; the first agent to finish waits for the other.)"""
    sec = 1
    _drift_job(job, (0 * sec, 4 * sec), exit_barrier_timeout=0)


class _SuccessReportFails(EmbeddedRendezvousHandler):
    """One node whose report of success, pliant's counterpart of torch's exit barrier,
    raises (torch mocks ``store_util.barrier`` to raise)."""

    def __init__(self) -> None:
        super().__init__(run_id=uuid.uuid4().hex[:8])
        self.reports = 0

    def report_success(self) -> None:
        self.reports += 1
        raise RuntimeError("test error")


def test_barrier_failed(tmp_path: Path) -> None:
    """torch: barrier_failed (_c10d/_etcd/_etcd_v2): a failure in the exit barrier does not
    fail the job. pliant has no exit barrier (docs/migration.md); a node whose workers all
    succeeded tells the rendezvous so (``report_success``: on c10d it tells the other nodes
    and leaves), and that is what raises here. The run still succeeded."""
    conf = Conf(entrypoint="_happy_function", local_world_size=1)
    handler = _SuccessReportFails()
    spec = WorkerSpec(role=conf.role, local_world_size=conf.local_world_size,
                      entrypoint=_fn(conf.entrypoint), rdzv_handler=handler, max_restarts=0,
                      monitor_interval=0.01)
    res = get_agent(spec, conf, tmp_path).run()
    assert not res.is_failed()
    assert handler.reports == 1


def test_shutdown_called(tmp_path: Path) -> None:
    """torch: shutdown_called (_c10d/_etcd/_etcd_v2): torch mocks ``start_processes`` and
    ``_monitor_workers`` and asserts the process context is closed once. Its effect is
    asserted instead: when ``run("worker")`` returns, no worker it started is left."""
    conf = Conf(entrypoint="_happy_function", local_world_size=1)
    spec = get_worker_spec(conf, max_restarts=0)
    agent = get_agent(spec, conf, tmp_path)
    result = agent.run("worker")
    assert result.state == WorkerState.SUCCEEDED
    pids = [w.id for w in agent.get_worker_group().workers]
    assert pids and all(pid is not None for pid in pids)
    assert not any(pid_alive(pid) for pid in pids if pid is not None)


def test_fail_rank_one_once(tmp_path: Path) -> None:
    """torch: fail_rank_one_once (test_rank_restart_after_failure, c10d): rank 1 is killed
    (SIGKILL) on the first attempt; the restart succeeds."""
    import torch

    res = run_agent(Conf(entrypoint="dummy_compute_simulate_rank_failure", local_world_size=2),
                    tmp_path, max_restarts=3)
    assert not res.is_failed()
    for return_value in res.return_values.values():
        assert isinstance(return_value, torch.Tensor)
        assert return_value.shape == (100, 100)

"""torch's ``test/distributed/elastic/agent/server/test/api_test.py`` ported to
:mod:`pliant.agent`.

torch drives a ``SimpleElasticAgent`` subclass whose workers are fake and whose private
steps (``_rendezvous``, ``_monitor_workers``, ``_record_metrics``...) it calls or mocks.
pliant has no such base class; each case here runs the real ``LocalElasticAgent`` with
tiny real workers and asserts what torch's case asserts, as far as a user can see it: the
worker group, the ``RunResult``, the metrics and events the agent emits, the variables
the workers get. Cases about a rendezvous use the ``static`` backend, as torch's do;
the others use pliant's one-node ``embedded`` backend. CASES.md lists the cases that need
torch's private steps and are not ported.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pliant import events, metrics
from pliant.agent import LocalElasticAgent, SignalException, WorkerGroup, WorkerSpec, WorkerState
from pliant.rendezvous import (
    RendezvousGracefulExitError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    create_handler,
)
from pliant_e2e import PLIANT, free_port

pytestmark = pytest.mark.timeout(120)

BIN = Path(__file__).parent / "bin"
ROLE = "test_trainer"

# Worker programs: python -c CODE ARGS...
SUCCEED = ("-c", "pass")
# Touches <dir>/<attempt>_<local rank>, then fails.
FAIL_ALWAYS = ("-c", "import os, sys; e = os.environ; "
               "open(os.path.join(sys.argv[1], e['TORCHELASTIC_RESTART_COUNT'] + '_' + "
               "e['LOCAL_RANK']), 'w').close(); sys.exit(1)")
# Fails on the first attempt only.
FAIL_ONCE = ("-c", "import os, sys; sys.exit(os.environ['TORCHELASTIC_RESTART_COUNT'] == '0')")


def _static_handler(local_addr: str | None = None) -> RendezvousHandler:
    """torch's ``_get_worker_spec`` handler: ``static``, one node, rank 0."""
    endpoint = f"{local_addr or '127.0.0.1'}:{free_port()}"
    return create_handler(RendezvousParameters(
        backend="static", endpoint=endpoint, run_id=str(uuid.uuid4().int), min_nodes=1,
        max_nodes=1, rank=0))


def _embedded_handler() -> RendezvousHandler:
    return create_handler(RendezvousParameters(
        backend="embedded", endpoint="", run_id=str(uuid.uuid4().int), min_nodes=1,
        max_nodes=1))


def _spec(args: tuple[str, ...] = SUCCEED, max_restarts: int = 1, local_world_size: int = 2,
          rdzv_handler: RendezvousHandler | None = None, local_addr: str | None = None,
          ) -> WorkerSpec:
    return WorkerSpec(role=ROLE, local_world_size=local_world_size,
                      rdzv_handler=rdzv_handler or _embedded_handler(),
                      entrypoint=sys.executable, args=args, max_restarts=max_restarts,
                      monitor_interval=0.1, local_addr=local_addr)


class _Collect(metrics.MetricHandler, events.EventHandler):
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.events: list[events.Event] = []

    def emit(self, metric_data: metrics.MetricData) -> None:
        self.metrics[metric_data.name] = metric_data.value

    def record(self, event: events.Event) -> None:
        self.events.append(event)


@pytest.fixture
def collect() -> Iterator[_Collect]:
    """Receives what the agent emits (torch mocks ``put_metric`` and ``record``): metrics of
    the ``torchelastic`` group, torch's default, and every event."""
    before_metrics, before_events = metrics.get_handlers("torchelastic"), events.get_handlers()
    handler = _Collect()
    metrics.configure(handler, "torchelastic")
    events.configure(handler)
    yield handler
    metrics.configure(list(before_metrics), "torchelastic")
    events.configure(list(before_events))


def _run(spec: WorkerSpec, collect: _Collect | None = None) -> Any:
    result = LocalElasticAgent(spec).run()
    if collect is not None:
        assert metrics.flush(10.0) and events.flush(10.0)
    return result


def test_is_running() -> None:
    """torch: WorkerStateTest.test_is_running."""
    for state in WorkerState:
        expected = state in (WorkerState.HEALTHY, WorkerState.UNHEALTHY)
        assert WorkerState.is_running(state) is expected


def test_worker_group_constructor() -> None:
    """torch: WorkerGroupTest.test_worker_group_constructor. Deliberate difference: torch's
    spec has ``rdzv_handler=None``; pliant's ``WorkerSpec`` refuses a spec without one
    (tests/test_api.py::test_spec_rejects_what_cannot_run), so a real handler is given."""
    spec = WorkerSpec(role="test_trainer", local_world_size=4, rdzv_handler=_embedded_handler(),
                      entrypoint=sys.executable, args=(), max_restarts=50,
                      monitor_interval=0.1)
    worker_group = WorkerGroup(spec)
    assert worker_group.state == WorkerState.INIT
    workers = worker_group.workers
    assert len(workers) == 4
    # validate full, consecutive local ranks
    assert {w.local_rank for w in workers} == set(range(4))
    # global_rank, world_size are assigned after rdzv; id after starting the worker
    for w in workers:
        assert (w.global_rank, w.world_size, w.id) == (-1, -1, None)
    # rank and store are assigned after rdzv
    assert worker_group.group_rank is None
    assert worker_group.store is None


def test_agent_constructor() -> None:
    """torch: SimpleElasticAgentTest.test_agent_constructor (torch also reads the private
    ``_remaining_restarts``)."""
    agent = LocalElasticAgent(_spec(rdzv_handler=_static_handler()))
    assert agent.get_worker_group().state == WorkerState.INIT


def _run_metrics(collect: _Collect) -> dict[str, float]:
    return {k: v for k, v in collect.metrics.items() if k.startswith(f"workers.{ROLE}.")}


def test_record_flakiness_metric(collect: _Collect) -> None:
    """torch: SimpleElasticAgentTest.test_record_flakiness_metric: a run that needed no
    restart has flakiness 0 (torch's 63 comes from setting private counters)."""
    _run(_spec(max_restarts=1), collect)
    assert _run_metrics(collect).get(f"workers.{ROLE}.flakiness") == 0, collect.metrics


def test_record_flakiness_metric_zero_restarts(collect: _Collect) -> None:
    """torch: SimpleElasticAgentTest.test_record_flakiness_metric_zero_restarts."""
    _run(_spec(max_restarts=0), collect)
    assert _run_metrics(collect).get(f"workers.{ROLE}.flakiness") == 0, collect.metrics


def test_record_flakiness_metric_user_exception(collect: _Collect, tmp_path: Path) -> None:
    """torch: SimpleElasticAgentTest.test_record_flakiness_metric_user_exception: a failed
    run has flakiness 100."""
    _run(_spec((*FAIL_ALWAYS, str(tmp_path)), max_restarts=1), collect)
    assert _run_metrics(collect).get(f"workers.{ROLE}.flakiness") == 100, collect.metrics


def _outcome_metrics(success_with_retries: int = 0, success_no_retries: int = 0,
                     failed_with_retries: int = 0, failed_no_retries: int = 0,
                     ) -> dict[str, float]:
    return {f"workers.{ROLE}.run_success_with_retries": success_with_retries,
            f"workers.{ROLE}.run_success_no_retries": success_no_retries,
            f"workers.{ROLE}.run_failed_with_retries": failed_with_retries,
            f"workers.{ROLE}.run_failed_no_retries": failed_no_retries}


def _assert_outcome(collect: _Collect, **expected: int) -> None:
    seen = _run_metrics(collect)
    for name, value in _outcome_metrics(**expected).items():
        assert seen.get(name) == value, (name, collect.metrics)


def test_record_metrics_success_no_retries(collect: _Collect) -> None:
    """torch: SimpleElasticAgentTest.test_record_metrics_success_no_retries."""
    _run(_spec(max_restarts=1), collect)
    _assert_outcome(collect, success_no_retries=1)


def test_record_metrics_success_with_retries(collect: _Collect) -> None:
    """torch: SimpleElasticAgentTest.test_record_metrics_success_with_retries (a worker that
    fails once, where torch sets the private restart counter)."""
    result = _run(_spec(FAIL_ONCE, max_restarts=10), collect)
    assert result.state == WorkerState.SUCCEEDED
    _assert_outcome(collect, success_with_retries=1)


def test_record_metrics_failed_with_retries(collect: _Collect, tmp_path: Path) -> None:
    """torch: SimpleElasticAgentTest.test_record_metrics_failed_with_retries."""
    result = _run(_spec((*FAIL_ALWAYS, str(tmp_path)), max_restarts=2), collect)
    assert result.is_failed()
    _assert_outcome(collect, failed_with_retries=1)


def test_record_metrics_failed_no_retries(collect: _Collect, tmp_path: Path) -> None:
    """torch: SimpleElasticAgentTest.test_record_metrics_failed_no_retries."""
    result = _run(_spec((*FAIL_ALWAYS, str(tmp_path)), max_restarts=0), collect)
    assert result.is_failed()
    _assert_outcome(collect, failed_no_retries=1)


def _assert_rendezvoused(agent: LocalElasticAgent, spec: WorkerSpec, master_addr: str) -> None:
    group = agent.get_worker_group()
    # single agent rdzv
    assert group.group_world_size == 1
    assert group.group_rank == 0
    assert group.master_addr == master_addr
    assert group.master_port is not None and group.master_port > 0
    rank_set = {w.global_rank for w in group.workers}
    for w in group.workers:
        assert w.world_size == spec.local_world_size * group.group_world_size
        assert w.global_rank == spec.local_world_size * group.group_rank + w.local_rank
        assert rank_set == set(range(w.world_size))


def test_rendezvous() -> None:
    """torch: SimpleElasticAgentTest.test_rendezvous (torch calls the private ``_rendezvous``;
    here the group is looked at after a run)."""
    hostname = socket.getfqdn()
    spec = _spec(rdzv_handler=_static_handler(hostname), local_addr=hostname)
    agent = LocalElasticAgent(spec)
    assert not agent.run().is_failed()
    _assert_rendezvoused(agent, spec, hostname)


def test_rendezvous_default_master_addr() -> None:
    """torch: SimpleElasticAgentTest.test_rendezvous_default_master_addr."""
    hostname = socket.getfqdn()
    spec = _spec(rdzv_handler=_static_handler(hostname), local_addr=hostname)
    agent = LocalElasticAgent(spec)
    assert not agent.run().is_failed()
    group = agent.get_worker_group()
    assert group.master_addr == socket.getfqdn()
    assert group.master_port is not None and group.master_port > 0


def test_rendezvous_master_addr_with_local_addr() -> None:
    """torch: SimpleElasticAgentTest.test_rendezvous_master_addr_with_local_addr."""
    spec_local_addr = "127.0.0.1"
    spec = _spec(rdzv_handler=_static_handler(spec_local_addr), local_addr=spec_local_addr)
    agent = LocalElasticAgent(spec)
    assert not agent.run().is_failed()
    group = agent.get_worker_group()
    assert group.master_addr != socket.getfqdn()
    assert group.master_addr == spec_local_addr
    assert group.master_port is not None and group.master_port > 0


def test_run_happy_path(collect: _Collect) -> None:
    """torch: SimpleElasticAgentTest.test_run_happy_path: no failure, no membership change,
    no restart; the run's outcome is recorded once."""
    result = _run(_spec(max_restarts=10), collect)
    assert result.state == WorkerState.SUCCEEDED
    assert result.restart_count == 0
    outcomes = [e.name for e in collect.events if e.name.startswith("pliant.agent.run_")]
    assert outcomes == ["pliant.agent.run_succeeded"]


class _FailingRendezvous(RendezvousHandler):
    """A rendezvous that raises ``error`` instead of forming a round."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_backend(self) -> str:
        return "failing"

    def next_rendezvous(self) -> RendezvousInfo:
        raise self.error

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        pass

    def num_nodes_waiting(self) -> int:
        return 0

    def get_run_id(self) -> str:
        return "failing"


def test_run_initialization_failure() -> None:
    """torch: SimpleElasticAgentTest.test_run_initialization_failure (torch mocks
    ``_initialize_workers``; here the rendezvous that starts it raises): the error comes
    out of ``run()`` and the group stays INIT."""
    agent = LocalElasticAgent(_spec(rdzv_handler=_FailingRendezvous(RuntimeError("init"))))
    with pytest.raises(RuntimeError):
        agent.run()
    assert agent.get_worker_group().state == WorkerState.INIT


def test_run_max_retries_exceeded(tmp_path: Path) -> None:
    """torch: SimpleElasticAgentTest.test_run_max_retries_exceeded: the budget is used up,
    the group is FAILED, and the workers ran max_restarts + 1 times."""
    spec = _spec((*FAIL_ALWAYS, str(tmp_path)), max_restarts=3, local_world_size=1)
    agent = LocalElasticAgent(spec)
    result = agent.run()
    assert agent.get_worker_group().state == WorkerState.FAILED
    assert result.is_failed() and result.restart_count == 3
    assert sorted(os.listdir(tmp_path)) == [f"{i}_0" for i in range(spec.max_restarts + 1)]


def test_assign_worker_ranks(tmp_path: Path) -> None:
    """torch: SimpleElasticAgentTest.test_assign_worker_ranks: five agents of two roles with
    different local world sizes, group ranks 0..4 (here ``pliant run`` agents on the
    ``static`` rendezvous with ``--node-rank``; torchrun 2.13 gives the same table).
    Each tuple: (local_rank, role_rank, global_rank, world_size, role_world_size)."""
    role_infos = [("parameter_server", 4), ("trainer", 1), ("trainer", 2), ("trainer", 3),
                  ("parameter_server", 5)]
    out = tmp_path / "ranks"
    out.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    agents = [subprocess.Popen(
        [PLIANT, "run", "--nnodes", str(len(role_infos)), "--rdzv-backend", "static",
         "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
         "--role", role, "--nproc-per-node", str(size), "--no-python",
         str(BIN / "role_ranks.sh"), str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank, (role, size) in enumerate(role_infos)]
    try:
        for agent in agents:
            stdout, stderr = agent.communicate(timeout=90)
            assert agent.returncode == 0, f"{stdout}\n{stderr}"
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.communicate()
    by_agent: list[list[tuple[int, ...]]] = [[] for _ in role_infos]
    for path in sorted(out.iterdir(), key=lambda p: int(p.name)):
        local, role_rank, rank, world, role_world, _role, group = path.read_text().split()
        by_agent[int(group)].append(
            (int(local), int(role_rank), int(rank), int(world), int(role_world)))
    assert by_agent == [
        [(0, 0, 0, 15, 9), (1, 1, 1, 15, 9), (2, 2, 2, 15, 9), (3, 3, 3, 15, 9)],
        [(0, 0, 4, 15, 6)],
        [(0, 1, 5, 15, 6), (1, 2, 6, 15, 6)],
        [(0, 3, 7, 15, 6), (1, 4, 8, 15, 6), (2, 5, 9, 15, 6)],
        [(0, 4, 10, 15, 9), (1, 5, 11, 15, 9), (2, 6, 12, 15, 9), (3, 7, 13, 15, 9),
         (4, 8, 14, 15, 9)],
    ]


def test_get_event() -> None:
    """torch: SimpleElasticAgentTest.test_get_event."""
    spec = _spec(rdzv_handler=_static_handler())
    agent: Any = LocalElasticAgent(spec)
    event = agent.get_event_succeeded()
    assert event.source == "AGENT"
    assert event.metadata["rdzv_backend"] == "static"
    assert event.metadata["state"] == "SUCCEEDED"
    assert event.metadata["role"] == spec.role


def test_agent_process_signal_exception() -> None:
    """torch: SimpleElasticAgentTest.test_agent_process_signal_exception (torch raises the
    SignalException from a mocked ``_invoke_run``; here the agent gets a real SIGTERM while
    its worker runs): ``run()`` raises SignalException carrying SIGTERM."""
    spec = _spec(("-c", "import time; time.sleep(60)"), max_restarts=0, local_world_size=1)
    agent = LocalElasticAgent(spec)
    sender = threading.Thread(target=_sigterm_once_started, args=(agent,), daemon=True)
    sender.start()
    with pytest.raises(SignalException) as raised:
        agent.run()
    assert raised.value.sigval == signal.SIGTERM
    sender.join(timeout=30)


def _sigterm_once_started(agent: LocalElasticAgent) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(w.id is not None for w in agent.get_worker_group().workers):
            break
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGTERM)


def test_agent_process_handler_graceful_exception() -> None:
    """torch: SimpleElasticAgentTest.test_agent_process_handler_graceful_exception: a
    RendezvousGracefulExitError ends ``run()`` without an error."""
    agent = LocalElasticAgent(_spec(rdzv_handler=_FailingRendezvous(
        RendezvousGracefulExitError("leaving"))))
    result = agent.run()
    assert not result.is_failed()

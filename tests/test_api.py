"""The Python API of the seeds: WorkerSpec, LocalElasticAgent(spec).run(), custom handlers."""

from __future__ import annotations

import sys

import pliant
import pytest
from pliant import events, metrics
from pliant.agent import LocalElasticAgent, WorkerSpec, WorkerState
from pliant.rendezvous import RendezvousHandler, RendezvousInfo
from pliant_e2e import WORKERS


class OneNodeHandler(RendezvousHandler):
    """A user-written rendezvous handler: the seed's ``WorkerSpec(rdzv_handler=...)`` path."""

    polls_membership = False

    def __init__(self, port: int) -> None:
        self.rounds = 0
        self.port = port

    def get_backend(self) -> str:
        return "mine"

    def next_rendezvous(self) -> RendezvousInfo:
        self.rounds += 1
        return RendezvousInfo(
            rank=0, world_size=1, master_addr="127.0.0.1", master_port=self.port + self.rounds
        )

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        pass

    def num_nodes_waiting(self) -> int:
        return 0

    def get_run_id(self) -> str:
        return "api-test"


class Recorder(metrics.MetricHandler, events.EventHandler):
    def __init__(self) -> None:
        self.metrics: list[metrics.MetricData] = []
        self.events: list[events.Event] = []

    def emit(self, metric_data: metrics.MetricData) -> None:
        self.metrics.append(metric_data)

    def record(self, event: events.Event) -> None:
        self.events.append(event)


@pytest.fixture(autouse=True)
def _importable_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Function entrypoints are imported by reference in the fresh worker interpreter.
    monkeypatch.syspath_prepend(str(WORKERS))


def test_function_entrypoint_returns_values_by_rank() -> None:
    import functions  # type: ignore[import-not-found]

    spec = WorkerSpec(
        role="trainer",
        local_world_size=3,
        rdzv_handler=OneNodeHandler(31000),
        entrypoint=functions.square_rank,
        args=(10,),
        max_restarts=0,
    )
    result = LocalElasticAgent(spec, start_method="spawn").run()
    assert not result.is_failed()
    assert result.state == WorkerState.SUCCEEDED
    assert result.return_values == {0: 10, 1: 11, 2: 14}


def test_function_failure_is_reported_by_global_rank_with_traceback() -> None:
    import functions

    handler = OneNodeHandler(32000)
    spec = WorkerSpec(
        local_world_size=2,
        rdzv_handler=handler,
        entrypoint=functions.fail_on_rank_one,
        max_restarts=1,
    )
    result = LocalElasticAgent(spec).run()
    assert result.is_failed()
    assert list(result.failures) == [1]
    failure = result.failures[1]
    assert failure.exitcode == 1 and failure.signal is None
    assert failure.message == "RuntimeError: function worker failed"
    assert failure.traceback is not None and "fail_on_rank_one" in failure.traceback
    assert failure.hostname and failure.timestamp > 0
    assert handler.rounds == 2  # one restart, one new round


def test_seed_style_configure_receives_agent_metrics_and_events() -> None:
    recorder = Recorder()
    metrics.configure(recorder)
    events.configure(recorder)
    try:
        spec = WorkerSpec(
            local_world_size=2,
            rdzv_handler=OneNodeHandler(33000),
            entrypoint=sys.executable,
            args=("-c", "import os, sys; sys.exit(int(os.environ['RANK']) * 5)"),
            max_restarts=1,
        )
        result = LocalElasticAgent(spec).run()
    finally:
        metrics.configure([])
        events.configure([])
    assert result.is_failed() and result.failures[1].exitcode == 5
    names = [e.name for e in recorder.events]
    assert names.count("pliant.agent.worker_failed") == 2
    assert "pliant.agent.restart" in names and names[-1] == "pliant.agent.run_failed"
    failed = next(e for e in recorder.events if e.name == "pliant.agent.worker_failed")
    assert failed.source == events.EventSource.AGENT
    assert failed.metadata["run_id"] == "api-test" and failed.metadata["rank"] == 1
    assert any(m.name == "restarts" and m.value == 1 for m in recorder.metrics)


def test_spec_rejects_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="rdzv_handler"):
        WorkerSpec(local_world_size=1, entrypoint="x")
    with pytest.raises(ValueError, match="local_world_size"):
        WorkerSpec(local_world_size=0, rdzv_handler=OneNodeHandler(1), entrypoint="x")
    spec = WorkerSpec(local_world_size=1, rdzv_handler=OneNodeHandler(1), entrypoint=print)
    with pytest.raises(ValueError, match="fork"):
        LocalElasticAgent(spec, start_method="fork")
    # A program ignores the start method, as under torchrun.
    program = WorkerSpec(local_world_size=1, rdzv_handler=OneNodeHandler(1), entrypoint="x")
    LocalElasticAgent(program, start_method="fork")


def test_public_names_are_reexported() -> None:
    for name in pliant.__all__:
        assert getattr(pliant, name) is not None
    assert pliant.PROJECT == "pliant"


def test_handlers_given_to_the_agent_receive_the_workers_records() -> None:
    mine, process = Recorder(), Recorder()
    metrics.configure(process)  # the agent's own records still go to the process's
    try:
        spec = WorkerSpec(
            local_world_size=2,
            rdzv_handler=OneNodeHandler(34000),
            entrypoint=sys.executable,
            args=("-c", "from pliant import metrics; metrics.put_metric('w', 1, 'train')"),
            max_restarts=0,
        )
        result = LocalElasticAgent(spec, metric_handlers=[mine], event_handlers=[]).run()
    finally:
        metrics.configure([])
    assert not result.is_failed()
    assert sorted(m.tags["rank"] for m in mine.metrics if m.name == "w") == ["0", "1"]
    assert not any(m.name == "w" for m in process.metrics)
    assert any(m.name == "workers" for m in process.metrics)

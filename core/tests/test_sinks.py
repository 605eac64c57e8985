"""The seed APIs for metrics, events and timers, used directly as a launcher author would."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from pliant import events, metrics, timer


class Collect(metrics.MetricHandler, events.EventHandler):
    def __init__(self) -> None:
        self.metrics: list[metrics.MetricData] = []
        self.events: list[events.Event] = []

    def emit(self, metric_data: metrics.MetricData) -> None:
        self.metrics.append(metric_data)

    def record(self, event: events.Event) -> None:
        self.events.append(event)


class Broken(metrics.MetricHandler, events.EventHandler):
    def emit(self, metric_data: metrics.MetricData) -> None:
        raise ConnectionError("sink down")

    def record(self, event: events.Event) -> None:
        raise ConnectionError("sink down")


@pytest.fixture
def sink() -> Iterator[Collect]:
    collect = Collect()
    metrics.configure([Broken(), collect])
    events.configure([Broken(), collect])
    yield collect
    metrics.configure([])
    events.configure([])


def test_put_metric_reaches_every_handler_past_a_broken_one(sink: Collect) -> None:
    metrics.put_metric("loss", 0.5, metric_group="train")
    assert metrics.flush()
    (data,) = sink.metrics
    assert (data.group_name, data.name, data.value) == ("train", "loss", 0.5)
    assert data.timestamp > 0


def test_put_metric_returns_before_a_slow_handler_is_done() -> None:
    gate = threading.Event()

    class Slow(Collect):
        def emit(self, metric_data: metrics.MetricData) -> None:
            gate.wait(10)
            super().emit(metric_data)

    slow = Slow()
    metrics.configure(slow)
    try:
        for i in range(100):
            metrics.put_metric("step", i, metric_group="train")
        assert slow.metrics == []  # queued: the caller did not wait for the sink
        gate.set()
        assert metrics.flush()
    finally:
        metrics.configure([])
    assert [m.value for m in slow.metrics] == list(range(100))


def test_values_are_tagged_with_where_they_come_from(sink: Collect,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pliant._delivery import context as _dispatch

    monkeypatch.setattr(_dispatch, "_context", None)
    for name, value in {"TORCHELASTIC_RUN_ID": "job7", "PLIANT_NODE": "n3", "ROLE_NAME": "trainer",
                        "RANK": "5", "TORCHELASTIC_RESTART_COUNT": "2"}.items():
        monkeypatch.setenv(name, value)
    metrics.put_metric("loss", 1.0, metric_group="train")
    events.record(events.Event("saved", events.EventSource.WORKER, metadata={"rank": 9}))
    assert metrics.flush()
    tags = {"run_id": "job7", "node": "n3", "role": "trainer", "rank": "5", "restart_count": "2"}
    assert dict(sink.metrics[0].tags) == tags
    assert sink.events[0].metadata == {**tags, "rank": 9}  # what the caller set wins
    monkeypatch.setattr(_dispatch, "_context", None)


def test_prof_times_functions_and_blocks(sink: Collect) -> None:
    @metrics.prof(group="train")
    def step() -> int:
        return 3

    assert step() == 3
    with pytest.raises(ZeroDivisionError), metrics.prof(name="bad", group="train"):
        1 / 0  # noqa: B018
    assert metrics.flush()
    names = [m.name for m in sink.metrics]
    assert names == [f"{step.__qualname__}.success", f"{step.__qualname__}.duration.ms",
                     "bad.failure", "bad.duration.ms"]


def test_handlers_per_group() -> None:
    default, special = Collect(), Collect()
    metrics.configure(default)
    metrics.configure(special, group="special")
    try:
        metrics.put_metric("a", 1, "special")
        metrics.put_metric("b", 2, "other")
    finally:
        metrics.configure([])
    assert metrics.flush()
    assert [m.name for m in special.metrics] == ["a"]
    assert [m.name for m in default.metrics] == ["b"]


def test_events_record_and_round_trip(sink: Collect) -> None:
    event = events.Event("checkpoint", events.EventSource.WORKER, metadata={"step": 10})
    events.record(event)
    events.construct_and_record_rdzv_event(run_id="r1", message="joined", node_state="INIT",
                                           rank=0)
    assert events.flush()
    first, rdzv = sink.events
    assert events.Event.deserialize(first.serialize()) == first
    assert rdzv.source == events.EventSource.AGENT
    assert (rdzv.metadata["run_id"], rdzv.metadata["message"]) == ("r1", "joined")


class Deadlines(timer.TimerClient):
    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self.log.append(("acquire", scope_id))

    def release(self, scope_id: str) -> None:
        self.log.append(("release", scope_id))


def test_expires_arms_and_disarms_and_is_a_no_op_unconfigured() -> None:
    with timer.expires(after=5):  # nothing configured: runs as is
        pass
    client = Deadlines()
    timer.configure(client)
    try:
        with pytest.raises(RuntimeError), timer.expires(after=5, scope="step"):
            raise RuntimeError
    finally:
        timer.configure(None)
    assert client.log == [("acquire", "step"), ("release", "step")]


def test_a_full_queue_drops_and_counts_but_flush_still_works() -> None:
    from pliant._delivery.dispatcher import Dispatcher

    gate = threading.Event()
    got: list[int] = []
    dispatcher = Dispatcher(capacity=10)
    dispatcher.put(lambda _: gate.wait(10), None)  # holds the thread while the queue fills
    for i in range(20):
        dispatcher.put(got.append, i)
    assert dispatcher.dropped >= 10
    gate.set()
    assert dispatcher.flush(timeout=10)  # its marker is not subject to the capacity
    assert got == list(range(len(got))) and 9 <= len(got) <= 10

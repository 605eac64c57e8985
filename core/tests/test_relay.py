"""Workers' metrics and events reach the agent's handlers through the relay socket."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pliant import events, metrics
from pliant._delivery.relay import Relay
from pliant._delivery.relay_client import MAX_DATAGRAM, RELAY_ENV, RelayClient
from test_sinks import Collect

# What a worker does: put values and record an event, the last ones right before exit.
WORKER = """\
import os
from pliant import events, metrics
for i in range(int(os.environ["VALUES"])):
    metrics.put_metric("step", i, "train")
events.record(events.Event("done", events.EventSource.WORKER, metadata={"k": 1, "ok": True}))
metrics.put_metric("last", 1.5, "train")
"""


@pytest.fixture
def relay() -> Iterator[tuple[Relay, Collect]]:
    """A relay as the agent runs it, its handlers collecting what arrives."""
    sink = Collect()
    metrics.configure(sink)
    events.configure(sink)
    relay = Relay()
    relay.start()
    try:
        yield relay, sink
    finally:
        relay.stop()
        metrics.configure([])
        events.configure([])


def worker(relay: Relay, values: int, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLIANT_")}
    environ.update(relay.worker_env(), VALUES=str(values), RANK="3",
                   TORCHELASTIC_RUN_ID="r1", PLIANT_NODE="n1", **env)
    return subprocess.run([sys.executable, "-c", WORKER], env=environ, capture_output=True,
                          text=True, timeout=60)


def test_a_workers_records_reach_the_agents_handlers_with_its_tags(
        relay: tuple[Relay, Collect]) -> None:
    server, sink = relay
    result = worker(server, 2000)
    assert result.returncode == 0, result.stderr
    server.stop()  # the worker is gone: what it sent is in the socket
    assert metrics.flush()

    steps = [m for m in sink.metrics if m.name == "step"]
    assert [m.value for m in steps] == list(range(2000))
    (last,) = [m for m in sink.metrics if m.name == "last"]
    assert (last.group_name, last.value) == ("train", 1.5)
    assert dict(last.tags) == {"run_id": "r1", "node": "n1", "rank": "3"}
    (done,) = sink.events
    assert (done.name, done.source) == ("done", events.EventSource.WORKER)
    assert done.metadata == {"run_id": "r1", "node": "n1", "rank": "3", "k": 1, "ok": True}
    assert not os.path.exists(server.path)


def test_the_agents_own_settings_never_reach_a_worker(relay: tuple[Relay, Collect]) -> None:
    # A worker with the relay does not build handlers from PLIANT_METRICS, even a broken
    # choice inherited from the agent's environment: the agent has its own handlers.
    server, sink = relay
    result = worker(server, 3, PLIANT_METRICS="nope", PLIANT_EVENTS="nope")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    server.stop()
    assert metrics.flush()
    assert [m.name for m in sink.metrics] == ["step", "step", "step", "last"]


def test_with_the_agent_gone_values_are_counted_as_dropped(tmp_path: object) -> None:
    client = RelayClient(os.path.join(str(tmp_path), "nobody.sock"))
    client.emit(metrics.MetricData(1.0, "g", "a", 1.0))
    client.record(events.Event("e", events.EventSource.WORKER))
    client.send()
    assert (client.sent, client.dropped) == (0, 2)


def test_a_record_too_large_for_a_datagram_is_dropped_alone(
        relay: tuple[Relay, Collect]) -> None:
    server, sink = relay
    client = RelayClient(server.path)
    client.record(events.Event("huge", events.EventSource.WORKER,
                               metadata={"blob": "x" * (MAX_DATAGRAM + 1)}))
    client.emit(metrics.MetricData(1.0, "g", "fits", 2.0))
    client.send()
    server.stop()
    assert metrics.flush()
    assert (client.sent, client.dropped) == (1, 1)
    assert [m.name for m in sink.metrics] == ["fits"]


def test_a_forked_child_does_not_send_its_parents_batch(relay: tuple[Relay, Collect]) -> None:
    server, sink = relay
    client = RelayClient(server.path)
    client.emit(metrics.MetricData(1.0, "g", "parent", 1.0))  # batched, not sent yet
    pid = os.fork()
    if pid == 0:  # the child: its own value only
        client.emit(metrics.MetricData(1.0, "g", "child", 1.0))
        client.send()
        os._exit(0)
    os.waitpid(pid, 0)
    client.send()
    server.stop()
    assert metrics.flush()
    assert sorted(m.name for m in sink.metrics) == ["child", "parent"]


def test_the_relay_env_names_the_socket() -> None:
    server = Relay()
    try:
        assert server.worker_env() == {RELAY_ENV: server.path}
        assert os.stat(os.path.dirname(server.path)).st_mode & 0o077 == 0  # ours alone
    finally:
        server.stop()
    assert not os.path.exists(os.path.dirname(server.path))

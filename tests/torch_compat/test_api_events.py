"""torch.distributed.elastic.events against pliant.events: Event, NodeState, RdzvEvent and
the record calls."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch.distributed.elastic.events as torch_events
from pliant import events


class Collect(events.EventHandler):
    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def record(self, event: events.Event) -> None:
        self.events.append(event)


@pytest.fixture
def sink() -> Iterator[Collect]:
    collect = Collect()
    events.configure(collect)
    yield collect
    events.configure([])


@pytest.fixture
def torch_rdzv_log() -> Iterator[list[str]]:
    """What torch's ``dynamic_rendezvous`` destination receives (a NullHandler by default)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = torch_events._get_or_create_logger("dynamic_rendezvous")
    original = torch_events.handlers._log_handlers["dynamic_rendezvous"]
    torch_events.handlers._log_handlers["dynamic_rendezvous"] = handler
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
    torch_events.handlers._log_handlers["dynamic_rendezvous"] = original


def test_event_serializes_and_deserializes_as_torchs() -> None:
    theirs = torch_events.Event("ckpt", torch_events.EventSource.WORKER, 17, {"step": 3})
    ours = events.Event("ckpt", events.EventSource.WORKER, 17, {"step": 3})
    assert ours.serialize() == theirs.serialize() == str(ours) == str(theirs)
    assert events.Event.deserialize(theirs.serialize()) == ours
    assert torch_events.Event.deserialize(ours.serialize()) == theirs
    # Given an Event, deserialize returns it, as torch's does.
    assert events.Event.deserialize(ours) is ours
    assert torch_events.Event.deserialize(theirs) is theirs


def test_node_state_and_rdzv_event_match_torchs() -> None:
    assert [s.value for s in events.NodeState] == [s.value for s in torch_events.NodeState]
    fields: dict[str, Any] = {"name": "join", "run_id": "r", "message": "m", "hostname": "h",
                              "pid": 5, "master_endpoint": "a:1", "rank": 2, "local_id": 0}
    ours = events.RdzvEvent(node_state=events.NodeState.RUNNING, **fields)
    theirs = torch_events.RdzvEvent(node_state=torch_events.NodeState.RUNNING, **fields)
    assert ours.serialize() == theirs.serialize() == str(ours)
    assert events.RdzvEvent.deserialize(theirs.serialize()) == ours
    assert events.RdzvEvent.deserialize(ours) is ours
    assert torch_events.RdzvEvent.deserialize(ours.serialize()) == theirs


def test_record_takes_torchs_destination(sink: Collect, capfd: pytest.CaptureFixture[str],
                                         ) -> None:
    event = events.Event("e", events.EventSource.AGENT, 1, {"k": "v"})
    events.record(event, destination="null")
    events.record(events.Event("printed", events.EventSource.AGENT, 2), destination="console")
    assert events.flush()
    assert [e.name for e in sink.events] == ["e", "printed"]
    printed = capfd.readouterr().err.strip().splitlines()[-1]
    theirs = torch_events.Event("printed", torch_events.EventSource.AGENT, 2)
    assert json.loads(printed) == json.loads(theirs.serialize())
    with pytest.raises(ValueError, match=r"destination=.nowhere.*null, console"):
        events.record(event, destination="nowhere")


def construct(lib: Any, state: Any, **kwargs: Any) -> None:
    lib.construct_and_record_rdzv_event(run_id="r1", message="joined", node_state=state,
                                        hostname="host-a", pid=42, master_endpoint="m:29500",
                                        local_id=3, rank=1, **kwargs)


def test_construct_and_record_rdzv_event_builds_torchs_event(
        sink: Collect, torch_rdzv_log: list[str]) -> None:
    construct(torch_events, torch_events.NodeState.RUNNING)
    construct(events, events.NodeState.RUNNING)
    try:
        raise RuntimeError("store down")
    except RuntimeError:
        construct(torch_events, torch_events.NodeState.FAILED, name="step")
        construct(events, events.NodeState.FAILED, name="step")
    assert events.flush()
    theirs = [json.loads(line) for line in torch_rdzv_log]
    ours = [{"name": e.name, **{k: e.metadata[k] for k in theirs[0] if k != "name"}}
            for e in sink.events]
    assert ours == theirs
    assert ours[0]["name"] == "test_api_events.py:construct"
    assert ours[1]["name"] == "test_api_events.py:step"
    assert "RuntimeError: store down" in ours[1]["error_trace"]
    assert all(e.source == events.EventSource.AGENT for e in sink.events)


def test_record_rdzv_event_reaches_the_handlers(sink: Collect) -> None:
    event = events.RdzvEvent("n", "r", "m", "h", 1, events.NodeState.SUCCEEDED)
    events.record_rdzv_event(event)
    assert events.flush()
    (got,) = sink.events
    assert got.name == "n" and got.metadata["node_state"] == "SUCCEEDED"
    assert got.metadata["run_id"] == "r" and got.metadata["error_trace"] == ""

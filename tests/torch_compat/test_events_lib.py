"""torch's ``test/distributed/elastic/events/lib_test.py`` ported to :mod:`pliant.events`.

torch patches its logging destinations (``get_logging_handler``, ``record_rdzv_event``);
pliant's events go to the handlers set with :func:`pliant.events.configure`, so a
collecting handler stands where torch's patched destination did. Names that pliant may
lack are imported inside each case, so that one missing name fails only its cases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest
from pliant import events
from pliant.events import Event, EventHandler, EventSource


class _Collect(EventHandler):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def record(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def configured() -> Iterator[None]:
    """Puts the process's event handlers back after a case that configures its own."""
    before = events.get_handlers()
    yield
    events.configure(list(before))


def _assert_event(actual: Event, expected: Event) -> None:
    assert actual.name == expected.name
    assert actual.source == expected.source
    assert actual.timestamp == expected.timestamp
    assert actual.metadata == expected.metadata


def test_event_created() -> None:
    """torch: EventLibTest.test_event_created."""
    event = Event(name="test_event", source=EventSource.AGENT,
                  metadata={"key1": "value1", "key2": 2})
    assert event.name == "test_event"
    assert event.source == EventSource.AGENT
    assert event.metadata == {"key1": "value1", "key2": 2}


def test_event_deser() -> None:
    """torch: EventLibTest.test_event_deser; also ``Event.deserialize`` given an ``Event``,
    which torch's accepts (``Union[str, Event]``) and returns as is."""
    event = Event(name="test_event", source=EventSource.AGENT,
                  metadata={"key1": "value1", "key2": 2, "key3": 1.0})
    _assert_event(event, Event.deserialize(event.serialize()))
    _assert_event(event, Event.deserialize(event))  # type: ignore[arg-type]


def _rdzv_event() -> Any:
    from pliant.events import NodeState, RdzvEvent

    return RdzvEvent(name="test_name", run_id="test_run_id", message="test_message",
                     hostname="test_hostname", pid=1, node_state=NodeState.RUNNING,
                     master_endpoint="test_master_endpoint", rank=3, local_id=4,
                     error_trace="test_error_trace")


def _assert_rdzv_event(actual: Any, expected: Any) -> None:
    for name in ("name", "run_id", "message", "hostname", "pid", "node_state",
                 "master_endpoint", "rank", "local_id", "error_trace"):
        assert getattr(actual, name) == getattr(expected, name), name


def test_construct_and_record_rdzv_event(configured: None) -> None:
    """torch: RdzvEventLibTest.test_construct_and_record_rdzv_event: with a destination
    for rendezvous events, the event is recorded once."""
    from pliant.events import NodeState

    collect = _Collect()
    events.configure(collect)
    events.construct_and_record_rdzv_event(run_id="test_run_id", message="test_message",
                                           node_state=NodeState.RUNNING)
    assert events.flush(10.0)
    assert len(collect.events) == 1
    event = collect.events[0]
    # Where the fields are: the event's metadata (an Event), or the event itself (RdzvEvent).
    fields = {**getattr(event, "metadata", {}),
              **{k: getattr(event, k) for k in ("run_id", "message") if hasattr(event, k)}}
    assert (fields["run_id"], fields["message"]) == ("test_run_id", "test_message")


def test_construct_and_record_rdzv_event_does_not_run_if_invalid_dest(
        configured: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch: RdzvEventLibTest.test_construct_and_record_rdzv_event_does_not_run_if_invalid_dest:
    with no destination (pliant: no handler configured), nothing is recorded at all."""
    from pliant.events import NodeState
    from pliant.events import api as events_api

    recorded: list[Any] = []
    for name in ("record", "record_rdzv_event"):  # torch's two ways to record one
        monkeypatch.setattr(events_api, name, lambda *a, **k: recorded.append(a), raising=False)
    events.configure([])
    events.construct_and_record_rdzv_event(run_id="test_run_id", message="test_message",
                                           node_state=NodeState.RUNNING)
    assert recorded == []


def test_rdzv_event_created() -> None:
    """torch: RdzvEventLibTest.test_rdzv_event_created."""
    from pliant.events import NodeState

    event = _rdzv_event()
    assert event.name == "test_name"
    assert event.run_id == "test_run_id"
    assert event.message == "test_message"
    assert event.hostname == "test_hostname"
    assert event.pid == 1
    assert event.node_state == NodeState.RUNNING
    assert event.master_endpoint == "test_master_endpoint"
    assert event.rank == 3
    assert event.local_id == 4
    assert event.error_trace == "test_error_trace"


def test_rdzv_event_deserialize() -> None:
    """torch: RdzvEventLibTest.test_rdzv_event_deserialize."""
    from pliant.events import RdzvEvent

    event = _rdzv_event()
    _assert_rdzv_event(event, RdzvEvent.deserialize(event.serialize()))
    _assert_rdzv_event(event, RdzvEvent.deserialize(event))


def test_rdzv_event_str() -> None:
    """torch: RdzvEventLibTest.test_rdzv_event_str."""
    event = _rdzv_event()
    assert str(event) == json.dumps(asdict(event))

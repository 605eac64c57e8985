"""The ``local`` timer's two ends, in one process: the pipe client and the agent's server."""

from __future__ import annotations

import json
import os
import selectors
import time
from collections.abc import Iterator

import pytest
from pliant.timer import TIMER_FILE_ENV, expires
from pliant.timer.fifo import FifoTimerClient, LocalTimerServer


@pytest.fixture
def server() -> Iterator[LocalTimerServer]:
    srv = LocalTimerServer()
    env = srv.worker_env()  # the path is known before start(), as the plugin guide says
    srv.start()
    assert env == {TIMER_FILE_ENV: srv.path} and os.path.exists(srv.path)
    yield srv
    srv.stop()
    assert not os.path.exists(os.path.dirname(env[TIMER_FILE_ENV]))


def write(server: LocalTimerServer, request: dict[str, object] | bytes) -> None:
    fd = os.open(server.path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, request if isinstance(request, bytes) else json.dumps(request).encode()
                 + b"\n")
    finally:
        os.close(fd)


def test_a_deadline_expires_once_and_a_release_disarms(server: LocalTimerServer) -> None:
    client = FifoTimerClient(server.path)
    now = time.time()
    client.acquire("a", now + 10)
    client.acquire("b", now + 20)
    client.acquire("c", now + 5)
    client.release("c")
    assert server.poll(now) == []
    assert server.next_deadline() == now + 10
    expired = server.poll(now + 15)
    assert [(e.pid, e.scope_id, e.expiration_time, e.signal) for e in expired] == [
        (os.getpid(), "a", now + 10, 9)]
    assert server.poll(now + 15) == []  # reported once
    assert server.next_deadline() == now + 20


def test_a_new_request_for_a_scope_replaces_its_deadline(server: LocalTimerServer) -> None:
    client = FifoTimerClient(server.path)
    now = time.time()
    client.acquire("step", now + 1)
    client.acquire("step", now + 30)
    assert server.poll(now + 2) == []
    assert server.next_deadline() == now + 30


def test_the_pipe_wakes_a_selector_and_never_reads_as_closed(server: LocalTimerServer) -> None:
    fd = server.fileno()
    assert fd is not None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        write(server, {"version": 1, "pid": 1, "scope_id": "x", "expiration_time": 1.0,
                       "signal": 9})  # the writer closes at once, as torch's client does
        assert sel.select(5)
        assert [e.scope_id for e in server.poll(time.time())] == ["x"]
        assert sel.select(0.05) == []  # no end-of-file: the agent holds a writer too


def test_torchs_request_format_and_signal_are_taken(server: LocalTimerServer) -> None:
    from torch.distributed.elastic.timer import FileTimerClient  # torch: requirements-dev

    torch_client = FileTimerClient(server.path, signal=0)
    torch_client.acquire("t", 1.0)
    [expired] = server.poll(2.0)
    assert (expired.pid, expired.scope_id, expired.signal) == (os.getpid(), "t", 0)
    torch_client.acquire("t", 3.0)
    torch_client.release("t")
    assert server.poll(4.0) == []


def test_malformed_requests_are_ignored(server: LocalTimerServer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    write(server, b"not json\n[1, 2]\n{\"pid\": 1}\n")
    write(server, {"version": 1, "pid": 5, "scope_id": "ok", "expiration_time": 1.0,
                   "signal": 9})
    assert [e.pid for e in server.poll(2.0)] == [5]
    assert caplog.text.count("ignoring a malformed timer request") == 3


def test_forget_drops_a_dead_workers_deadlines(server: LocalTimerServer) -> None:
    for pid in (10, 11):
        write(server, {"version": 1, "pid": pid, "scope_id": "s", "expiration_time": 1.0,
                       "signal": 9})
    server.poll(0.0)
    server.forget({10})
    assert [e.pid for e in server.poll(2.0)] == [11]


def test_arming_and_releasing_every_step_keeps_the_heap_small(server: LocalTimerServer) -> None:
    client = FifoTimerClient(server.path)
    for _ in range(2000):
        with expires(after=300, scope="step", client=client):
            pass
        server.poll(time.time())
    assert server.next_deadline() is None
    assert len(server._heap) <= 64 + 2  # released entries do not pile up


def test_a_client_without_an_agent_warns_once_and_goes_on(
        tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(tmp_path, "fifo")
    os.mkfifo(path)  # a pipe nobody reads: opening it for writing fails at once
    client = FifoTimerClient(path)
    with expires(after=1, client=client):
        pass
    client.acquire("x", 1.0)
    assert capsys.readouterr().err.count("deadlines are not watched") == 1


def test_the_agent_runs_the_local_timer_unless_given_others() -> None:
    from pliant.agent.timers import AgentTimers

    selector = selectors.DefaultSelector()
    default, none = AgentTimers(None), AgentTimers([])
    default.start(selector)
    none.start(selector)
    try:
        assert list(default.worker_env) == [TIMER_FILE_ENV]  # for pliant.timer.expires
        assert none.worker_env == {}
    finally:
        default.stop()
        none.stop()
        selector.close()


def test_the_agent_wakes_at_the_earliest_deadline_and_drops_other_processes() -> None:
    from pliant.agent.timers import AgentTimers

    server = LocalTimerServer()
    timers = AgentTimers([server])
    selector = selectors.DefaultSelector()
    timers.start(selector)
    try:
        assert timers.timeout(5.0) == 5.0  # nothing armed
        client = FifoTimerClient(server.path)
        client.acquire("soon", time.time() + 0.2)
        readable = [key.data for key, _ in selector.select(1.0)]
        assert readable == [server]
        assert timers.expired(readable, (), ()) == []  # taken in; no worker to act on
        wait = timers.timeout(5.0)
        assert wait is not None and 0 < wait <= 0.2
        time.sleep(wait)
        assert timers.expired([], (), ()) == []  # this process is not a worker: dropped
        assert timers.timeout(None) is None
    finally:
        timers.stop()
        selector.close()
    assert not os.path.exists(server.path)

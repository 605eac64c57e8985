"""The conformance suite for rendezvous backends: subclass it in your plugin's tests.

A store plugin (``pliant-c10d``, ``pliant-etcd``, yours) implements
:class:`~pliant.rendezvous.store.RendezvousStore` and builds an
:class:`~pliant.rendezvous.elastic.ElasticRendezvousHandler` on it. Two classes
check both halves against a live server; pliant's own plugins pass them too::

    import pytest
    from pliant.rendezvous import RendezvousParameters
    from pliant.testing.rendezvous import RendezvousHandlerTests, RendezvousStoreTests

    class TestMyStore(RendezvousStoreTests):
        @pytest.fixture
        def store(self, my_server):
            store = MyStore(my_server.endpoint)
            yield store
            store.close()

    class TestMyHandler(RendezvousHandlerTests):
        backend_name = "mine"

        @pytest.fixture
        def make_handler(self, my_server):
            def make(run_id, min_nodes, max_nodes, **conf):
                return MyHandler(RendezvousParameters("mine", my_server.endpoint, run_id,
                                                      min_nodes, max_nodes, **conf))
            return make

Each test uses its own keys (:class:`RendezvousStoreTests`) or run ids
(:class:`RendezvousHandlerTests`), so one server can serve a whole session.
Every node of a test runs ``next_rendezvous`` in a thread of its own, as it
would in an agent of its own. No assertion depends on timing:
:data:`HANG_TIMEOUT` only turns a hang into a failure.

This module imports pytest: pliant never imports it, only your tests do.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import pytest

from pliant.rendezvous.api import (
    RendezvousClosedError,
    RendezvousGracefulExitError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousStateError,
    RendezvousTimeoutError,
    RoundEnd,
)
from pliant.rendezvous.elastic import ElasticRendezvousHandler
from pliant.rendezvous.keys import PROTOCOL_VERSION
from pliant.rendezvous.store import LEFT, Beat, RendezvousStore

__all__ = [
    "FAST_TIMEOUTS",
    "HANG_TIMEOUT",
    "Background",
    "Interrupted",
    "MakeHandler",
    "Nodes",
    "RendezvousHandlerTests",
    "RendezvousStoreTests",
    "eventually",
    "join_all",
    "joined",
    "new_run_id",
    "start_join",
    "wait_for_round_end",
]

T = TypeVar("T")

#: Seconds after which a call the suite waits for counts as hung. Only a broken
#: backend gets near it; it bounds a failure, it never decides a pass.
HANG_TIMEOUT = 60.0

#: ``--rdzv-conf`` the suite gives every handler unless a test says otherwise:
#: a last call of half a second; a node is dead after 1 s without a heartbeat.
FAST_TIMEOUTS: dict[str, Any] = {
    "join_timeout": 10.0,
    "last_call_timeout": 0.5,
    "keep_alive_interval": 0.2,
    "keep_alive_max_attempt": 5,
}


class MakeHandler(Protocol):
    """What a subclass's ``make_handler`` fixture returns: a handler for one node of
    ``run_id``; every handler it makes talks to the same server."""

    def __call__(self, run_id: str, min_nodes: int, max_nodes: int,
                 **conf: Any) -> RendezvousHandler: ...


class Interrupted(Exception):
    """What :meth:`Background.interrupt` raises in the thread: an agent's signal handler
    raises an exception like it in the middle of ``next_rendezvous``."""


class Background(Generic[T]):
    """``fn()`` in a thread of its own, as another agent would run it."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self.name = name
        self._outcome: list[T | BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._outcome.append(fn())
        except BaseException as exc:  # handed to the test, which decides
            self._outcome.append(exc)

    def interrupt(self) -> BaseException:
        """Raise :class:`Interrupted` in the thread, as a signal does in an agent's main
        thread, and wait for ``fn`` to give up; the exception it ended with. Blocking calls
        are not cut short: the exception comes when control returns to Python (a
        rendezvous wait returns at least twice a second for that reason)."""
        ident = self._thread.ident
        assert ident is not None
        if self._outcome or not ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(Interrupted)):
            pytest.fail(f"{self.name} returned before it could be interrupted: "
                        f"{self._outcome[0] if self._outcome else '?'!r}")
        outcome = self.outcome()
        if not isinstance(outcome, BaseException):
            pytest.fail(f"{self.name} returned {outcome!r} instead of being interrupted")
        return outcome

    def done(self) -> bool:
        """Whether ``fn`` has returned (or raised) by now."""
        return bool(self._outcome)

    def outcome(self) -> T | BaseException:
        """What ``fn`` returned, or the exception it raised."""
        self._thread.join(HANG_TIMEOUT)
        if not self._outcome:
            pytest.fail(f"{self.name} did not return within {HANG_TIMEOUT:g}s: it hangs")
        return self._outcome[0]

    def result(self) -> T:
        """What ``fn`` returned; the exception it raised is raised here."""
        outcome = self.outcome()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def start_join(handler: RendezvousHandler, name: str = "node") -> Background[RendezvousInfo]:
    """``handler.next_rendezvous()`` in the background."""
    return Background(handler.next_rendezvous, f"next_rendezvous of {name}")


def join_all(handlers: list[RendezvousHandler]) -> list[RendezvousInfo | BaseException]:
    """Every handler's ``next_rendezvous`` at once, one thread each; their infos or errors,
    in the order of ``handlers``."""
    gate = threading.Barrier(len(handlers))

    def join(handler: RendezvousHandler) -> RendezvousInfo:
        gate.wait(HANG_TIMEOUT)
        return handler.next_rendezvous()

    calls = [Background(partial(join, h), f"next_rendezvous of node {i}")
             for i, h in enumerate(handlers)]
    return [call.outcome() for call in calls]


def joined(handlers: list[RendezvousHandler]) -> list[RendezvousInfo]:
    """:func:`join_all`, failing the test when a node did not get a rank."""
    outcomes = join_all(handlers)
    errors = [f"node {i}: {type(o).__name__}: {o}" for i, o in enumerate(outcomes)
              if isinstance(o, BaseException)]
    if errors:
        pytest.fail("next_rendezvous failed on " + "; ".join(errors))
    return [o for o in outcomes if isinstance(o, RendezvousInfo)]


def wait_for_round_end(handler: RendezvousHandler) -> RoundEnd:
    """Block until ``handler``'s round ends, woken by :meth:`~RendezvousHandler.on_change`
    as an agent is; why it ended."""
    ended = threading.Event()
    assert handler.on_change(ended.set) is True, "on_change must be able to notify"
    if not ended.wait(HANG_TIMEOUT):
        pytest.fail(f"the round did not end within {HANG_TIMEOUT:g}s (round_end() is "
                    f"{handler.round_end()!r})")
    end = handler.round_end()
    assert end is not None, "on_change woke the agent, but round_end() is None"
    return end


def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait for ``predicate``, for what the suite can only ask about (torch's agent polls
    ``num_nodes_waiting`` the same way)."""
    deadline = time.monotonic() + HANG_TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not true after {HANG_TIMEOUT:g}s")
        time.sleep(0.02)


def _key(run_id: str, *parts: object) -> str:
    """A key of the protocol (see :mod:`pliant.rendezvous.elastic`): ``_key(run, 0, "over")``."""
    return "/".join(["pliant", run_id, *map(str, parts)])


def _failure(message: str, rank: int = 1) -> dict[str, Any]:
    """A worker failure as the agent reports it (some of ``ProcessFailure.as_dict()``)."""
    return {"rank": rank, "local_rank": 0, "hostname": "conformance-host", "pid": 4242,
            "exitcode": 1, "message": message, "timestamp": int(time.time())}


# -- the store ------------------------------------------------------------------------------


class RendezvousStoreTests:
    """The :class:`RendezvousStore` contract.

    The subclass provides a ``store`` fixture: a fresh store connected to a
    live server (closed at teardown). Tests write only under keys from the
    ``key`` fixture, unique to the test.
    """

    #: How many threads race in the concurrency tests.
    racers: ClassVar[int] = 6

    @pytest.fixture
    def key(self) -> Callable[[str], str]:
        """``key(name)``: a key no other test uses."""
        prefix = f"pliant-conformance/{uuid.uuid4().hex}/"
        return lambda name: prefix + name

    def test_names_its_endpoint_for_error_messages(self, store: RendezvousStore) -> None:
        assert isinstance(store.endpoint, str) and store.endpoint

    def test_get_of_a_missing_key_is_none(self, store: RendezvousStore,
                                          key: Callable[[str], str]) -> None:
        # Returning at all is the point: get must not wait for the key to appear.
        assert store.get(key("missing")) is None

    @pytest.mark.parametrize("value", [b"1", b"\x00\xff\x00", bytes(range(256)),
                                       "ünïcode".encode(), b"x" * 100_000],
                             ids=["short", "nul", "all-bytes", "utf8", "100kB"])
    def test_set_then_get_returns_the_same_bytes(self, store: RendezvousStore,
                                                 key: Callable[[str], str],
                                                 value: bytes) -> None:
        store.set(key("k"), value)
        assert store.get(key("k")) == value

    def test_set_overwrites(self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        store.set(key("k"), b"first")
        store.set(key("k"), b"second")
        assert store.get(key("k")) == b"second"

    def test_add_counts_from_zero_and_returns_the_new_value(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        assert store.add(key("n"), 5) == 5
        assert store.add(key("n"), -2) == 3
        assert store.add(key("n"), 1 << 40) == 3 + (1 << 40)
        assert store.add(key("other"), 1) == 1

    def test_add_is_atomic_across_connections(self, store: RendezvousStore,
                                              key: Callable[[str], str]) -> None:
        each = 25
        gate = threading.Barrier(self.racers)

        def count() -> list[int]:
            conn = store.clone()
            try:
                gate.wait(HANG_TIMEOUT)
                return [conn.add(key("n"), 1) for _ in range(each)]
            finally:
                conn.close()

        calls = [Background(count, f"adder {i}") for i in range(self.racers)]
        seen = [n for call in calls for n in call.result()]
        total = self.racers * each
        assert store.get(key("n")) == str(total).encode()
        assert sorted(seen) == list(range(1, total + 1)), "two adds returned the same value"

    def test_compare_set_with_none_creates_the_key(self, store: RendezvousStore,
                                                   key: Callable[[str], str]) -> None:
        assert store.compare_set(key("k"), None, b"mine") == b"mine"
        assert store.get(key("k")) == b"mine"
        # It exists now: a second creation loses and is told the value there.
        assert store.compare_set(key("k"), None, b"theirs") == b"mine"
        assert store.get(key("k")) == b"mine"

    def test_compare_set_with_none_has_exactly_one_winner(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        gate = threading.Barrier(self.racers)

        def race(i: int) -> tuple[bytes, bytes]:
            conn = store.clone()
            try:
                gate.wait(HANG_TIMEOUT)
                mine = f"racer-{i}".encode()
                return mine, conn.compare_set(key("k"), None, mine)
            finally:
                conn.close()

        calls = [Background(partial(race, i), f"racer {i}") for i in range(self.racers)]
        results = [call.result() for call in calls]
        winners = [mine for mine, got in results if got == mine]
        assert len(winners) == 1, f"winners: {winners}"
        assert {got for _, got in results} == {winners[0]}
        assert store.get(key("k")) == winners[0]

    def test_compare_set_swaps_only_on_the_expected_value(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        store.set(key("k"), b"old")
        assert store.compare_set(key("k"), b"other", b"new") == b"old"
        assert store.get(key("k")) == b"old"
        assert store.compare_set(key("k"), b"old", b"new") == b"new"
        assert store.get(key("k")) == b"new"

    def test_compare_set_expecting_a_value_does_not_create_the_key(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        assert store.compare_set(key("k"), b"something", b"new") != b"new"
        assert store.get(key("k")) is None

    def test_wait_returns_true_at_once_for_existing_keys(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        store.set(key("a"), b"1")
        store.set(key("b"), b"2")
        # A timeout this long would fail the test (pytest-timeout) if wait waited for it.
        assert store.wait([key("a"), key("b")], HANG_TIMEOUT * 10) is True

    def test_wait_returns_false_when_the_keys_do_not_appear(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        assert store.wait([key("missing")], 0.2) is False
        store.set(key("a"), b"1")
        assert store.wait([key("a"), key("missing")], 0.2) is False, \
            "wait must wait for every key"

    def test_the_connection_works_after_a_wait_timed_out(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        # The key a timed-out wait asked for appears later: the late answer must not be
        # mistaken for the answer to the next request.
        other = store.clone()
        try:
            for i in range(3):
                assert store.wait([key(f"late-{i}")], 0.05) is False
                other.set(key(f"late-{i}"), b"1")
                assert store.get(key(f"absent-{i}")) is None
                assert store.add(key("n"), 1) == i + 1
        finally:
            other.close()

    def test_wait_is_woken_by_a_set_from_another_connection(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        other = store.clone()
        try:
            waiter = Background(lambda: store.wait([key("a"), key("b")], HANG_TIMEOUT),
                                "waiter")
            other.set(key("a"), b"1")
            time.sleep(0.1)  # give the waiter a moment to block; the result does not depend on it
            other.set(key("b"), b"2")
            assert waiter.result() is True
        finally:
            other.close()

    def test_clone_is_an_independent_connection(self, store: RendezvousStore,
                                                key: Callable[[str], str]) -> None:
        clone = store.clone()
        assert clone is not store
        writer = Background(lambda: clone.set(key("k"), b"from the clone"), "clone user")
        writer.result()
        assert store.get(key("k")) == b"from the clone"
        clone.close()
        store.set(key("k"), b"after close")  # closing the clone leaves this one working
        assert store.get(key("k")) == b"after close"

    def test_clones_are_used_from_threads_at_once(self, store: RendezvousStore,
                                                  key: Callable[[str], str]) -> None:
        # A blocked wait on one clone does not hold up another.
        waiting, writing = store.clone(), store.clone()
        try:
            waiter = Background(lambda: waiting.wait([key("done")], HANG_TIMEOUT), "waiter")
            writer = Background(lambda: [writing.add(key("n"), 1) for _ in range(10)][-1],
                                "writer")
            assert writer.result() == 10
            store.set(key("done"), b"1")
            assert waiter.result() is True
        finally:
            waiting.close()
            writing.close()

    def test_beats_count_up(self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        assert store.last_beat(key("beat")) is None
        first = store.beat(key("beat"))
        second = store.beat(key("beat"))
        assert second > first
        if store.expiring_beats:  # a lease store shows that the key lives, not each beat
            assert store.last_beat(key("beat")) is not None
        else:
            assert store.last_beat(key("beat")) == second

    def test_beats_are_seen_from_other_connections(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        other = store.clone()
        try:
            before = other.last_beat(key("beat"))
            store.beat(key("beat"))
            assert other.last_beat(key("beat")) != before
            if store.expiring_beats:
                assert before is None
            assert other.read_beat(key("beat")).count is not None
        finally:
            other.close()

    def test_a_beat_read_says_whether_its_node_left(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        other = store.clone()
        try:
            assert other.read_beat(key("beat")) == Beat(None, False), "no beat yet"
            store.beat(key("beat"))
            assert other.read_beat(key("beat")).left is False
            store.mark_left(key("beat"))
            seen = other.read_beat(key("beat"))
            assert seen.left is True and seen.count is not None
            # The wire format agents of every version read: the count is at least LEFT.
            assert seen.count >= LEFT and other.last_beat(key("beat")) == seen.count
            store.beat(key("beat"))  # a beat that was on its way does not undo it
            assert other.read_beat(key("beat")).left is True
        finally:
            other.close()

    def test_a_node_that_left_without_beating_is_marked(
            self, store: RendezvousStore, key: Callable[[str], str]) -> None:
        # A node whose round ended before its keep-alive thread beat leaves all the same.
        store.mark_left(key("beat"))
        assert store.read_beat(key("beat")).left is True

    def test_delete_prefix_spares_other_keys(self, store: RendezvousStore,
                                             key: Callable[[str], str]) -> None:
        store.set(key("run/a"), b"1")
        store.set(key("kept"), b"2")
        store.delete_prefix(key("run/"))  # a store may keep the keys; it must not lose others
        assert store.get(key("run/a")) in (None, b"1")
        assert store.get(key("kept")) == b"2"


# -- the handler --------------------------------------------------------------------------


class Nodes:
    """``nodes(count, min_nodes, max_nodes, run_id=None, **conf)``: ``count`` handlers of one
    run (a fresh run id unless given), with :data:`FAST_TIMEOUTS` under ``conf``. Each is
    shut down at teardown."""

    def __init__(self, make: MakeHandler) -> None:
        self._make = make
        self.made: list[RendezvousHandler] = []

    def __call__(self, count: int, min_nodes: int, max_nodes: int, run_id: str | None = None,
                 **conf: Any) -> list[RendezvousHandler]:
        run_id = run_id or new_run_id()
        handlers = []
        for _ in range(count):
            handler = self._make(run_id, min_nodes, max_nodes, **{**FAST_TIMEOUTS, **conf})
            self.made.append(handler)
            handlers.append(handler)
        return handlers

    def shutdown(self) -> None:
        errors = []
        for handler in reversed(self.made):  # an agent hosting the store leaves last
            try:
                handler.shutdown()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def new_run_id() -> str:
    """A run id no other test uses."""
    return f"conformance-{uuid.uuid4().hex[:12]}"


def _elastic(handler: RendezvousHandler) -> ElasticRendezvousHandler:
    if not isinstance(handler, ElasticRendezvousHandler):
        raise TypeError(f"{type(handler).__name__} is not an ElasticRendezvousHandler: "
                        "override stop_heartbeats, node_id and raw_store for it")
    return handler


class RendezvousHandlerTests:
    """The elastic rendezvous as the agents of a job see it.

    The subclass provides a ``make_handler`` fixture (see :class:`MakeHandler`).
    Tests build their nodes with the ``nodes`` fixture (see :class:`Nodes`),
    which shuts every handler down at teardown.
    """

    #: What ``get_backend()`` must answer; None accepts any non-empty name.
    backend_name: ClassVar[str | None] = None

    #: Settings under which running nodes take minutes to call each other dead, while the
    #: spares (FAST_TIMEOUTS) see them dead after a second. With counter heartbeats the
    #: watcher's own settings decide; a store whose beats expire (leases) lets each node's
    #: own settings decide when it is dead, and overrides this with ``{}``.
    slow_to_call_dead: ClassVar[dict[str, Any]] = {"keep_alive_max_attempt": 300}

    # -- what the suite needs beyond torch's interface; override for another handler ------

    def stop_heartbeats(self, handler: RendezvousHandler) -> None:
        """Make ``handler``'s node look dead: it stops beating without leaving, as when its
        machine freezes or loses the network. There is no public way to do that, and there
        should not be, so the core's own kit reaches into the handler."""
        _elastic(handler)._stop_keep_alive()

    def node_id(self, handler: RendezvousHandler) -> str:
        """How messages about ``handler``'s node name it."""
        return _elastic(handler).node_id

    def raw_store(self, handler: RendezvousHandler) -> RendezvousStore:
        """The store ``handler`` talks to, to plant values only a broken peer would write."""
        return _elastic(handler)._store

    def await_keys(self, handler: RendezvousHandler, keys: list[str]) -> None:
        """Block until every key exists in ``handler``'s store (read on a connection of the
        test's own, so that ``handler`` may be busy in another thread)."""
        store = self.raw_store(handler).clone()
        try:
            if not store.wait(keys, HANG_TIMEOUT):
                pytest.fail(f"{keys} did not appear within {HANG_TIMEOUT:g}s")
        finally:
            store.close()

    def stored(self, handler: RendezvousHandler, key: str) -> dict[str, Any]:
        """The protocol's JSON value at ``key``, read on a connection of the test's own."""
        store = self.raw_store(handler).clone()
        try:
            value = store.get(key)
        finally:
            store.close()
        assert value is not None, f"{key} is not in the store"
        data = json.loads(value)
        assert isinstance(data, dict), data
        return data

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture
    def nodes(self, make_handler: MakeHandler) -> Iterator[Nodes]:
        made = Nodes(make_handler)
        yield made
        made.shutdown()

    # -- forming a round ------------------------------------------------------------------------

    @pytest.mark.parametrize("count", [1, 2, 5])
    def test_nodes_joining_at_once_get_ranks_0_to_n(self, nodes: Nodes, count: int) -> None:
        infos = joined(nodes(count, count, count))
        assert sorted(i.rank for i in infos) == list(range(count))
        assert {i.world_size for i in infos} == {count}
        assert len({(i.master_addr, i.master_port) for i in infos}) == 1
        assert len({i.round for i in infos}) == 1
        assert {i.restart_count for i in infos} == {0}
        assert all(0 < i.master_port < 65536 and i.master_addr for i in infos)

    def test_a_round_completes_at_max_nodes_without_a_last_call(self, nodes: Nodes) -> None:
        # With an hour-long last call, only reaching max_nodes can complete the round.
        infos = joined(nodes(2, 1, 2, last_call_timeout=3600))
        assert sorted(i.rank for i in infos) == [0, 1]
        assert {i.world_size for i in infos} == {2}

    def test_a_round_completes_with_min_nodes_after_the_last_call(self, nodes: Nodes) -> None:
        infos = joined(nodes(2, 2, 3))
        assert sorted(i.rank for i in infos) == [0, 1]
        assert {i.world_size for i in infos} == {2}

    def test_a_node_above_min_nodes_waits_out_the_last_call(self, nodes: Nodes) -> None:
        # The min-th node has taken its number but not yet started the last call (its store
        # connection stalls, its thread is descheduled). The node after it must still wait for
        # the last call, here an hour: only max_nodes joining may complete the round.
        run_id = new_run_id()
        first, third = nodes(2, 2, 4, run_id=run_id, last_call_timeout=3600)
        (fourth,) = nodes(1, 2, 4, run_id=run_id, last_call_timeout=3600, join_timeout=0.5)
        calls = [start_join(first, "the first node")]
        self.await_keys(first, [_key(run_id, 0, "join", 1)])
        slow = {"v": PROTOCOL_VERSION, "id": "slow-node", "host": "slow-host",
                "addr": "127.0.0.1", "port": 1, "workers": 1}
        store = self.raw_store(first).clone()
        try:
            assert store.add(_key(run_id, 0, "joined"), 1) == 2
            store.set(_key(run_id, 0, "join", 2), json.dumps(slow).encode())
        finally:
            store.close()
        calls.append(start_join(third, "the third node"))
        self.await_keys(third, [_key(run_id, 0, "join", 3)])
        calls.append(start_join(fourth, "the fourth node"))
        outcomes = [call.outcome() for call in calls]
        assert all(isinstance(o, RendezvousInfo) and o.world_size == 4 for o in outcomes), \
            outcomes

    def test_the_run_id_and_backend_are_reported(self, nodes: Nodes) -> None:
        run_id = new_run_id()
        (handler,) = nodes(1, 1, 1, run_id=run_id)
        assert handler.get_run_id() == run_id
        backend = handler.get_backend()
        assert isinstance(backend, str) and backend
        if self.backend_name is not None:
            assert backend == self.backend_name
        assert handler.use_agent_store is False

    def test_two_run_ids_on_one_store_do_not_mix(self, nodes: Nodes) -> None:
        three, two = nodes(3, 3, 3), nodes(2, 2, 2)
        infos = joined(three + two)
        assert sorted(i.rank for i in infos[:3]) == [0, 1, 2]
        assert {i.world_size for i in infos[:3]} == {3}
        assert sorted(i.rank for i in infos[3:]) == [0, 1]
        assert {i.world_size for i in infos[3:]} == {2}

    def test_every_node_learns_each_nodes_worker_count(self, nodes: Nodes) -> None:
        # Nodes may run different --nproc-per-node; the agent sets local_world_size first.
        handlers = nodes(3, 3, 3)
        sizes = [1, 2, 4]
        for handler, size in zip(handlers, sizes, strict=True):
            handler.local_world_size = size
        for attempt in ("first round", "after a restart"):
            infos = joined(handlers)
            shared = {i.node_sizes for i in infos}
            assert len(shared) == 1, f"{attempt}: nodes disagree on node_sizes: {shared}"
            (node_sizes,) = shared
            assert node_sizes is not None and len(node_sizes) == 3, (attempt, node_sizes)
            for info, size in zip(infos, sizes, strict=True):
                assert node_sizes[info.rank] == size, (attempt, info, sizes)
            if attempt == "first round":
                handlers[0].report_failure(_failure("boom"), restart=True)
                for handler in handlers:
                    wait_for_round_end(handler)

    # -- ending a round and the next one --------------------------------------------------------

    def test_a_failure_restarts_every_node_with_its_rank(self, nodes: Nodes) -> None:
        handlers = nodes(3, 3, 3)
        first = joined(handlers)
        reporter = handlers[[i.rank for i in first].index(1)]
        end = reporter.report_failure(_failure("boom"), restart=True)
        assert (end.reason, end.restart) == ("failure", True)
        for handler in handlers:
            seen = wait_for_round_end(handler)
            assert (seen.reason, seen.restart) == ("failure", True)
            assert seen.failure is not None and seen.failure["message"] == "boom"
            assert "boom" in seen.message
        second = joined(handlers)
        assert [i.rank for i in second] == [i.rank for i in first]
        assert {i.restart_count for i in second} == {1}
        assert {i.world_size for i in second} == {3}
        assert len({i.round for i in second}) == 1 and second[0].round > first[0].round
        assert len({(i.master_addr, i.master_port) for i in second}) == 1
        assert all(h.round_end() is None for h in handlers), "a new round starts unended"

    def test_restart_counts_add_up_over_failures(self, nodes: Nodes) -> None:
        handlers = nodes(2, 2, 2)
        joined(handlers)
        for expected in (1, 2):
            handlers[0].report_failure(_failure(f"failure {expected}"), restart=True)
            wait_for_round_end(handlers[1])
            assert {i.restart_count for i in joined(handlers)} == {expected}

    def test_a_failure_without_restart_ends_the_job_everywhere(self, nodes: Nodes) -> None:
        handlers = nodes(2, 2, 2)
        joined(handlers)
        end = handlers[0].report_failure(_failure("out of restarts"), restart=False)
        assert (end.reason, end.restart) == ("failed", False)
        for handler in handlers:
            seen = wait_for_round_end(handler)
            assert (seen.reason, seen.restart) == ("failed", False)
            assert "out of restarts" in seen.message

    def test_the_first_failure_report_wins(self, nodes: Nodes) -> None:
        handlers = nodes(2, 2, 2)
        joined(handlers)
        handlers[0].report_failure(_failure("first"), restart=True)
        second = handlers[1].report_failure(_failure("second"), restart=False)
        assert (second.reason, second.restart) == ("failure", True)
        for handler in handlers:
            seen = wait_for_round_end(handler)
            assert seen.failure is not None and seen.failure["message"] == "first"

    def test_on_change_wakes_the_agent_when_the_round_ends(self, nodes: Nodes) -> None:
        handlers = nodes(2, 2, 2)
        joined(handlers)
        woken = threading.Event()
        assert handlers[1].on_change(woken.set) is True
        assert handlers[1].round_end() is None
        handlers[0].report_failure(_failure("boom"), restart=True)
        assert woken.wait(HANG_TIMEOUT), "on_change's function was not called"
        end = handlers[1].round_end()
        assert end is not None and end.reason == "failure"
        # Registered after the end: called at once.
        late = threading.Event()
        handlers[1].on_change(late.set)
        assert late.is_set()

    def test_a_silent_node_is_declared_dead_and_left_out(self, nodes: Nodes) -> None:
        handlers = nodes(3, 2, 3)
        first = joined(handlers)
        by_rank = {info.rank: h for info, h in zip(first, handlers, strict=True)}
        victim, survivors = by_rank[2], [by_rank[0], by_rank[1]]
        self.stop_heartbeats(victim)
        for handler in survivors:
            seen = wait_for_round_end(handler)
            assert (seen.reason, seen.restart) == ("dead", True), seen
            assert self.node_id(victim) in seen.message
            assert seen.survivors == 2
        second = joined(survivors)
        assert [i.rank for i in second] == [0, 1]
        assert {i.world_size for i in second} == {2}

    def test_a_node_lost_as_a_failure_ends_the_round_is_left_out_without_a_last_call(
            self, nodes: Nodes) -> None:
        # A host goes away and its peers' collectives fail at once: the failure ends the
        # round before anyone calls the host dead. The next round must stop expecting it
        # once it has been silent for the heartbeat timeout, not wait out the last call.
        handlers = nodes(3, 2, 3, last_call_timeout=2 * HANG_TIMEOUT)
        first = joined(handlers)
        by_rank = {info.rank: h for info, h in zip(first, handlers, strict=True)}
        victim, survivors = by_rank[2], [by_rank[0], by_rank[1]]
        self.stop_heartbeats(victim)
        survivors[1].report_failure(_failure("connection reset by peer"), restart=True)
        for handler in survivors:
            assert wait_for_round_end(handler).restart
        second = joined(survivors)
        assert {i.world_size for i in second} == {2}
        assert sorted(i.rank for i in second) == [0, 1]

    def test_a_node_slow_to_rejoin_after_a_failure_is_waited_for(self, nodes: Nodes) -> None:
        # Stopping workers can take a while (up to the shutdown timeout): a node busy with
        # it still beats, so the next round waits for it, however long its heartbeats
        # would take to time out.
        handlers = nodes(3, 2, 3, last_call_timeout=2 * HANG_TIMEOUT)
        joined(handlers)
        handlers[0].report_failure(_failure("boom"), restart=True)
        for handler in handlers:
            wait_for_round_end(handler)
        early = [start_join(h, f"node {i}") for i, h in enumerate(handlers[:2])]
        dead_after = FAST_TIMEOUTS["keep_alive_interval"] * FAST_TIMEOUTS["keep_alive_max_attempt"]
        time.sleep(2.5 * dead_after)
        assert not any(call.done() for call in early), "the round closed without the slow node"
        late = start_join(handlers[2], "node 2")
        infos = [call.result() for call in (*early, late)]
        assert {i.world_size for i in infos} == {3}

    def test_too_few_survivors_end_the_job(self, nodes: Nodes) -> None:
        handlers = nodes(2, 2, 2)
        first = joined(handlers)
        victim = handlers[[i.rank for i in first].index(1)]
        survivor = handlers[[i.rank for i in first].index(0)]
        self.stop_heartbeats(victim)
        seen = wait_for_round_end(survivor)
        assert (seen.reason, seen.restart) == ("lost", False), seen
        assert self.node_id(victim) in seen.message

    def test_a_late_node_grows_the_job(self, nodes: Nodes) -> None:
        # A last call long enough that the two running nodes both rejoin within it.
        run_id = new_run_id()
        running = nodes(2, 2, 3, run_id=run_id, last_call_timeout=2.0)
        first = joined(running)
        assert {i.world_size for i in first} == {2}
        assert running[0].num_nodes_waiting() == 0
        (late,) = nodes(1, 2, 3, run_id=run_id, last_call_timeout=2.0)
        arrival = start_join(late, "the late node")
        for handler in running:
            seen = wait_for_round_end(handler)
            assert (seen.reason, seen.restart) == ("join", True), seen
            assert handler.num_nodes_waiting() > 0
        second = joined(running)
        grown = arrival.result()
        assert [i.rank for i in second] == [i.rank for i in first]
        assert grown.rank == 2
        assert {i.world_size for i in [*second, grown]} == {3}
        assert len({(i.round, i.master_addr, i.master_port) for i in [*second, grown]}) == 1
        assert {i.restart_count for i in [*second, grown]} == {0}, "growing is not a failure"

    def test_a_spare_waits_and_leaves_when_the_job_succeeds(self, nodes: Nodes) -> None:
        run_id = new_run_id()
        running = nodes(2, 2, 2, run_id=run_id)
        joined(running)
        assert running[0].num_nodes_waiting() == 0
        (spare,) = nodes(1, 2, 2, run_id=run_id)
        waiting = start_join(spare, "the spare")
        eventually(lambda: running[0].num_nodes_waiting() > 0,
                   "num_nodes_waiting() counts the spare")
        assert running[0].round_end() is None, "a spare must not end a full round"
        running[0].report_success()
        running[1].report_success()
        end = running[1].round_end()
        assert end is not None and (end.reason, end.restart) == ("succeeded", False)
        with pytest.raises(RendezvousGracefulExitError, match=run_id):
            waiting.result()

    # -- leaving -------------------------------------------------------------------------------

    def test_a_node_leaving_a_forming_round_lets_the_others_form_the_next(
            self, nodes: Nodes) -> None:
        # An hour-long last call: only the leaver abandoning the round lets the others on.
        run_id = new_run_id()
        handlers = nodes(3, 2, 4, run_id=run_id, last_call_timeout=3600)
        # One after the other, so that the last call has begun before the third node joins
        # (see test_a_node_above_min_nodes_waits_out_the_last_call).
        calls = []
        for i, (handler, waypoint) in enumerate(zip(handlers, ("join/1", "min", "join/3"),
                                                    strict=True)):
            calls.append(start_join(handler, f"node {i}"))
            self.await_keys(handler, [_key(run_id, 0, waypoint)])
        leaver, stayers = handlers[0], handlers[1:]
        # The agent got a signal while it waited, and leaves.
        assert isinstance(calls[0].interrupt(), Interrupted)
        assert leaver.shutdown() is True
        infos = [call.result() for call in calls[1:]]
        assert sorted(i.rank for i in infos) == [0, 1], infos
        assert {i.world_size for i in infos} == {2}, "the leaver is still counted"
        assert len({(i.round, i.master_addr, i.master_port) for i in infos}) == 1
        assert infos[0].round > 0
        assert {i.restart_count for i in infos} == {0}, "leaving is not a failure"
        assert "retry" in self.stored(leaver, _key(run_id, 0, "done"))
        abandoned = RoundEnd.from_dict(self.stored(stayers[0], _key(run_id, 0, "over")))
        assert (abandoned.reason, abandoned.restart) == ("left", True), abandoned
        assert self.node_id(leaver) in abandoned.message
        # Nobody in the new round is dead: it ends when its two nodes finish.
        for handler in stayers:
            handler.report_success()
        end = stayers[1].round_end()
        assert end is not None and end.reason == "succeeded", end

    def test_a_node_leaving_a_round_that_completed_with_it_ends_that_round(
            self, nodes: Nodes) -> None:
        # The round completes while the leaver is on its way out: it never beats. Silence
        # would take a minute to count as death; the leaver says it left instead.
        run_id = new_run_id()
        conf: dict[str, Any] = {"last_call_timeout": 3600, "keep_alive_max_attempt": 300}
        leaver, other = nodes(2, 1, 2, run_id=run_id, **conf)
        waiting = start_join(leaver, "the leaver")
        self.await_keys(leaver, [_key(run_id, 0, "join", 1)])
        assert isinstance(waiting.interrupt(), Interrupted)
        first = start_join(other, "the other node").result()
        assert first.world_size == 2, "the round completes with the leaver in it"
        assert leaver.shutdown() is True
        seen = wait_for_round_end(other)
        assert (seen.reason, seen.restart, seen.survivors) == ("left", True, 1), seen
        assert self.node_id(leaver) in seen.message
        (second,) = joined([other])
        assert (second.rank, second.world_size) == (0, 1)
        assert second.round > first.round

    def test_a_node_stopping_before_it_finished_restarts_the_others(self, nodes: Nodes) -> None:
        handlers = nodes(3, 2, 3)
        first = joined(handlers)
        leaver = handlers[[i.rank for i in first].index(1)]
        stayers = [h for h in handlers if h is not leaver]
        assert leaver.shutdown() is True  # without report_success: its agent stopped early
        for handler in stayers:
            seen = wait_for_round_end(handler)
            assert (seen.reason, seen.restart, seen.survivors) == ("left", True, 2), seen
            assert self.node_id(leaver) in seen.message
        second = joined(stayers)
        assert sorted(i.rank for i in second) == [0, 1]
        assert {i.world_size for i in second} == {2}

    def test_a_node_stopping_before_it_finished_ends_the_job_below_min_nodes(
            self, nodes: Nodes) -> None:
        handlers = nodes(2, 2, 2)
        joined(handlers)
        leaver, stayer = handlers
        assert leaver.shutdown() is True
        seen = wait_for_round_end(stayer)
        assert (seen.reason, seen.restart) == ("left", False), seen
        assert self.node_id(leaver) in seen.message
        assert "at least 2" in seen.message, "the message names min_nodes"

    def test_a_node_that_finished_and_left_does_not_end_the_round(self, nodes: Nodes) -> None:
        handlers = nodes(2, 2, 2)
        joined(handlers)
        done, last = handlers
        done.report_success()
        assert done.shutdown() is True
        # Had the first node's shutdown ended the round, its outcome would win over this one.
        last.report_success()
        end = last.round_end()
        assert end is not None and (end.reason, end.restart) == ("succeeded", False), end

    def test_spares_take_over_when_every_running_node_falls_silent(self, nodes: Nodes) -> None:
        run_id = new_run_id()
        # The running nodes must not call each other dead first: only the spares can end the
        # round once both are silent.
        running = nodes(2, 2, 2, run_id=run_id, **self.slow_to_call_dead)
        first = joined(running)
        spares = nodes(2, 2, 2, run_id=run_id)
        calls = [start_join(h, f"spare {i}") for i, h in enumerate(spares)]
        eventually(lambda: running[0].num_nodes_waiting() >= 2,
                   "num_nodes_waiting() counts both spares")
        for handler in running:
            self.stop_heartbeats(handler)
        infos = [call.result() for call in calls]
        assert sorted(i.rank for i in infos) == [0, 1]
        assert {i.world_size for i in infos} == {2}
        assert len({(i.round, i.master_addr, i.master_port) for i in infos}) == 1
        assert infos[0].round > first[0].round
        end = RoundEnd.from_dict(self.stored(spares[0], _key(run_id, first[0].round, "over")))
        assert (end.reason, end.restart, end.survivors) == ("dead", True, 0), end

    @pytest.mark.parametrize("how", ["succeeded", "failed", "lost"])
    def test_a_node_arriving_after_the_job_ended_is_refused(self, nodes: Nodes,
                                                            how: str) -> None:
        run_id = new_run_id()
        handlers = nodes(2, 2, 2, run_id=run_id)
        joined(handlers)
        if how == "succeeded":
            for handler in handlers:
                handler.report_success()
        elif how == "failed":
            handlers[0].report_failure(_failure("out of restarts"), restart=False)
        else:
            self.stop_heartbeats(handlers[0])
        end = wait_for_round_end(handlers[1]) if how != "succeeded" else handlers[1].round_end()
        assert end is not None and (end.reason, end.restart) == (how, False), end
        (late,) = nodes(1, 2, 2, run_id=run_id)
        with pytest.raises(RendezvousClosedError, match="has already ended") as caught:
            late.next_rendezvous()
        message = str(caught.value)
        assert run_id in message and "new --rdzv-id" in message, message

    # -- closing ----------------------------------------------------------------------------

    def test_set_closed_ends_the_job_and_refuses_new_rounds(self, nodes: Nodes) -> None:
        run_id = new_run_id()
        handlers = nodes(2, 2, 2, run_id=run_id)
        joined(handlers)
        assert not handlers[0].is_closed()
        handlers[0].set_closed()
        for handler in handlers:
            assert handler.is_closed()
            seen = wait_for_round_end(handler)
            assert (seen.reason, seen.restart) == ("closed", False)
            with pytest.raises(RendezvousClosedError, match=run_id):
                handler.next_rendezvous()
        (newcomer,) = nodes(1, 2, 2, run_id=run_id)
        assert newcomer.is_closed()
        with pytest.raises(RendezvousClosedError, match=run_id):
            newcomer.next_rendezvous()

    # -- refusals -----------------------------------------------------------------------------

    def test_too_few_nodes_time_out_naming_join_timeout(self, nodes: Nodes) -> None:
        run_id = new_run_id()
        (alone,) = nodes(1, 2, 2, run_id=run_id, join_timeout=0.5)
        with pytest.raises(RendezvousTimeoutError, match="join_timeout") as caught:
            alone.next_rendezvous()
        assert run_id in str(caught.value)

    def test_nodes_that_disagree_on_the_node_counts_are_refused(self, nodes: Nodes) -> None:
        run_id = new_run_id()
        (first,) = nodes(1, 1, 1, run_id=run_id)
        joined([first])
        (other,) = nodes(1, 1, 3, run_id=run_id)
        with pytest.raises(RendezvousStateError) as caught:
            other.next_rendezvous()
        message = str(caught.value)
        assert "1:1" in message and "1:3" in message and run_id in message

    @pytest.mark.parametrize("value", [b"\xff\x00 not json", b"[1, 2]", b"{\"min\": 1}"],
                             ids=["garbage", "a-list", "no-version"])
    def test_garbage_in_the_store_is_refused(self, nodes: Nodes, value: bytes) -> None:
        run_id = new_run_id()
        (handler,) = nodes(1, 1, 1, run_id=run_id)
        self.raw_store(handler).set(f"pliant/{run_id}/meta", value)
        with pytest.raises(RendezvousStateError) as caught:
            handler.next_rendezvous()
        assert f"pliant/{run_id}/meta" in str(caught.value)

    def test_another_protocol_version_is_refused(self, nodes: Nodes) -> None:
        run_id = new_run_id()
        (handler,) = nodes(1, 1, 1, run_id=run_id)
        alien = json.dumps({"v": 999, "min": 1, "max": 1}).encode()
        self.raw_store(handler).set(f"pliant/{run_id}/meta", alien)
        with pytest.raises(RendezvousStateError, match="version 999"):
            handler.next_rendezvous()

    # -- a job with a token: strangers who can reach the store cannot steer it ------------------

    @pytest.fixture
    def token_file(self, tmp_path: Any) -> str:
        path = tmp_path / "rdzv-token"
        path.write_text("conformance-secret-" + uuid.uuid4().hex + "\n")
        path.chmod(0o600)
        return str(path)

    def _forge(self, handler: RendezvousHandler, key: str, value: dict[str, Any]) -> None:
        """Write ``value`` at ``key`` as a stranger would: well formed, but unsigned."""
        record = json.dumps({"v": PROTOCOL_VERSION, **value}).encode()
        self.raw_store(handler).set(key, record)

    def test_with_a_token_values_are_signed_and_nodes_meet(self, nodes: Nodes,
                                                           token_file: str) -> None:
        run_id = new_run_id()
        handlers = nodes(2, 2, 2, run_id=run_id, token_file=token_file)
        infos = joined(handlers)
        assert sorted(i.rank for i in infos) == [0, 1]
        for key in (_key(run_id, "meta"), _key(run_id, infos[0].round, "done"),
                    _key(run_id, infos[0].round, "join", 1)):
            value = self.raw_store(handlers[0]).get(key)
            assert value is not None and value.startswith(b"pliant-hmac1:"), (key, value)
        with open(token_file, "rb") as f:
            secret = f.read().strip()
        assert all(secret not in (self.raw_store(handlers[0]).get(k) or b"")
                   for k in (_key(run_id, "meta"), _key(run_id, infos[0].round, "done")))

    def test_a_node_with_another_token_is_refused_naming_the_run_and_the_store(
            self, nodes: Nodes, token_file: str, tmp_path: Any) -> None:
        run_id = new_run_id()
        (first,) = nodes(1, 1, 2, run_id=run_id, token_file=token_file)
        joined([first])
        other_file = tmp_path / "other-token"
        other_file.write_text("another-secret")
        for conf in ({"token_file": str(other_file)}, {}):
            (other,) = nodes(1, 1, 2, run_id=run_id, **conf)
            with pytest.raises(RendezvousStateError) as caught:
                other.next_rendezvous()
            message = str(caught.value)
            assert run_id in message and self.raw_store(first).endpoint in message, message
            assert "token" in message, message
            assert "another-secret" not in message

    def test_a_forged_join_record_is_left_out(self, nodes: Nodes, token_file: str) -> None:
        run_id = new_run_id()
        handlers = nodes(2, 2, 3, run_id=run_id, token_file=token_file)
        stranger = self.raw_store(handlers[0]).clone()
        try:
            number = stranger.add(_key(run_id, 0, "joined"), 1)
            self._forge(handlers[0], _key(run_id, 0, "join", number),
                        {"id": "stranger", "host": "evil", "addr": "203.0.113.7",
                         "port": 6666, "workers": 1})
        finally:
            stranger.close()
        infos = joined(handlers)
        assert {i.world_size for i in infos} == {2}
        assert {i.master_addr for i in infos} != {"203.0.113.7"}
        assert all(i.master_port != 6666 for i in infos)
        assert sum(_elastic(h).rejected for h in handlers) >= 1

    def test_a_forged_outcome_is_ignored_and_the_job_goes_on(self, nodes: Nodes,
                                                            token_file: str) -> None:
        run_id = new_run_id()
        handlers = nodes(2, 2, 2, run_id=run_id, token_file=token_file)
        first = joined(handlers)
        k = first[0].round
        # A false end of the running round, and a false outcome of the next one, which would
        # send every worker to the stranger's address.
        self._forge(handlers[0], _key(run_id, k, "over"),
                    {"reason": "failed", "message": "forged", "restart": False})
        self._forge(handlers[0], _key(run_id, k + 1, "done"),
                    {"round": k + 1, "restart_count": 0, "nodes": [
                        {"id": _elastic(h).node_id, "host": "evil", "addr": "203.0.113.7",
                         "port": 6666, "workers": 1} for h in handlers]})
        eventually(lambda: all(_elastic(h).rejected >= 1 for h in handlers),
                   "every node saw the forged end")
        assert all(h.round_end() is None for h in handlers), "a forged end was taken"
        end = handlers[0].report_failure(_failure("real"), restart=True)
        assert (end.reason, end.restart) == ("failure", True)
        for handler in handlers:
            seen = wait_for_round_end(handler)
            assert seen.failure is not None and seen.failure["message"] == "real"
        second = joined(handlers)
        assert {(i.master_addr, i.master_port) for i in second} == {
            (first[0].master_addr, second[0].master_port)}
        assert {i.master_addr for i in second} != {"203.0.113.7"}
        assert all(i.master_port != 6666 for i in second)

    def test_a_stranger_writing_a_silent_nodes_heartbeat_does_not_keep_it_alive(
            self, nodes: Nodes, token_file: str) -> None:
        run_id = new_run_id()
        handlers = nodes(3, 2, 3, run_id=run_id, token_file=token_file)
        first = joined(handlers)
        by_rank = {info.rank: h for info, h in zip(first, handlers, strict=True)}
        victim, survivors = by_rank[2], [by_rank[0], by_rank[1]]
        beat_key = _key(run_id, "beat", self.node_id(victim))
        stranger = self.raw_store(victim).clone()
        copied = stranger.get(beat_key)
        assert copied is not None and copied.startswith(b"pliant-hmac1:"), copied
        self.stop_heartbeats(victim)
        done = threading.Event()

        def forge() -> None:  # the victim's last signed beat copied back, and values of its own
            for n in itertools.count():
                if done.wait(0.01):
                    return
                stranger.set(beat_key, copied if n % 2 else str(10 ** 6 + n).encode())

        forger = threading.Thread(target=forge, daemon=True)
        forger.start()
        try:
            for handler in survivors:
                seen = wait_for_round_end(handler)
                assert (seen.reason, seen.restart) == ("dead", True), seen
                assert self.node_id(victim) in seen.message
        finally:
            done.set()
            forger.join()
            stranger.close()
        assert any(_elastic(h).rejected >= 1 for h in survivors)

    def test_a_stranger_adding_to_the_success_count_does_not_end_the_job(
            self, nodes: Nodes, token_file: str) -> None:
        run_id = new_run_id()
        handlers = nodes(2, 2, 2, run_id=run_id, token_file=token_file)
        first = joined(handlers)
        self.raw_store(handlers[0]).add(_key(run_id, first[0].round, "succeeded"), 1)
        handlers[0].report_success()
        over = _key(run_id, first[0].round, "over")
        assert self.raw_store(handlers[0]).get(over) is None, "the job ended with a node running"
        handlers[1].report_success()
        end = wait_for_round_end(handlers[1])
        assert end.reason == "succeeded"

    def test_a_forged_outcome_of_a_forming_round_does_not_end_its_last_call(
            self, nodes: Nodes, token_file: str) -> None:
        run_id = new_run_id()
        handlers = nodes(2, 1, 3, run_id=run_id, token_file=token_file, close_timeout=2.0)
        self._forge(handlers[0], _key(run_id, 0, "done"),
                    {"round": 0, "restart_count": 0, "nodes": [
                        {"id": _elastic(h).node_id, "host": "evil", "addr": "203.0.113.7",
                         "port": 6666, "workers": 1} for h in handlers]})
        infos = joined(handlers)
        assert sorted(i.rank for i in infos) == [0, 1]
        assert {i.master_addr for i in infos} != {"203.0.113.7"}
        assert all(i.master_port != 6666 for i in infos)
        assert all(_elastic(h).rejected >= 1 for h in handlers)

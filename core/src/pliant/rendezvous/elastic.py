"""The elastic rendezvous protocol, written once for every store backend.

Nodes meet in numbered *rounds*. Every key of a run lives under
``pliant/<run_id>/``; round ``k`` uses these:

``k/joined``
    an atomic counter. Joining is one ``add``: the result is the node's join
    number, so a burst of N joins costs N operations and no failed
    compare-and-set. Closing the round adds :data:`CLOSED`; a node whose number
    is above it knows the round is closed without another read.
``k/join/<i>``
    the record of the i-th node to join (its id, host, address and a free port).
``k/min``
    exists once ``min_nodes`` have joined: the start of the last call.
``k/done``
    the outcome, written by the one node that closed the round: the nodes in
    rank order, where the workers meet, the job-wide restart count, and the
    restart budget (the smallest ``--max-restarts`` of the round's nodes; each
    join record carries its node's, and rounds of older agents carry none).
``k/over``
    why the round ended (a worker failed, a node arrived or died, the job
    succeeded). The first writer wins a compare-and-set; every running agent
    waits on this one key, so a change reaches all of them as one notification.
``k/extra``
    how many nodes arrived while round ``k - 1`` ran: the next round waits for
    them as well as for the survivors, with no last call.

Round-level keys: ``meta`` (the job's min and max nodes: agents that disagree
are refused), ``round`` (where a newcomer starts looking), ``closed``, and
``beat/<node>`` (heartbeats, see :mod:`pliant.rendezvous.liveness`). Each node
watches one other node, the next in rank order, so liveness costs O(1) per node.

A round completes as soon as ``max_nodes`` have joined; as soon as every
node expected back (the survivors of the last round and the nodes that were
waiting) has rejoined; or ``last_call_timeout`` after ``min_nodes`` joined.
Between rounds a node keeps beating until it joins the next one, so a round
that waits for the last round's nodes stops expecting one that fell silent
(a host lost just as a worker failure ended the round) after the heartbeat
timeout, not after the whole last call.

With a token (``token_file``), every value is signed and checked
(:mod:`pliant.rendezvous.auth`); what a node does with one that does not
verify is written where it is read: a join record is left out, an outcome or
``over`` is waited past (and the first-writer-wins keys ``over`` and ``min``
are taken back from it by compare-and-set), a round number or a start time is
taken as missing, and a beat reads as a change at most. Each is logged and
counted (:attr:`ElasticRendezvousHandler.rejected`). Counters cannot be signed,
so they are hints: ``k/succeeded`` is checked against the signed
``k/ok/<node>`` records before a node declares the job done, and a stranger's
add to ``k/joined`` or ``k/extra`` can only delay a round or close a forming
one. A meta record that does not verify is an error: the node has another
token than the job.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from pliant.rendezvous.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousTimeoutError,
    RoundEnd,
)
from pliant.rendezvous.auth import ForgedValueError, Seal, token_from
from pliant.rendezvous.conf import ELASTIC_SETTINGS, Timeouts, parse_conf
from pliant.rendezvous.connection import Connection
from pliant.rendezvous.keys import CLOSED, PROTOCOL_VERSION, Keys, decode, encode
from pliant.rendezvous.liveness import Pulses, Ring, keep_alive
from pliant.rendezvous.net import first_host, free_port, route_addr
from pliant.rendezvous.store import RendezvousStore

# ELASTIC_SETTINGS, Timeouts, CLOSED and PROTOCOL_VERSION live in conf and keys; they are
# named here too because plugins and user code imported them from this module.
__all__ = ["CLOSED", "ELASTIC_SETTINGS", "PROTOCOL_VERSION", "ElasticRendezvousHandler",
           "Timeouts"]

log = logging.getLogger("pliant.rendezvous")

T = TypeVar("T")

#: How often a waiting node says how the round is going.
PROGRESS_INTERVAL = 5.0
#: How many of a round's first joiners watch, during its last call, whether the nodes it
#: waits for are still alive (the others only wait for the outcome: O(1) reads each).
WATCHERS = 2


class ElasticRendezvousHandler(RendezvousHandler):
    """torch's ``RendezvousHandler`` over any :class:`RendezvousStore`.

    ``next_rendezvous`` joins the next round and returns this node's rank. While
    the round runs, a keep-alive thread beats, watches the next node's
    heartbeat, and waits on the round's ``over`` key; when the round ends, it
    calls the function given to :meth:`on_change` (the agent's wake-up).
    """

    polls_membership = False

    def __init__(self, backend: str, store: RendezvousStore, params: RendezvousParameters,
                 timeouts: Timeouts | None = None, hosts_store: bool = False,
                 token_file: str | None = None) -> None:
        """``timeouts`` and ``token_file`` come from the backend's factory, from its parsed
        settings; without ``timeouts`` (a handler built by hand), both are parsed from
        ``params.config``. No ``token_file``: ``$PLIANT_RDZV_TOKEN_FILE``, else no token."""
        self._backend = backend
        self._store = store
        if timeouts is None:
            conf = parse_conf(params, ELASTIC_SETTINGS, f"rendezvous backend {backend!r}")
            timeouts, token_file = Timeouts.from_settings(conf), conf.get("token_file")
        self._seal = Seal(token_from(token_file), store.endpoint, params.run_id)
        self._conn = Connection(store, self._seal)
        self._run_id = params.run_id
        self._min, self._max = params.min_nodes, params.max_nodes
        self.timeouts = timeouts
        self._keys = Keys(params.run_id)
        self._hosts_store = hosts_store
        # The first member of "[scheme://]host:port[,host:port...]" shows the route out.
        self._addr = params.local_addr or route_addr(first_host(store.endpoint))
        self._hostname = socket.gethostname()
        self.node_id = f"{self._hostname}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._checked_meta = False
        self._round: int | None = None
        self._done: dict[str, Any] | None = None
        self._rank = -1
        self._end: RoundEnd | None = None
        self._wake: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._resting = threading.Event()
        self._left = False
        # Connections for keep-alive threads, opened before joining (see next_rendezvous),
        # and threads told to stop without waiting, joined at shutdown.
        self._connections: list[Connection] = []
        self._detached: list[threading.Thread] = []
        # Where this node is counted while it waits: the round it joined while that round
        # forms, or the round whose ``extra`` it added to as a spare. Undone if it leaves early.
        self._joining: int | None = None
        self._spare_for: int | None = None
        # Every connection this node needs, opened now: a slow connect (torch's server looks
        # up each client's name, and a lost DNS answer costs 5 s) then delays the start, never
        # a join or a heartbeat.
        self._connections.append(self._conn.clone())
        self._shut = False
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- torch's interface -------------------------------------------------------------

    def get_backend(self) -> str:
        return self._backend

    def get_run_id(self) -> str:
        return self._run_id

    @property
    def signs(self) -> bool:
        """Whether this node has a token: it signs what it writes and checks what it reads."""
        return self._seal.signs

    @property
    def rejected(self) -> int:
        """How many values this node refused because they did not verify."""
        return self._seal.rejected

    def is_closed(self) -> bool:
        return self._plain(self._keys.closed) is not None

    def set_closed(self) -> None:
        """Close the job: running agents stop their workers and nodes can no longer join."""
        self._conn.set(self._keys.closed, self._seal.wrap(self._keys.closed, b"1"))
        if self._round is not None:
            self._post_end(RoundEnd("closed", f"the rendezvous of run {self._run_id!r} was "
                                    "closed (set_closed)", restart=False))

    def num_nodes_waiting(self) -> int:
        if self._round is None:
            return 0
        extra = self._conn.get(self._keys.of(self._round + 1, "extra"))
        waiting = int(extra) if extra is not None else 0
        end = self._end
        return max(waiting, 1) if end is not None and end.restart else waiting

    def next_rendezvous(self) -> RendezvousInfo:
        self._stop_keep_alive(wait=False)
        self._check_meta()
        # The keep-alive connection was opened with the handler; only one lost since is opened
        # again, before this node counts as joined.
        with self._lock:
            have_connection = bool(self._connections)
        if not have_connection:
            self._connections.append(self._conn.clone())
        if self.is_closed():
            raise RendezvousClosedError(
                f"the rendezvous of run {self._run_id!r} at {self._store.endpoint} is closed; "
                "start the job with a new --rdzv-id")
        k = self._round + 1 if self._round is not None else self._current_round()
        self._done = None
        start = time.monotonic()
        while True:
            number = self._conn.add(self._keys.of(k, "joined"), 1)
            if number > self._max:
                # Round k is closed (it runs), or full: wait for it to end, then join the next.
                self._wait_as_spare(k, running=number > CLOSED)
                k += 1
                continue
            self._joining = k
            done = self._join_round(k, number, start)
            if "retry" not in done:
                break
            log.info("rendezvous round %d of run %r: %s; joining the next round", k,
                     self._run_id, done["retry"])
            k += 1
        info = self._enter(k, done)
        self._joining = None
        return info

    def shutdown(self) -> bool:
        """Leave the job. A node that hosts the store keeps it up until the others are done."""
        self._shut = True
        self._stop_keep_alive()
        for thread in self._detached:
            thread.join()
        self._detached.clear()
        lost = self._conn.lost or (self._end is not None and self._end.reason == "store")
        try:
            if lost:  # every call would wait out read_timeout again: nothing can be told
                raise RendezvousConnectionError(f"the store at {self._store.endpoint} was lost")
            self._withdraw()
            if not self._left and self._round is not None and self._end is None:
                self._post_departure()
            # Marked as left before the heartbeat connections close: on a store with leases,
            # closing one deletes the heartbeat, and a node with none counts as gone, so the
            # last node out could delete the run's keys under this one's feet.
            self._leave()
            self._close_connections()
            if self._hosts_store:
                self._serve_until_others_leave()
            else:
                self._clean_up()
        except RendezvousError as exc:
            log.debug("shutdown: %s", exc)
        self._close_connections()
        self._store.close()
        return True

    def _release(self) -> None:
        """At interpreter exit, for a handler never shut down: stop its threads and close its
        connections (a store client freed under a running thread aborts the process)."""
        if self._shut:
            return
        self._shut = True
        self._stop_keep_alive()
        for thread in self._detached:
            thread.join()
        self._close_connections()
        self._store.close()

    def _close_connections(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()

    # -- the agent's extensions -------------------------------------------------------------

    def on_change(self, wake: Callable[[], None] | None) -> bool:
        with self._lock:
            self._wake = wake
            ended = self._end is not None
        if ended and wake is not None:
            wake()
        return True

    def round_end(self) -> RoundEnd | None:
        return self._end

    def report_failure(self, failure: dict[str, Any], restart: bool) -> RoundEnd:
        """A worker here failed: end the round for every node (the first report wins)."""
        where = f"{failure.get('hostname', self._hostname)} rank {failure.get('rank', '?')}"
        message = f"worker {where} failed: {failure.get('message', '')}"[:1000]
        survivors = self._survivors()
        if restart and survivors < self._min:
            restart = False
            message += (f"; no restart: only {survivors} node(s) are still running and --nnodes "
                        f"needs at least {self._min}")
        end = RoundEnd("failure" if restart else "failed", message, restart=restart,
                       failure=failure, survivors=survivors)
        # The keep-alive thread goes on beating (it sees the end and rests): the next round
        # can tell this node, busy stopping its workers, from one that died.
        return self._post_end(end)

    def report_success(self) -> None:
        """Every worker here exited 0: stop beating, and end the round once all nodes are done."""
        self._stop_keep_alive(wait=False)
        if self._round is None or self._done is None:
            return
        k = self._round
        if self.signs:  # the counter is a hint: what counts is each node's signed record
            ok = self._keys.of(k, f"ok/{self.node_id}")
            self._conn.set(ok, self._seal.wrap(ok, b"1"))
        finished = self._conn.add(self._keys.of(k, "succeeded"), 1)
        nodes = self._done["nodes"]
        if finished >= len(nodes) and self._finished(k, self._conn) >= len(nodes):
            self._post_end(RoundEnd("succeeded", "every node finished", restart=False))
        # Last: once this node has left, the agent hosting the store may stop it and exit.
        self._leave()

    # -- joining a round ------------------------------------------------------------------

    def _join_round(self, k: int, number: int, start: float) -> dict[str, Any]:
        keys, t = self._keys, self.timeouts
        record = {"id": self.node_id, "host": self._hostname, "addr": self._addr,
                  "port": free_port(self._addr), "workers": self.local_world_size,
                  "role": self.role}
        if self.max_restarts is not None:  # an addition: older readers ignore it
            record["max_restarts"] = self.max_restarts
        self._conn.set(keys.slot(k, number), self._encode(keys.slot(k, number), record))
        if number == 1:
            self._conn.set(keys.current, self._seal.wrap(keys.current, str(k).encode()))
        if number >= self._min:  # the min-th node may not have written it yet
            self._put_first(keys.of(k, "min"), str(time.time()).encode())
        if number >= self._max or (number >= self._min and
                                    self._joined_count(k, number) >= self._expected(k)):
            return self._close(k)
        if number < self._min and not self._wait_progress(
                k, keys.of(k, "min"), start + t.join_timeout, "join_timeout"):
            return self._close(k)
        min_at = self._plain(keys.of(k, "min"))
        if min_at == b"closed":
            return self._read_done(k)
        waited = time.time() - float(min_at) if min_at else 0.0  # forged: a full last call
        deadline = time.monotonic() + max(0.0, t.last_call_timeout - max(waited, 0.0))
        if number <= WATCHERS and k > 0:
            closed = self._last_call_watching(k, deadline)
        else:
            closed = self._wait_progress(k, keys.of(k, "done"), deadline, "last_call_timeout")
        if not closed:
            return self._close(k)
        return self._read_done(k)

    def _last_call_watching(self, k: int, deadline: float) -> bool:
        """The last call of round k, as one of its first joiners: wait for the outcome, and
        every keep-alive interval count the nodes still expected (the last round's nodes that
        rejoined or still beat, and the spares). False once they have all joined or the last
        call is over: the round is to be closed now."""
        keys, t = self._keys, self.timeouts
        previous = (self._record(keys.of(k - 1, "done")) or {}).get("nodes", [])
        pulses = self._pulses()
        for node in previous:
            pulses.start(node["id"])
        next_log = time.monotonic() + PROGRESS_INTERVAL
        while True:
            step = min(deadline, time.monotonic() + t.keep_alive_interval)
            if self._conn.wait([keys.of(k, "done")], step):
                if self._genuine(keys.of(k, "done")):
                    return True
                time.sleep(max(0.0, step - time.monotonic()))  # forged: the last call goes on
            now = time.monotonic()
            if now >= deadline:
                return False
            if previous:
                joined = self._joined_ids(k)
                if joined is None:  # closed by another node: its outcome follows
                    return True
                alive = sum(1 for n in previous if n["id"] in joined or pulses.running(
                    n["id"], self._conn.read_beat(keys.beat(n["id"])), now))
                extra = self._conn.get(keys.of(k, "extra"))
                expected = alive + (int(extra) if extra else 0)
                if len(joined) >= max(self._min, expected):
                    log.info("rendezvous round %d of run %r: every node still alive has "
                             "joined (%d of the last round's %d)", k, self._run_id, alive,
                             len(previous))
                    return False
            if now >= next_log:
                self._log_progress(k, deadline, "last_call_timeout")
                next_log = now + PROGRESS_INTERVAL

    def _joined_count(self, k: int, number: int) -> int:
        """How many nodes joined round k up to join number ``number``: the number itself,
        or with a token the join records up to it that verify (anyone can add to a counter)."""
        if not self.signs:
            return number
        return sum(self._record(self._keys.slot(k, i)) is not None for i in range(1, number + 1))

    def _joined_ids(self, k: int) -> set[str] | None:
        """The ids of the nodes that joined round k so far; None once it is closed."""
        joined = int(self._conn.get(self._keys.of(k, "joined")) or 0)
        if joined >= CLOSED:
            return None
        ids = set()
        for i in range(1, min(joined, self._max) + 1):
            record = self._record(self._keys.slot(k, i))
            if record is not None:
                ids.add(record["id"])
        return ids

    def _expected(self, k: int) -> int:
        """Nodes round k waits for without a last call: the last round's survivors and the
        nodes that arrived while it ran. Unknown (a first round): ``max_nodes``."""
        over = self._record(self._keys.of(k - 1, "over")) if k > 0 else None
        if over is None:
            return self._max
        survivors = over.get("survivors", self._max)
        extra = self._conn.get(self._keys.of(k, "extra"))
        return int(survivors) + (int(extra) if extra else 0)

    def _close(self, k: int) -> dict[str, Any]:
        """Close round k. The node whose add comes first publishes the outcome."""
        keys = self._keys
        total = self._conn.add(keys.of(k, "joined"), CLOSED)
        if total >= 2 * CLOSED:
            return self._read_done(k)
        count = min(total - CLOSED, self._max)
        slots = [keys.slot(k, i) for i in range(1, count + 1)]
        self._conn.wait(slots, time.monotonic() + self.timeouts.read_timeout)
        nodes = [r for s in slots if (r := self._record(s)) is not None]
        prev = self._previous(k)
        done: dict[str, Any] = {"round": k, "restart_count": self._restart_count(k, prev)}
        if len(nodes) < self._min:
            done["error"] = (
                f"only {len(nodes)} of the {self._min} nodes --nnodes asks for at least joined "
                f"within join_timeout={self.timeouts.join_timeout:g}s"
                f"{': ' + ', '.join(n['host'] for n in nodes) if nodes else ''}; start the "
                "missing nodes, or raise join_timeout with --rdzv-conf")
        else:
            done["nodes"] = self._assign_ranks(nodes, prev.get("nodes", []))
            budgets = [int(n["max_restarts"]) for n in nodes if "max_restarts" in n]
            if budgets:  # the job stops restarting once the smallest budget is spent
                done["max_restarts"] = min(budgets)
        self._conn.set(keys.of(k, "done"), self._encode(keys.of(k, "done"), done))
        self._put_first(keys.of(k, "min"), b"closed")  # wakes early joiners
        return done

    def _previous(self, k: int) -> dict[str, Any]:
        """The last round before k that ran (rounds abandoned while forming do not count)."""
        while k > 0:
            k -= 1
            done = self._record(self._keys.of(k, "done"))
            if done is None:
                return {}
            if "retry" not in done:
                return done
        return {}

    def _restart_count(self, k: int, prev: dict[str, Any]) -> int:
        """Job-wide: the last round's count, plus one if a worker failure ended it."""
        restarts = int(prev.get("restart_count", 0))
        over = self._record(self._keys.of(k - 1, "over")) if k > 0 else None
        if over is not None and over["reason"] == "failure":
            restarts += 1
        return restarts

    @staticmethod
    def _assign_ranks(nodes: list[dict[str, Any]], previous: list[dict[str, Any]],
                      ) -> list[dict[str, Any]]:
        """Nodes keep their last rank where it still exists; newcomers fill the gaps in the
        order they joined. Host names play no part."""
        world = len(nodes)
        old = {n["id"]: rank for rank, n in enumerate(previous)}
        ranked: list[dict[str, Any] | None] = [None] * world
        rest = []
        for node in nodes:
            rank = old.get(node["id"])
            if rank is not None and rank < world and ranked[rank] is None:
                ranked[rank] = node
            else:
                rest.append(node)
        free = iter(i for i, n in enumerate(ranked) if n is None)
        for node in rest:
            ranked[next(free)] = node
        return [n for n in ranked if n is not None]

    def _read_done(self, k: int) -> dict[str, Any]:
        key = self._keys.of(k, "done")
        deadline = time.monotonic() + self.timeouts.close_timeout
        while self._conn.wait([key], deadline):
            done = self._record(key)
            if done is not None:
                return done
            time.sleep(0.1)  # a forged outcome: wait for the closing node to overwrite it
        raise RendezvousTimeoutError(
            f"round {k} of run {self._run_id!r} was closed but not published within "
            f"close_timeout={self.timeouts.close_timeout:g}s; the closing node may have died")

    def _enter(self, k: int, done: dict[str, Any]) -> RendezvousInfo:
        if "error" in done:
            raise RendezvousTimeoutError(f"rendezvous of run {self._run_id!r}: {done['error']}")
        nodes = done["nodes"]
        ranks = [i for i, n in enumerate(nodes) if n["id"] == self.node_id]
        if not ranks:
            raise RendezvousStateError(
                f"round {k} of run {self._run_id!r} closed without this node's record "
                f"({self.node_id}); it may have been too slow to write it")
        self._round, self._done, self._rank = k, done, ranks[0]
        master = nodes[0]
        log.info("rendezvous round %d of run %r complete: node rank %d of %d, restart count %d",
                 k, self._run_id, self._rank, len(nodes), done["restart_count"])
        self._start_keep_alive()
        return RendezvousInfo(rank=self._rank, world_size=len(nodes), master_addr=master["addr"],
                              master_port=int(master["port"]), round=k,
                              restart_count=int(done["restart_count"]),
                              node_sizes=tuple(int(n.get("workers", 1)) for n in nodes),
                              node_roles=tuple(str(n.get("role", self.role)) for n in nodes))

    def _wait_as_spare(self, k: int, running: bool) -> None:
        """Round k runs (or is full): count this node for round k+1, ask the running nodes to
        make room if the round is below max_nodes, and wait for the round to end."""
        keys = self._keys
        done = self._read_done(k)
        if "retry" in done:  # abandoned while forming: its nodes move on to the next round
            self._conn.add(keys.of(k + 1, "extra"), 1)
            return
        ended = self._record(keys.of(k, "over"))
        if ended is not None:
            end = RoundEnd.from_dict(ended)
            if not end.restart:
                raise RendezvousClosedError(
                    f"run {self._run_id!r} at {self._store.endpoint} has already ended "
                    f"({end.reason}: {end.message}); start a new job with a new --rdzv-id")
            # The round is over and its nodes are re-forming: join them in the next one.
            self._conn.add(keys.of(k + 1, "extra"), 1)
            return
        self._conn.add(keys.of(k + 1, "extra"), 1)
        self._spare_for = k + 1
        world = len(done.get("nodes", []))
        if "error" in done:
            self._spare_for = None
            return
        if running and world < self._max:
            self._post_end(RoundEnd("join", f"a node ({self._hostname}) arrived; growing from "
                                    f"{world} nodes", restart=True, survivors=world), k)
        else:
            log.info("round %d of run %r is full (%d of max %d nodes); this node waits as a "
                     "spare", k, self._run_id, world, self._max)
        end = self._wait_for_round_end(k, done.get("nodes", []))
        self._spare_for = None
        if end.reason == "succeeded":
            raise RendezvousGracefulExitError(
                f"run {self._run_id!r} finished while this node waited to join")
        if not end.restart:
            raise RendezvousClosedError(f"run {self._run_id!r} ended while this node waited to "
                                        f"join: {end.message}")

    def _wait_for_round_end(self, k: int, nodes: list[dict[str, Any]]) -> RoundEnd:
        """Wait for round k's ``over`` key: how it ended. If every node of the round falls
        silent (all were killed), nobody is left to write it: end the round here, so spares
        take over."""
        over, t = self._keys.of(k, "over"), self.timeouts
        pulses = self._pulses()
        for node in nodes:
            pulses.start(node["id"])
        next_log = time.monotonic() + PROGRESS_INTERVAL * 12
        while True:
            if self._conn.wait([over], time.monotonic() + t.keep_alive_interval):
                end = self._record(over)
                if end is not None:
                    return RoundEnd.from_dict(end)
                time.sleep(t.keep_alive_interval)  # forged: the round still runs
            now = time.monotonic()
            alive = sum(pulses.running(n["id"], self._conn.read_beat(self._keys.beat(n["id"])),
                                       now) for n in nodes)
            if nodes and not alive:
                self._post_end(RoundEnd("dead", f"every node of round {k} stopped sending "
                                        "heartbeats; the waiting nodes take over",
                                        restart=True, survivors=0), k)
            if now >= next_log:
                log.info("waiting as a spare for round %d of run %r to end", k, self._run_id)
                next_log = now + PROGRESS_INTERVAL * 12

    def _wait_progress(self, k: int, key: str, deadline: float, timeout_name: str) -> bool:
        """Wait for ``key``; say every few seconds who joined and how long is left."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._conn.wait([key], time.monotonic() + min(left, PROGRESS_INTERVAL)):
                if self._genuine(key):
                    return True
                time.sleep(min(left, 0.5))  # forged: wait for the real one to replace it
                continue
            if left > PROGRESS_INTERVAL:
                self._log_progress(k, deadline, timeout_name)

    def _log_progress(self, k: int, deadline: float, timeout_name: str) -> None:
        joined = self._conn.get(self._keys.of(k, "joined"))
        count = min(int(joined or 0) % CLOSED, self._max)
        hosts = []
        for i in range(1, count + 1):
            record = self._record(self._keys.slot(k, i))
            if record is not None:
                hosts.append(record.get("host", "?"))
        log.info("rendezvous round %d of run %r: %d joined (min %d, max %d): %s; %.0f s left "
                 "before %s", k, self._run_id, count, self._min, self._max,
                 ", ".join(hosts) or "-", max(0.0, deadline - time.monotonic()), timeout_name)

    # -- the running round: keep-alive and watch --------------------------------------------

    def _start_keep_alive(self) -> None:
        self._stop = threading.Event()
        self._left = False
        with self._lock:
            store = self._connections.pop()
        self._resting = threading.Event()
        self._thread = threading.Thread(target=self._keep_alive, name="pliant-keep-alive",
                                        args=(self._stop, self._resting, store), daemon=True)
        self._thread.start()

    def _stop_keep_alive(self, wait: bool = True) -> None:
        """Stop the round's keep-alive thread. Without ``wait`` it finishes its current store
        wait (at most half a keep-alive interval) on its own, and can no longer touch
        ``_end``: the next round must not inherit the last one's outcome. A thread that rests
        (its round is over) stops at once and is always joined: its connection is then free
        for the next round's thread."""
        with self._lock:
            self._stop.set()
            self._end = None if not wait else self._end
        join = wait or self._resting.is_set()
        if join and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        elif self._thread is not None:
            self._detached = [t for t in self._detached if t.is_alive()] + [self._thread]
        self._thread = None

    def _keep_alive(self, stop: threading.Event, resting: threading.Event,
                    conn: Connection) -> None:
        assert self._done is not None and self._round is not None
        k, t = self._round, self.timeouts
        over = self._keys.of(k, "over")
        nodes = self._done["nodes"]
        ring = Ring(nodes, self._rank, self._keys, conn.expiring_beats, t.dead_after,
                    t.keep_alive_interval)
        healthy = False
        try:
            ended = keep_alive(conn, self._keys.beat(self.node_id), over, ring,
                               t.keep_alive_interval, stop,
                               lambda node: self._declare_dead(conn, k, node, len(nodes)),
                               lambda: self._record(over, conn) is not None)
            end = self._end_from(over, conn) if ended else None
            healthy = True
            if end is not None:
                self._set_end(end, stop)
                resting.set()
                # Between rounds: beat, without watching, until the next round (or shutdown)
                # stops this thread.
                while not stop.wait(t.keep_alive_interval):
                    conn.beat(self._keys.beat(self.node_id))
        except RendezvousError as exc:
            self._set_end(RoundEnd("store", str(exc), restart=False), stop)
        finally:
            if healthy:  # the next round's thread can use it
                with self._lock:
                    self._connections.append(conn)
            else:
                conn.close()

    def _declare_dead(self, conn: Connection, k: int, node: dict[str, Any], world: int,
                      ) -> None:
        survivors = world - 1 - self._finished(k, conn)
        who = f"node {node['host']} ({node['id']})"
        silence = f"sent no heartbeat for {self.timeouts.dead_after:g}s"
        if survivors >= self._min:
            end = RoundEnd("dead", f"{who} {silence}; continuing with {survivors} nodes",
                           restart=True, survivors=survivors)
        else:
            end = RoundEnd("lost", f"{who} {silence}; {survivors} node(s) remain but --nnodes "
                           f"needs at least {self._min}", restart=False, survivors=survivors)
        log.warning("%s", end.message)
        over = self._keys.of(k, "over")
        self._put_first(over, self._encode(over, asdict(end)), conn, sealed=True)

    # -- ending a round ------------------------------------------------------------------

    def _post_end(self, end: RoundEnd, k: int | None = None) -> RoundEnd:
        k = self._round if k is None else k
        if k is None:
            return end
        key = self._keys.of(k, "over")
        stored = self._put_first(key, self._encode(key, asdict(end)), sealed=True)
        winner = RoundEnd.from_dict(self._decode(key, stored))
        if k == self._round:
            self._set_end(winner, None)
        return winner

    def _end_from(self, key: str, conn: Connection | None = None) -> RoundEnd:
        value = (conn or self._conn).get(key)
        if value is None:
            raise RendezvousStateError(f"{key} vanished from the store at {self._store.endpoint}")
        return RoundEnd.from_dict(self._decode(key, value))

    def _set_end(self, end: RoundEnd, stop: threading.Event | None) -> None:
        """Record how the round ended; ``stop`` is the keep-alive thread's, which may have been
        told to stop (its round is over for this node) before it got here."""
        with self._lock:
            if stop is not None and stop.is_set():
                return
            if self._end is None:
                self._end = end
            wake = self._wake
        if wake is not None:
            wake()

    def _withdraw(self) -> None:
        """Leaving while counted in a round that has not started (a signal during the wait):
        take this node out, so the others do not start a round with it."""
        if self._spare_for is not None:
            self._conn.add(self._keys.of(self._spare_for, "extra"), -1)
            self._spare_for = None
        if self._joining is None:
            return
        k, self._joining = self._joining, None
        keys = self._keys
        total = self._conn.add(keys.of(k, "joined"), CLOSED)
        if total < 2 * CLOSED:
            # This node closed the forming round: abandon it, and the others move on to the next
            # round at once (the ``over`` key first: it tells the next round whom to expect).
            joined = min(total - CLOSED, self._max)
            why = f"node {self._hostname} ({self.node_id}) left while it was forming"
            self._post_end(RoundEnd("left", why, restart=True, survivors=joined - 1), k)
            done: dict[str, Any] = {"round": k, "retry": why,
                    "restart_count": self._restart_count(k, self._previous(k))}
            self._conn.set(keys.of(k, "done"), self._encode(keys.of(k, "done"), done))
            self._put_first(keys.of(k, "min"), b"closed")
            return
        try:
            done = self._read_done(k)
        except RendezvousTimeoutError:
            return
        if any(n["id"] == self.node_id for n in done.get("nodes", [])):
            # Too late: the round started with this node. End it now rather than let the
            # others wait out the heartbeat timeout.
            self._round, self._done = k, done
            self._post_departure()

    def _post_departure(self) -> None:
        """This node stops without having finished (a signal, an error): tell the others now
        rather than let them wait out the heartbeat timeout."""
        survivors = self._survivors() - 1
        who = f"node {self._hostname} ({self.node_id}) left the job before finishing"
        if survivors >= self._min:
            end = RoundEnd("left", f"{who}; continuing with {survivors} nodes", restart=True,
                           survivors=survivors)
        else:
            end = RoundEnd("left", f"{who}; {survivors} node(s) remain but --nnodes needs at "
                           f"least {self._min}", restart=False, survivors=survivors)
        self._post_end(end)

    def _survivors(self) -> int:
        if self._round is None or self._done is None:
            return 0
        return len(self._done["nodes"]) - self._finished(self._round, self._conn)

    def _finished(self, k: int, conn: Connection) -> int:
        """How many nodes of round k finished. With a token, the ``succeeded`` counter (which
        anyone can add to) is checked against each node's signed ``ok`` record."""
        count = conn.get(self._keys.of(k, "succeeded"))
        if not count or not self.signs or self._done is None:
            return int(count) if count else 0
        return sum(self._plain(self._keys.of(k, f"ok/{n['id']}"), conn) is not None
                   for n in self._done["nodes"])

    def _leave(self) -> None:
        """Stop counting as alive: the node watching this one moves on instead of calling it
        dead. Only called once this node's part in the round is over."""
        if not self._left and self._round is not None:
            self._left = True
            self._conn.mark_left(self._keys.beat(self.node_id))

    def _clean_up(self) -> None:
        """The job is over and every other node of its last round has left: delete the run's
        keys, so that a store which outlives the job (etcd) keeps nothing of it. Each node
        marks itself gone before it looks at the others, so the last one out sees all marks."""
        if self._round is None or self._done is None:
            return
        over = self._record(self._keys.of(self._round, "over"))
        if over is None or RoundEnd.from_dict(over).restart:
            return  # the job goes on without this node
        for node in self._done["nodes"]:
            if node["id"] != self.node_id:
                beat = self._conn.read_beat(self._keys.beat(node["id"]))
                if beat.count is not None and not beat.left:
                    return  # still there; on a counter store also a node that died
        self._conn.delete_prefix(self._keys.prefix)
        log.debug("deleted the keys of run %r from %s", self._run_id, self._store.endpoint)

    def _serve_until_others_leave(self) -> None:
        """This agent hosts the store: stay until every other node has left or died."""
        t = self.timeouts
        pulses = self._pulses()
        told = False
        while True:
            current = self._plain(self._keys.current)
            k = int(current) if current else 0
            nodes = (self._record(self._keys.of(k, "done")) or {}).get("nodes", [])
            others = []
            for node in nodes:
                if node["id"] == self.node_id:
                    continue
                beat = self._conn.read_beat(self._keys.beat(node["id"]))
                if pulses.running(node["id"], beat, time.monotonic()):
                    others.append(node["host"])
            if not others:
                return
            if not told:
                log.info("keeping the rendezvous store at %s up until %d other node(s) finish: "
                         "%s", self._store.endpoint, len(others), ", ".join(others))
                told = True
            time.sleep(t.keep_alive_interval)  # an exit barrier, not a rendezvous: polling is fine

    def _pulses(self) -> Pulses:
        return Pulses(self._conn.expiring_beats, self.timeouts.dead_after)

    # -- the job's shape and where it stands ---------------------------------------------

    def _check_meta(self) -> None:
        if self._checked_meta:
            return
        mine = self._encode(self._keys.meta, {"min": self._min, "max": self._max})
        stored = self._conn.compare_set(self._keys.meta, None, mine)
        if stored != mine:
            try:
                meta = self._decode(self._keys.meta, stored)
            except ForgedValueError as exc:
                raise RendezvousStateError(
                    f"this node cannot join run {self._run_id!r} at {self._store.endpoint}: "
                    f"{exc}. Check that every node reads the same token_file") from None
            raise RendezvousStateError(
                f"agents disagree on --nnodes for run {self._run_id!r}: this agent has "
                f"{self._min}:{self._max}, but the rendezvous at {self._store.endpoint} was "
                f"started with {meta.get('min')}:{meta.get('max')}; give every agent the same "
                "--nnodes, or use another --rdzv-id")
        self._checked_meta = True

    def _current_round(self) -> int:
        value = self._plain(self._keys.current)
        if value is None:
            return 0
        try:
            return int(value)
        except ValueError:
            raise RendezvousStateError(
                f"{self._keys.current} at {self._store.endpoint} holds {value[:60]!r}, not a "
                "round number; the store is shared with something else, or corrupt") from None

    # -- values, signed with the job's token when it has one ----------------------------

    def _encode(self, key: str, record: dict[str, Any]) -> bytes:
        return self._seal.wrap(key, encode(record))

    def _decode(self, key: str, value: bytes) -> dict[str, Any]:
        """The record ``value`` read at ``key``; ``ForgedValueError`` if it does not verify."""
        return decode(key, self._seal.unwrap(key, value), self._store.endpoint)

    def _record(self, key: str, conn: Connection | None = None) -> dict[str, Any] | None:
        """The record at ``key``; None when it is missing, or does not verify (logged and
        counted)."""
        return self._verified(key, self._decode, conn)

    def _plain(self, key: str, conn: Connection | None = None) -> bytes | None:
        """The bytes at ``key`` (a round number, a time); None when missing or forged."""
        return self._verified(key, self._seal.unwrap, conn)

    def _verified(self, key: str, opener: Callable[[str, bytes], T],
                  conn: Connection | None) -> T | None:
        value = (conn or self._conn).get(key)
        if value is None:
            return None
        try:
            return opener(key, value)
        except ForgedValueError as exc:
            self._seal.reject(exc)
            return None

    def _genuine(self, key: str) -> bool:
        """Whether the value at ``key`` verifies (always, without a token)."""
        return not self.signs or self._plain(key) is not None

    def _put_first(self, key: str, value: bytes, conn: Connection | None = None,
                   sealed: bool = False) -> bytes:
        """Write ``value`` at ``key`` unless a value is there (first writer wins); the value
        there afterwards. A value there that does not verify is swapped out: a stranger
        cannot take a first-writer-wins key from the job."""
        conn = conn or self._conn
        value = value if sealed else self._seal.wrap(key, value)
        stored = conn.compare_set(key, None, value)
        for _ in range(3):
            try:
                self._seal.unwrap(key, stored)
                return stored
            except ForgedValueError as exc:
                self._seal.reject(exc)
                stored = conn.compare_set(key, stored, value)
        return stored


def _close_at_exit(ref: weakref.ref[ElasticRendezvousHandler]) -> None:
    handler = ref()
    if handler is not None:
        handler._release()

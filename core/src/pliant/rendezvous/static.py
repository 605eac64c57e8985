"""The static rendezvous: torchrun's default, a fixed set of nodes with fixed ranks.

Each node is told the number of nodes (``--nnodes N``) and its own rank (``--node-rank``).
Node rank 0's agent hosts a TCPStore at ``--master-addr:--master-port`` (or
``--rdzv-endpoint``), the other agents connect to it, and the workers share it, as under
torchrun: ``MASTER_ADDR``/``MASTER_PORT`` are that address and port, and
``TORCHELASTIC_USE_AGENT_STORE=True`` makes ``init_process_group`` connect to it instead of
starting a store of its own. One port serves the whole job.

What pliant adds to torch's: every round (the first, and one after each worker failure) is a
barrier in which the nodes say how many workers they run and in which role, so the ranks are
torch's (``_assign_worker_ranks``) on every node; a failure on one node ends the round on
every node, so all of them restart together; before a restarted round starts, node rank 0
deletes what the last round's workers left in the store, so that no worker reads a dead
worker's address; and node rank 0 keeps the store up at exit until the others are done
(torch's exit barrier). Membership never changes: a node that is missing is waited for.

Keys, under ``pliant/static/<run_id>/``: ``<k>/node/<rank>`` (a node's record in round k),
``<k>/go`` (round k is formed: the records in rank order), ``<k>/over`` (why round k
ended: the first writer wins), ``<k>/wake/<rank>`` (what the node's watcher waits on),
``<k>/succeeded/<rank>``, ``round`` (the last round formed,
for an agent that starts late), ``left/<rank>`` (the node's agent has finished).

torch is imported only when a node first joins, so choosing ``static`` costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from pliant.errors import ConfigError
from pliant.rendezvous.api import (
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    RendezvousStateError,
    RendezvousTimeoutError,
    RoundEnd,
)
from pliant.rendezvous.net import bindable_here, split_host_port
from pliant.settings import Setting, parse_bool, parse_float, parse_int, parse_str

__all__ = ["DEFAULT_PORT", "STATIC_SETTINGS", "StaticRendezvousHandler",
           "create_static_handler"]

log = logging.getLogger("pliant.rendezvous")

#: torchrun's default ``--master-port``.
DEFAULT_PORT = 29500
#: Where the agents' keys live; the rest of the store belongs to the workers.
PREFIX = "pliant/static/"
#: Seconds one wait of the round's watcher lasts (it is woken, never polls).
_WATCH_TIMEOUT = 24 * 3600.0
#: Seconds node rank 0 waits for the others at exit once a round ended in failure (they
#: only have to read why).
_GRACE = 10.0

_COMPAT = "Accepted so that torchrun command lines run unchanged; it has no effect here."

STATIC_SETTINGS: tuple[Setting, ...] = (
    Setting("join_timeout", parse_float(minimum=0.0), None,
            "Seconds to wait for node rank 0's store and for every node, at start and after "
            "each restart (default: timeout, else 600)."),
    Setting("timeout", parse_float(minimum=0.0), 600.0,
            "torch's name for join_timeout under static (its TCPStore timeout); join_timeout "
            "wins when both are given."),
    Setting("rank", parse_int(minimum=0), None,
            "This node's rank, torch's key for it (torchrun sets it from --node-rank, which "
            "wins when both are given)."),
    Setting("exit_timeout", parse_float(minimum=0.0), 300.0,
            "Seconds node rank 0 keeps the store up, once its workers are done, for the other "
            "nodes to finish (torch's exit barrier)."),
    Setting("read_timeout", parse_float(minimum=0.0), 60.0, _COMPAT),
    Setting("last_call_timeout", parse_float(minimum=0.0), 0.0, _COMPAT),
    Setting("close_timeout", parse_float(minimum=0.0), 0.0, _COMPAT),
    Setting("keep_alive_interval", parse_float(minimum=0.0), 5.0, _COMPAT),
    Setting("keep_alive_max_attempt", parse_int(minimum=1), 3, _COMPAT),
    Setting("heartbeat_timeout", parse_float(minimum=0.0), 30.0, _COMPAT),
    Setting("is_host", parse_bool, None, _COMPAT + " Node rank 0 hosts the store."),
    Setting("store_type", parse_str, "tcp", _COMPAT + " The store is a TCPStore."),
    Setting("use_libuv", parse_bool, True, _COMPAT),
)


class StaticRendezvousHandler(RendezvousHandler):
    """Node ``rank`` of ``world_size``; node rank 0 hosts the store at ``host:port``."""

    polls_membership = False

    def __init__(self, run_id: str, host: str, port: int, rank: int, world_size: int,
                 join_timeout: float = 600.0, exit_timeout: float = 300.0,
                 where: str = "", hint: str = "") -> None:
        """``where``: the store's address and where it came from; ``hint``: what to say too
        when it cannot be reached."""
        self._run_id = run_id
        self._host, self._port = host, port
        self._rank, self._world = rank, world_size
        self._join_timeout, self._exit_timeout = join_timeout, exit_timeout
        self._where, self._hint = where or f"{host}:{port}", hint
        self._prefix = f"{PREFIX}{run_id}/"
        self._id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._store: Any = None
        self._round: int | None = None
        self._end: RoundEnd | None = None
        self._succeeded = False
        self._wake: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- torch's interface -------------------------------------------------------------

    def get_backend(self) -> str:
        return "static"

    def get_run_id(self) -> str:
        return self._run_id

    @property
    def use_agent_store(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return False

    def set_closed(self) -> None:
        """Nothing to close: a static job ends when its nodes do (as torch's)."""

    def num_nodes_waiting(self) -> int:
        return 0

    def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round: every node's record, then node rank 0's ``go``."""
        self._stop_watching()
        store = self._open()
        try:
            return self._join(store)
        except RuntimeError as exc:  # torch's store errors: node rank 0 went away
            raise self._lost(exc) from None

    def _join(self, store: Any) -> RendezvousInfo:
        k = self._round + 1 if self._round is not None else self._first_round(store)
        record = {"id": self._id, "host": socket.gethostname(),
                  "workers": self.local_world_size, "role": self.role}
        mine = json.dumps(record)
        held = _text(store.compare_set(self._key(k, "node", self._rank), "", mine))
        if held != mine:
            other = json.loads(held)
            raise RendezvousStateError(
                f"node rank {self._rank} of run {self._run_id!r} is already taken by the agent "
                f"on {other.get('host', '?')} ({other.get('id', '?')}); give each node its own "
                "--node-rank from 0 to --nnodes - 1")
        if self._rank == 0:
            nodes = self._gather(store, k)
            if k > 0:
                self._clear_workers_keys(store)
            store.set(self._key("round"), str(k))
            store.set(self._key(k, "go"), json.dumps(nodes))
        else:
            nodes = self._wait_go(store, k)
        if nodes[self._rank].get("id") != self._id:
            raise RendezvousStateError(
                f"round {k} of run {self._run_id!r} was formed with another agent as node rank "
                f"{self._rank}; give each node its own --node-rank")
        self._round, self._end, self._succeeded = k, None, False
        log.info("static rendezvous round %d of run %r complete: node rank %d of %d, store at "
                 "%s:%d", k, self._run_id, self._rank, self._world, self._host, self._port)
        self._watch(k)
        return RendezvousInfo(
            rank=self._rank, world_size=self._world, master_addr=self._host,
            master_port=self._port, round=k, store=store,
            node_sizes=tuple(int(n["workers"]) for n in nodes),
            node_roles=tuple(str(n["role"]) for n in nodes))

    def shutdown(self) -> bool:
        """Say this node is done; node rank 0 keeps the store up until the others are."""
        self._stop_watching()
        store, self._store = self._store, None
        if store is None:
            return True
        try:
            if self._round is not None and self._end is None and not self._succeeded:
                self._post_end(store, RoundEnd(
                    "left", f"the agent of node rank {self._rank} ({socket.gethostname()}) "
                    "stopped before its workers finished", restart=False))
            store.set(self._key("left", self._rank), "1")
            if self._rank == 0 and self._world > 1 and self._round is not None:
                self._wait_for_others(store)  # no round formed: nobody runs on the store
        except (RuntimeError, RendezvousError) as exc:  # the store is gone: nobody to tell
            log.debug("static rendezvous shutdown: %s", exc)
        return True

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
        """A worker here failed: end the round on every node (the first report wins)."""
        store = self._store
        message = (f"worker rank {failure.get('rank', '?')} on "
                   f"{failure.get('hostname', socket.gethostname())} failed: "
                   f"{failure.get('message', '')}")[:1000]
        if store is None or self._round is None:
            return RoundEnd("failure" if restart else "failed", message, restart, failure)
        self._stop_watching()
        try:
            finished = [r for r in range(self._world)
                        if store.check([self._key(self._round, "succeeded", r)])]
            if restart and finished:
                restart = False
                message += (f"; no restart: node rank(s) {', '.join(map(str, finished))} "
                            "already finished, and a static job cannot run without them")
            return self._post_end(store, RoundEnd("failure" if restart else "failed", message,
                                                  restart, failure, self._world))
        except RuntimeError as exc:
            self._end = RoundEnd("store", str(self._lost(exc)), restart=False)
            return self._end

    def report_success(self) -> None:
        self._succeeded = True
        self._stop_watching()
        if self._store is not None and self._round is not None:
            with suppress(RuntimeError):  # a lost store is reported by shutdown, if at all
                self._store.set(self._key(self._round, "succeeded", self._rank), "1")

    # -- the store ----------------------------------------------------------------------------

    def _key(self, *parts: object) -> str:
        return self._prefix + "/".join(map(str, parts))

    def _open(self) -> Any:
        """The store: node rank 0 starts it (and is its first client), the others connect."""
        if self._store is not None:
            return self._store
        tcpstore = _tcpstore()
        timeout = timedelta(seconds=self._join_timeout)
        try:
            if self._rank == 0:
                self._store = tcpstore(self._host, self._port, self._world, True, timeout,
                                       wait_for_workers=False, multi_tenant=True)
                log.info("node rank 0 hosts the static rendezvous store at %s", self._where)
            else:
                self._store = tcpstore(self._host, self._port, self._world, False, timeout)
        except RuntimeError as exc:
            if self._rank == 0:
                raise RendezvousConnectionError(
                    f"node rank 0 cannot start the store at {self._where}: {_first_line(exc)}; "
                    "choose a free --master-port, or check that the address is this "
                    "machine's") from None
            raise RendezvousConnectionError(
                f"cannot reach node rank 0's store at {self._where} within "
                f"join_timeout={self._join_timeout:g}s: {_first_line(exc)}; check that the "
                "agent with --node-rank 0 runs there and that the port is open"
                f"{self._hint}") from None
        return self._store

    def _first_round(self, store: Any) -> int:
        """Where an agent joins: round 0, or after the round that runs (it restarted)."""
        if not store.check([self._key("round")]):
            return 0  # round 0 is still forming
        k = int(_text(store.get(self._key("round"))))
        over = self._key(k, "over")
        log.info("run %r already runs round %d; waiting for it to end to join the next",
                 self._run_id, k)
        if not self._wait(store, [over], self._join_timeout):
            raise RendezvousTimeoutError(
                f"run {self._run_id!r} at {self._host}:{self._port} already runs round {k} with "
                f"every node, node rank {self._rank} included, and it did not end within "
                f"join_timeout={self._join_timeout:g}s; for another job give another "
                "--master-port or --rdzv-id")
        end = RoundEnd.from_dict(json.loads(_text(store.get(over))))
        if not end.restart:
            raise RendezvousClosedError(f"run {self._run_id!r} has ended ({end.reason}: "
                                        f"{end.message}); start it again with a new --rdzv-id")
        return k + 1

    def _gather(self, store: Any, k: int) -> list[dict[str, Any]]:
        keys = [self._key(k, "node", r) for r in range(self._world)]
        if not self._wait(store, keys, self._join_timeout):
            missing = [r for r, key in enumerate(keys) if not store.check([key])]
            raise RendezvousTimeoutError(
                f"static rendezvous round {k} of run {self._run_id!r}: node rank(s) "
                f"{', '.join(map(str, missing))} of --nnodes {self._world} did not join within "
                f"join_timeout={self._join_timeout:g}s; start them with --master-addr and "
                f"--master-port naming {self._host}:{self._port}")
        return [json.loads(_text(value)) for value in store.multi_get(keys)]

    def _wait_go(self, store: Any, k: int) -> list[dict[str, Any]]:
        key = self._key(k, "go")
        if not self._wait(store, [key], self._join_timeout):
            raise RendezvousTimeoutError(
                f"static rendezvous round {k} of run {self._run_id!r}: not every one of the "
                f"--nnodes {self._world} nodes joined within join_timeout="
                f"{self._join_timeout:g}s (node rank 0 at {self._host}:{self._port} waits for "
                "them); start the missing nodes")
        nodes: list[dict[str, Any]] = json.loads(_text(store.get(key)))
        return nodes

    def _clear_workers_keys(self, store: Any) -> None:
        """What the last round's workers wrote (their addresses, barrier counters) goes, so
        that the next round's workers start from an empty store, as on a fresh one."""
        stale = [key for key in store.list_keys() if not key.startswith(PREFIX)]
        for key in stale:
            store.delete_key(key)
        log.debug("deleted %d key(s) the last round's workers left", len(stale))

    def _wait(self, store: Any, keys: list[str], timeout: float) -> bool:
        try:
            store.wait(keys, timedelta(seconds=max(timeout, 0.001)))
            return True
        except RuntimeError as exc:
            if "timeout" in str(exc).lower():
                return False
            raise self._lost(exc) from None

    def _lost(self, exc: BaseException) -> RendezvousConnectionError:
        return RendezvousConnectionError(
            f"lost node rank 0's store at {self._where}: {_first_line(exc)}; the agent with "
            "--node-rank 0 has stopped or cannot be reached")

    def _post_end(self, store: Any, end: RoundEnd) -> RoundEnd:
        assert self._round is not None
        mine = json.dumps(asdict(end))
        held = _text(store.compare_set(self._key(self._round, "over"), "", mine))
        if held == mine:  # this node ended the round: wake every node's watcher
            store.multi_set([self._key(self._round, "wake", r) for r in range(self._world)],
                            ["over"] * self._world)
        self._end = end if held == mine else RoundEnd.from_dict(json.loads(held))
        return self._end

    def _wait_for_others(self, store: Any) -> None:
        keys = [self._key("left", r) for r in range(1, self._world)]
        waiting = [r for r, key in enumerate(keys, 1) if not store.check([key])]
        if not waiting:
            return
        timeout = self._exit_timeout if self._end is None else min(self._exit_timeout, _GRACE)
        log.info("keeping the static rendezvous store at %s:%d up until node rank(s) %s finish "
                 "(at most %gs)", self._host, self._port, ", ".join(map(str, waiting)), timeout)
        if not self._wait(store, keys, timeout):
            left = [r for r, key in enumerate(keys, 1) if not store.check([key])]
            log.warning("node rank(s) %s did not finish within %gs; closing the store",
                        ", ".join(map(str, left)), timeout)

    # -- watching the round ---------------------------------------------------------------

    def _watch(self, k: int) -> None:
        """A thread waits on this node's ``<k>/wake/<rank>`` key: whoever ends round k sets
        every node's, and this node sets its own to stop watching."""
        self._stop = stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch_round, args=(self._store.clone(), k,
                                                                          stop),
                                         daemon=True, name=f"pliant-static-round-{k}")
        self._watcher.start()

    def _watch_round(self, store: Any, k: int, stop: threading.Event) -> None:
        try:
            while not self._wait(store, [self._key(k, "wake", self._rank)], _WATCH_TIMEOUT):
                pass
            if stop.is_set():
                return
            end = RoundEnd.from_dict(json.loads(_text(store.get(self._key(k, "over")))))
        except RendezvousConnectionError as exc:
            if stop.is_set():
                return
            end = RoundEnd("store", str(exc), restart=False)
        with self._lock:
            if self._end is None:
                self._end = end
            wake = self._wake
        if wake is not None:
            wake()

    def _stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        self._stop.set()
        if self._store is not None and self._round is not None:
            with suppress(RuntimeError):
                self._store.set(self._key(self._round, "wake", self._rank), "stop")
        watcher.join(timeout=5.0)


def create_static_handler(params: RendezvousParameters, settings: Mapping[str, Any] | None = None,
                          ) -> StaticRendezvousHandler:
    """The factory: torchrun's ``static`` from ``params`` (``node_rank``, or torch's
    ``rank``; ``master_addr``/``master_port`` when there is no endpoint)."""
    settings = settings or {}
    sources: Mapping[str, str] = params.get("sources") or {}

    def named(key: str, flag: str, value: object = None) -> str:
        """``--flag VALUE``, and where it came from unless that was the flag itself."""
        source = sources.get(key, "")
        shown = flag if value is None else f"{flag} {value}"
        if source == "default":
            return f"{shown} (the default)"
        return shown if not source or source.startswith("flag ") else f"{shown} (from {source})"

    if params.min_nodes != params.max_nodes:
        raise ConfigError(
            f"{named('nnodes', '--nnodes', f'{params.min_nodes}:{params.max_nodes}')}: the "
            "static rendezvous runs a fixed number of nodes; give --nnodes N, or choose an "
            "elastic backend with --rdzv-backend c10d")
    world = params.max_nodes
    raw_rank = params.get("node_rank", settings.get("rank"))
    if raw_rank is None:
        raw_rank = params.get("rank", 0)
    try:
        rank = int(raw_rank)
    except (TypeError, ValueError):
        raise ConfigError(f"{named('node_rank', '--node-rank', repr(raw_rank))} is not a "
                          "number") from None
    if not 0 <= rank < world:
        raise ConfigError(
            f"{named('node_rank', '--node-rank', rank)} is not a node rank of --nnodes "
            f"{world}: give each node a rank from 0 to {world - 1}")
    if params.endpoint.strip():
        where = "from " + named("rdzv_endpoint", "--rdzv-endpoint")
        host, port = split_host_port(params.endpoint, -1, params.endpoint)
        if port == -1:
            raise ConfigError(f"{named('rdzv_endpoint', '--rdzv-endpoint', repr(params.endpoint))}"
                              " has no port; the static rendezvous needs HOST:PORT, where node "
                              "rank 0 hosts its store")
    else:
        host = str(params.get("master_addr") or "127.0.0.1")
        port = int(params.get("master_port") or DEFAULT_PORT)
        where = f"from {named('master_addr', '--master-addr')} and " \
                f"{named('master_port', '--master-port')}"
    join_timeout = settings.get("join_timeout")
    if join_timeout is None:
        join_timeout = settings.get("timeout", 600.0)
    if rank == 0 and world > 1 and "node_rank" not in params.config and \
            "rank" not in params.config and settings.get("rank") is None and \
            not _is_this_machine(host):
        raise ConfigError(
            f"no --node-rank was given, so this node is node rank 0 and would host the store, "
            f"but {host!r} ({where}) is not an address of this machine; give each node its "
            f"--node-rank (0 on {host}), or choose --rdzv-backend c10d for node ranks in the "
            "order the nodes join")
    hint = ""
    if rank > 0 and not params.endpoint.strip() and not params.get("master_addr"):
        hint = (f"; --master-addr was not given, so node rank {rank} looked for node rank 0 "
                f"on {host} (torchrun's default): give node rank 0's address")
    return StaticRendezvousHandler(params.run_id, host, port, rank, world,
                                   join_timeout=float(join_timeout),
                                   exit_timeout=float(settings.get("exit_timeout", 300.0)),
                                   where=f"{host}:{port} ({where})", hint=hint)


def _is_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine (one of its addresses can be bound here). A name
    that does not resolve is left for the store to report."""
    try:
        addresses = {str(i[4][0]) for i in socket.getaddrinfo(host, None,
                                                              type=socket.SOCK_STREAM)}
    except OSError:
        return True
    return bindable_here(addresses)


def _tcpstore() -> Any:
    # Store waits time out by design here; keep torch's C++ layer from warning about each one
    # (the workers inherit the environment, so it is restored at once).
    before = os.environ.get("TORCH_CPP_LOG_LEVEL")
    if before is None:
        os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    try:
        from torch._C._distributed_c10d import TCPStore
    finally:
        if before is None:
            del os.environ["TORCH_CPP_LOG_LEVEL"]
    return TCPStore


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".?! ")

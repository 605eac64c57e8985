"""``pliant status``: where a running job stands, read from its rendezvous store.

An operator asks a job on a cluster how it is doing without touching it: which
round runs, which nodes are in it (host and node rank), how many restarts it has
used of its budget, whether nodes wait to join, and how the last round ended.
All of it is already in the store, written by the agents as the protocol runs
(:mod:`pliant.rendezvous.elastic`); this module only reads it.

It never joins and never writes. The backend's plugin opens a client connection
(``RendezvousBackend.client_store``: it never hosts a store), and every call goes
through :class:`_ReadOnly`, which refuses anything but a read: a status reader
cannot add a node, end a round or leave a mark, even by mistake.

Signed jobs (``token_file``): with the job's token every record is verified, a
record that does not verify is left out (counted in ``rejected``), and a meta
record that does not verify is an error (the token is another one). Without a
token, a signed job's records are still shown, marked unverified: what status
shows is then what anyone who can reach the store could have written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pliant.rendezvous.api import (
    RendezvousConnectionError,
    RendezvousError,
    RendezvousStateError,
)
from pliant.rendezvous.auth import PREFIX, TOKEN_ENV, ForgedValueError, Seal, token_from
from pliant.rendezvous.connection import Connection
from pliant.rendezvous.keys import CLOSED, Keys, decode
from pliant.rendezvous.store import LEFT, RendezvousStore

__all__ = ["JobStatus", "Member", "Outcome", "read_status", "render"]

#: The job's states, from the running round and how it ended.
RUNNING, FORMING, RESTARTING = "running", "forming", "restarting"
SUCCEEDED, FAILED, CLOSED_STATE = "succeeded", "failed", "closed"


class UnknownRunError(RendezvousStateError):
    """The store holds nothing for this run id."""


@dataclass(frozen=True)
class Member:
    """One node of the round, in node rank order."""

    node_rank: int
    host: str
    id: str
    addr: str
    workers: int
    role: str
    #: The node said it left (its part of the job is over), in its heartbeat key.
    left: bool


@dataclass(frozen=True)
class Outcome:
    """How a round ended (its ``over`` record), or why it could not form."""

    round: int
    reason: str
    message: str
    restart: bool


@dataclass(frozen=True)
class JobStatus:
    """What ``pliant status`` shows; :meth:`as_dict` is its ``--json`` form."""

    backend: str
    endpoint: str
    run_id: str
    state: str
    min_nodes: int | None
    max_nodes: int | None
    #: The latest round that started (has members); None before the first one did.
    round: int | None
    restart_count: int
    #: The smallest ``--max-restarts`` of the round's nodes; None when the agents did not
    #: publish it (older pliant).
    max_restarts: int | None
    members: tuple[Member, ...]
    #: Nodes that arrived while the round ran and wait for the next one.
    waiting: int
    #: The round being formed after it, and the hosts that joined it so far.
    forming_round: int | None
    forming_hosts: tuple[str, ...]
    last_outcome: Outcome | None
    #: The job signs its records (it has a token), and whether they were checked here.
    signed: bool
    verified: bool
    #: Records left out because they did not verify with the token.
    rejected: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def restarts_left(self) -> int | None:
        if self.max_restarts is None:
            return None
        return max(self.max_restarts - self.restart_count, 0)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["members"] = [asdict(m) for m in self.members]
        data["forming_hosts"] = list(self.forming_hosts)
        data["notes"] = list(self.notes)
        data["restarts_left"] = self.restarts_left
        return data


class _ReadOnly(RendezvousStore):
    """A store that only reads: every write is refused before it reaches the store."""

    def __init__(self, store: RendezvousStore) -> None:
        self._store = store
        self.endpoint = store.endpoint
        self.expiring_beats = store.expiring_beats

    def get(self, key: str) -> bytes | None:
        return self._store.get(key)

    def set(self, key: str, value: bytes) -> None:
        raise _refused(key)

    def add(self, key: str, amount: int) -> int:
        raise _refused(key)

    def compare_set(self, key: str, expected: bytes | None, desired: bytes) -> bytes:
        raise _refused(key)

    def wait(self, keys: Sequence[str], timeout: float) -> bool:
        raise _refused(", ".join(keys))  # a wait on etcd starts watches: not for a reader

    def beat(self, key: str, amount: int = 1) -> int:
        raise _refused(key)

    def mark_left(self, key: str) -> None:
        raise _refused(key)

    def delete_prefix(self, prefix: str) -> None:
        raise _refused(prefix)

    def clone(self) -> RendezvousStore:
        return _ReadOnly(self._store.clone())

    def close(self) -> None:
        self._store.close()


def _refused(key: str) -> RendezvousStateError:
    return RendezvousStateError(f"pliant status reads the store and never writes ({key})")


class _Reader:
    """One run's records, opened (verified with a token, unwrapped without one)."""

    def __init__(self, store: RendezvousStore, run_id: str, token: bytes | None) -> None:
        self.conn = Connection(_ReadOnly(store))
        self.run_id, self.keys = run_id, Keys(run_id)
        self.seal = Seal(token, store.endpoint, run_id)
        self.endpoint = store.endpoint
        self.signed = False

    def plain(self, key: str) -> bytes | None:
        """The payload at ``key``; None when missing or (with a token) forged."""
        value = self.conn.get(key)
        if value is None:
            return None
        if value.startswith(PREFIX):
            self.signed = True
            if not self.seal.signs:  # shown, unverified: the output says so
                return value[len(PREFIX):].partition(b":")[2]
        try:
            return self.seal.unwrap(key, value)
        except ForgedValueError as exc:
            self.seal.rejected += 1
            if key == self.keys.meta and not self.signed:
                raise ForgedValueError(
                    f"run {self.run_id!r} at {self.endpoint} does not sign its "
                    "records (its agents have no token): run pliant status without a "
                    f"token_file (and without {TOKEN_ENV})") from None
            if key == self.keys.meta:
                raise ForgedValueError(
                    f"{exc}; pliant status was given another token than the job's: give it "
                    "the job's token_file (--rdzv-conf token_file=PATH or "
                    f"{TOKEN_ENV})") from None
            return None

    def record(self, key: str) -> dict[str, Any] | None:
        payload = self.plain(key)
        return None if payload is None else decode(key, payload, self.endpoint)

    def count(self, key: str) -> int:
        """A counter (never signed: counters are hints), 0 when missing or unreadable."""
        value = self.conn.get(key)
        try:
            return int(value) if value is not None else 0
        except ValueError:
            return 0

    def left(self, node_id: str) -> bool:
        """Whether the node said it left, in its heartbeat key. A job with a token signs its
        beats on a counter store (:mod:`pliant.rendezvous.connection`); on a store with
        leases they are plain counters, as without a token."""
        key = self.keys.beat(node_id)
        value = self.conn.get(key)
        if value is None:
            return False
        if value.startswith(PREFIX) or (self.seal.signs and not self.conn.expiring_beats):
            return self.plain(key) == b"left"
        try:
            return int(value) >= LEFT
        except ValueError:
            return False


def read_status(store: RendezvousStore, backend: str, run_id: str,
                token_file: str | None = None) -> JobStatus:
    """The status of run ``run_id`` in ``store`` (a client connection the caller closes).
    ``token_file`` (else ``$PLIANT_RDZV_TOKEN_FILE``): the job's token, to verify its records.

    Raises :class:`UnknownRunError` when the store holds nothing for the run, and
    :class:`~pliant.rendezvous.api.RendezvousError` when it cannot be read."""
    r = _Reader(store, run_id, token_from(token_file))
    keys = r.keys
    meta = r.record(keys.meta)
    current = r.plain(keys.current)
    if meta is None and current is None:
        raise UnknownRunError(
            f"no run {run_id!r} at {store.endpoint} ({backend} rendezvous): the store holds "
            f"no keys under {keys.prefix}. Check --rdzv-id (the job's --rdzv-id) and "
            "--rdzv-endpoint; a job that finished may have deleted its keys, and one that has "
            "not started has none yet")
    try:
        top = int(current) if current is not None else 0
    except ValueError:
        raise RendezvousStateError(f"{keys.current} at {store.endpoint} holds "
                                   f"{current!r:.60}, not a round number") from None
    max_nodes = int(meta["max"]) if meta and "max" in meta else None

    # The latest round that started: the top one, or the last below it with members.
    started, done, error = None, None, None
    for k in range(top, -1, -1):
        record = r.record(keys.of(k, "done"))
        if record is None or "retry" in record:
            continue
        if "error" in record and k == top:
            error = Outcome(k, "error", str(record["error"]), False)
            break
        if "nodes" in record:
            started, done = k, record
            break

    members: list[Member] = []
    for rank, node in enumerate(done["nodes"] if done else []):
        members.append(Member(rank, str(node.get("host", "?")), str(node.get("id", "?")),
                              str(node.get("addr", "?")), int(node.get("workers", 1)),
                              str(node.get("role", "default")), r.left(str(node.get("id")))))

    over = r.record(keys.of(started, "over")) if started is not None else None
    last = error
    if last is None:
        for k in ([started, started - 1] if started is not None else []):
            if k >= 0 and (record := r.record(keys.of(k, "over"))) is not None:
                last = Outcome(k, str(record.get("reason", "?")), str(record.get("message", "")),
                               bool(record.get("restart")))
                break

    forming_round: int | None = None
    forming_hosts: tuple[str, ...] = ()
    if started is None or top > started or (over is not None and over.get("restart")):
        k = top if started is None or top > started else started + 1
        if r.record(keys.of(k, "done")) is None:
            joined = min(r.count(keys.of(k, "joined")) % CLOSED, max_nodes or 0)
            hosts = [rec.get("host", "?") for i in range(1, joined + 1)
                     if (rec := r.record(keys.slot(k, i))) is not None]
            forming_round, forming_hosts = k, tuple(str(h) for h in hosts)

    state = _state(error, started, over, r.plain(keys.closed) is not None)
    notes = []
    if r.signed and not r.seal.signs:
        notes.append("the job signs its records and no token was given: what is shown is "
                     "unverified; give the job's token_file (--rdzv-conf token_file=PATH or "
                     f"{TOKEN_ENV}) to check it")
    if r.seal.rejected:
        notes.append(f"{r.seal.rejected} record(s) did not verify with the token and were "
                     "left out")
    budget = done.get("max_restarts") if done else None
    return JobStatus(
        backend=backend, endpoint=store.endpoint, run_id=run_id, state=state,
        min_nodes=int(meta["min"]) if meta and "min" in meta else None, max_nodes=max_nodes,
        round=started, restart_count=int(done.get("restart_count", 0)) if done else 0,
        max_restarts=int(budget) if budget is not None else None, members=tuple(members),
        waiting=r.count(keys.of(started + 1, "extra")) if started is not None else 0,
        forming_round=forming_round, forming_hosts=forming_hosts, last_outcome=last,
        signed=r.signed, verified=r.signed and r.seal.signs, rejected=r.seal.rejected,
        notes=tuple(notes))


def _state(error: Outcome | None, started: int | None, over: dict[str, Any] | None,
           closed: bool) -> str:
    if error is not None:
        return FAILED
    if over is not None:
        reason = over.get("reason")
        if over.get("restart"):
            return RESTARTING
        return SUCCEEDED if reason == SUCCEEDED else CLOSED_STATE if reason == "closed" \
            else FAILED
    if closed:
        return CLOSED_STATE
    return FORMING if started is None else RUNNING


def open_and_read(open_store: Callable[[], RendezvousStore], backend: str, endpoint: str,
                  run_id: str, timeout: float, token_file: str | None) -> JobStatus:
    """Open a client store with ``open_store``, read the run's status, close the store. A
    store that cannot be reached is an error naming the endpoint, the run and what to check."""
    try:
        store = open_store()
    except RendezvousConnectionError as exc:
        raise RendezvousConnectionError(_unreachable(backend, endpoint, run_id, timeout, exc)
                                        ) from None
    try:
        return read_status(store, backend, run_id, token_file)
    except RendezvousConnectionError as exc:
        raise RendezvousConnectionError(_unreachable(backend, endpoint, run_id, timeout, exc)
                                        ) from None
    finally:
        with contextlib.suppress(RendezvousError):
            store.close()


def _unreachable(backend: str, endpoint: str, run_id: str, timeout: float,
                 exc: BaseException) -> str:
    # The backend's own error already says what to check about the endpoint and its store.
    return (f"cannot read run {run_id!r}: the {backend} rendezvous store at {endpoint} did not "
            f"answer within --timeout {timeout:g}s: {exc}; and check that --rdzv-backend is "
            "the job's")


# -- output -------------------------------------------------------------------------------------


def render(status: JobStatus, as_json: bool = False) -> str:
    """The human table (default) or the JSON document (``--json``)."""
    if as_json:
        return json.dumps(status.as_dict(), indent=2)
    s = status
    nnodes = ("?" if s.min_nodes is None else
              str(s.min_nodes) if s.min_nodes == s.max_nodes else f"{s.min_nodes}:{s.max_nodes}")
    budget = ("? (not published by these agents)" if s.max_restarts is None else
              f"{s.restart_count} of {s.max_restarts} used ({s.restarts_left} left)")
    lines = [
        f"run {s.run_id} at {s.endpoint} ({s.backend}): {s.state}",
        f"  round         {'-' if s.round is None else s.round} (nnodes {nnodes})",
        f"  restarts      {budget}",
        f"  waiting       {s.waiting} node(s)",
    ]
    if s.forming_round is not None:
        lines.append(f"  forming       round {s.forming_round}: {len(s.forming_hosts)} joined"
                     f"{': ' + ', '.join(s.forming_hosts) if s.forming_hosts else ''}")
    out = s.last_outcome
    lines.append("  last outcome  " + ("-" if out is None else
                                       f"round {out.round} {out.reason}: {out.message}"))
    lines.append("  records       " + ("signed, verified with the token" if s.verified else
                                       "signed, NOT verified (no token)" if s.signed else
                                       "not signed (the job has no token)"))
    if s.members:
        lines.append("")
        lines.extend(_table(["NODE RANK", "HOST", "ADDR", "WORKERS", "ROLE", "LEFT", "ID"],
                            [[str(m.node_rank), m.host, m.addr, str(m.workers), m.role,
                              "yes" if m.left else "no", m.id] for m in s.members]))
    for note in s.notes:
        lines.append(f"\nnote: {note}")
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]]

"""What ``pliant status`` reads (pliant.rendezvous.status), on the in-memory store: real
handlers run the protocol; the reader is given another handle on their keys.

The end-to-end tests (tests/test_status.py) read running c10d and etcd jobs; these cover
the states those jobs pass through too fast to catch: a round forming, a job that ended,
a budget published by agents that disagree, and that the reader never writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_assertions import assert_user_error
from pliant.rendezvous import (
    RendezvousGracefulExitError,
    RendezvousParameters,
    RendezvousStateError,
)
from pliant.rendezvous.elastic import ElasticRendezvousHandler
from pliant.rendezvous.status import UnknownRunError, read_status, render
from pliant.testing.memory import MemoryRendezvousStore
from pliant.testing.rendezvous import (
    FAST_TIMEOUTS,
    eventually,
    joined,
    new_run_id,
    start_join,
)


def node(shared: MemoryRendezvousStore, run_id: str, nnodes: tuple[int, int],
         max_restarts: int | None = None, **conf: object) -> ElasticRendezvousHandler:
    handler = ElasticRendezvousHandler("memory", shared.clone(), RendezvousParameters(
        "memory", shared.endpoint, run_id, *nnodes, local_addr="127.0.0.1",
        **{**FAST_TIMEOUTS, **conf}))
    handler.max_restarts = max_restarts
    return handler


def snapshot(shared: MemoryRendezvousStore) -> dict[str, bytes]:
    return dict(shared._state.values)


def test_a_running_round_then_a_finished_job() -> None:
    shared, run_id = MemoryRendezvousStore(), new_run_id()
    handlers = [node(shared, run_id, (2, 2), max_restarts=m) for m in (3, 1)]
    try:
        infos = joined(handlers)
        before = snapshot(shared)
        running = read_status(shared.clone(), "memory", run_id)
        assert snapshot(shared) == before  # read, never written
        assert (running.state, running.round, running.restart_count) == ("running", 0, 0)
        # The agents disagree: the job stops restarting once the smallest budget is spent.
        assert (running.max_restarts, running.restarts_left) == (1, 1)
        by_rank = {info.rank: h.node_id for info, h in zip(infos, handlers, strict=True)}
        assert [(m.node_rank, m.id, m.left) for m in running.members] == [
            (0, by_rank[0], False), (1, by_rank[1], False)]
        assert (running.signed, running.verified, running.last_outcome) == (False, False, None)
        assert running.waiting == 0

        # The round is full: a third node waits as a spare, and status counts it.
        spare = node(shared, run_id, (2, 2))
        spare_join = start_join(spare, "spare")
        eventually(lambda: read_status(shared, "memory", run_id).waiting == 1, "a spare")

        for handler in handlers:
            handler.report_success()
        assert isinstance(spare_join.outcome(), RendezvousGracefulExitError)
        spare.shutdown()
        done = read_status(shared.clone(), "memory", run_id)
        assert done.state == "succeeded"
        assert done.last_outcome is not None and done.last_outcome.reason == "succeeded"
        assert [m.left for m in done.members] == [True, True]
        assert "memory): succeeded" in render(done)
        assert '"state": "succeeded"' in render(done, as_json=True)
    finally:
        for handler in handlers:
            handler.shutdown()


def test_a_round_forming_and_its_joiners() -> None:
    shared, run_id = MemoryRendezvousStore(), new_run_id()
    first = node(shared, run_id, (2, 3))
    waiting = start_join(first, "first")
    try:
        eventually(lambda: read_status(shared, "memory", run_id).forming_hosts != (),
                   "the first node's join record")
        status = read_status(shared.clone(), "memory", run_id)
        assert (status.state, status.round, status.members) == ("forming", None, ())
        assert (status.forming_round, len(status.forming_hosts)) == (0, 1)
        assert (status.min_nodes, status.max_nodes, status.max_restarts) == (2, 3, None)
        assert "forming       round 0: 1 joined" in render(status)
    finally:
        second = node(shared, run_id, (2, 3))
        joined([second])
        waiting.result()
        for handler in (first, second):
            handler.shutdown()


def test_an_unknown_run_and_a_signed_job_read_with_another_token(tmp_path: Path) -> None:
    shared, run_id = MemoryRendezvousStore(), new_run_id()
    with pytest.raises(UnknownRunError) as caught:
        read_status(shared, "memory", run_id)
    assert f"no run {run_id!r} at {shared.endpoint} (memory rendezvous)" in str(caught.value)

    token, other = tmp_path / "token", tmp_path / "other"
    token.write_text("one")
    other.write_text("two")
    token.chmod(0o600)
    other.chmod(0o600)
    handler = node(shared, run_id, (1, 1), token_file=str(token))
    try:
        joined([handler])
        assert read_status(shared.clone(), "memory", run_id, str(token)).verified
        with pytest.raises(RendezvousStateError, match="another token than the job's"):
            read_status(shared.clone(), "memory", run_id, str(other))
        unsigned = node(shared, new_run_id(), (1, 1))
        joined([unsigned])
        with pytest.raises(RendezvousStateError, match="does not sign its records"):
            read_status(shared.clone(), "memory", unsigned.get_run_id(), str(token))
        unsigned.shutdown()
    finally:
        handler.shutdown()


@pytest.mark.parametrize(("args", "fragments"), [
    ((), ("pliant status needs the job's --rdzv-endpoint and --rdzv-id",)),
    (("--rdzv-endpoint", "h:1"), ("--rdzv-id",)),
    (("--rdzv-backend", "embedded", "--rdzv-endpoint", "h:1", "--rdzv-id", "j"),
     ("cannot read a job on the 'embedded' rendezvous (from flag --rdzv-backend)",
      "such as c10d and etcd")),
    (("--rdzv-endpoint", "h:1", "--rdzv-id", "j", "--timeout", "0"), ("invalid --timeout 0",)),
], ids=["nothing", "no-run-id", "embedded", "timeout"])
def test_status_command_mistakes(pliant: Any, args: tuple[str, ...],
                                 fragments: tuple[str, ...]) -> None:
    assert_user_error(pliant("status", *args), *fragments)

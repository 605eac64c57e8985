"""A token job's heartbeats on a store whose beats are counters (the in-memory store here, as
TCPStore): signed writes, so a stranger cannot say a node left and hide its death."""

from __future__ import annotations

from pathlib import Path

from pliant.rendezvous import RendezvousParameters
from pliant.rendezvous.elastic import ElasticRendezvousHandler
from pliant.rendezvous.store import LEFT
from pliant.testing.memory import MemoryRendezvousStore
from pliant.testing.rendezvous import FAST_TIMEOUTS, joined, new_run_id, wait_for_round_end


def test_a_forged_departure_does_not_hide_a_dead_node(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("heartbeat-secret")
    shared, run_id = MemoryRendezvousStore(), new_run_id()
    handlers = [ElasticRendezvousHandler("memory", shared.clone(), RendezvousParameters(
        "memory", shared.endpoint, run_id, 1, 2, local_addr="127.0.0.1",
        **{**FAST_TIMEOUTS, "token_file": str(token)})) for _ in range(2)]
    try:
        joined(handlers)
        watcher, victim = handlers
        victim._stop_keep_alive()  # its machine froze: no more beats, and no goodbye
        # What an unsigned "I left" reads like: the watcher would stop watching the victim.
        shared.set(f"pliant/{run_id}/beat/{victim.node_id}", str(LEFT).encode())
        end = wait_for_round_end(watcher)
        assert (end.reason, end.restart) == ("dead", True), end
        assert victim.node_id in end.message
        assert watcher.rejected >= 1
    finally:
        for handler in reversed(handlers):
            handler.shutdown()

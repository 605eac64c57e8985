"""A token job's heartbeats on a store whose beats are counters (the in-memory store here, as
TCPStore): signed writes, so a stranger cannot say a node left and hide its death."""

from __future__ import annotations

from pathlib import Path

import pytest
from pliant.errors import ConfigError
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


def make(run_id: str, shared: MemoryRendezvousStore, **conf: object) -> ElasticRendezvousHandler:
    return ElasticRendezvousHandler("memory", shared.clone(), RendezvousParameters(
        "memory", shared.endpoint, run_id, 1, 1, local_addr="127.0.0.1",
        **{**FAST_TIMEOUTS, **conf}))


def test_the_token_file_can_come_from_the_environment(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("from-the-env")
    token.chmod(0o600)
    monkeypatch.setenv("PLIANT_RDZV_TOKEN_FILE", str(token))
    shared, run_id = MemoryRendezvousStore(), new_run_id()
    handler = make(run_id, shared)
    try:
        assert handler.signs
        joined([handler])
        meta = shared.get(f"pliant/{run_id}/meta")
        assert meta is not None and meta.startswith(b"pliant-hmac1:")
    finally:
        handler.shutdown()


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_a_bad_token_file_is_a_clear_error(tmp_path: Path, content: str | None) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    with pytest.raises(ConfigError) as caught:
        make(new_run_id(), MemoryRendezvousStore(), token_file=str(token))
    assert str(token) in str(caught.value) and "token_file" in str(caught.value)


def test_a_token_file_others_can_read_is_warned_about(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    token = tmp_path / "token"
    token.write_text("too-open")
    token.chmod(0o644)
    handler = make(new_run_id(), MemoryRendezvousStore(), token_file=str(token))
    handler.shutdown()
    assert any("chmod 600" in r.getMessage() and str(token) in r.getMessage()
               for r in caplog.records)
    assert not any("too-open" in r.getMessage() for r in caplog.records)

"""The rendezvous API, the registry behind create_handler, and the embedded backend."""

from __future__ import annotations

import socket

import pytest
from pliant.errors import ConfigError, PluginError
from pliant.rendezvous import (
    RendezvousClosedError,
    RendezvousError,
    RendezvousParameters,
    create_handler,
)


def test_create_handler_resolves_the_embedded_backend() -> None:
    handler = create_handler(RendezvousParameters("embedded", "", "run-1", 1, 1,
                                                  join_timeout="5"))
    assert handler.get_backend() == "embedded"
    assert handler.get_run_id() == "run-1"
    assert handler.num_nodes_waiting() == 0
    assert not handler.use_agent_store


def test_every_round_meets_on_a_fresh_free_port() -> None:
    handler = create_handler(RendezvousParameters("embedded", "", "run-2", 1, 1))
    rounds = [handler.next_rendezvous() for _ in range(3)]
    assert [(r.rank, r.world_size, r.round) for r in rounds] == [(0, 1, 0), (0, 1, 1), (0, 1, 2)]
    assert len({r.master_port for r in rounds}) == 3
    for info in rounds:  # nobody listens there: rank 0 of the round can bind it
        with socket.socket() as sock:
            sock.bind((info.master_addr, info.master_port))


def test_a_closed_rendezvous_refuses_the_next_round() -> None:
    handler = create_handler(RendezvousParameters("embedded", "", "run-3", 1, 1))
    handler.set_closed()
    assert handler.is_closed()
    with pytest.raises(RendezvousClosedError, match="run-3"):
        handler.next_rendezvous()
    assert issubclass(RendezvousClosedError, RendezvousError)


def test_unknown_backend_and_bad_settings_are_clear_errors() -> None:
    unknown = r"unknown rendezvous backend 'zk'.*available: .*embedded"
    with pytest.raises(PluginError, match=unknown):
        create_handler(RendezvousParameters("zk", "", "run-4", 1, 1))
    with pytest.raises(ConfigError, match="did you mean 'join_timeout'"):
        create_handler(RendezvousParameters("embedded", "", "run-4", 1, 1, join_timout="5"))
    with pytest.raises(ConfigError, match="runs one node"):
        create_handler(RendezvousParameters("embedded", "", "run-4", 1, 2))


def test_parameters_have_typed_getters_and_refuse_min_above_max() -> None:
    params = RendezvousParameters("x", "h:1", "r", 1, 3, a="true", b="7", c="0.5")
    assert params.get_as_bool("a") is True
    assert params.get_as_int("b") == 7
    assert params.get_as_float("c") == 0.5
    assert params.get("missing", "d") == "d"
    with pytest.raises(ValueError, match="min_nodes=3 and max_nodes=2"):
        RendezvousParameters("x", "", "r", 3, 2)


def test_timeouts_come_from_the_parsed_settings_with_the_declared_defaults() -> None:
    from pliant.rendezvous.conf import ELASTIC_SETTINGS, Timeouts

    # token_file is a setting of the protocol, not a timeout.
    defaults = {s.name: s.default for s in ELASTIC_SETTINGS if s.name != "token_file"}
    assert Timeouts.defaults() == Timeouts(**defaults)
    assert Timeouts.from_settings({"join_timeout": 5.0}).join_timeout == 5.0
    by_hand = Timeouts.from_params(RendezvousParameters(
        "c10d", "h:1", "run", 1, 2, join_timeout="5", master_addr="10.0.0.1"))
    assert by_hand == Timeouts(**{**defaults, "join_timeout": 5.0})
    with pytest.raises(ConfigError, match="join_timeout 'soon'"):
        Timeouts.from_params(RendezvousParameters("c10d", "h:1", "run", 1, 2,
                                                  join_timeout="soon"))

"""pliant-c10d passes the conformance suite every rendezvous store plugin runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pliant.plugin import (
    MakeHandler,
    RendezvousHandler,
    RendezvousHandlerTests,
    RendezvousParameters,
    RendezvousStoreTests,
)
from pliant_c10d import C10dRendezvousHandler, TCPRendezvousStore, parse_endpoint


class TestTCPRendezvousStore(RendezvousStoreTests):
    @pytest.fixture
    def store(self, store_endpoint: str) -> Iterator[TCPRendezvousStore]:
        host, port = parse_endpoint(store_endpoint)
        store = TCPRendezvousStore(host, port, timeout=30.0)
        yield store
        store.close()


class TestC10dRendezvousHandler(RendezvousHandlerTests):
    backend_name = "c10d"

    @pytest.fixture
    def make_handler(self, store_endpoint: str) -> MakeHandler:
        def make(run_id: str, min_nodes: int, max_nodes: int, **conf: Any) -> RendezvousHandler:
            # is_host=False: every node is a client of the session's server, as agents
            # are of `pliant store`.
            return C10dRendezvousHandler(RendezvousParameters(
                "c10d", store_endpoint, run_id, min_nodes, max_nodes, is_host=False, **conf))

        return make

"""The core's own run of both conformance suites, on the in-memory store: the protocol
checked without torch, etcd or a network."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pliant.rendezvous import RendezvousHandler, RendezvousParameters
from pliant.rendezvous.elastic import ElasticRendezvousHandler
from pliant.testing.memory import MemoryRendezvousStore
from pliant.testing.rendezvous import MakeHandler, RendezvousHandlerTests, RendezvousStoreTests


class TestMemoryRendezvousStore(RendezvousStoreTests):
    @pytest.fixture
    def store(self) -> Iterator[MemoryRendezvousStore]:
        store = MemoryRendezvousStore()
        yield store
        store.close()


class TestMemoryRendezvousHandler(RendezvousHandlerTests):
    backend_name = "memory"

    @pytest.fixture
    def make_handler(self) -> MakeHandler:
        shared = MemoryRendezvousStore()  # one "server" per test, a handle per node

        def make(run_id: str, min_nodes: int, max_nodes: int, **conf: Any) -> RendezvousHandler:
            params = RendezvousParameters("memory", shared.endpoint, run_id, min_nodes,
                                          max_nodes, local_addr="127.0.0.1", **conf)
            return ElasticRendezvousHandler("memory", shared.clone(), params)

        return make


def test_the_kit_and_the_memory_store_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys, pliant.testing.rendezvous, pliant.testing.memory\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

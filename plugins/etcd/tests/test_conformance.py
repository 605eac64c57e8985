"""pliant-etcd passes the conformance suite every rendezvous store plugin runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from pliant.plugin import (
    MakeHandler,
    RendezvousHandler,
    RendezvousHandlerTests,
    RendezvousParameters,
    RendezvousStoreTests,
)
from pliant_etcd import EtcdRendezvousHandler, parse_endpoints
from pliant_etcd.store import EtcdConfig, EtcdRendezvousStore
from pliant_etcd.testing import EtcdCluster


class TestEtcdRendezvousStore(RendezvousStoreTests):
    @pytest.fixture
    def store(self, etcd: EtcdCluster) -> Iterator[EtcdRendezvousStore]:
        members, _ = parse_endpoints(etcd.endpoint)
        store = EtcdRendezvousStore(EtcdConfig(members=members, timeout=30.0, lease_ttl=1))
        yield store
        store.close()


class TestEtcdRendezvousHandler(RendezvousHandlerTests):
    backend_name = "etcd"
    # A node's lease lives as long as its own settings say: the running nodes of the spare
    # test must be dead after a second, like the spares that watch them.
    slow_to_call_dead: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def make_handler(self, etcd: EtcdCluster) -> MakeHandler:
        def make(run_id: str, min_nodes: int, max_nodes: int, **conf: Any) -> RendezvousHandler:
            return EtcdRendezvousHandler(RendezvousParameters(
                "etcd", etcd.endpoint, run_id, min_nodes, max_nodes, **conf))

        return make

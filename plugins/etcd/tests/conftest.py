"""One real etcd server on free loopback ports, shared by the session's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pliant_etcd.testing import EtcdCluster


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    """A one-member etcd cluster that runs for the whole session."""
    with EtcdCluster(1) as cluster:
        yield cluster

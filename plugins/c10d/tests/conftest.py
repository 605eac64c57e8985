"""A TCPStore server on a free loopback port, shared by the session's rendezvous tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pliant_c10d import _tcpstore  # torch's TCPStore, loaded with its C++ warnings off


@pytest.fixture(scope="session")
def store_endpoint() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a TCPStore that listens for the whole session."""
    server = _tcpstore()("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    yield f"127.0.0.1:{server.port}"
    del server

"""A TCPStore server on a free loopback port, shared by the session's rendezvous tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def _quiet_tcpstore() -> Any:
    # Store waits time out by design (the keep-alive waits half an interval at a time);
    # torch's C++ layer warns about each unless its log level is set when torch loads.
    # The environment is restored at once: subprocesses must not inherit the change.
    before = os.environ.get("TORCH_CPP_LOG_LEVEL")
    os.environ["TORCH_CPP_LOG_LEVEL"] = "ERROR"
    try:
        import torch.distributed
    finally:
        if before is None:
            del os.environ["TORCH_CPP_LOG_LEVEL"]
        else:
            os.environ["TORCH_CPP_LOG_LEVEL"] = before
    return torch.distributed.TCPStore  # type: ignore[attr-defined]  # not re-exported in the stubs


@pytest.fixture(scope="session")
def store_endpoint() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a TCPStore that listens for the whole session."""
    server = _quiet_tcpstore()("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    yield f"127.0.0.1:{server.port}"
    del server

"""gRPC and the etcd client, imported without gRPC's fork handlers.

The agent starts workers with ``fork`` and ``exec`` while the etcd client's threads are
busy in gRPC. gRPC's fork support then logs "skipping fork() handlers" on the agent's
stderr, and one fork in ten aborted in the child before it could ``exec`` (measured here
with grpcio 1.85). pliant's children never use the parent's gRPC state, so the handlers
have nothing to do. gRPC reads ``GRPC_ENABLE_FORK_SUPPORT`` once, at import; the variable is
put back at once, so the workers' own gRPC keeps its defaults.
"""

from __future__ import annotations

import os

_before = os.environ.get("GRPC_ENABLE_FORK_SUPPORT")
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
try:
    import grpc
    import pyetcd
    from pyetcd import events, exceptions
finally:
    if _before is None:
        del os.environ["GRPC_ENABLE_FORK_SUPPORT"]
    else:
        os.environ["GRPC_ENABLE_FORK_SUPPORT"] = _before

__all__ = ["events", "exceptions", "grpc", "pyetcd"]

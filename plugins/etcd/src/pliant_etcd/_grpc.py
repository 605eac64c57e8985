"""gRPC and the etcd client, imported without gRPC's fork handlers.

The agent starts workers with ``fork`` and ``exec`` while the etcd client's threads are
busy in gRPC. gRPC's fork support then logs "skipping fork() handlers" on the agent's
stderr, and one fork in ten aborted in the child before it could ``exec`` (measured here
with grpcio 1.85). pliant's children never use the parent's gRPC state, so the handlers
have nothing to do.

gRPC's own log goes to stderr too: a refused TLS handshake printed five lines of it before
pliant's one-line error, which already names the members and gRPC's reason. Only its errors
are kept (``GRPC_VERBOSITY=ERROR``), unless the user chose a verbosity.

gRPC reads both variables once, at import; they are put back at once, so the workers' own
gRPC keeps its defaults.
"""

from __future__ import annotations

import os

_SETTINGS = {"GRPC_ENABLE_FORK_SUPPORT": "false", "GRPC_VERBOSITY": "ERROR"}
_before = {name: os.environ.get(name) for name in _SETTINGS}
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
try:
    import grpc
    import pyetcd
    from pyetcd import events, exceptions
finally:
    for _name, _value in _before.items():
        if _value is None:
            del os.environ[_name]
        else:
            os.environ[_name] = _value

__all__ = ["events", "exceptions", "grpc", "pyetcd"]

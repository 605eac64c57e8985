"""Where this process's records come from: the tags every metric and event carries.

Taken from the environment the agent gives its workers (run id, node, role, restart count,
rank), or set by the agent for its own records (:func:`set_context`).
"""

from __future__ import annotations

import os
import socket

__all__ = ["context", "set_context"]

_context: dict[str, str] | None = None


def context() -> dict[str, str]:
    """Where records of this process come from: ``run_id``, ``node``, ``role``,
    ``restart_count`` and, in a worker, ``rank`` (strings; what is unknown is left out)."""
    global _context
    if _context is None:
        env = os.environ
        found = {
            "run_id": env.get("TORCHELASTIC_RUN_ID", ""),
            "node": env.get("PLIANT_NODE", "") or socket.gethostname(),
            "role": env.get("ROLE_NAME", ""),
            "rank": env.get("RANK", ""),
            "restart_count": env.get("TORCHELASTIC_RESTART_COUNT", ""),
        }
        _context = {k: v for k, v in found.items() if v}
    return _context


def set_context(**tags: str | int | None) -> None:
    """Set (or, with None, remove) tags of this process's records: the agent's own."""
    current = dict(context())
    for key, value in tags.items():
        if value is None or value == "":
            current.pop(key, None)
        else:
            current[key] = str(value)
    global _context
    _context = current

"""Metric and event handlers inside a worker, built from what the agent put in its environment.

The agent passes its choice on as ``PLIANT_METRICS``/``PLIANT_METRICS_CONF`` and
``PLIANT_EVENTS``/``PLIANT_EVENTS_CONF`` (the same variables a user may set for the agent).
A worker builds the same handlers on its first ``put_metric`` or ``record``, so that its
values go straight to the sinks, tagged with its rank, without passing through the agent.
A handler that cannot be built is reported once on stderr and left out: training goes on.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ["handlers_from_env"]

log = logging.getLogger("pliant.sinks")


def handlers_from_env(kind: str) -> list[Any]:
    """The ``kind`` ("metrics" or "events") handlers named in this process's environment."""
    names_text = os.environ.get(f"PLIANT_{kind.upper()}", "").strip()
    if not names_text:
        return []
    try:
        from pliant.cli import _handler_conf
        from pliant.plugins import PluginManager
        from pliant.settings import parse_kv, parse_list

        names = parse_list(names_text)
        conf_var = f"PLIANT_{kind.upper()}_CONF"
        source = f"env {conf_var}"
        per = _handler_conf(kind, names, parse_kv(os.environ.get(conf_var, "")), source)
        manager = PluginManager()
        return [manager.select(kind, name, f"env PLIANT_{kind.upper()}", per[name],
                               source).create() for name in names]
    except Exception as exc:  # a worker trains on without its sinks rather than not at all
        print(f"pliant: {kind} handlers from the environment not built: {exc}", file=sys.stderr)
        log.debug("building %s handlers", kind, exc_info=True)
        return []

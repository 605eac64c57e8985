"""Metric and event handlers of a process that did not configure its own, from its environment.

A worker started by ``pliant run`` (or any :class:`~pliant.agent.LocalElasticAgent` with
handlers) finds ``PLIANT_RELAY``: its records go to the agent, which hands them to its own
handlers (see :mod:`pliant._relay`). Any other process builds the handlers that
``PLIANT_METRICS``/``PLIANT_METRICS_CONF`` and ``PLIANT_EVENTS``/``PLIANT_EVENTS_CONF``
name (the variables a user sets for the agent), on its first ``put_metric`` or ``record``.
A handler that cannot be built is reported once on stderr and left out: the process goes
on without it.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ["handlers_from_env"]

log = logging.getLogger("pliant.sinks")


def handlers_from_env(kind: str) -> list[Any]:
    """The ``kind`` ("metrics" or "events") handlers named in this process's environment:
    the agent's relay when there is one, else those ``PLIANT_<KIND>`` names."""
    from pliant._relay import client_from_env

    relay = client_from_env()
    if relay is not None:
        return [relay]
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

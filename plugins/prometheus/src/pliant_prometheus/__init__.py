"""pliant-prometheus: pliant's metrics on a Prometheus ``/metrics`` endpoint.

One backend named ``prometheus``, chosen with ``--metrics prometheus`` and configured with
``--metrics-conf prometheus.KEY=VALUE``: :class:`PrometheusMetricHandler` keeps every
value in memory as a Prometheus series (a gauge, a counter or a summary: see
:mod:`pliant_prometheus._series`), labelled ``run_id``, ``node``, ``role`` and ``rank``,
and serves them with prometheus-client's HTTP server on ``address``:``port``
(``127.0.0.1:9473``). Under ``pliant run`` the handler lives in the agent, and its
workers' values reach it through the agent's relay: one endpoint per node.

prometheus-client is imported only when a handler is built, so listing plugins stays
instant.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from pliant.plugin import (
    MetricBackend,
    Setting,
    Settings,
    hookimpl,
    parse_int,
    parse_port,
    parse_str,
)

from pliant_prometheus._handler import PrometheusMetricHandler
from pliant_prometheus._series import (
    AGENT_SERIES,
    BUILTIN_COUNTERS,
    DEFAULT_LABELS,
    KNOWN_TAGS,
    MAX_SERIES,
    Series,
    prometheus_name,
)
from pliant_prometheus._server import DEFAULT_ADDRESS, DEFAULT_PORT

__all__ = [
    "AGENT_SERIES",
    "BUILTIN_COUNTERS",
    "DEFAULT_ADDRESS",
    "DEFAULT_LABELS",
    "DEFAULT_PORT",
    "METRIC_SETTINGS",
    "PLUGIN_API",
    "PrometheusMetricHandler",
    "Series",
    "create_metric_handler",
    "prometheus_name",
]

#: The version of pliant's plugin contract (:mod:`pliant.plugin`) this module is written for.
PLUGIN_API = 1

log = logging.getLogger("pliant_prometheus")


def _names(value: Any) -> list[str]:
    """Items separated by '+' (commas already separate settings in --metrics-conf), spaces
    or commas (in a config file's string), or a TOML list."""
    if isinstance(value, list | tuple):
        items = [parse_str(item).strip() for item in value]
    else:
        items = re.split(r"[+,\s]+", parse_str(value))
    return list(dict.fromkeys(item for item in items if item))


def _parse_address(value: Any) -> str:
    text = parse_str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]  # [::1], as in a URL
    if not text or any(c.isspace() or c in "/[]" for c in text):
        raise ValueError("expected an IP address or host name of this machine, such as "
                         "127.0.0.1, 0.0.0.0 (every interface) or ::1")
    return text


def _parse_labels(value: Any) -> tuple[str, ...]:
    names = _names(value)
    unknown = [name for name in names if name not in KNOWN_TAGS]
    if unknown or not names:
        raise ValueError(f"expected tag names separated by '+', such as run_id+node+rank, "
                         f"from: {', '.join(KNOWN_TAGS)}"
                         + (f"; {unknown[0]!r} is not one" if unknown else ""))
    return tuple(names)


def _parse_counters(value: Any) -> tuple[str, ...]:
    return tuple(_names(value))


#: The settings of the ``prometheus`` metric handler.
METRIC_SETTINGS: tuple[Setting, ...] = (
    Setting("port", parse_port, DEFAULT_PORT,
            "TCP port of the /metrics endpoint; 0: one the system picks (logged at start).",
            metavar="PORT"),
    Setting("address", _parse_address, DEFAULT_ADDRESS,
            "Address to listen on: 127.0.0.1 serves this machine only; 0.0.0.0 (or ::) "
            "every interface, for a Prometheus on another machine.", metavar="ADDRESS"),
    Setting("labels", _parse_labels, DEFAULT_LABELS,
            "Labels of every series, from the values' tags, separated by '+': run_id, node, "
            "role, rank, restart_count.", metavar="TAG+..."),
    Setting("counters", _parse_counters, (),
            "GROUP.NAME patterns (fnmatch, separated by '+') of your metrics to add up as "
            "counters (NAME_total) rather than keep the last value of as gauges; "
            "prof's .success and .failure are counters already.", metavar="PATTERN+..."),
    Setting("max_series", parse_int(minimum=1), MAX_SERIES,
            "Most series held (one per metric and label values); values of new series "
            "beyond it are dropped and counted.", metavar="N"),
)


def create_metric_handler(settings: Settings) -> PrometheusMetricHandler:
    """A metric handler from validated :data:`METRIC_SETTINGS` (missing keys: defaults),
    already serving.

    Raises :class:`~pliant.errors.ConfigError` when the port is in use or the address is
    not this machine's.
    """
    conf: dict[str, Any] = {s.name: s.default for s in METRIC_SETTINGS}
    conf.update(settings)
    handler = PrometheusMetricHandler(port=conf["port"], address=conf["address"],
                                      labels=conf["labels"], counters=conf["counters"],
                                      max_series=conf["max_series"])
    log.info("prometheus: serving the metrics on %s", handler.url)
    return handler


@hookimpl
def pliant_metric_handlers() -> Sequence[MetricBackend]:
    return [MetricBackend("prometheus", create_metric_handler, settings=METRIC_SETTINGS,
                          description="A Prometheus /metrics endpoint, served by the agent.")]

"""Which Prometheus series a pliant metric value feeds, and the values they hold.

A pliant metric is a group, a name and a float, tagged with where it comes from; it says
nothing of its kind. Prometheus wants a kind per series, so the kind is chosen here:

- the agent's own metrics (group ``pliant.agent``) and ``pliant.dropped`` have the series
  of :data:`AGENT_SERIES`, chosen one by one (a restart is a counter, the number of
  workers a gauge, a duration in seconds);
- any other value is named from its group and name (``train.loss`` is ``train_loss``) and
  is a **gauge** holding the last value, unless it is one of these:

  - a name ending in ``.duration.ms`` (what ``pliant.metrics.prof`` puts) is a
    **summary** in seconds: ``<name>_duration_seconds_count`` and ``_sum``;
  - a ``GROUP.NAME`` matching :data:`BUILTIN_COUNTERS` (``prof``'s ``.success`` and
    ``.failure``, torch's per-run ``workers.<role>.run_*``) or the handler's ``counters``
    patterns is a **counter** adding up the values: ``<name>_total``.

Each series is labelled with the value's tags (:data:`DEFAULT_LABELS`; a tag the value
lacks is the empty label, which Prometheus treats as absent: the agent's values have no
``rank``). :class:`SeriesStore` holds the values in memory, bounded by ``max_series``, and
is the collector the HTTP server reads at each scrape.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Literal

from pliant.plugin import MetricData

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = [
    "AGENT_SERIES",
    "BUILTIN_COUNTERS",
    "DEFAULT_LABELS",
    "KNOWN_TAGS",
    "MAX_SERIES",
    "Series",
    "SeriesStore",
    "prometheus_name",
]

log = logging.getLogger("pliant_prometheus")

#: The tags pliant puts on every value; any of them can be a label.
KNOWN_TAGS = ("run_id", "node", "role", "rank", "restart_count")
#: The labels of every series, unless ``labels`` says otherwise. ``restart_count`` is left
#: out so that a worker's series goes on across restarts instead of starting anew.
DEFAULT_LABELS = ("run_id", "node", "role", "rank")
#: ``GROUP.NAME`` patterns (``fnmatch``) of values that are added up as counters.
BUILTIN_COUNTERS = ("*.success", "*.failure", "torchelastic.workers.*.run_*")
#: Most series (one per metric and label values) held; beyond it new ones are dropped.
MAX_SERIES = 10_000

Kind = Literal["gauge", "counter", "summary"]
#: How a value changes its series: ``set`` it (a gauge), ``add`` it or ``count`` one (a
#: counter), take it as the running ``total`` (a counter whose source counts already), or
#: ``observe`` it (a summary's count and sum).
Op = Literal["set", "add", "count", "total", "observe"]

_DURATION = ".duration.ms"


@dataclass(frozen=True)
class Series:
    """One Prometheus metric family fed by pliant values: its ``name`` as queried (a
    counter's ends in ``_total``; a summary's samples add ``_count`` and ``_sum``)."""

    name: str
    kind: Kind
    help: str
    op: Op = "set"
    scale: float = 1.0  #: what the value is multiplied by first (milliseconds to seconds)

    def sample_names(self) -> tuple[str, ...]:
        """The names this family takes in an exposition (OpenMetrics' included), which no
        other family may take."""
        if self.kind == "counter":
            return (self.name.removesuffix("_total"), self.name)
        if self.kind == "summary":
            return (self.name, f"{self.name}_count", f"{self.name}_sum")
        return (self.name,)


def _gauge(name: str, help: str) -> Series:
    return Series(name, "gauge", help)


def _counter(name: str, help: str, op: Op = "add") -> Series:
    return Series(name, "counter", help, op)


#: The series of the agent's metrics and of ``pliant.dropped``, by (group, name).
AGENT_SERIES: dict[tuple[str, str], tuple[Series, ...]] = {
    ("pliant.agent", "rendezvous.duration.ms"): (
        Series("pliant_agent_rendezvous_duration_seconds", "gauge",
               "Seconds the agent's last rendezvous round took.", scale=0.001),
        _counter("pliant_agent_rendezvous_rounds_total",
                 "Rendezvous rounds the agent completed (the first, and one per restart or "
                 "membership change).", "count"),
    ),
    ("pliant.agent", "rendezvous.world_size"): (
        _gauge("pliant_agent_rendezvous_world_size", "Nodes in the agent's last rendezvous "
               "round."),),
    ("pliant.agent", "workers"): (
        _gauge("pliant_agent_workers", "Workers of the whole job (all nodes) after the "
               "agent's last rendezvous round."),),
    ("pliant.agent", "standbys"): (
        _gauge("pliant_agent_standbys", "Warm standby processes the agent holds ready."),),
    ("pliant.agent", "restarts"): (
        _counter("pliant_agent_restarts_total", "Times the worker group was restarted after "
                 "a worker failed."),),
    ("pliant.agent", "membership_changes"): (
        _counter("pliant_agent_membership_changes_total", "Times the worker group was "
                 "restarted because nodes joined or left."),),
    ("pliant", "dropped"): (
        _counter("pliant_dropped_total", "Metric values and events the process dropped (its "
                 "queue was full, or a handler failed or gave up on them).", "total"),),
}


def prometheus_name(text: str) -> str:
    """``text`` as a Prometheus metric name: each character outside ``[a-zA-Z0-9_]`` becomes
    ``_`` (``train.loss`` is ``train_loss``), and a leading digit gets a ``_`` before it."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", text)
    return "_" + name if not name or name[0].isdigit() else name


def series_of(group: str | None, name: str, counters: Sequence[str]) -> tuple[Series, ...]:
    """The series a value of ``group`` and ``name`` feeds (see the module's docstring)."""
    known = AGENT_SERIES.get((group or "", name))
    if known is not None:
        return known
    full = f"{group}.{name}" if group else name
    if full.endswith(_DURATION):
        base = prometheus_name(full[: -len(_DURATION)]) + "_duration_seconds"
        return (Series(base, "summary", f"{full}, in seconds: how many values, and their sum.",
                       "observe", 0.001),)
    if any(fnmatchcase(full, pattern) for pattern in (*BUILTIN_COUNTERS, *counters)):
        base = prometheus_name(full).removesuffix("_total")
        return (_counter(base + "_total", f"{full}: the sum of its values."),)
    return (_gauge(prometheus_name(full), f"{full}: its last value."),)


class _Family:
    """A series' values by label values; a summary's are [count, sum]."""

    __slots__ = ("samples", "series")

    def __init__(self, series: Series) -> None:
        self.series = series
        self.samples: dict[tuple[str, ...], list[float]] = {}


class SeriesStore:
    """The values of every series, updated by :meth:`put` (pliant's dispatcher thread) and
    read by :meth:`collect` (the HTTP server's thread, at each scrape), under one lock that
    each holds only to change or copy a few numbers.

    A value is dropped, and counted in :attr:`dropped`, when it is not a number a series of
    its kind can take (a counter's must be finite and not negative), when its series would
    be one beyond ``max_series``, or when its name is taken by a family of another kind
    (the gauge of ``train.step_success_total`` where ``prof``'s counter
    ``train_step_success_total`` is).
    """

    def __init__(self, labels: Sequence[str] = DEFAULT_LABELS,
                 counters: Sequence[str] = (), max_series: int = MAX_SERIES) -> None:
        self.labels = tuple(labels)
        self._counters = tuple(counters)
        self._max_series = max_series
        self._lock = threading.Lock()
        self._families: dict[str, _Family] = {}
        self._taken: dict[str, str] = {}  # each sample name, to the family that has it
        self._routes: dict[tuple[str | None, str], tuple[_Family, ...]] = {}
        self._series = 0
        self._refused: set[str] = set()  # names said once in the debug log
        #: Values dropped (see the class's docstring).
        self.dropped = 0

    def put(self, data: MetricData) -> None:
        """Change the series ``data`` feeds. Never raises."""
        try:
            value = float(data.value)
            tags = data.tags
            key = tuple(str(tags.get(label, "")) for label in self.labels)
        except Exception:
            with self._lock:
                self.dropped += 1
            return
        with self._lock:
            try:
                route = self._routes.get((data.group_name, data.name))
                if route is None:
                    route = self._route(data.group_name, data.name)
            except Exception:  # a name of the wrong type: never expected
                log.debug("prometheus: cannot place %r", data, exc_info=True)
                route = ()
            if not route:
                self.dropped += 1
            for family in route:
                if not self._update(family, key, value):
                    self.dropped += 1

    def _route(self, group: str | None, name: str) -> tuple[_Family, ...]:
        """The families a metric feeds, made when new (lock held)."""
        families = []
        for series in series_of(group, name, self._counters):
            family = self._families.get(series.name)
            if family is None:
                clash = [self._taken[n] for n in series.sample_names() if n in self._taken]
                if clash:
                    self._say_refused(series, clash[0])
                    continue
                family = self._families[series.name] = _Family(series)
                self._taken.update(dict.fromkeys(series.sample_names(), series.name))
            elif family.series.kind != series.kind:
                self._say_refused(series, family.series.name)
                continue
            families.append(family)
        route = tuple(families)
        if len(self._routes) < 2 * self._max_series:  # bounded, like the series
            self._routes[(group, name)] = route
        return route

    def _say_refused(self, series: Series, holder: str) -> None:
        if series.name not in self._refused and len(self._refused) < 100:
            self._refused.add(series.name)
            log.debug("prometheus: %s %s is dropped: %s is a family of another kind",
                      series.kind, series.name, holder)

    def _update(self, family: _Family, key: tuple[str, ...], value: float) -> bool:
        series = family.series
        value *= series.scale
        if series.kind == "counter" and series.op != "count" and not (
                math.isfinite(value) and value >= 0):
            return False
        sample = family.samples.get(key)
        if sample is None:
            if self._series >= self._max_series:
                return False
            self._series += 1
            sample = family.samples[key] = [0.0, 0.0] if series.kind == "summary" else [0.0]
        if series.op == "set" or series.op == "total":
            sample[0] = value
        elif series.op == "add":
            sample[0] += value
        elif series.op == "count":
            sample[0] += 1
        else:  # observe
            sample[0] += 1
            sample[1] += value
        return True

    def snapshot(self) -> list[tuple[Series, dict[tuple[str, ...], tuple[float, ...]]]]:
        """Every family with a copy of its values, as they are now."""
        with self._lock:
            return [(f.series, {k: tuple(v) for k, v in f.samples.items()})
                    for f in self._families.values() if f.samples]

    def collect(self) -> Iterator[Metric]:
        """The families as prometheus-client's metric families (the registry's collector
        protocol): copied under the lock, formatted outside it."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        labels = list(self.labels)
        for series, samples in self.snapshot():
            if series.kind == "summary":
                summary = SummaryMetricFamily(series.name, series.help, labels=labels)
                for key, (count, total) in samples.items():
                    summary.add_metric(list(key), int(count), total)
                yield summary
            elif series.kind == "counter":
                counter = CounterMetricFamily(series.name, series.help, labels=labels)
                for key, (value,) in samples.items():
                    counter.add_metric(list(key), value)
                yield counter
            else:
                gauge = GaugeMetricFamily(series.name, series.help, labels=labels)
                for key, (value,) in samples.items():
                    gauge.add_metric(list(key), value)
                yield gauge

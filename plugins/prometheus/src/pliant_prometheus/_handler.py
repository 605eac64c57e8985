"""The ``prometheus`` metric handler: values into in-memory series, served over HTTP."""

from __future__ import annotations

from collections.abc import Sequence

from pliant.plugin import MetricData, MetricHandler

from pliant_prometheus._series import DEFAULT_LABELS, MAX_SERIES, SeriesStore
from pliant_prometheus._server import DEFAULT_ADDRESS, DEFAULT_PORT, MetricsServer

__all__ = ["PrometheusMetricHandler"]


class PrometheusMetricHandler(MetricHandler):
    """Keeps every metric value as a Prometheus series and serves them on
    ``http://address:port/metrics`` from prometheus-client's HTTP server thread.

    :meth:`emit` (pliant's dispatcher thread) only changes numbers in memory; a scrape
    (the server's threads) copies them under a lock and formats them outside it. Under
    ``pliant run`` the handler lives in the agent, which hands it its workers' values too,
    so one endpoint per node shows the agent and every worker, each value labelled with
    ``labels`` (by default :data:`~pliant_prometheus.DEFAULT_LABELS`). Which series a
    value feeds is in :mod:`pliant_prometheus._series`.

    Serving starts when the handler is made: a port in use raises
    :class:`~pliant.errors.ConfigError`, so a run fails before its workers start.
    :meth:`close` stops serving; what is dropped is counted in :attr:`dropped`.
    """

    def __init__(self, *, port: int = DEFAULT_PORT, address: str = DEFAULT_ADDRESS,
                 labels: Sequence[str] = DEFAULT_LABELS, counters: Sequence[str] = (),
                 max_series: int = MAX_SERIES) -> None:
        self.store = SeriesStore(labels, counters, max_series)
        self._server = MetricsServer(self.store, address, port)

    @property
    def port(self) -> int:
        """The port ``/metrics`` is served on (the system's pick when ``port`` was 0)."""
        return self._server.port

    @property
    def url(self) -> str:
        """Where to scrape: ``http://ADDRESS:PORT/metrics``."""
        return self._server.url

    @property
    def dropped(self) -> int:
        """Values given up on: not numbers, beyond ``max_series``, or a clash of kinds."""
        return self.store.dropped

    def emit(self, metric_data: MetricData) -> None:
        self.store.put(metric_data)

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving and free the port (at the process's exit). Never raises."""
        self._server.close(timeout)

    def __repr__(self) -> str:
        return f"PrometheusMetricHandler(url={self.url!r})"

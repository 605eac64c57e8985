"""pliant metrics to CloudWatch ``PutMetricData``."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import quote

from pliant.plugin import MetricData, MetricHandler

from pliant_cloudwatch._shipper import CLOSE_TIMEOUT, FLUSH_INTERVAL, MAX_BUFFER, Shipper

__all__ = ["DEFAULT_DIMENSIONS", "DEFAULT_NAMESPACE", "CloudWatchMetricHandler"]

#: The dimensions a value gets, when it has them: ``group`` is the metric's group, the
#: others are tags pliant puts on every value.
DEFAULT_DIMENSIONS = ("group", "run_id", "role", "node", "rank")
#: The CloudWatch namespace of every metric, unless ``namespace`` says otherwise.
DEFAULT_NAMESPACE = "pliant"

# PutMetricData's limits: 1,000 datums per request, 150 distinct values in a datum's
# Values, 1 MB per HTTP POST, 30 dimensions, names up to 255 characters, dimension values
# up to 1,024, values within +-2^360.
_MAX_DATUMS = 1000
_MAX_VALUES = 150
_MAX_REQUEST_BYTES = 1_000_000  # under 1 MB, leaving room for the namespace and headers
_MAX_DIMENSIONS = 30
_MAX_NAME = 255
_MAX_DIMENSION_VALUE = 1024
_MAX_MAGNITUDE = 1.174271e108
_MIN_MAGNITUDE = 8.515920e-109
# CloudWatch refuses values older than two weeks or more than two hours ahead; one such
# value would fail the whole request, so they are dropped (and counted) one by one.
_MAX_AGE = 14 * 24 * 3600 - 600
_MAX_AHEAD = 2 * 3600 - 60
# Bytes in the query encoding (the largest botocore may pick), beyond the strings: a
# datum's keys (``MetricData.member.1000.MetricName=``, its timestamp), a dimension's,
# and one distinct value's (``MetricData.member.1000.Values.member.150=`` and its count).
_DATUM_OVERHEAD = 180
_DIMENSION_OVERHEAD = 100
_VALUE_OVERHEAD = 130
# Series seen, kept to spare each value the cleaning of its name and dimensions.
_MAX_SERIES_CACHED = 10_000


class _Series(NamedTuple):
    """A metric name and its dimensions, as sent; ``size`` is what they add to a request."""

    name: str
    dimensions: tuple[tuple[str, str], ...]
    size: int


class _Value(NamedTuple):
    series: _Series
    second: int  # values of one series in one second share a datum
    value: float


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


class _Request:
    """Values grouped into ``PutMetricData`` datums, within the API's limits: one datum per
    series and second, with its distinct values and their counts (a datum full at
    :data:`_MAX_VALUES` distinct values is followed by another)."""

    def __init__(self, max_bytes: int = _MAX_REQUEST_BYTES) -> None:
        self._max_bytes = max_bytes
        self._open: dict[tuple[_Series, int], dict[float, int]] = {}
        self._datums: list[tuple[_Series, int, dict[float, int]]] = []
        self.size = 0

    def add(self, item: _Value) -> bool:
        """Add ``item``; False (and nothing added) when it does not fit in this request."""
        key = (item.series, item.second)
        counts = self._open.get(key)
        if counts is not None and item.value in counts:
            counts[item.value] += 1
            return True
        new_datum = counts is None or len(counts) >= _MAX_VALUES
        cost = _VALUE_OVERHEAD + (_DATUM_OVERHEAD + item.series.size if new_datum else 0)
        if self._datums and (self.size + cost > self._max_bytes
                             or (new_datum and len(self._datums) >= _MAX_DATUMS)):
            return False
        if new_datum:
            counts = {}
            self._open[key] = counts
            self._datums.append((item.series, item.second, counts))
        assert counts is not None
        counts[item.value] = 1
        self.size += cost
        return True

    def metric_data(self) -> list[dict[str, Any]]:
        """The request's ``MetricData``."""
        data = []
        for series, second, counts in self._datums:
            datum: dict[str, Any] = {
                "MetricName": series.name,
                "Timestamp": datetime.fromtimestamp(second, timezone.utc),
                "Values": list(counts),
                "Counts": [float(count) for count in counts.values()],
            }
            if series.dimensions:
                datum["Dimensions"] = [{"Name": k, "Value": v} for k, v in series.dimensions]
            data.append(datum)
        return data


class CloudWatchMetricHandler(Shipper[_Value], MetricHandler):
    """Sends every metric value to CloudWatch with ``PutMetricData``.

    The value's name is the ``MetricName``; its dimensions are ``dimensions`` (by default
    :data:`DEFAULT_DIMENSIONS`) where the value has them: ``group`` from its group name,
    the others from its tags (``run_id``, ``role``, ``node``, ``rank``, ...). Values are
    buffered and sent by a thread of the handler's own every ``flush_interval`` seconds,
    or as soon as half of ``max_buffer`` is waiting. A request holds, per metric,
    dimensions and second, one datum with the distinct values and how often each came
    (``Values`` and ``Counts``): every value reaches CloudWatch, in far fewer and smaller
    requests than one datum per value. :meth:`emit` never blocks on the network and never
    raises; what is lost is counted in :attr:`dropped`.

    ``client`` is a boto3 CloudWatch client, or a
    :class:`~pliant_cloudwatch._aws.LazyClient` that makes one on the handler's thread
    (:func:`pliant_cloudwatch.create_metric_handler` builds it from settings).
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        flush_interval: float = FLUSH_INTERVAL,
        max_buffer: int = MAX_BUFFER,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        if len(dimensions) > _MAX_DIMENSIONS:
            raise ValueError(f"at most {_MAX_DIMENSIONS} dimensions, not {len(dimensions)}")
        self._namespace = namespace
        self._dimensions = tuple(dimensions)
        self._tag_dimensions = tuple(d for d in self._dimensions if d != "group")
        self._series: dict[tuple[Any, ...], _Series | None] = {}
        # batch_count is only when to send early here (half the buffer): _take_batch fills
        # a request by datums and bytes, not by values.
        super().__init__(client, thread_name="pliant-cloudwatch-metrics",
                         flush_interval=flush_interval, max_buffer=max_buffer,
                         close_timeout=close_timeout, batch_count=max(1, max_buffer // 2),
                         batch_bytes=_MAX_REQUEST_BYTES)

    @property
    def namespace(self) -> str:
        return self._namespace

    def emit(self, metric_data: MetricData) -> None:
        self._accept(self._value, metric_data)

    def _value(self, data: MetricData) -> _Value | None:
        """What to buffer for ``data``, or None if CloudWatch would refuse it."""
        value = float(data.value)
        if not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
            return None
        if abs(value) < _MIN_MAGNITUDE:
            value = 0.0
        timestamp = float(data.timestamp)
        now = time.time()
        if not now - _MAX_AGE <= timestamp <= now + _MAX_AHEAD:
            return None
        tags = data.tags or {}
        key = (data.name, data.group_name, *(tags.get(k) for k in self._tag_dimensions))
        try:
            series = self._series[key]
        except KeyError:
            series = self._make_series(data)
            if len(self._series) >= _MAX_SERIES_CACHED:
                self._series.clear()
            self._series[key] = series
        if series is None:
            return None
        return _Value(series, int(timestamp), value)

    def _make_series(self, data: MetricData) -> _Series | None:
        """The cleaned name and dimensions of ``data``; None if the name is empty."""
        name = _ascii(str(data.name))[:_MAX_NAME]
        if not name.strip():
            return None
        tags = data.tags or {}
        dimensions = []
        size = len(quote(name, safe=""))
        for key in self._dimensions:
            raw = data.group_name if key == "group" else tags.get(key)
            if raw is None:
                continue
            text = _ascii(str(raw))[:_MAX_DIMENSION_VALUE]
            if not text.strip():
                continue
            dimensions.append((key, text))
            size += _DIMENSION_OVERHEAD + len(quote(key, safe="")) + len(quote(text, safe=""))
        return _Series(name, tuple(dimensions), size)

    def _size(self, item: _Value) -> int:
        # At most: the value alone in its datum.
        return _DATUM_OVERHEAD + item.series.size + _VALUE_OVERHEAD

    def _take_batch(self) -> list[_Value]:
        request = _Request(self._batch_bytes)
        batch: list[_Value] = []
        buffer = self._buffer
        while buffer and request.add(buffer[0]):
            batch.append(buffer.popleft())
        self._buffered_bytes -= sum(self._size(item) for item in batch)
        return batch

    def _send(self, batch: list[_Value]) -> int:
        request = _Request(self._batch_bytes)
        for item in batch:
            request.add(item)  # fits: _take_batch built the same request
        self.client.put_metric_data(Namespace=self._namespace,
                                     MetricData=request.metric_data())
        return 0

    def __repr__(self) -> str:
        return f"CloudWatchMetricHandler(namespace={self._namespace!r})"

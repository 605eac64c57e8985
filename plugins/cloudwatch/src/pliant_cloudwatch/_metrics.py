"""pliant metrics to CloudWatch ``PutMetricData``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import quote

from pliant.metrics import MetricData, MetricHandler

from pliant_cloudwatch._shipper import Shipper

__all__ = ["DEFAULT_DIMENSIONS", "CloudWatchMetricHandler"]

log = logging.getLogger("pliant_cloudwatch")

#: The dimensions a value gets, when it has them: ``group`` is the metric's group, the
#: others are tags pliant puts on every value.
DEFAULT_DIMENSIONS = ("group", "run_id", "role", "node", "rank")

# PutMetricData's limits: 1,000 values per request, 1 MB per HTTP POST, 30 dimensions,
# names up to 255 characters, dimension values up to 1,024, values within +-2^360.
_MAX_DATUMS = 1000
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
# Bytes a datum costs in the query encoding (the largest botocore may pick), beyond its
# strings: each field's key (``MetricData.member.1000.Dimensions.member.30.Value=``) and
# the timestamp and value.
_DATUM_OVERHEAD = 180
_DIMENSION_OVERHEAD = 100


class _Datum(NamedTuple):
    fields: dict[str, Any]
    size: int


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


class CloudWatchMetricHandler(Shipper[_Datum], MetricHandler):
    """Sends every metric value to CloudWatch as a ``PutMetricData`` datum.

    The value's name is the ``MetricName``; its dimensions are ``dimensions`` (by default
    :data:`DEFAULT_DIMENSIONS`) where the value has them: ``group`` from its group name,
    the others from its tags (``run_id``, ``role``, ``node``, ``rank``, ...). Values are
    buffered and sent by a thread of the handler's own, up to 1,000 per request, every
    ``flush_interval`` seconds or as soon as 1,000 are waiting. :meth:`emit` never blocks
    on the network and never raises; what is lost is counted in :attr:`dropped`.

    ``client`` is a boto3 CloudWatch client (see :func:`pliant_cloudwatch.create_metric_handler`
    for one built from settings).
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "pliant",
        dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
        flush_interval: float = 5.0,
        max_buffer: int = 10_000,
        close_timeout: float = 5.0,
    ) -> None:
        if len(dimensions) > _MAX_DIMENSIONS:
            raise ValueError(f"at most {_MAX_DIMENSIONS} dimensions, not {len(dimensions)}")
        self._client = client
        self._namespace = namespace
        self._dimensions = tuple(dimensions)
        super().__init__(thread_name="pliant-cloudwatch-metrics",
                         flush_interval=flush_interval, max_buffer=max_buffer,
                         close_timeout=close_timeout, batch_count=_MAX_DATUMS,
                         batch_bytes=_MAX_REQUEST_BYTES)

    @property
    def client(self) -> Any:
        """The boto3 CloudWatch client the handler sends with (to add botocore hooks)."""
        return self._client

    @property
    def namespace(self) -> str:
        return self._namespace

    def emit(self, metric_data: MetricData) -> None:
        try:
            datum = self._datum(metric_data)
        except Exception:  # a value the handler cannot read: count it, never raise
            log.debug("cloudwatch: cannot send metric %r", metric_data, exc_info=True)
            datum = None
        if datum is None:
            self._drop()
        else:
            self._offer(datum)

    def _datum(self, data: MetricData) -> _Datum | None:
        """The ``PutMetricData`` datum for ``data``, or None if CloudWatch would refuse it."""
        value = float(data.value)
        if not math.isfinite(value) or abs(value) > _MAX_MAGNITUDE:
            return None
        if abs(value) < _MIN_MAGNITUDE:
            value = 0.0
        name = _ascii(str(data.name))[:_MAX_NAME]
        if not name.strip():
            return None
        now = time.time()
        if not now - _MAX_AGE <= data.timestamp <= now + _MAX_AHEAD:
            return None
        tags = data.tags or {}
        dimensions = []
        size = _DATUM_OVERHEAD + len(quote(name, safe=""))
        for key in self._dimensions:
            raw = data.group_name if key == "group" else tags.get(key)
            if raw is None:
                continue
            text = _ascii(str(raw))[:_MAX_DIMENSION_VALUE]
            if not text.strip():
                continue
            dimensions.append({"Name": key, "Value": text})
            size += _DIMENSION_OVERHEAD + len(quote(key, safe="")) + len(quote(text, safe=""))
        fields: dict[str, Any] = {
            "MetricName": name,
            "Timestamp": datetime.fromtimestamp(data.timestamp, timezone.utc),
            "Value": value,
        }
        if dimensions:
            fields["Dimensions"] = dimensions
        return _Datum(fields, size)

    def _size(self, item: _Datum) -> int:
        return item.size

    def _send(self, batch: list[_Datum]) -> int:
        self._client.put_metric_data(Namespace=self._namespace,
                                     MetricData=[datum.fields for datum in batch])
        return 0

    def __repr__(self) -> str:
        return f"CloudWatchMetricHandler(namespace={self._namespace!r})"

"""pliant-cloudwatch: pliant's metrics to Amazon CloudWatch, its events to CloudWatch Logs.

Two backends named ``cloudwatch``, chosen with ``--metrics cloudwatch`` and ``--events
cloudwatch`` and configured with ``--metrics-conf cloudwatch.KEY=VALUE`` and
``--events-conf cloudwatch.KEY=VALUE``:

- :class:`CloudWatchMetricHandler` sends each value with ``PutMetricData``, in the
  ``namespace`` (``pliant``), named as the metric, with the dimensions ``group``,
  ``run_id``, ``role``, ``node`` and ``rank`` where the value has them;
- :class:`CloudWatchEventHandler` sends each event with ``PutLogEvents``, as JSON, to the
  log group ``log_group`` (``/pliant/events``), one stream per run and node.

Both buffer what they are given and send it from a thread of their own, in batches, at
least every ``flush_interval`` seconds; the caller never waits for AWS, and nothing raises.
Credentials and region come from boto3's usual chain; boto3 is imported only when a
handler is built, so listing plugins stays instant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pliant.plugin import (
    EventBackend,
    MetricBackend,
    Setting,
    Settings,
    hookimpl,
    parse_int,
    parse_str,
)

from pliant_cloudwatch._logs import (
    DEFAULT_LOG_GROUP,
    DEFAULT_LOG_STREAM,
    CloudWatchEventHandler,
    check_stream_template,
)
from pliant_cloudwatch._metrics import (
    DEFAULT_DIMENSIONS,
    DEFAULT_NAMESPACE,
    CloudWatchMetricHandler,
)
from pliant_cloudwatch._shipper import CLOSE_TIMEOUT, FLUSH_INTERVAL, MAX_BUFFER

__all__ = [
    "DEFAULT_DIMENSIONS",
    "DEFAULT_LOG_GROUP",
    "DEFAULT_LOG_STREAM",
    "EVENT_SETTINGS",
    "METRIC_SETTINGS",
    "PLUGIN_API",
    "CloudWatchEventHandler",
    "CloudWatchMetricHandler",
    "create_event_handler",
    "create_metric_handler",
]

#: The version of pliant's plugin contract (:mod:`pliant.plugin`) this module is written for.
PLUGIN_API = 1


def _optional_str(value: Any) -> str | None:
    text = parse_str(value).strip()
    return text or None


def _seconds(value: Any, *, zero: bool) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if not (number >= 0 if zero else number > 0) or number == float("inf"):
        raise ValueError("expected a number of seconds " + (">= 0" if zero else "> 0"))
    return number


def _parse_seconds(value: Any) -> float:
    return _seconds(value, zero=False)


def _parse_close_timeout(value: Any) -> float:
    return _seconds(value, zero=True)


def _parse_endpoint(value: Any) -> str | None:
    text = _optional_str(value)
    if text is not None and not re.match(r"^https?://[^/\s]+", text):
        raise ValueError("expected a URL such as https://monitoring.us-east-1.amazonaws.com "
                         "or http://127.0.0.1:5000")
    return text


def _parse_region(value: Any) -> str | None:
    text = _optional_str(value)
    if text is not None and not re.match(r"^[a-z0-9-]+$", text):
        raise ValueError("expected an AWS region such as us-east-1")
    return text


def _parse_namespace(value: Any) -> str:
    text = parse_str(value).strip()
    if not 1 <= len(text) <= 255 or not text.isascii() or not text.isprintable():
        raise ValueError("expected 1 to 255 printable ASCII characters, such as pliant")
    if text.startswith((":", "AWS/")):
        raise ValueError("a CloudWatch namespace cannot start with ':' or 'AWS/' (AWS's own)")
    return text


def _parse_dimensions(value: Any) -> tuple[str, ...]:
    """Names separated by '+', spaces or commas (commas already separate settings in
    --metrics-conf), or a TOML list."""
    if isinstance(value, list | tuple):
        names = [parse_str(item).strip() for item in value]
    else:
        names = re.split(r"[+,\s]+", parse_str(value))
    result = tuple(dict.fromkeys(name for name in names if name))
    for name in result:
        if len(name) > 255 or not name.isascii() or not name.isprintable() \
                or name.startswith(":"):
            raise ValueError(f"expected dimension names such as group+node+rank; {name!r} is "
                             "not a CloudWatch dimension name")
    if len(result) > 30:
        raise ValueError("expected at most 30 dimensions (CloudWatch's limit)")
    return result


def _parse_log_group(value: Any) -> str:
    text = parse_str(value).strip()
    if not re.fullmatch(r"[\w./#-]{1,512}", text, flags=re.ASCII):
        raise ValueError("expected a log group name: 1 to 512 of a-z, A-Z, 0-9, '.', '-', "
                         "'_', '/' and '#', such as /pliant/events")
    return text


def _parse_log_stream(value: Any) -> str:
    return check_stream_template(parse_str(value).strip())


_COMMON: tuple[Setting, ...] = (
    Setting("region", _parse_region, None,
            "AWS region. Unset: boto3's chain (AWS_REGION, AWS_DEFAULT_REGION, the profile).",
            metavar="REGION"),
    Setting("endpoint_url", _parse_endpoint, None,
            "Endpoint to send to instead of AWS's (an emulator, a VPC endpoint). Unset: "
            "AWS_ENDPOINT_URL_<SERVICE> or AWS_ENDPOINT_URL, else AWS's.", metavar="URL"),
    Setting("flush_interval", _parse_seconds, FLUSH_INTERVAL,
            "Seconds between sends; a full batch is sent at once.", metavar="SECONDS"),
    Setting("max_buffer", parse_int(minimum=1), MAX_BUFFER,
            "Most items waiting to be sent; beyond it new ones are dropped and counted.",
            metavar="N"),
    Setting("max_attempts", parse_int(minimum=1, maximum=20), 3,
            "Attempts per request, in botocore's standard retry mode (with backoff).",
            metavar="N"),
    Setting("timeout", _parse_seconds, 5.0,
            "Seconds to connect, and again to read the answer, per attempt.", metavar="SECONDS"),
    Setting("close_timeout", _parse_close_timeout, CLOSE_TIMEOUT,
            "Most seconds that sending what is left may take at exit; what is unsent then "
            "is dropped and counted.", metavar="SECONDS"),
)

#: The settings of the ``cloudwatch`` metric handler.
METRIC_SETTINGS: tuple[Setting, ...] = (
    Setting("namespace", _parse_namespace, DEFAULT_NAMESPACE,
            "CloudWatch namespace of every metric.", metavar="NAMESPACE"),
    Setting("dimensions", _parse_dimensions, DEFAULT_DIMENSIONS,
            "Dimensions of each value, where it has them, separated by '+': group (the "
            "metric group) and tags (run_id, role, node, rank, restart_count).",
            metavar="NAME+..."),
    *_COMMON,
)

#: The settings of the ``cloudwatch`` event handler.
EVENT_SETTINGS: tuple[Setting, ...] = (
    Setting("log_group", _parse_log_group, DEFAULT_LOG_GROUP,
            "CloudWatch Logs group of the events (created if missing).", metavar="GROUP"),
    Setting("log_stream", _parse_log_stream, DEFAULT_LOG_STREAM,
            "Log stream name, a template over the event's metadata (created if missing).",
            metavar="TEMPLATE"),
    *_COMMON,
)


def _defaults(settings: Sequence[Setting], given: Settings) -> dict[str, Any]:
    values = {s.name: s.default for s in settings}
    values.update(given)
    return values


def create_metric_handler(settings: Settings) -> CloudWatchMetricHandler:
    """A metric handler from validated :data:`METRIC_SETTINGS` (missing keys: defaults).

    Raises :class:`~pliant.errors.ConfigError` without a region or credentials.
    """
    from pliant_cloudwatch._aws import make_client

    conf = _defaults(METRIC_SETTINGS, settings)
    client = make_client("cloudwatch", conf, "metric handler 'cloudwatch'")
    return CloudWatchMetricHandler(
        client, namespace=conf["namespace"], dimensions=conf["dimensions"],
        flush_interval=conf["flush_interval"], max_buffer=conf["max_buffer"],
        close_timeout=conf["close_timeout"])


def create_event_handler(settings: Settings) -> CloudWatchEventHandler:
    """An event handler from validated :data:`EVENT_SETTINGS` (missing keys: defaults).

    Raises :class:`~pliant.errors.ConfigError` without a region or credentials.
    """
    from pliant_cloudwatch._aws import make_client

    conf = _defaults(EVENT_SETTINGS, settings)
    client = make_client("logs", conf, "event handler 'cloudwatch'")
    return CloudWatchEventHandler(
        client, log_group=conf["log_group"], log_stream=conf["log_stream"],
        flush_interval=conf["flush_interval"], max_buffer=conf["max_buffer"],
        close_timeout=conf["close_timeout"])


@hookimpl
def pliant_metric_handlers() -> Sequence[MetricBackend]:
    return [MetricBackend("cloudwatch", create_metric_handler, settings=METRIC_SETTINGS,
                          description="Amazon CloudWatch metrics (PutMetricData).")]


@hookimpl
def pliant_event_handlers() -> Sequence[EventBackend]:
    return [EventBackend("cloudwatch", create_event_handler, settings=EVENT_SETTINGS,
                         description="Amazon CloudWatch Logs, one JSON log event per event.")]

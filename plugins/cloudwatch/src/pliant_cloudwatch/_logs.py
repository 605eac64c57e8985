"""pliant events to CloudWatch Logs ``PutLogEvents``."""

from __future__ import annotations

import json
import logging
import socket
import string
import time
from enum import Enum
from typing import Any, NamedTuple

from pliant.plugin import Event, EventHandler

from pliant_cloudwatch._shipper import CLOSE_TIMEOUT, FLUSH_INTERVAL, MAX_BUFFER, Shipper

__all__ = ["DEFAULT_LOG_GROUP", "DEFAULT_LOG_STREAM", "CloudWatchEventHandler",
           "check_stream_template"]

log = logging.getLogger("pliant_cloudwatch")

DEFAULT_LOG_GROUP = "/pliant/events"
#: One stream per run and node; the fields are the event's metadata.
DEFAULT_LOG_STREAM = "{run_id}/{node}"

# PutLogEvents' limits: 10,000 events and 1,048,576 bytes per request (each event's
# message in UTF-8 plus 26 bytes), a span of at most 24 hours, events sorted by time,
# none more than 2 hours ahead or older than 14 days.
_MAX_EVENTS = 10_000
_MAX_REQUEST_BYTES = 1_048_576
_EVENT_OVERHEAD = 26
_MAX_SPAN_MS = 24 * 3600 * 1000
_MAX_AGE_MS = (14 * 24 * 3600 - 600) * 1000
_MAX_AHEAD_MS = (2 * 3600 - 60) * 1000
# Log stream names: 1 to 512 characters, no ':' or '*'.
_MAX_STREAM_NAME = 512


class _LogEvent(NamedTuple):
    stream: str
    timestamp: int  # milliseconds since the epoch
    message: str
    size: int


def check_stream_template(template: str) -> str:
    """``template`` if it is a valid log stream name template, else ValueError."""
    if not template.strip():
        raise ValueError("expected a log stream name template such as {run_id}/{node}")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"expected a log stream name template such as {{run_id}}/{{node}}: "
                         f"{exc}") from None
    for literal, field, spec, conversion in parsed:
        if ":" in literal or "*" in literal:
            raise ValueError("a log stream name cannot contain ':' or '*'")
        if field is not None and (not field.isidentifier() or spec or conversion):
            raise ValueError(f"expected {{name}} fields of the event's metadata, such as "
                             f"{{run_id}} or {{node}}, not {{{field}}}")
    return template


class _Fields(dict[str, str]):
    """An event's metadata for the stream template: what is missing reads ``unknown``,
    except ``node``, which reads this host's name."""

    def __missing__(self, key: str) -> str:
        return socket.gethostname() if key == "node" else "unknown"


def _message(event: Event) -> str:
    """The event as ``Event.serialize()`` writes it; values JSON cannot hold become text."""
    source = event.source.value if isinstance(event.source, Enum) else str(event.source)
    return json.dumps({"name": event.name, "source": source, "timestamp": event.timestamp,
                       "metadata": dict(event.metadata)}, default=str)


class CloudWatchEventHandler(Shipper[_LogEvent], EventHandler):
    """Sends every event to CloudWatch Logs, as one JSON log event.

    Events go to ``log_group``, in the stream named by ``log_stream``, a template over the
    event's metadata (by default ``{run_id}/{node}``: one stream per run and node; under
    ``pliant run`` the agent sends its workers' events with its own, so a stream has one
    writer). The group and the stream are created the first time CloudWatch Logs says they
    are missing. Each message is what ``Event.serialize()`` writes, so
    ``Event.deserialize(message)`` reads it back. Events are buffered and sent by the
    handler's own thread in timestamp order, every ``flush_interval`` seconds or as soon as
    a full request is waiting. :meth:`record` never blocks on the network and never raises;
    what is lost is counted in :attr:`dropped`.

    ``client`` is a boto3 CloudWatch Logs client, or a
    :class:`~pliant_cloudwatch._aws.LazyClient` that makes one on the handler's thread
    (:func:`pliant_cloudwatch.create_event_handler` builds it from settings).
    """

    def __init__(
        self,
        client: Any,
        *,
        log_group: str = DEFAULT_LOG_GROUP,
        log_stream: str = DEFAULT_LOG_STREAM,
        flush_interval: float = FLUSH_INTERVAL,
        max_buffer: int = MAX_BUFFER,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._log_group = log_group
        self._log_stream = check_stream_template(log_stream)
        super().__init__(client, thread_name="pliant-cloudwatch-events",
                         flush_interval=flush_interval, max_buffer=max_buffer,
                         close_timeout=close_timeout, batch_count=_MAX_EVENTS,
                         batch_bytes=_MAX_REQUEST_BYTES)

    @property
    def log_group(self) -> str:
        return self._log_group

    def stream_name(self, metadata: dict[str, Any]) -> str:
        """The log stream an event with ``metadata`` goes to."""
        fields = _Fields({k: str(v) for k, v in metadata.items() if v is not None and v != ""})
        try:
            name = self._log_stream.format_map(fields)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            name = DEFAULT_LOG_STREAM.format_map(fields)
        name = name.replace(":", "_").replace("*", "_")[:_MAX_STREAM_NAME]
        return name or "unknown"

    def record(self, event: Event) -> None:
        self._accept(self._log_event, event)

    def _log_event(self, event: Event) -> _LogEvent | None:
        timestamp = int(event.timestamp * 1000)
        now = int(time.time() * 1000)
        if not now - _MAX_AGE_MS <= timestamp <= now + _MAX_AHEAD_MS:
            return None  # CloudWatch Logs would reject it
        message = _message(event)
        size = len(message.encode("utf-8")) + _EVENT_OVERHEAD
        if size > _MAX_REQUEST_BYTES:
            return None
        return _LogEvent(self.stream_name(dict(event.metadata)), timestamp, message, size)

    def _size(self, item: _LogEvent) -> int:
        return item.size

    def _take_batch(self) -> list[_LogEvent]:
        """The oldest events of one stream, in timestamp order, within the request's limits."""
        if not self._buffer:
            return []
        stream = self._buffer[0].stream
        same = sorted((e for e in self._buffer if e.stream == stream), key=lambda e: e.timestamp)
        batch: list[_LogEvent] = []
        size = 0
        for item in same:
            if batch and (len(batch) >= _MAX_EVENTS or size + item.size > _MAX_REQUEST_BYTES
                          or item.timestamp - batch[0].timestamp > _MAX_SPAN_MS):
                break
            batch.append(item)
            size += item.size
        if len(batch) == len(self._buffer):
            self._buffer.clear()
        else:
            taken = {id(item) for item in batch}
            kept = [item for item in self._buffer if id(item) not in taken]
            self._buffer.clear()
            self._buffer.extend(kept)
        self._buffered_bytes -= size
        return batch

    def _send(self, batch: list[_LogEvent]) -> int:
        stream = batch[0].stream
        events = [{"timestamp": e.timestamp, "message": e.message} for e in batch]
        try:
            response = self._put(stream, events)
        except Exception as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            self._create(stream)
            response = self._put(stream, events)
        return _rejected(response.get("rejectedLogEventsInfo") or {}, len(batch))

    def _put(self, stream: str, events: list[dict[str, Any]]) -> Any:
        return self.client.put_log_events(logGroupName=self._log_group, logStreamName=stream,
                                           logEvents=events)

    def _create(self, stream: str) -> None:
        """Create the log group and ``stream``; either may exist already."""
        try:
            self.client.create_log_group(logGroupName=self._log_group)
        except Exception as exc:
            # Without logs:CreateLogGroup the group may still exist: go on to the stream.
            if _code(exc) != "ResourceAlreadyExistsException":
                log.debug("cloudwatch: cannot create log group %r", self._log_group,
                          exc_info=True)
        try:
            self.client.create_log_stream(logGroupName=self._log_group, logStreamName=stream)
        except Exception as exc:
            if _code(exc) != "ResourceAlreadyExistsException":
                raise

    def __repr__(self) -> str:
        return f"CloudWatchEventHandler(log_group={self._log_group!r})"


def _code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, else ''."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _rejected(info: dict[str, Any], count: int) -> int:
    """How many events of a batch of ``count`` PutLogEvents rejected (too old, expired,
    too new): the old ones end before their index, the new ones start at theirs."""
    old = max(int(info.get("tooOldLogEventEndIndex", 0)),
              int(info.get("expiredLogEventEndIndex", 0)))
    new_start = info.get("tooNewLogEventStartIndex")
    new = count - int(new_start) if new_start is not None else 0
    return min(count, max(0, old) + max(0, new))

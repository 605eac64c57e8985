"""The worker's end of the relay, and what travels on it.

A worker started by ``pliant run`` does not build the handlers itself: its records go, in
batches, as datagrams on a Unix socket the agent listens on (``PLIANT_RELAY`` names it),
and the agent hands them to its own handlers with the worker's tags (rank and all)
untouched. So a node talks to CloudWatch (or any sink) once, not once per worker: the
workers never import boto3, never open a connection, never wait at exit for an endpoint
that is down; one log stream per node has one writer.

Both ends are pliant's background threads, never the training thread:

- in the worker, :class:`RelayClient` is the one handler the dispatcher thread calls; it
  adds each record to a batch, and sends the batch when it is full or when the
  dispatcher's queue is empty. What cannot be sent (the agent is gone, a record too large
  for a datagram) is counted in ``dropped`` and reported as ``pliant.dropped``;
- in the agent, :class:`~pliant._delivery.relay.Relay` owns the socket and a thread
  ("pliant-relay") that blocks in ``recv`` and hands each record on.

Records are JSON, one per line: ``["m", timestamp, group, name, value, tags]`` for a
metric, ``["e", name, source, timestamp, metadata]`` for an event.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading

from pliant._delivery.dispatcher import dispatcher
from pliant.events.types import Event, EventHandler, EventSource
from pliant.metrics.types import MetricData, MetricHandler

__all__ = ["MAX_DATAGRAM", "RELAY_ENV", "RelayClient", "client_from_env", "decode"]

log = logging.getLogger("pliant.sinks")

#: The environment variable that gives a worker the path of its agent's socket.
RELAY_ENV = "PLIANT_RELAY"
#: A batch is sent once it would grow past this many bytes.
BATCH_BYTES = 60_000
#: The largest datagram either end handles (a record alone may be up to this).
MAX_DATAGRAM = 200_000
#: How long a worker's sink thread waits for room in the agent's socket before it drops
#: the batch (the agent is stuck); training never waits for it.
SEND_TIMEOUT = 2.0


def _encode_metric(data: MetricData) -> bytes:
    return json.dumps(["m", data.timestamp, data.group_name, data.name, data.value,
                       dict(data.tags)], default=str).encode()


def _encode_event(event: Event) -> bytes:
    source = event.source.value if isinstance(event.source, EventSource) else str(event.source)
    return json.dumps(["e", event.name, source, event.timestamp, event.metadata],
                      default=str).encode()


def decode(line: bytes) -> MetricData | Event:
    """One record as :class:`RelayClient` encoded it."""
    record = json.loads(line)
    kind = record[0]
    if kind == "m":
        _, timestamp, group, name, value, tags = record
        return MetricData(float(timestamp), group, str(name), value,
                          {str(k): str(v) for k, v in tags.items()})
    if kind == "e":
        _, name, source, timestamp, metadata = record
        return Event(str(name), EventSource(source), float(timestamp), dict(metadata))
    raise ValueError(f"unknown record kind {kind!r}")


class RelayClient(MetricHandler, EventHandler):
    """A worker's handler for metrics and events alike: sends them to the agent's
    :class:`~pliant._delivery.relay.Relay` at ``path``. Called from the dispatcher's
    thread only (and by ``close()`` at exit); never raises."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_DATAGRAM + 4096)
        self._sock.settimeout(SEND_TIMEOUT)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._pending: list[bytes] = []
        self._size = 0
        #: Records that did not reach the agent.
        self.dropped = 0
        #: Records that did.
        self.sent = 0

    def emit(self, metric_data: MetricData) -> None:
        self._add(_encode_metric(metric_data))

    def record(self, event: Event) -> None:
        self._add(_encode_event(event))

    def _add(self, line: bytes) -> None:
        with self._lock:
            self._forget_if_forked()
            if len(line) > MAX_DATAGRAM:
                self.dropped += 1
                log.debug("relay: a record of %d bytes is too large to send", len(line))
                return
            if self._pending and self._size + len(line) + 1 > BATCH_BYTES:
                self._send_locked()
            self._pending.append(line)
            self._size += len(line) + 1

    def send(self) -> None:
        """Send the batch being built, if any."""
        with self._lock:
            self._forget_if_forked()
            self._send_locked()

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is batched; True when nothing was dropped so far. (Sending never takes
        longer than :data:`SEND_TIMEOUT`; ``timeout`` is accepted for the handlers' API.)"""
        self.send()
        return self.dropped == 0

    def close(self, timeout: float | None = None) -> None:
        """At exit: send what is left."""
        self.send()

    def _forget_if_forked(self) -> None:
        """A forked child (a DataLoader worker) inherits the batch; its parent sends it."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._pending.clear()
            self._size = 0

    def _send_locked(self) -> None:
        if not self._pending:
            return
        count = len(self._pending)
        data = b"\n".join(self._pending)
        self._pending.clear()
        self._size = 0
        try:
            self._sock.sendto(data, self._path)
        except OSError as exc:  # the agent is gone, or stuck long enough to time out
            self.dropped += count
            log.debug("relay: %d records not sent to %s: %s", count, self._path, exc)
        else:
            self.sent += count

    def __repr__(self) -> str:
        return f"RelayClient({self._path!r})"


_client: RelayClient | None = None
_client_lock = threading.Lock()


def client_from_env() -> RelayClient | None:
    """This process's :class:`RelayClient`, when its agent gave it ``PLIANT_RELAY``: one
    for metrics and events, sending each batch when the dispatcher's queue runs empty."""
    global _client
    path = os.environ.get(RELAY_ENV, "")
    if not path:
        return None
    with _client_lock:
        if _client is None:
            _client = RelayClient(path)
            dispatcher.when_idle(_client.send)
        return _client

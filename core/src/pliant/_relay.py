"""Workers' metrics and events, relayed to the agent's handlers over a local socket.

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
- in the agent, :class:`Relay` owns the socket and a thread ("pliant-relay") that blocks
  in ``recv`` and queues each record for the agent's handlers.

Records are JSON, one per line: ``["m", timestamp, group, name, value, tags]`` for a
metric, ``["e", name, source, timestamp, metadata]`` for an event.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from typing import Any

from pliant.events import Event, EventHandler, EventSource
from pliant.metrics import MetricData, MetricHandler

__all__ = ["RELAY_ENV", "Relay", "RelayClient"]

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


def _decode(line: bytes) -> MetricData | Event:
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
    :class:`Relay` at ``path``. Called from the dispatcher's thread only (and by
    ``close()`` at exit); never raises."""

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
            from pliant._dispatch import dispatcher

            _client = RelayClient(path)
            dispatcher.when_idle(_client.send)
        return _client


class Relay:
    """The agent's end: a Unix datagram socket in a private directory, and the thread that
    queues what arrives for the agent's handlers. :meth:`worker_env` is what a worker needs
    to send to it."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="pliant-relay-")  # mode 0700: ours alone
        self.path = os.path.join(self._dir, "sinks.sock")
        if len(self.path.encode()) > 100:  # AF_UNIX paths are limited to 108 bytes
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = tempfile.mkdtemp(prefix="pliant-relay-", dir="/tmp")
            self.path = os.path.join(self._dir, "sinks.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Room for bursts from many workers while the thread waits for the GIL.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind(self.path)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pliant-relay", daemon=True)

    def worker_env(self) -> dict[str, str]:
        return {RELAY_ENV: self.path}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Queue what the workers sent before now, then stop and remove the socket. Call it
        once the workers are gone: what they sent is in the socket, ahead of the stop."""
        self._stopping = True
        if self._thread.is_alive():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as wake:
                    wake.settimeout(timeout)
                    wake.sendto(b"", self.path)  # after every datagram already queued
            except OSError:
                log.debug("relay: cannot wake the thread", exc_info=True)
            self._thread.join(timeout)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _run(self) -> None:
        from pliant import events, metrics
        from pliant._dispatch import dispatcher

        while True:
            try:
                data = self._sock.recv(MAX_DATAGRAM + 4096)
            except OSError:
                return  # closed under us
            if not data:
                if self._stopping:
                    return
                continue
            for line in data.split(b"\n"):
                try:
                    record: Any = _decode(line)
                except Exception:  # never expected: count it as pliant.dropped
                    dispatcher.dropped += 1
                    log.debug("relay: cannot read %r", line[:200], exc_info=True)
                    continue
                if isinstance(record, MetricData):
                    metrics._forward(record)
                else:
                    events._forward(record)

"""The agent's end of the relay: the socket its workers send their records to.

The worker's end and the wire format are in :mod:`pliant._delivery.relay_client`. What
arrives goes to the callbacks the agent gives (``on_metric``, ``on_event``); without
them, to this process's handlers, each record with the worker's tags as they are.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable

from pliant._delivery.dispatcher import dispatcher
from pliant._delivery.handlers import event_handlers, metric_handlers
from pliant._delivery.relay_client import MAX_DATAGRAM, RELAY_ENV, decode
from pliant.events.types import Event
from pliant.metrics.types import MetricData

__all__ = ["Relay"]

log = logging.getLogger("pliant.sinks")


def _to_metric_handlers(data: MetricData) -> None:
    metric_handlers.send(data, data.group_name)


def _to_event_handlers(event: Event) -> None:
    event_handlers.send(event)


class Relay:
    """A Unix datagram socket in a private directory, and the thread that hands what
    arrives to ``on_metric`` and ``on_event`` (default: queue it for this process's
    handlers). :meth:`worker_env` is what a worker needs to send to it."""

    def __init__(self, on_metric: Callable[[MetricData], None] | None = None,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self._on_metric = on_metric or _to_metric_handlers
        self._on_event = on_event or _to_event_handlers
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
        os.chmod(self.path, 0o600)  # in a 0700 folder already: only the user's workers send
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
                    record = decode(line)
                    if isinstance(record, MetricData):
                        self._on_metric(record)
                    else:
                        self._on_event(record)
                except Exception:  # never expected: count it as pliant.dropped
                    dispatcher.dropped += 1
                    log.debug("relay: cannot hand on %r", line[:200], exc_info=True)

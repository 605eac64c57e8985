"""The HTTP server that answers scrapes: prometheus-client's, on a thread of its own.

The server is prometheus-client's ``start_http_server`` (a thread that accepts, and one
thread per request), so a scrape, however slow its client, runs beside pliant's
dispatcher thread and never in its way: the only thing both touch is the
:class:`~pliant_prometheus._series.SeriesStore`'s lock, held to copy numbers.

Binding happens when the handler is built, so a port that is taken, or an address that is
not this machine's, fails the run before any worker starts, with an error that says which
and how to fix it.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import Any

from pliant.plugin import ConfigError

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_PORT", "MetricsServer"]

log = logging.getLogger("pliant_prometheus")

#: The port ``/metrics`` is served on, unless ``port`` says otherwise: one number for every
#: node, so that one scrape configuration fits them all.
DEFAULT_PORT = 9473
#: The address it is served on, unless ``address`` says otherwise: loopback, so that nothing
#: is exposed beyond the machine unless asked (``address=0.0.0.0`` for a Prometheus elsewhere).
DEFAULT_ADDRESS = "127.0.0.1"

_HOW_TO_SET = ("--metrics-conf prometheus.{key}={example} (or {key} = {toml} in the config "
               "file's [metrics_conf.prometheus], or "
               "PLIANT_METRICS_CONF=prometheus.{key}={example})")


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _other(port: int) -> int:
    return port + 1 if 0 < port < 65535 else DEFAULT_PORT + 1


def _bind_error(exc: OSError, address: str, port: int) -> ConfigError:
    """What went wrong binding ``address``:``port``, where each came from, and the fix."""
    where = _host_port(address, port)
    port_from = ("the default" if port == DEFAULT_PORT else "setting prometheus.port")
    address_from = ("the default" if address == DEFAULT_ADDRESS
                    else "setting prometheus.address")
    head = f"metric handler 'prometheus' cannot serve /metrics on {where}: "
    if isinstance(exc, socket.gaierror):
        return ConfigError(
            f"{head}address {address!r} ({address_from}) cannot be resolved ({exc}); give an "
            f"IP address of this machine, or 0.0.0.0 for all of them: "
            + _HOW_TO_SET.format(key="address", example="0.0.0.0", toml='"0.0.0.0"'))
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{head}port {port} ({port_from}) is already in use on this machine (another "
            f"pliant run, or another exporter, listens there); choose a free one: "
            + _HOW_TO_SET.format(key="port", example=_other(port), toml=_other(port))
            + f"; port 0 lets the system pick one; or stop what listens on {port}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"{head}address {address!r} ({address_from}) is not one of this machine's; give "
            f"one of its IP addresses, or 0.0.0.0 for all of them: "
            + _HOW_TO_SET.format(key="address", example="0.0.0.0", toml='"0.0.0.0"'))
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"{head}port {port} ({port_from}) needs privileges this process lacks (ports "
            f"below 1024 do); choose one from 1024 up: "
            + _HOW_TO_SET.format(key="port", example=DEFAULT_PORT, toml=DEFAULT_PORT))
    return ConfigError(f"{head}{exc.strerror or exc} (port {port}: {port_from}; address "
                       f"{address!r}: {address_from})")


class MetricsServer:
    """Serves ``collector`` (anything with ``collect()``) on ``address``:``port`` from the
    moment it is made; ``port=0`` takes one the system picks (:attr:`port` says which).

    Raises :class:`~pliant.errors.ConfigError` when it cannot bind.
    """

    def __init__(self, collector: Any, address: str, port: int) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        try:
            self._httpd, self._thread = start_http_server(port, addr=address,
                                                          registry=registry)
        except OSError as exc:
            raise _bind_error(exc, address, port) from exc
        self._thread.name = "pliant-prometheus"
        self.address = address
        #: The port it listens on (the one the system picked, for ``port=0``).
        self.port = int(self._httpd.server_address[1])
        self._closed = False

    @property
    def url(self) -> str:
        """Where to scrape: ``http://ADDRESS:PORT/metrics``."""
        return f"http://{_host_port(self.address, self.port)}/metrics"

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving and free the port, within ``timeout`` seconds. Never raises.

        ``shutdown()`` waits for the server's loop, which looks for it only between
        requests or every half second; a connection made while it waits wakes the loop
        at once, so a run's exit is not held up.
        """
        if self._closed:
            return
        self._closed = True
        stopper = threading.Thread(target=self._httpd.shutdown, name="pliant-prometheus-stop",
                                   daemon=True)
        stopper.start()
        deadline = time.monotonic() + timeout
        while stopper.is_alive() and time.monotonic() < deadline:
            self._wake()
            stopper.join(0.02)
        if stopper.is_alive():
            log.debug("prometheus: the server did not stop within %.1f s", timeout)
            return  # its thread is a daemon; closing the socket under it would make it spin
        try:
            self._httpd.server_close()
        except OSError:
            log.debug("prometheus: closing the server's socket failed", exc_info=True)

    def _wake(self) -> None:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.address,
                                                                          self.address)
        try:
            with socket.create_connection((host, self.port), timeout=0.1):
                pass
        except OSError:
            pass

"""The agent's health check: torch's ``HealthCheckServer``, serving real HTTP.

torch's open-source server is a stub that serves nothing; this one answers every ``GET``
on its port, from a thread of the agent, with JSON: ``alive``, ``last_progress_time``
(what ``alive_callback`` returns: seconds since the epoch of the agent's last heartbeat),
``age_s``, ``timeout_s`` and whatever ``status_callback`` adds (the agent adds its state,
restart count and workers). The status is 200 while the heartbeat is at most ``timeout``
seconds old, else 503. The agent serves it when ``TORCHELASTIC_HEALTH_CHECK_PORT`` is set.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["HEALTH_CHECK_PORT_ENV", "HealthCheckServer", "create_healthcheck_server"]

log = logging.getLogger("pliant.agent")

#: torch's variable: the port the agent serves its health check on.
HEALTH_CHECK_PORT_ENV = "TORCHELASTIC_HEALTH_CHECK_PORT"


class HealthCheckServer:
    """``HealthCheckServer(alive_callback, port, timeout)``, torch's signature; ``start()``
    binds ``port`` on every interface (0: a free one, then in :attr:`port`) and raises
    ``OSError`` when it cannot; ``stop()`` closes it."""

    def __init__(self, alive_callback: Callable[[], float], port: int, timeout: float,
                 status_callback: Callable[[], dict[str, Any]] | None = None) -> None:
        self._alive_callback = alive_callback
        self._port = port
        self._timeout = timeout
        self._status_callback = status_callback
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def alive_callback(self) -> Callable[[], float]:
        return self._alive_callback

    @property
    def port(self) -> int:
        """The port served (the one chosen, when given 0)."""
        return self._server.server_address[1] if self._server is not None else self._port

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body a request gets now."""
        last = self._alive_callback()
        age = max(time.time() - last, 0.0)
        alive = age <= self._timeout
        body: dict[str, Any] = {"alive": alive, "last_progress_time": last,
                                "age_s": round(age, 3), "timeout_s": self._timeout}
        if self._status_callback is not None:
            body.update(self._status_callback())
        return (200 if alive else 503), body

    def start(self) -> None:
        if self._server is not None:
            return
        checker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                try:
                    status, body = checker.report()
                except Exception as exc:  # a broken callback is an unhealthy agent
                    status, body = 503, {"alive": False, "error": f"{type(exc).__name__}: {exc}"}
                data = json.dumps(body, default=str).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("health check: " + format, *args)

        self._server = ThreadingHTTPServer(("", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-check",
                                        daemon=True)
        self._thread.start()
        log.info("health check served on port %d", self.port)

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None


def create_healthcheck_server(alive_callback: Callable[[], float], port: int,
                              timeout: float) -> HealthCheckServer:
    """torch's factory: ``HealthCheckServer(alive_callback, port, timeout)``."""
    return HealthCheckServer(alive_callback, port, timeout)

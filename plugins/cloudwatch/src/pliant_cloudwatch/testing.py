"""A CloudWatch and CloudWatch Logs emulator on loopback, for tests.

pliant-cloudwatch's tests and pliant's end-to-end tests send to a real HTTP endpoint,
never a mocked boto3: :class:`CloudWatchEmulator` runs moto's server on ``127.0.0.1``
with a free port, in a thread of this process, and reads back what arrived::

    from pliant_cloudwatch.testing import CloudWatchEmulator

    with CloudWatchEmulator() as aws:
        run_pliant(env={**os.environ, **aws.env()}, args=["--metrics", "cloudwatch"])
        assert aws.statistics("pliant", "steps", {"group": "train"})["SampleCount"] == 10

:class:`FailingEndpoint` answers every request with one HTTP status (a 500, a 403), to
see what the handlers do when AWS refuses.

This needs moto's server: ``pip install './plugins/cloudwatch[testing]'`` in a checkout of
pliant (once released: ``pip install 'pliant-cloudwatch[testing]'``). pliant itself never
imports this module.
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

__all__ = ["CloudWatchEmulator", "FailingEndpoint", "dummy_credentials"]

REGION = "us-east-1"


def dummy_credentials() -> dict[str, str]:
    """Environment variables that give boto3 a region and credentials the emulator accepts,
    and keep it from asking an EC2 metadata endpoint."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


class CloudWatchEmulator:
    """moto's server on ``127.0.0.1`` and a free port, serving CloudWatch and Logs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and so the handlers) at the emulator."""
        return {**dummy_credentials(), "AWS_ENDPOINT_URL": self.endpoint_url}

    def start(self) -> CloudWatchEmulator:
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO on stderr: keep it to errors.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> CloudWatchEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` ("cloudwatch", "logs") talking to the emulator."""
        import boto3

        creds = dummy_credentials()
        return boto3.session.Session(
            aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client(service, endpoint_url=self.endpoint_url)

    def metric_names(self, namespace: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
        """Every metric in ``namespace``: its name and dimensions (name, value) pairs."""
        found = set()
        paginator = self.client("cloudwatch").get_paginator("list_metrics")
        for page in paginator.paginate(Namespace=namespace):
            for metric in page["Metrics"]:
                dims = frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
                found.add((metric["MetricName"], dims))
        return found

    def statistics(self, namespace: str, name: str, dimensions: Mapping[str, str],
                   window: float = 3600.0) -> dict[str, float]:
        """Sum, SampleCount, Minimum and Maximum of a metric over the last ``window``
        seconds (and as far ahead), in one period."""
        now = time.time()
        period = int(2 * window) // 60 * 60 or 60
        answer = self.client("cloudwatch").get_metric_statistics(
            Namespace=namespace, MetricName=name,
            Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
            StartTime=now - window, EndTime=now + window, Period=period,
            Statistics=["Sum", "SampleCount", "Minimum", "Maximum"])
        totals = {"Sum": 0.0, "SampleCount": 0.0, "Minimum": float("inf"),
                  "Maximum": float("-inf")}
        for point in answer["Datapoints"]:
            totals["Sum"] += point["Sum"]
            totals["SampleCount"] += point["SampleCount"]
            totals["Minimum"] = min(totals["Minimum"], point["Minimum"])
            totals["Maximum"] = max(totals["Maximum"], point["Maximum"])
        return totals

    def log_streams(self, log_group: str) -> list[str]:
        """The names of the streams in ``log_group``."""
        logs = self.client("logs")
        names: list[str] = []
        for page in logs.get_paginator("describe_log_streams").paginate(logGroupName=log_group):
            names += [stream["logStreamName"] for stream in page["logStreams"]]
        return names

    def log_events(self, log_group: str, stream: str) -> list[dict[str, Any]]:
        """The events of one stream, oldest first: ``timestamp`` (ms) and ``message``."""
        logs = self.client("logs")
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"logGroupName": log_group, "logStreamName": stream,
                                      "startFromHead": True}
            if token is not None:
                kwargs["nextToken"] = token
            page = logs.get_log_events(**kwargs)
            events += [{"timestamp": e["timestamp"], "message": e["message"]}
                       for e in page["events"]]
            if not page["events"] or page.get("nextForwardToken") in (None, token):
                return events
            token = page["nextForwardToken"]


class _Refuser(http.server.BaseHTTPRequestHandler):
    server: _RefusingServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or 0)
        self.rfile.read(length)
        with self.server.lock:
            self.server.requests += 1
        body = b'{"__type": "' + self.server.code.encode() + b'", "message": "refused"}'
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-query-error", self.server.code + ";Sender")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RefusingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    status = 500
    code = "InternalFailure"
    requests = 0
    lock = threading.Lock()


class FailingEndpoint:
    """An HTTP endpoint on loopback that answers every request with ``status`` and the AWS
    error ``code``; :attr:`requests` counts what it was sent."""

    def __init__(self, status: int = 500, code: str = "InternalFailure") -> None:
        self._server = _RefusingServer(("127.0.0.1", 0), _Refuser)
        self._server.status = status
        self._server.code = code
        self._server.lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="failing-endpoint")

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> int:
        return self._server.requests

    def __enter__(self) -> FailingEndpoint:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()

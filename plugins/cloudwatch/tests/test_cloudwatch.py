"""pliant-cloudwatch against a real CloudWatch emulator over HTTP (moto's server).

Handlers are built the way pliant builds them (the plugin manager, validated settings),
sent values and events, and what arrived is read back through the AWS APIs.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pliant.errors import ConfigError
from pliant.events import Event, EventSource
from pliant.metrics import MetricData
from pliant.plugins import PluginManager
from pliant_cloudwatch import CloudWatchEventHandler, CloudWatchMetricHandler
from pliant_cloudwatch.testing import CloudWatchEmulator, FailingEndpoint, dummy_credentials

FAST = {"flush_interval": "0.1"}

def metric(name: str, value: float, group: str | None = "train", **tags: str) -> MetricData:
    return MetricData(time.time(), group, name, value, tags=tags)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def metrics_handler(**conf: str) -> CloudWatchMetricHandler:
    handler = PluginManager().select("metrics", "cloudwatch", "test", {**FAST, **conf}).create()
    assert isinstance(handler, CloudWatchMetricHandler)
    return handler


def events_handler(**conf: str) -> CloudWatchEventHandler:
    handler = PluginManager().select("events", "cloudwatch", "test", {**FAST, **conf}).create()
    assert isinstance(handler, CloudWatchEventHandler)
    return handler


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Handlers to close at the end of a test, whatever happens."""
    handlers: list[Any] = []
    yield handlers
    for handler in handlers:
        handler.close(timeout=1.0)


TAGS = {"run_id": "r1", "role": "trainer", "node": "n1"}


# Discovery


def test_registered_through_its_entry_point() -> None:
    infos = {i.name: i for i in PluginManager().plugins()}
    info = infos["cloudwatch"]
    assert (info.distribution, info.status, info.module) == (
        "pliant-cloudwatch", "loaded", "pliant_cloudwatch")
    assert info.hooks == ["pliant_event_handlers", "pliant_metric_handlers"]


def test_importing_the_plugin_does_not_import_boto3() -> None:
    code = ("import sys, pliant_cloudwatch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


# Metrics


def test_metrics_arrive_with_namespace_name_dimensions_and_values(
        aws_env: CloudWatchEmulator, closing: list[Any]) -> None:
    namespace = unique("ns")
    handler = metrics_handler(namespace=namespace)
    closing.append(handler)
    for value in (1.0, 2.0, 3.5):
        handler.emit(metric("step.duration.ms", value, **TAGS, rank="0", restart_count="0"))
    handler.emit(metric("step.duration.ms", 10.0, **TAGS, rank="1"))
    handler.emit(metric("agent.restarts", 1.0, group="pliant", run_id="r1", role="",
                        node="n1"))  # an agent's value: no rank, an empty role
    handler.emit(metric("bare", 4.0, group=None))  # no group, no tags: no dimensions
    assert handler.flush(timeout=10)
    assert (handler.sent, handler.dropped) == (6, 0)

    worker = {"group": "train", **TAGS}
    assert aws_env.metric_names(namespace) == {
        ("step.duration.ms", frozenset({**worker, "rank": "0"}.items())),
        ("step.duration.ms", frozenset({**worker, "rank": "1"}.items())),
        ("agent.restarts", frozenset({"group": "pliant", "run_id": "r1", "node": "n1"}.items())),
        ("bare", frozenset()),
    }
    stats = aws_env.statistics(namespace, "step.duration.ms", {**worker, "rank": "0"})
    assert (stats["Sum"], stats["SampleCount"], stats["Minimum"], stats["Maximum"]) == (
        6.5, 3, 1.0, 3.5)
    assert aws_env.statistics(namespace, "step.duration.ms", {**worker, "rank": "1"})["Sum"] \
        == 10.0


def test_chosen_dimensions_only(aws_env: CloudWatchEmulator, closing: list[Any]) -> None:
    namespace = unique("ns")
    handler = metrics_handler(namespace=namespace, dimensions="group+node")
    closing.append(handler)
    handler.emit(metric("loss", 0.5, **TAGS, rank="3"))
    assert handler.flush(timeout=10)
    assert aws_env.metric_names(namespace) == {
        ("loss", frozenset({"group": "train", "node": "n1"}.items()))}


def test_ten_thousand_values_arrive_complete_in_batches(
        aws_env: CloudWatchEmulator, closing: list[Any]) -> None:
    namespace = unique("ns")
    handler = metrics_handler(namespace=namespace, flush_interval="60")  # full batches only
    closing.append(handler)
    requests: list[list[dict[str, Any]]] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        requests.append(params["MetricData"])

    handler.client.meta.events.register("provide-client-params.cloudwatch.PutMetricData", count)
    start = time.perf_counter()
    for i in range(10_000):
        handler.emit(metric("tokens", float(i), **TAGS, rank="0"))
    assert time.perf_counter() - start < 2.0  # emit only buffers
    assert handler.flush(timeout=30)

    assert (handler.sent, handler.dropped) == (10_000, 0)
    # Sent as soon as half the buffer (10,000) waits: two requests or more, each within
    # PutMetricData's limits, every value in one datum's Values once.
    assert len(requests) >= 2
    assert all(len(datums) <= 1000 for datums in requests)
    values = [v for datums in requests for datum in datums for v in datum["Values"]]
    assert all(len(datum["Values"]) <= 150 and datum["Counts"] == [1.0] * len(datum["Values"])
               for datums in requests for datum in datums)
    assert sorted(values) == [float(i) for i in range(10_000)]
    stats = aws_env.statistics(namespace, "tokens", {"group": "train", **TAGS, "rank": "0"})
    assert (stats["SampleCount"], stats["Sum"]) == (10_000, sum(range(10_000)))


def test_close_sends_what_is_left_then_drops(aws_env: CloudWatchEmulator) -> None:
    namespace = unique("ns")
    handler = metrics_handler(namespace=namespace, flush_interval="60")
    for value in range(5):
        handler.emit(metric("left", float(value), **TAGS))
    handler.close()
    assert (handler.sent, handler.dropped) == (5, 0)
    assert aws_env.statistics(namespace, "left", {"group": "train", **TAGS})["SampleCount"] == 5
    handler.emit(metric("late", 1.0))
    handler.close()  # twice is fine
    assert handler.dropped == 1


def test_values_cloudwatch_would_refuse_are_dropped_one_by_one(
        aws_env: CloudWatchEmulator, closing: list[Any]) -> None:
    namespace = unique("ns")
    handler = metrics_handler(namespace=namespace)
    closing.append(handler)
    handler.emit(metric("nan", math.nan))
    handler.emit(metric("inf", math.inf))
    handler.emit(metric("", 1.0))
    handler.emit(MetricData(time.time() - 30 * 86400, "g", "old", 1.0))
    handler.emit("not a metric")  # type: ignore[arg-type]
    handler.emit(metric("ok", 1.0, node="n\u00e9"))  # non-ASCII is replaced, not refused
    assert handler.flush(timeout=10)
    assert (handler.sent, handler.dropped) == (1, 5)
    assert aws_env.metric_names(namespace) == {
        ("ok", frozenset({"group": "train", "node": "n?"}.items()))}


def test_endpoint_from_the_setting(aws: CloudWatchEmulator, no_endpoint_env: None,
                                   closing: list[Any]) -> None:
    namespace = unique("ns")
    handler = metrics_handler(namespace=namespace, endpoint_url=aws.endpoint_url)
    closing.append(handler)
    assert handler.client.meta.endpoint_url == aws.endpoint_url
    handler.emit(metric("x", 1.0))
    assert handler.flush(timeout=10)
    assert aws.metric_names(namespace) == {("x", frozenset({("group", "train")}))}


# Events


def event(name: str, timestamp: float, **metadata: Any) -> Event:
    return Event(name, EventSource.WORKER, timestamp, metadata)


def test_events_arrive_in_timestamp_order_as_json(aws_env: CloudWatchEmulator,
                                                   closing: list[Any]) -> None:
    group = "/" + unique("pliant-test")
    handler = events_handler(log_group=group)
    closing.append(handler)
    now = time.time()
    sent = [event("b", now + 0.002, run_id="r1", node="n1", role="trainer", rank="0",
                  restart_count="0", step=7),
            event("a", now, run_id="r1", node="n1", role="trainer", rank="1", ok=True,
                  none=None),
            event("c", now + 0.001, run_id="r1", node="n1", role="trainer"),
            event("other-node", now, run_id="r1", node="n2")]
    for item in sent:
        handler.record(item)
    assert handler.flush(timeout=10)
    assert (handler.sent, handler.dropped) == (4, 0)

    assert sorted(aws_env.log_streams(group)) == ["r1/n1", "r1/n2"]
    arrived = aws_env.log_events(group, "r1/n1")
    assert [e["timestamp"] for e in arrived] == sorted(e["timestamp"] for e in arrived)
    assert [Event.deserialize(e["message"]) for e in arrived] == [sent[1], sent[2], sent[0]]
    assert json.loads(arrived[0]["message"])["metadata"] == {
        "run_id": "r1", "node": "n1", "role": "trainer", "rank": "1", "ok": True, "none": None}
    assert [Event.deserialize(e["message"]).name
            for e in aws_env.log_events(group, "r1/n2")] == ["other-node"]


def test_an_existing_group_and_stream_are_used(aws_env: CloudWatchEmulator,
                                               closing: list[Any]) -> None:
    group = "/" + unique("pliant-test")
    logs = aws_env.client("logs")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="r1/n1")
    handler = events_handler(log_group=group)
    closing.append(handler)
    handler.record(event("started", time.time(), run_id="r1", node="n1"))
    assert handler.flush(timeout=10)
    assert (handler.sent, handler.dropped) == (1, 0)
    assert aws_env.log_streams(group) == ["r1/n1"]
    assert len(aws_env.log_events(group, "r1/n1")) == 1


def test_stream_name_template(aws_env: CloudWatchEmulator, closing: list[Any]) -> None:
    group = "/" + unique("pliant-test")
    handler = events_handler(log_group=group, log_stream="{role}/{node}/{run_id}")
    closing.append(handler)
    handler.record(event("e", time.time(), role="trainer", node="host:1*", run_id=""))
    handler.record(event("e", time.time()))  # no metadata: this host, "unknown"
    assert handler.flush(timeout=10)
    host = socket.gethostname().replace(":", "_")
    assert sorted(aws_env.log_streams(group)) == sorted(
        ["trainer/host_1_/unknown", f"unknown/{host}/unknown"])


def test_many_events_in_batches_within_limits(aws_env: CloudWatchEmulator,
                                              closing: list[Any]) -> None:
    group = "/" + unique("pliant-test")
    handler = events_handler(log_group=group, flush_interval="60")
    closing.append(handler)
    sizes: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        sizes.append(sum(len(e["message"].encode()) + 26 for e in params["logEvents"]))

    handler.client.meta.events.register("provide-client-params.logs.PutLogEvents", count)
    now = time.time()
    for i in range(3000):  # 3000 x ~800 bytes: more than one request's megabyte
        handler.record(event(f"e{i}", now + i / 1e4, run_id="r1", node="n1", pad="x" * 700))
    assert handler.flush(timeout=30)
    assert (handler.sent, handler.dropped) == (3000, 0)
    assert len(sizes) >= 3 and max(sizes) <= 1_048_576
    arrived = aws_env.log_events(group, "r1/n1")
    assert [json.loads(e["message"])["name"] for e in arrived] == [f"e{i}" for i in range(3000)]


# An endpoint that is down, hangs or refuses


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def filled(kind: str, count: int, **conf: str) -> Any:
    """A handler of ``kind`` given ``count`` values or events; the caller never waits for
    the network, whatever the endpoint does."""
    handler: Any = metrics_handler(**conf) if kind == "metrics" else events_handler(**conf)
    start = time.perf_counter()
    for i in range(count):
        if kind == "metrics":
            handler.emit(metric("x", float(i), **TAGS))
        else:
            handler.record(event("e", time.time(), **TAGS))
    assert time.perf_counter() - start < 0.5
    return handler


@pytest.mark.parametrize("kind", ["metrics", "events"])
def test_endpoint_down(no_endpoint_env: None, kind: str) -> None:
    conf = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "max_buffer": "50",
            "close_timeout": "1", "max_attempts": "2"}
    handler = filled(kind, 100, **conf)
    assert handler.dropped >= 50  # beyond max_buffer at once
    assert not handler.flush(timeout=3)
    start = time.perf_counter()
    handler.close()
    assert time.perf_counter() - start < 1.5
    assert (handler.sent, handler.dropped) == (0, 100)


def test_endpoint_that_never_answers(no_endpoint_env: None) -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        handler = metrics_handler(endpoint_url=url, close_timeout="1", timeout="30")
        for i in range(10):
            handler.emit(metric("x", float(i)))
        start = time.perf_counter()
        assert not handler.flush(timeout=0.5)
        handler.close()
        assert time.perf_counter() - start < 2.0
        assert (handler.sent, handler.dropped) == (0, 10)


@pytest.mark.parametrize("kind", ["metrics", "events"])
def test_endpoint_returning_server_errors(no_endpoint_env: None, kind: str) -> None:
    with FailingEndpoint(500, "InternalFailure") as endpoint:
        conf = {"endpoint_url": endpoint.endpoint_url, "max_attempts": "2",
                "close_timeout": "3"}
        handler = filled(kind, 10, **conf)
        assert not handler.flush(timeout=5)  # a failure ends the wait
        assert handler.dropped == 0  # kept, to be tried again
        assert endpoint.requests >= 2  # botocore retried
        start = time.perf_counter()
        handler.close()
        assert time.perf_counter() - start < 3.5
        assert (handler.sent, handler.dropped) == (0, 10)


@pytest.mark.parametrize("kind", ["metrics", "events"])
def test_endpoint_refusing_for_good(no_endpoint_env: None, kind: str) -> None:
    with FailingEndpoint(403, "AccessDeniedException") as endpoint:
        conf = {"endpoint_url": endpoint.endpoint_url, "max_attempts": "3"}
        handler = filled(kind, 10, **conf)
        assert not handler.flush(timeout=5)
        assert (handler.sent, handler.dropped, endpoint.requests) == (0, 10, 1)  # no retry
        handler.close()
        assert handler.dropped == 10


# Settings


@pytest.mark.parametrize(("kind", "conf", "message"), [
    ("metrics", {"flush_interval": "0"}, "key 'flush_interval'): expected a number of seconds > 0"),
    ("metrics", {"flush_interval": "soon"}, "expected a number of seconds"),
    ("metrics", {"max_buffer": "0"}, "key 'max_buffer'): expected an integer >= 1"),
    ("metrics", {"namespace": "AWS/EC2"}, "cannot start with ':' or 'AWS/'"),
    ("metrics", {"namespace": ""}, "expected 1 to 255 printable ASCII characters"),
    ("metrics", {"dimensions": "+".join(f"d{i}" for i in range(31))}, "at most 30 dimensions"),
    ("metrics", {"endpoint_url": "localhost:4566"}, "expected a URL such as"),
    ("metrics", {"region": "US East"}, "expected an AWS region such as us-east-1"),
    ("metrics", {"namspace": "x"}, "did you mean 'namespace'"),
    ("metrics", {"log_group": "x"}, "unknown setting 'log_group'"),
    ("events", {"log_group": "bad name!"}, "expected a log group name"),
    ("events", {"log_stream": "{run_id:>3}"}, "expected {name} fields"),
    ("events", {"log_stream": "a:b"}, "cannot contain ':' or '*'"),
    ("events", {"log_stream": "{run_id"}, "expected a log stream name template"),
    ("events", {"close_timeout": "-1"}, "expected a number of seconds >= 0"),
])
def test_bad_settings_are_clear_errors(kind: str, conf: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PluginManager().select(kind, "cloudwatch", "test", conf, "--" + kind + "-conf")
    assert message in str(info.value)
    assert f"--{kind}-conf" in str(info.value)


def test_settings_defaults() -> None:
    metrics = PluginManager().select("metrics", "cloudwatch", "test").settings
    assert metrics == {"namespace": "pliant",
                       "dimensions": ("group", "run_id", "role", "node", "rank"),
                       "region": None, "endpoint_url": None, "flush_interval": 5.0,
                       "max_buffer": 10_000, "max_attempts": 3, "timeout": 5.0,
                       "close_timeout": 5.0}
    events = PluginManager().select("events", "cloudwatch", "test").settings
    assert (events["log_group"], events["log_stream"]) == ("/pliant/events", "{run_id}/{node}")


def test_no_region_is_a_clear_error(no_endpoint_env: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="no AWS region; set one with the handler's 'region'"):
        PluginManager().select("metrics", "cloudwatch", "test").create()


def test_no_credentials_is_a_clear_error(no_endpoint_env: None,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="no AWS credentials found"):
        PluginManager().select("events", "cloudwatch", "test", {"region": "eu-west-1"}).create()


def test_region_setting_wins(no_endpoint_env: None, closing: list[Any]) -> None:
    handler = metrics_handler(region="eu-west-1")
    closing.append(handler)
    assert handler.client.meta.region_name == "eu-west-1"
    assert handler.client.meta.endpoint_url == "https://monitoring.eu-west-1.amazonaws.com"
    assert os.environ["AWS_DEFAULT_REGION"] == "us-east-1"


# A real run


WORKER = """\
import os
import sys
from pliant.events import Event, EventSource, record
from pliant.metrics import flush, put_metric

put_metric("steps", 1.0 + int(os.environ["RANK"]), "train")
record(Event("worker.hello", EventSource.WORKER, metadata={"pid": os.getpid()}))
flush()
# The agent sends the workers' values: a worker never loads boto3.
print("boto3 in worker:", "boto3" in sys.modules)
"""


def test_a_real_run_sends_from_agent_and_workers(aws: CloudWatchEmulator,
                                                 tmp_path: Any) -> None:
    script = tmp_path / "w.py"
    script.write_text(WORKER)
    namespace, group = unique("e2e"), "/" + unique("pliant-e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PLIANT_"))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pliant"), "run", "--nproc-per-node", "2",
         "--rdzv-id", "job1", "--metrics", "cloudwatch", "--events", "cloudwatch",
         "--metrics-conf", f"cloudwatch.namespace={namespace},cloudwatch.flush_interval=0.2",
         "--events-conf", f"cloudwatch.log_group={group}", str(script)],
        env={**env, **aws.env()}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "credentials" not in result.stderr  # botocore's INFO lines are kept out
    assert result.stdout.count("boto3 in worker: False") == 2, result.stdout

    workers = {(name, dims) for name, dims in aws.metric_names(namespace) if name == "steps"}
    assert {dict(dims)["rank"] for _, dims in workers} == {"0", "1"}
    for _, dims in workers:
        assert {"group": "train", "run_id": "job1", "role": "default"}.items() <= dict(dims).items()
    (stream,) = aws.log_streams(group)
    assert stream.startswith("job1/")
    arrived = [Event.deserialize(e["message"]) for e in aws.log_events(group, stream)]
    hello = sorted(str(e.metadata["rank"]) for e in arrived if e.name == "worker.hello")
    assert hello == ["0", "1"]
    assert any(e.source == EventSource.AGENT for e in arrived)


def test_a_run_with_the_endpoint_down_trains_and_reports_the_drops(tmp_path: Any) -> None:
    """The sink is unreachable: the job finishes as usual, and what was lost is reported as
    pliant.dropped through the handlers still working (here the console)."""
    script = tmp_path / "w.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PLIANT_"))}
    env.update(dummy_credentials(), AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    conf = "cloudwatch.close_timeout=1,cloudwatch.max_attempts=1,cloudwatch.flush_interval=0.2"
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pliant"), "run", "--nproc-per-node", "2",
         "--rdzv-id", "down1", "--metrics", "cloudwatch,console", "--metrics-conf", conf,
         "--events", "cloudwatch", str(script)],
        env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # The workers' values reached the agent's handlers (the console shows them), and the
    # workers lost nothing: only the agent, whose CloudWatch handler gave up, reports drops.
    steps = re.findall(r"\[metric\] train\.steps = \S+\s+.*rank=(\d)", result.stderr)
    assert sorted(steps) == ["0", "1"], result.stderr
    drops = re.findall(r"\[metric\] pliant\.dropped = (\d+)\s+(.*)", result.stderr)
    ranks = {dict(t.split("=", 1) for t in tags.split()).get("rank", "agent")
             for _, tags in drops}
    assert ranks == {"agent"}, result.stderr
    # The last count, reported after the handlers closed, covers every value the console
    # printed before it (CloudWatch got the same ones) and at least the workers' 2 events.
    printed = len(re.findall(r"^\[metric\] ", result.stderr, flags=re.MULTILINE)) - 1
    assert int(drops[-1][0]) >= printed + 2, result.stderr
    assert took < 30, took  # the sink's bounded close, not a hang

"""pliant-prometheus: values to series, served and scraped over real HTTP.

Handlers are built the way pliant builds them (the plugin manager, validated settings), on
free loopback ports; what they serve is fetched with a real HTTP GET and read back with
prometheus-client's own parser of the text format.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pliant.errors import ConfigError
from pliant.metrics import MetricData
from pliant.plugins import PluginManager
from pliant_prometheus import AGENT_SERIES, PrometheusMetricHandler, prometheus_name
from pliant_prometheus._series import series_of

PLIANT = str(Path(sys.executable).parent / "pliant")
TAGS = {"run_id": "r1", "node": "n1", "role": "trainer"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric(name: str, value: Any, group: str | None = "train", **tags: str) -> MetricData:
    return MetricData(time.time(), group, name, value, tags={**TAGS, **tags})


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    """One GET of ``url``: each sample's value by (name, labels without the empty ones), and
    each family's type by name."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if v)
            samples[(sample.name, labels)] = sample.value
    return samples, types


def labels(**extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({**TAGS, **extra}.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def make() -> Iterator[Any]:
    """``make(**conf)``: a handler as pliant builds it, on a free port unless ``port`` is
    given; all are closed at the end of the test."""
    made: list[PrometheusMetricHandler] = []

    def build(**conf: str) -> PrometheusMetricHandler:
        conf.setdefault("port", "0")
        handler = PluginManager().select("metrics", "prometheus", "test", conf).create()
        assert isinstance(handler, PrometheusMetricHandler)
        made.append(handler)
        return handler

    yield build
    for handler in made:
        handler.close()


# Discovery


def test_registered_through_its_entry_point() -> None:
    infos = {i.name: i for i in PluginManager().plugins()}
    info = infos["prometheus"]
    assert (info.distribution, info.status, info.module) == (
        "pliant-prometheus", "loaded", "pliant_prometheus")
    assert info.hooks == ["pliant_metric_handlers"]


def test_importing_the_plugin_does_not_import_prometheus_client() -> None:
    code = ("import sys, pliant_prometheus; "
            "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


# Which series a value feeds


@pytest.mark.parametrize(("group", "name", "expected"), [
    ("train", "loss", [("train_loss", "gauge", "set")]),
    (None, "loss", [("loss", "gauge", "set")]),
    ("torchelastic", "workers.default.flakiness",
     [("torchelastic_workers_default_flakiness", "gauge", "set")]),
    ("train", "step.duration.ms", [("train_step_duration_seconds", "summary", "observe")]),
    ("train", "step.success", [("train_step_success_total", "counter", "add")]),
    ("train", "step.failure", [("train_step_failure_total", "counter", "add")]),
    ("torchelastic", "workers.default.run_total",
     [("torchelastic_workers_default_run_total", "counter", "add")]),
    ("torchelastic", "workers.trainer.run_success_no_retries",
     [("torchelastic_workers_trainer_run_success_no_retries_total", "counter", "add")]),
    ("my-team", "3d.tokens/s", [("my_team_3d_tokens_s", "gauge", "set")]),
    ("pliant.agent", "restarts", [("pliant_agent_restarts_total", "counter", "add")]),
    ("pliant.agent", "rendezvous.duration.ms",
     [("pliant_agent_rendezvous_duration_seconds", "gauge", "set"),
      ("pliant_agent_rendezvous_rounds_total", "counter", "count")]),
    ("pliant", "dropped", [("pliant_dropped_total", "counter", "total")]),
])
def test_the_series_a_value_feeds(group: str | None, name: str,
                                  expected: list[tuple[str, str, str]]) -> None:
    assert [(s.name, s.kind, s.op) for s in series_of(group, name, ())] == expected


def test_counters_patterns_make_counters_of_your_metrics() -> None:
    (series,) = series_of("train", "samples", ("train.samples",))
    assert (series.name, series.kind) == ("train_samples_total", "counter")
    (series,) = series_of("train", "tokens_total", ("train.*",))
    assert series.name == "train_tokens_total"
    (series,) = series_of("eval", "samples", ("train.samples",))
    assert series.kind == "gauge"


def test_prometheus_names() -> None:
    assert prometheus_name("pliant.agent.workers") == "pliant_agent_workers"
    assert prometheus_name("9lives") == "_9lives"
    assert prometheus_name("a:b é") == "a_b__"


def test_every_agent_metric_has_its_series() -> None:
    """What the agent puts (core/src/pliant/agent/local.py) is in the table, by name."""
    assert set(AGENT_SERIES) == {
        ("pliant.agent", "rendezvous.duration.ms"), ("pliant.agent", "rendezvous.world_size"),
        ("pliant.agent", "workers"), ("pliant.agent", "standbys"),
        ("pliant.agent", "restarts"), ("pliant.agent", "membership_changes"),
        ("pliant", "dropped")}


# Served values


def test_values_are_served_as_their_series_with_labels(make: Any) -> None:
    handler = make()
    for loss in (0.9, 0.5):
        handler.emit(metric("loss", loss, rank="0"))
    handler.emit(metric("loss", 0.7, rank="1"))
    for ms in (10.0, 30.0):
        handler.emit(metric("step.duration.ms", ms, rank="0"))
    for _ in range(3):
        handler.emit(metric("step.success", 1, rank="0"))
    handler.emit(metric("restarts", 1, "pliant.agent"))
    handler.emit(metric("restarts", 1, "pliant.agent"))
    handler.emit(metric("rendezvous.duration.ms", 250.0, "pliant.agent"))
    handler.emit(metric("dropped", 4, "pliant"))
    handler.emit(metric("dropped", 6, "pliant"))  # a running total, not an increment

    samples, types = scrape(handler.url)
    assert samples[("train_loss", labels(rank="0"))] == 0.5  # the last value
    assert samples[("train_loss", labels(rank="1"))] == 0.7
    assert samples[("train_step_duration_seconds_count", labels(rank="0"))] == 2
    assert samples[("train_step_duration_seconds_sum", labels(rank="0"))] == pytest.approx(0.04)
    assert samples[("train_step_success_total", labels(rank="0"))] == 3
    # The agent's values have no rank.
    assert samples[("pliant_agent_restarts_total", labels())] == 2
    assert samples[("pliant_agent_rendezvous_duration_seconds", labels())] == 0.25
    assert samples[("pliant_agent_rendezvous_rounds_total", labels())] == 1
    assert samples[("pliant_dropped_total", labels())] == 6
    assert types["train_loss"] == "gauge"
    assert types["train_step_duration_seconds"] == "summary"
    assert types["train_step_success"] == "counter"
    assert types["pliant_agent_restarts"] == "counter"
    assert handler.dropped == 0


def test_labels_and_counters_settings(make: Any) -> None:
    handler = make(labels="rank+restart_count", counters="train.samples+eval.*")
    handler.emit(metric("samples", 32, rank="0", restart_count="1"))
    handler.emit(metric("samples", 32, rank="0", restart_count="1"))
    handler.emit(metric("seen", 5, "eval", rank="1", restart_count="0"))
    samples, _ = scrape(handler.url)
    assert samples == {
        ("train_samples_total", frozenset({("rank", "0"), ("restart_count", "1")})): 64,
        ("eval_seen_total", frozenset({("rank", "1"), ("restart_count", "0")})): 5,
    }


def test_what_no_series_can_take_is_dropped_and_counted(make: Any) -> None:
    handler = make(max_series="3")
    handler.emit(metric("step.success", -1))  # a counter never goes down
    handler.emit(metric("step.success", float("nan")))
    handler.emit(metric("loss", "not a number"))
    handler.emit(metric("a.b", 1.0))  # the gauge train_a_b ...
    handler.emit(metric("a_b.success", 1.0))  # ... and the counter train_a_b_success: fine
    handler.emit(metric("a_b_success_total", 1.0))  # a gauge where that counter is: no
    handler.emit(metric("loss", float("inf"), rank="0"))  # a gauge may be infinite
    handler.emit(metric("loss", 1.0, rank="1"))  # a fourth series: beyond max_series
    samples, _ = scrape(handler.url)
    assert set(samples) == {("train_a_b", labels()), ("train_a_b_success_total", labels()),
                            ("train_loss", labels(rank="0"))}
    assert samples[("train_loss", labels(rank="0"))] == float("inf")
    assert handler.dropped == 5


def test_a_stalled_scraper_holds_up_neither_values_nor_other_scrapes(make: Any) -> None:
    handler = make()
    with socket.create_connection(("127.0.0.1", handler.port)) as stalled:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the end
        handler.emit(metric("loss", 0.25))
        samples, _ = scrape(handler.url)
        assert samples[("train_loss", labels())] == 0.25


def test_close_frees_the_port(make: Any) -> None:
    first = make()
    port = first.port
    first.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    second = make(port=str(port))
    second.emit(metric("loss", 1.0))
    assert scrape(second.url)[0][("train_loss", labels())] == 1.0


# Settings and errors


def test_a_port_in_use_is_a_clear_error(make: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as info:
            make(port=str(port))
    message = str(info.value)
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in message
    assert f"port {port} (setting prometheus.port) is already in use" in message
    assert "--metrics-conf prometheus.port=" in message
    assert "[metrics_conf.prometheus]" in message


def test_an_address_not_of_this_machine_is_a_clear_error(make: Any) -> None:
    with pytest.raises(ConfigError, match=r"address '192\.0\.2\.1' \(setting "
                       r"prometheus\.address\) is not one of this machine's"):
        make(address="192.0.2.1")  # TEST-NET-1: never assigned to a host


@pytest.mark.parametrize(("conf", "expected"), [
    ({"port": "70000"}, "expected an integer <= 65535"),
    ({"labels": "run_id+gpu"}, "'gpu' is not one"),
    ({"labels": ""}, "expected tag names"),
    ({"address": "http://0.0.0.0"}, "expected an IP address or host name"),
    ({"max_series": "0"}, "expected an integer >= 1"),
    ({"prot": "1"}, "did you mean 'port'?"),
])
def test_bad_settings_are_refused(conf: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        PluginManager().select("metrics", "prometheus", "test", conf, "--metrics-conf")


def test_the_settings_and_their_defaults() -> None:
    settings = PluginManager().select("metrics", "prometheus", "test").settings
    assert settings == {"port": 9473, "address": "127.0.0.1",
                        "labels": ("run_id", "node", "role", "rank"), "counters": (),
                        "max_series": 10_000}


def test_a_run_whose_port_is_in_use_fails_before_any_worker_starts(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text("open('started', 'w').close()\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [PLIANT, "run", "--nproc-per-node", "2", "--metrics", "prometheus",
             "--metrics-conf", f"prometheus.port={port}", str(script)],
            cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"port {port} (setting prometheus.port) is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "started").exists()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PLIANT_")}


# A real run


TRAIN = """\
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pliant import metrics

STEPS, BATCH = 5, 16
out = Path(os.environ["OUT_DIR"])
attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)
model = DDP(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
true_w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


for _ in range(STEPS):
    with metrics.prof(name="step", group="train"):  # train.step.success, .duration.ms
        x = torch.randn(BATCH, 4)
        loss = torch.nn.functional.mse_loss(model(x), x @ true_w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    metrics.put_metric("loss", loss.item(), "train")
    metrics.put_metric("samples", BATCH, "train")
if rank == 1 and attempt == "0" and os.environ.get("FAIL_ONCE"):
    sys.exit(3)  # what it put is still delivered (at exit); the agent restarts the group
metrics.flush()
(out / f"trained-{attempt}-{rank}").touch()
# Stay up until the test has scraped the endpoint (bounded, in case it never does).
deadline = time.monotonic() + 120
while not (out / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
dist.destroy_process_group()
"""


def _wait_for(predicate: Any, proc: subprocess.Popen[str], what: str,
              timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"pliant run exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def test_a_real_two_worker_run_is_scraped_while_it_trains(tmp_path: Path) -> None:
    """pliant run --nproc-per-node 2 --metrics prometheus on a DDP training whose rank 1
    fails once: while it runs, /metrics shows the agent's series and both workers', with
    run_id, node, role and rank labels; a scraper that stalls holds nothing up."""
    script, out = tmp_path / "train.py", tmp_path / "out"
    script.write_text(TRAIN)
    out.mkdir()
    port = free_port()
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(
            [PLIANT, "run", "--nproc-per-node", "2", "--max-restarts", "1", "--rdzv-id",
             "prom1", "--metrics", "prometheus",
             "--metrics-conf", f"prometheus.port={port},prometheus.counters=train.samples",
             str(script)],
            cwd=tmp_path, env={**_clean_env(), "OUT_DIR": str(out), "FAIL_ONCE": "1"},
            stdout=stdout, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    stalled = None
    try:
        _wait_for(lambda: f"serving the metrics on {url}" in (tmp_path / "stderr").read_text(),
                  proc, "the endpoint is announced")
        # A client that sends half a request and then nothing, for the whole run.
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"GET /metrics HTTP/1.1\r\n")
        _wait_for(lambda: all((out / f"trained-1-{rank}").exists() for rank in (0, 1)),
                  proc, "both workers of the second attempt trained")

        # What the workers put reaches the agent's endpoint through its relay, in a moment.
        samples: Samples = {}
        types: dict[str, str] = {}

        def complete() -> bool:
            nonlocal samples, types
            samples, types = scrape(url)
            counted = {dict(labels_).get("rank"): value for (name, labels_), value
                       in samples.items() if name == "train_samples_total"}
            # Both attempts' samples, and the agent's standby count, which it puts when it
            # refills its standbys, a moment after the workers start.
            return (counted == {"0": 2 * 5 * 16, "1": 2 * 5 * 16}
                    and any(name == "pliant_agent_standbys" for name, _ in samples))

        def worker(rank: str) -> frozenset[tuple[str, str]]:
            return frozenset({**where, "rank": rank}.items())

        where = {"run_id": "prom1", "role": "default"}
        _wait_for(complete, proc, "both workers' values")
        (node,) = {dict(labels_).get("node") for _, labels_ in samples}
        assert node  # the agent's host name, on every series
        where["node"] = node
        agent = frozenset(where.items())

        # The agent's own series: two rounds (the start and the restart), one restart.
        assert samples[("pliant_agent_restarts_total", agent)] == 1
        assert samples[("pliant_agent_rendezvous_rounds_total", agent)] == 2
        assert samples[("pliant_agent_workers", agent)] == 2
        assert samples[("pliant_agent_rendezvous_world_size", agent)] == 1
        assert samples[("pliant_agent_rendezvous_duration_seconds", agent)] > 0
        assert types["pliant_agent_restarts"] == "counter"
        assert types["pliant_agent_workers"] == "gauge"
        # Each worker's: both attempts' steps counted, the loss as its last value.
        for rank in ("0", "1"):
            assert samples[("train_step_success_total", worker(rank))] == 10
            assert samples[("train_step_duration_seconds_count", worker(rank))] == 10
            assert samples[("train_step_duration_seconds_sum", worker(rank))] > 0
            assert samples[("train_loss", worker(rank))] >= 0
        assert types["train_loss"] == "gauge"
        assert types["train_step_duration_seconds"] == "summary"
        # No series of a worker lacks its rank; the agent's have none.
        ranks = {dict(labels_).get("rank") for _, labels_ in samples}
        assert ranks == {None, "0", "1"}
        assert {dict(labels_)["run_id"] for _, labels_ in samples} == {"prom1"}
        # What the dashboard shows is there (no membership change or drop in this run).
        shown = dashboard_series() - {"pliant_agent_membership_changes_total",
                                      "pliant_dropped_total"}
        assert shown <= {name for name, _ in samples}, shown
    finally:
        (out / "release").touch()
        try:
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
            if stalled is not None:
                stalled.close()
    assert code == 0, (tmp_path / "stderr").read_text()


# The Grafana dashboard (docs/grafana/pliant-agent.json)


DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana" / "pliant-agent.json"
# PromQL's words that are not metric names: functions are followed by "(", and these.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                 "unless", "bool", "offset"}


def _names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label
    matchers, ranges, grouping clauses and function names are taken out."""
    import re

    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    words = [m.group() for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text)
             if not text[m.end():].lstrip().startswith("(")]  # a function's name
    return {w for w in words if w not in _PROMQL_WORDS}


def _exported() -> set[str]:
    """The names the agent's series are queried by (a summary's are _count and _sum)."""
    names = set()
    for series in (s for group in AGENT_SERIES.values() for s in group):
        names.update([f"{series.name}_count", f"{series.name}_sum"] if series.kind == "summary"
                     else [series.name])
    return names


def _dashboard() -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_series() -> set[str]:
    """Every metric name the dashboard's panels query."""
    return {name for panel in _dashboard()["panels"] for target in panel["targets"]
            for name in _names_in(target["expr"])}


def test_the_dashboard_queries_only_series_the_plugin_exports() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = _names_in(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= _exported(), (panel["title"], names - _exported())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            assert query.startswith("label_values(")
            assert _names_in(query.split("(", 1)[1].split(",")[0]) <= _exported(), query
    # ... and it shows every one of them.
    assert dashboard_series() == _exported()


def test_the_dashboard_check_reads_promql() -> None:
    """The name extraction the dashboard test relies on, on expressions of each shape."""
    assert _names_in('sum by (run_id) (rate(a_total{x=~"$y", z="q{r}"}[5m]))') == {"a_total"}
    assert _names_in("a / ignoring (rank) b") == {"a", "b"}
    assert _names_in("histogram_quantile(0.9, c_bucket)") == {"c_bucket"}

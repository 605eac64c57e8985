"""Observability figures: what metrics, events and hang detection cost a training job.

Handlers are chosen through ``PLIANT_METRICS``/``PLIANT_EVENTS`` (and ``_CONF``) in the
environment, built by pliant on the first call: in the probe process itself, or, for the
``agent-`` configurations, in the agent of a ``pliant run`` whose one worker is the probe
(the worker's handler is then the relay to its agent, as for every worker of ``pliant
run``). ``cloudwatch`` is pliant-cloudwatch, sending either to
the emulator (``pliant_cloudwatch.testing.CloudWatchEmulator``: moto's server, in a
thread of the bench process, on loopback) or to an endpoint that is down
(``AWS_ENDPOINT_URL=http://127.0.0.1:PORT`` where nothing listens: every connection is
refused, botocore retries, the handler keeps its buffer), both with dummy credentials.
Configurations are rotated round by round, as the launchers are in the other figures.

(l) cost of one call: in a fresh process per sample (``sink_probe.py cost``), 20,000
    ``put_metric`` calls timed one by one (``perf_counter_ns`` around each; bursts of 100
    back to back, a 2 ms sleep between bursts, during which the sink thread delivers),
    with no handler, ``null``, ``console`` (stderr redirected to /dev/null), ``cloudwatch``
    on the emulator and ``cloudwatch`` with the endpoint down, in the process; and as a
    worker of ``pliant run`` whose agent has ``cloudwatch`` (emulator or down); the same for
    ``events.record`` (each Event built before its clock starts). Per process: the median
    and the 99th percentile; the figure is the median over processes (p99: median and
    largest). The first call, which builds the handlers, is left out and shown apart.
    Target: put_metric median <= 5 us with any handler.

(m) throughput to the sink: one process (``sink_probe.py throughput``), its handlers
    built and its sink thread started by one value and ``metrics.flush()`` first, puts
    N=100,000 values as fast as it can, then calls ``metrics.flush()`` (every value reached
    the handler), then the handler's own ``flush()`` (CloudWatch: every value sent or given
    up). Reported: puts/s on the caller's side, delivered/s (N over the time until
    ``metrics.flush()`` returned, from the first put), for CloudWatch the values the
    emulator holds (``GetMetricStatistics`` SampleCount) and what the handler counts as
    dropped. No target: the figure shows where values go when a process produces them
    faster than the sink takes them.

(n) hang detection: ``timer_bench.py`` (a hung worker inside ``pliant.timer.expires``;
    from its deadline until every worker of the group runs again). Target: <= 1.5 s.

(o) training with metrics and events: a real ``pliant run --standalone --nproc-per-node 2
    workers/train_metrics.py`` (gloo DDP on CPU, :data:`TRAIN_STEPS` steps, two put_metric
    per step, an event every 10 steps) with no handler, with ``--metrics cloudwatch
    --events cloudwatch`` on the emulator, and the same with the endpoint down. Two
    figures: the whole run's wall time (start to exit, what a user waits for) and the
    training loop as the workers time it (slowest rank). Target: training time changes by
    no more than noise: the difference of medians to no handler is within the spread
    (max - min) of the no-handler samples.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launchers import (
    HERE,
    LAUNCHERS,
    WORKERS,
    Launch,
    LauncherError,
    finish,
    free_port,
    launcher_env,
    stats,
)

COST_TARGET_NS = 5000.0
THROUGHPUT_N = 100_000
TRAIN_STEPS = 1500
TIMER_TARGET_S = 1.5
PROBE_LIMIT_S = 300.0
NODE = "bench-node"
NAMESPACE = "pliant"

#: (l) configurations: label -> (metric or event handler name, where CloudWatch sends).
COST_METRIC = ("none", "null", "console", "cloudwatch", "cloudwatch-down",
               "agent-cloudwatch", "agent-cloudwatch-down")
COST_EVENT = ("none", "null", "cloudwatch", "cloudwatch-down", "agent-cloudwatch-down")
THROUGHPUT = ("null", "cloudwatch", "agent-cloudwatch")
TRAINING = ("none", "cloudwatch", "cloudwatch-down")
LABELS = {"none": "no handler", "null": "`null`", "console": "`console` (to /dev/null)",
          "cloudwatch": "`cloudwatch`, emulator",
          "cloudwatch-down": "`cloudwatch`, endpoint down",
          "agent-cloudwatch": "worker of `pliant run`, agent's `cloudwatch` to the emulator",
          "agent-cloudwatch-down": "worker of `pliant run`, agent's `cloudwatch` endpoint down"}


def rotate(names: tuple[str, ...], round_no: int) -> list[str]:
    shift = round_no % len(names)
    return [*names[shift:], *names[:shift]]


# -- where CloudWatch sends ---------------------------------------------------------------------


def emulator_missing() -> str | None:
    """Why the CloudWatch configurations cannot run here (None: they can)."""
    try:
        import moto.server  # noqa: F401
        import pliant_cloudwatch.testing  # noqa: F401
    except ImportError as exc:
        return f"pliant-cloudwatch[testing] is not installed ({exc})"
    return None


@contextmanager
def cloudwatch() -> Iterator[Any]:
    """The emulator, running for the figure."""
    from pliant_cloudwatch.testing import CloudWatchEmulator

    with CloudWatchEmulator() as aws:
        yield aws


def down_env() -> dict[str, str]:
    """Dummy credentials and an endpoint on a loopback port nothing listens on."""
    from pliant_cloudwatch.testing import dummy_credentials

    return {**dummy_credentials(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}


def sink_env(config: str, kind: str, aws: Any) -> dict[str, str]:
    """The environment that selects ``config``'s handlers (``kind``: "metrics", "events" or
    both, comma-separated): the probe's own, or, for ``agent-``, its agent's."""
    env = {**launcher_env(), "PLIANT_NODE": NODE}
    if config == "none":
        return env
    base = config.removeprefix("agent-")
    for k in kind.split(","):
        env[f"PLIANT_{k.upper()}"] = base.removesuffix("-down")
    if base == "console":
        env["BENCH_STDERR_TO_DEVNULL"] = "1"
    if base == "cloudwatch":
        env.update(aws.env())
    elif base == "cloudwatch-down":
        env.update(down_env())
    return env


def probe(mode: str, arg: str, env: dict[str, str], config: str = "") -> dict[str, Any]:
    """One ``sink_probe.py`` run; its JSON line. An ``agent-`` configuration runs it as the
    one worker of ``pliant run`` (the handlers in ``env`` are the agent's then: the worker
    sends through it)."""
    argv = [sys.executable, str(HERE / "sink_probe.py"), mode, arg]
    if config.startswith("agent-"):
        argv = [*LAUNCHERS["pliant"], "--standalone", "--nproc-per-node", "1", *argv[1:]]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=PROBE_LIMIT_S)
    except subprocess.TimeoutExpired:
        raise LauncherError(f"sink_probe.py {mode} {arg} did not exit within "
                            f"{PROBE_LIMIT_S:g} s") from None
    # Under pliant run, the worker's line carries the agent's "[0:0] " prefix.
    lines = [line[line.index("{"):] for line in done.stdout.splitlines() if "{" in line]
    if done.returncode != 0 or not lines:
        raise LauncherError(f"sink_probe.py {mode} {arg} failed (exit code {done.returncode}):"
                            f"\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["probe_stderr"] = done.stderr.strip().splitlines()[-3:]
    return result


# -- (l) cost per call --------------------------------------------------------------------------


def run_cost(repeat: int) -> dict[str, Any]:
    """(l) ``repeat`` processes per configuration and call."""
    missing = emulator_missing()
    plan = [("metric", c) for c in COST_METRIC] + [("event", c) for c in COST_EVENT]
    if missing:
        plan = [(kind, c) for kind, c in plan if not c.startswith("cloudwatch")]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {"metric": {}, "event": {}}
    with (cloudwatch() if not missing else _nothing()) as aws:
        for round_no in range(repeat):
            for kind, config in rotate(tuple(plan), round_no):
                env = sink_env(config, "metrics" if kind == "metric" else "events", aws)
                one = probe("cost", kind, env, config)
                if config != "none" and not one["handlers"]:
                    raise LauncherError(f"(l) {kind} {config}: no handler was built: "
                                        f"{one['probe_stderr']}")
                samples[kind].setdefault(config, []).append(one)
                print(f"  l round {round_no + 1}/{repeat}  {kind:<6} {config:<16} median "
                      f"{one['median_ns']:7.0f} ns  p99 {one['p99_ns']:7.0f} ns  first call "
                      f"{one['first_call_ns'] / 1e6:6.1f} ms", flush=True)
    rows = {kind: {config: cost_summary(runs) for config, runs in by.items()}
            for kind, by in samples.items()}
    metric_medians = [r["median_ns"]["median"] for c, r in rows["metric"].items() if c != "none"]
    return {"rows": rows, "samples": samples, "skipped": missing,
            "target": f"put_metric median <= {COST_TARGET_NS / 1000:g} us with any handler",
            "met": bool(metric_medians) and max(metric_medians) <= COST_TARGET_NS}


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def cost_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"median_ns": stats([r["median_ns"] for r in runs]),
            "p99_ns": stats([r["p99_ns"] for r in runs]),
            "first_call_ms": stats([r["first_call_ns"] / 1e6 for r in runs]),
            "empty_timing_ns": statistics.median(r["empty_timing_ns"] for r in runs),
            "handlers": runs[0]["handlers"],
            "dropped": sum(r["dispatcher_dropped"] for r in runs)}


def cost_rows(fig: dict[str, Any]) -> list[str]:
    rows = ["| call | handler | median per call (min-max over processes) | p99 per call "
            "(median, largest) | first call | target | met? |", "|---|---|---|---|---|---|---|"]
    for kind, call in (("metric", "`put_metric`"), ("event", "`events.record`")):
        for config, r in fig["rows"][kind].items():
            m = r["median_ns"]
            target = met = "-"
            if kind == "metric" and config != "none":
                target = f"<= {COST_TARGET_NS / 1000:g} us"
                met = "yes" if m["median"] <= COST_TARGET_NS else "NO"
            rows.append(f"| {call} | {LABELS[config]} | {us(m['median'])} ({us(m['min'])}-"
                        f"{us(m['max'])}) | {us(r['p99_ns']['median'])}, "
                        f"{us(r['p99_ns']['max'])} | {r['first_call_ms']['median']:.1f} ms "
                        f"| {target} | {met} |")
    empty = statistics.median(r["empty_timing_ns"] for by in fig["rows"].values()
                              for r in by.values())
    rows += ["", "Per process: 20,000 calls in bursts of 100 back to back, a 2 ms sleep after "
             "each burst (the sink thread delivers then); each call timed alone with "
             f"`perf_counter_ns`, which adds about {empty:.0f} ns (two empty clock reads) to "
             "every figure. The per-call time includes what the caller loses to the sink "
             "thread (the GIL) while it delivers. First call: the one that builds the "
             "handlers from the environment (imports, plugin lookup, a boto3 client), "
             "not in the other columns.",
             "", f"Target: {fig['target']}."]
    if fig["skipped"]:
        rows += ["", f"CloudWatch configurations left out: {fig['skipped']}."]
    return rows


def us(ns: float) -> str:
    return f"{ns / 1000:.2f} us"


# -- (m) throughput -----------------------------------------------------------------------------


def run_throughput(repeat: int) -> dict[str, Any]:
    """(m) ``repeat`` processes per handler."""
    missing = emulator_missing()
    configs = tuple(c for c in THROUGHPUT if not (missing and c.startswith("cloudwatch")))
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    with (cloudwatch() if not missing else _nothing()) as aws:
        for round_no in range(repeat):
            for config in rotate(configs, round_no):
                group = f"bench-m-{uuid.uuid4().hex[:8]}"
                env = sink_env(config, "metrics", aws)
                env["BENCH_GROUP"] = group
                one = probe("throughput", str(THROUGHPUT_N), env, config)
                if not one["handlers"]:
                    raise LauncherError(f"(m) {config}: no handler was built: "
                                        f"{one['probe_stderr']}")
                one["arrived"] = None
                if config in ("cloudwatch", "agent-cloudwatch"):
                    one["arrived"] = int(aws.statistics(
                        NAMESPACE, "bench.value", {"group": group, "node": NODE})["SampleCount"])
                samples[config].append(one)
                print(f"  m round {round_no + 1}/{repeat}  {config:<16} "
                      f"{throughput_line(one)}", flush=True)
    rows = {config: throughput_summary(runs) for config, runs in samples.items()}
    return {"rows": rows, "samples": samples, "n": THROUGHPUT_N, "skipped": missing,
            "target": "- (shown)", "met": None}


def throughput_line(one: dict[str, Any]) -> str:
    n = one["n"]
    flushed = "ok" if one["dispatcher_flushed"] else "FAILED"
    line = (f"puts {n / one['put_s']:9.0f}/s  delivered {n / one['delivered_s']:9.0f}/s"
            f" ({one['delivered_s']:.2f} s, flush {flushed})")
    sent = one["handler_sent"][0]
    if sent is not None:
        line += (f"  sent {sent} in {one['sent_s']:.2f} s, dropped {one['handler_dropped'][0]},"
                 f" emulator holds {one['arrived']}")
    return line


def throughput_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = runs[0]["n"]
    out: dict[str, Any] = {
        "puts_per_s": stats([n / r["put_s"] for r in runs]),
        "delivered_per_s": stats([n / r["delivered_s"] for r in runs]),
        "delivered_s": stats([r["delivered_s"] for r in runs]),
        "flush_failed": sum(1 for r in runs if not r["dispatcher_flushed"]),
        "queue_dropped": stats([r["dispatcher_dropped"] for r in runs]),
    }
    if runs[0]["handler_sent"][0] is not None:
        out["sent"] = stats([r["handler_sent"][0] for r in runs])
        out["sent_s"] = stats([r["sent_s"] for r in runs])
        out["handler_dropped"] = stats([r["handler_dropped"][0] for r in runs])
        out["arrived"] = stats([r["arrived"] for r in runs])
        out["arrived_per_s"] = stats([r["arrived"] / r["sent_s"] for r in runs])
    return out


def throughput_rows(fig: dict[str, Any]) -> list[str]:
    n = fig["n"]
    rows = ["| handler | puts/s, caller | delivered/s to the handler (time) | arrived at the "
            "emulator (of N) | arrived/s, until the handler's flush returned | dropped: queue "
            "/ handler | target | met? |", "|---|---|---|---|---|---|---|---|"]
    for config, r in fig["rows"].items():
        delivered = (f"{rate(r['delivered_per_s'])} ({r['delivered_s']['median']:.2f} s)")
        if r["flush_failed"]:
            delivered += f"; `metrics.flush()` returned False in {r['flush_failed']} runs"
        arrived = arrived_rate = handler_dropped = "-"
        if "arrived" in r:
            arrived = f"{r['arrived']['median']:.0f} ({r['arrived']['median'] / n:.1%})"
            arrived_rate = f"{rate(r['arrived_per_s'])} ({r['sent_s']['median']:.2f} s)"
            handler_dropped = f"{r['handler_dropped']['median']:.0f}"
        rows.append(f"| {LABELS[config]} | {rate(r['puts_per_s'])} | {delivered} | {arrived} "
                    f"| {arrived_rate} | {r['queue_dropped']['median']:.0f} / {handler_dropped} "
                    f"| - | - |")
    rows += ["", f"N = {n:,} `put_metric` calls back to back in one process (after one value "
             "and `metrics.flush()` built the handler and started the sink thread); medians "
             "over processes (per-second figures: median of per-run rates, min-max in "
             "`bench.json`). Delivered: until `metrics.flush()` returned (every value handed "
             "to the handler). CloudWatch: arrived is what the emulator's "
             "`GetMetricStatistics` counts; the handler buffers at most `max_buffer` (10,000) "
             "values and sends as soon as half of that waits, in requests of up to 1,000 "
             "datums (one per series and second, its distinct values with their counts), so "
             "values beyond what it sends meanwhile are dropped (counted in its `dropped`). "
             "Worker of `pliant run`: the probe is the one worker of an agent that has the "
             "`cloudwatch` handler; the worker's handler is the relay to the agent, so "
             "delivered, sent and dropped are the worker's (to the agent), arrived is what "
             "reached the emulator from the agent by the time it exited. Shown, no target."]
    if fig["skipped"]:
        rows += ["", f"CloudWatch left out: {fig['skipped']}."]
    return rows


def rate(s: dict[str, Any]) -> str:
    return f"{s['median']:,.0f}/s"


# -- (n) hang detection -------------------------------------------------------------------------


def run_timer(repeat: int) -> dict[str, Any]:
    """(n) ``timer_bench.run`` (another module's): its figures, kept as it returns them."""
    import timer_bench

    result = timer_bench.run(repeat)
    recovery = result["figures"]["recovery"]
    return {**result, "target": f"deadline -> every worker running again <= "
                                f"{TIMER_TARGET_S:g} s",
            "met": recovery["median"] <= TIMER_TARGET_S}


def timer_rows(fig: dict[str, Any]) -> list[str]:
    import timer_bench

    return [*timer_bench.rows(fig), "",
            f"Each run: `pliant run {' '.join(timer_bench.FLAGS)} --events jsonl "
            f"workers/hang.py`; rank 1 hangs inside `pliant.timer.expires(after="
            f"{fig['after_s']:g})` with no timer setup (the agent's default `local` timer). "
            "Times from the deadline the agent held (its watchdog event) to: the kill "
            "(that event's timestamp), rank 0's SIGTERM, and the last attempt-1 worker's "
            "first line. See `timer_bench.py`.", "", f"Target: {fig['target']}."]


# -- (o) training with metrics and events -------------------------------------------------------


def train_flags(config: str) -> list[str]:
    if config == "none":
        return []
    return ["--metrics", "cloudwatch", "--events", "cloudwatch"]


def start_with_env(scratch: Path, args: list[str], env: dict[str, str]) -> Launch:
    """``pliant run ARGS`` in ``scratch`` with ``env`` (``launchers.start`` with an
    environment of its own)."""
    argv = [*LAUNCHERS["pliant"], *args]
    log = scratch / "pliant.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=scratch, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Launch("pliant", argv, proc, log)


def train_sample(config: str, aws: Any, steps: int) -> dict[str, Any]:
    """(o) One run; wall time, the slowest rank's loop time, what reached the emulator."""
    run_id = f"bench-o-{uuid.uuid4().hex[:8]}"
    env = {**launcher_env(), "PLIANT_NODE": NODE}
    if config == "cloudwatch":
        env.update(aws.env())
    elif config == "cloudwatch-down":
        env.update(down_env())
    with tempfile.TemporaryDirectory(prefix="pliant-bench-o-") as tmp:
        scratch = Path(tmp)
        args = ["--standalone", "--nproc-per-node", "2", "--rdzv-id", run_id,
                *train_flags(config), str(WORKERS / "train_metrics.py"), str(scratch),
                str(steps)]
        begin = time.perf_counter()
        launch = start_with_env(scratch, args, env)
        finish(launch)
        wall = time.perf_counter() - begin
        loops = []
        for rank in (0, 1):
            try:
                loops.append(json.loads((scratch / f"train-{rank}").read_text()))
            except (OSError, ValueError) as exc:
                raise launch.fail(f"worker file train-{rank} missing ({exc})") from exc
        log_tail = launch.log.read_text(errors="replace").splitlines()[-5:]
    one: dict[str, Any] = {"wall_s": wall, "train_s": max(r["seconds"] for r in loops),
                           "puts": sum(r["puts"] for r in loops),
                           "records": sum(r["records"] for r in loops), "run_id": run_id,
                           "log_tail": log_tail}
    if config == "cloudwatch":
        # The workers' values have every default dimension (moto's ListMetrics is too slow
        # to look them up: it grows with every value the emulator holds).
        one["metrics_arrived"] = sum(
            int(aws.statistics(NAMESPACE, "bench.loss", {
                "group": "train", "run_id": run_id, "role": "default", "node": NODE,
                "rank": str(rank)})["SampleCount"]) for rank in (0, 1))
        stream = f"{run_id}/{NODE}"
        events = aws.log_events("/pliant/events", stream) if stream in aws.log_streams(
            "/pliant/events") else []
        one["events_arrived"] = sum(1 for e in events
                                    if json.loads(e["message"])["name"] == "bench.checkpoint")
    return one


def run_training(repeat: int, steps: int = TRAIN_STEPS) -> dict[str, Any]:
    """(o) ``repeat`` runs per configuration, order rotated round by round, after one
    unrecorded warm-up run of each."""
    missing = emulator_missing()
    configs = tuple(c for c in TRAINING if not (missing and c.startswith("cloudwatch")))
    samples: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    with (cloudwatch() if not missing else _nothing()) as aws:
        for config in configs:
            train_sample(config, aws, steps)
        for round_no in range(repeat):
            for config in rotate(configs, round_no):
                one = train_sample(config, aws, steps)
                samples[config].append(one)
                extra = ""
                if "metrics_arrived" in one:
                    extra = (f"  emulator: {one['metrics_arrived']} of {one['puts'] // 2} "
                             f"bench.loss, {one['events_arrived']} of {one['records']} events")
                print(f"  o round {round_no + 1}/{repeat}  {config:<16} whole run "
                      f"{one['wall_s']:6.3f} s  training loop {one['train_s']:6.3f} s{extra}",
                      flush=True)
    rows: dict[str, Any] = {}
    base = {key: stats([s[key] for s in samples["none"]]) for key in ("wall_s", "train_s")}
    for config, runs in samples.items():
        row: dict[str, Any] = {}
        for key in ("wall_s", "train_s"):
            st = stats([s[key] for s in runs])
            noise = base[key]["max"] - base[key]["min"]
            diff = st["median"] - base[key]["median"]
            row[key] = {**st, "diff_s": diff, "noise_s": noise,
                        "met": None if config == "none" else abs(diff) <= noise}
        if config == "cloudwatch":
            row["metrics_arrived"] = [s["metrics_arrived"] for s in runs]
            row["events_arrived"] = [s["events_arrived"] for s in runs]
            row["expected"] = {"metrics": runs[0]["puts"] // 2, "events": runs[0]["records"]}
        rows[config] = row
    verdicts = [r[k]["met"] for r in rows.values() for k in ("wall_s", "train_s")
                if r[k]["met"] is not None]
    return {"rows": rows, "samples": samples, "steps": steps, "skipped": missing,
            "target": "training time changes by no more than noise (|difference of medians| "
                      "<= max - min of the no-handler runs)",
            "met": bool(verdicts) and all(verdicts)}


def training_rows(fig: dict[str, Any]) -> list[str]:
    rows = ["| measure | handlers | median (min-max) | difference to no handler | no-handler "
            "spread (max-min) | target | met? |", "|---|---|---|---|---|---|---|"]
    for key, what in (("wall_s", "whole run, start to exit"),
                      ("train_s", "training loop (slowest rank)")):
        for config, r in fig["rows"].items():
            s = r[key]
            diff = "-" if config == "none" else (
                f"{s['diff_s']:+.3f} s ({s['diff_s'] / s['noise_s']:+.1f} x spread)"
                if s["noise_s"] > 0 else f"{s['diff_s']:+.3f} s")
            target = "-" if config == "none" else "within the spread"
            met = "-" if s["met"] is None else "yes" if s["met"] else "NO"
            rows.append(f"| {what} | {LABELS[config]} | {s['median']:.3f} s ({s['min']:.3f}-"
                        f"{s['max']:.3f}) | {diff} | {s['noise_s']:.3f} s | {target} | {met} |")
    rows += ["", f"`pliant run --standalone --nproc-per-node 2 [--metrics cloudwatch --events "
             f"cloudwatch] workers/train_metrics.py`: gloo DDP on CPU, {fig['steps']} steps, "
             "2 `put_metric` a step and an event every 10 steps in each rank; the agent sends "
             "its own metrics and events too. One unrecorded warm-up run of each; order "
             "rotated round by round."]
    cw = fig["rows"].get("cloudwatch")
    if cw:
        rows += ["", f"Arrived at the emulator per run (of {cw['expected']['metrics']} "
                 f"`bench.loss` values and {cw['expected']['events']} events): values "
                 f"{cw['metrics_arrived']}, events {cw['events_arrived']}."]
    rows += ["", f"Target: {fig['target']}."]
    if fig["skipped"]:
        rows += ["", f"CloudWatch left out: {fig['skipped']}."]
    return rows

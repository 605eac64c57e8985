"""Benchmark pliant against torchrun, side by side, on this machine.

Usage: ``python bench/run.py [--repeat N] [--only a,b,...]`` (N >= 5, default 7;
figures a to t, default all).

Both launchers are run as subprocesses from the environment of the Python
running this file: ``<bin>/pliant run ...`` and ``<bin>/torchrun ...``, where
``<bin>`` is the directory of ``sys.executable``. Every measure takes N samples
per launcher, alternating the launchers run by run (and which one goes first
in each round), so that machine noise hits both equally; the figure compared is
the median. One unrecorded warm-up run of each launcher comes first, so that
neither pays for a cold page cache. Launchers run in a fresh temporary
directory (no config file from the repository is picked up), without
``PET_*``, ``PLIANT_*`` or ``TORCHELASTIC_*`` variables, and with
``RES_OPTIONS=use-vc`` (see ``launchers.resolver_env``: this machine's DNS
resolver drops queries in bursts, which stalls any TCPStore for 5 s; pass
``--system-resolver`` to keep it). The worker scripts live in
``bench/workers/`` and do as little as possible before the line that matters.
Other load on the machine shows up in the spread (min/max in the JSON) and in
the load averages recorded at the start and end of each figure.

Single-node figures (``--standalone --nproc-per-node 2``):

(a) launch to exit: wall time of the whole command ``workers/trivial.py``, from
    just before the subprocess is started to just after it exited. Each worker
    only leaves a marker file, which is checked (a launcher that starts no
    worker does not count as fast). Target: pliant/torchrun <= 0.10.

(b) recovery: ``--max-restarts 1 workers/crash.py``. On attempt 0
    (``TORCHELASTIC_RESTART_COUNT=0``) rank 0 announces itself and sleeps; rank
    1 waits for that, writes ``time.time()`` to a file and calls
    ``os._exit(1)``. On attempt 1 each rank writes the ``time.time()`` taken at
    its very first line, then exits 0. The figure is max(attempt-1 start times)
    - crash time: from a worker crash until every worker is running again
    (detection, stopping the group, re-rendezvous, spawning, interpreter
    start). ``time.time()`` is one clock across processes. Target:
    pliant/torchrun <= 0.30.

(c) agent peak memory: ``workers/sleep.py`` (workers sleep about 1 s).
    ``VmHWM`` of the launcher process itself (not its workers) is read from
    ``/proc/<pid>/status`` every ~10 ms until it exits; the last value read is
    the peak, since VmHWM never decreases. Reported in MB (10^6 bytes).
    Target: pliant <= 40 MB (torchrun shown).

(g) restart reliability: ``--max-restarts 1 workers/gloo_restart.py``, a gloo
    group that loses rank 1 once after it formed; the figure is how many of
    the tries end with exit code 0 (a try that runs past 120 s counts as
    failed). Target: pliant succeeds every time.

Multi-node figures, c10d rendezvous on loopback: (d) N nodes joining at once,
(e) two agents (launch, and recovery from a worker crash), (f) scale-up of a
running 2:3 job by a third agent, (h) node loss. They are described in ``rendezvous.py``.

etcd figures, pliant-etcd on real etcd servers on loopback (fsync on): (i) N nodes joining
at once on one etcd server, beside pliant-c10d and torch's etcd-v2 backend, (j) an etcd
member (the leader, or a follower) killed under a running round, (k) the agent's peak
memory with the etcd backend. They are described in ``etcd_figures.py``; torch's etcd-v2
backend needs python-etcd (``pip install -r bench/requirements.txt``), and is left out,
with the reason shown, without it.

Observability figures, pliant's metrics, events and hang detection (pliant only; CloudWatch
through pliant-cloudwatch, against its moto emulator on loopback or an endpoint that is
down): (l) the cost of one ``put_metric`` / ``events.record`` call per handler, (m)
throughput from one process to its sink, (n) a hung worker's deadline until every worker
runs again (``timer_bench.py``), (o) a small DDP training's time with CloudWatch up or down
against no handler. They are described in ``observability.py``; the CloudWatch parts need
``pliant-cloudwatch[testing]`` (moto) and are left out, with the reason shown, without it.

Warm-restart figures, until training steps again (issue 12), on a 2-rank gloo DDP
training (CPU) that checkpoints, loses rank 1 once and resumes (``workers/ddp_step.py``),
``--max-restarts 1``; torchrun, ``pliant run`` as invoked by default, and ``pliant run
--preload ''`` (no standby workers) where the pliant under test has that flag (left out,
with the reason shown, otherwise), rotated run by run: (p) crash until every rank
completed a training step again, standalone and with two agents on c10d (loopback), target
pliant/torchrun <= 0.20 in both; (q) launch until every rank completed its first step, two
agents on c10d (the same jobs as (p)'s), target pliant/torchrun <= 0.5. The clock of (p)
includes detection, stopping, re-rendezvous, spawning (or a standby's hand-off),
interpreter start, ``import torch``, the process group, loading the checkpoint, building
DDP and the step itself. They are described in ``warm_restart.py``. (r) a scale-up
(a third agent joins) and a node loss (one of three agents SIGKILLed with its worker) of
a ``--nnodes 2:3`` gloo DDP training on c10d, until every rank completed a step at the new
world size, the same variants; described in ``membership.py``.

Rendezvous security, described in ``rdzv_security.py``: (s) the join bursts (d) and (i)
at 32 nodes, each under the system resolver and with DNS over TCP in the same round,
side by side with torch; (t) the token's cost per round (c10d at N = 8, 32, 256 and etcd
at 32, with and without a token) and per value (sign and check).

Writes ``bench/results/bench.md`` (the tables, also printed),
``bench/results/bench.json`` (raw samples, median/min/max, machine facts) and the charts
of the key figures beside them (``plots.py``).
Figures not run this time (``--only``) keep their earlier results there, with
the date, commit and load of the run that produced them. Exits 0 whatever the
timings; non-zero only when a launcher fails (non-zero exit, time-out, workers
that did not run as expected) where the figure cannot be taken without it.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import etcd_figures
import membership
import observability
import plots
import rdzv_security
import rendezvous
import warm_restart
from launchers import (
    HERE,
    LAUNCHERS,
    RESOLVER_OPTIONS,
    WORKERS,
    Launch,
    LauncherError,
    finish,
    launcher_env,
    peak_rss_mb,
    read_time,
    resolver_env,
    start,
    stats,
)

RESULTS = HERE / "results"
COMMON_FLAGS = ["--standalone", "--nproc-per-node", "2"]
NPROC = 2
FIGURES = "abcdefghijklmnopqrst"
#: Figures that set the resolver options themselves, sample by sample.
RESOLVER_BY_FIGURE = {"s": "system and use-vc, row by row"}


@dataclass
class Measure:
    """One line of the table: what is measured, how, and what pliant must reach."""

    key: str
    title: str
    unit: str
    target: str
    met: Callable[[float, float], bool]  # (torchrun median, pliant median) -> met?
    sample: Callable[[str, Path], float]  # (launcher, scratch dir) -> one sample
    samples: dict[str, list[float]] = field(default_factory=dict)


def start_standalone(launcher: str, scratch: Path, *args: str) -> Launch:
    """Start ``launcher --standalone --nproc-per-node 2 ARGS`` with ``scratch`` as cwd."""
    return start(launcher, scratch, [*COMMON_FLAGS, *args])


# -- the single-node samples --------------------------------------------------------------------


def sample_launch(launcher: str, scratch: Path) -> float:
    """(a) Seconds from starting the launcher to its exit, trivial workers."""
    begin = time.perf_counter()
    launch = start_standalone(launcher, scratch, str(WORKERS / "trivial.py"), str(scratch))
    finish(launch)
    elapsed = time.perf_counter() - begin
    ran = sorted(p.name for p in scratch.glob("ran-*"))
    if ran != [f"ran-{r}" for r in range(NPROC)]:
        raise launch.fail(f"expected ranks 0..{NPROC - 1} to run, saw {ran}")
    return elapsed


def sample_recovery(launcher: str, scratch: Path) -> float:
    """(b) Seconds from rank 1's crash until the last attempt-1 worker started."""
    launch = start_standalone(launcher, scratch, "--max-restarts", "1",
                              str(WORKERS / "crash.py"), str(scratch))
    finish(launch)
    ready = read_time(launch, scratch / "ready-0")
    crash = read_time(launch, scratch / "crash")
    starts = [read_time(launch, scratch / f"start-{r}") for r in range(NPROC)]
    if not ready < crash < min(starts):
        raise launch.fail(f"worker times out of order: rank 0 ready {ready}, crash {crash}, "
                          f"attempt-1 starts {starts}")
    return max(starts) - crash


def sample_peak_rss(launcher: str, scratch: Path) -> float:
    """(c) The launcher's own VmHWM in MB, sampled until it exits."""
    return peak_rss_mb(start_standalone(launcher, scratch, str(WORKERS / "sleep.py")))


RELIABILITY_TIMEOUT_S = 120.0


def restart_succeeds(launcher: str, scratch: Path) -> bool:
    """(g) One try: does a gloo group that lost a worker come back and finish?"""
    argv = [*LAUNCHERS[launcher], *COMMON_FLAGS, "--max-restarts", "1",
            str(WORKERS / "gloo_restart.py")]
    try:
        done = subprocess.run(argv, cwd=scratch, env=launcher_env(), capture_output=True,
                              timeout=RELIABILITY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def run_reliability(tries: int) -> dict[str, Any]:
    """(g) ``tries`` tries per launcher, alternated; successes and tries by launcher."""
    results = {name: {"succeeded": 0, "tries": 0} for name in LAUNCHERS}
    for round_no in range(tries):
        for launcher in LAUNCHERS:
            with tempfile.TemporaryDirectory(prefix="pliant-bench-gloo-") as tmp:
                ok = restart_succeeds(launcher, Path(tmp))
            results[launcher]["tries"] += 1
            results[launcher]["succeeded"] += ok
            print(f"  gloo      round {round_no + 1}/{tries}  {launcher:<8} "
                  f"{'recovered' if ok else 'FAILED'}", flush=True)
    return {"title": "(g) gloo group recovers after a worker crash (runs that exit 0)",
            **results, "target": "pliant every time",
            "met": results["pliant"]["succeeded"] == results["pliant"]["tries"]}


MEASURES = {
    "a": Measure("launch", "(a) launch to exit, standalone, 2 workers", "s",
                 "ratio <= 0.10", lambda t, p: p / t <= 0.10, sample_launch),
    "b": Measure("recovery", "(b) worker crash -> every worker running again", "s",
                 "ratio <= 0.30", lambda t, p: p / t <= 0.30, sample_recovery),
    "c": Measure("peak_rss", "(c) agent peak RSS (VmHWM)", "MB",
                 "pliant <= 40 MB", lambda t, p: p <= 40.0, sample_peak_rss),
}


def run_measure(measure: Measure, repeat: int) -> dict[str, Any]:
    """Take ``repeat`` samples per launcher, alternating launchers and who goes first."""
    measure.samples = {name: [] for name in LAUNCHERS}
    for round_no in range(repeat):
        for launcher in rendezvous.launcher_order(round_no):
            with tempfile.TemporaryDirectory(prefix=f"pliant-bench-{measure.key}-") as tmp:
                value = measure.sample(launcher, Path(tmp))
            measure.samples[launcher].append(value)
            print(f"  {measure.key:<9} round {round_no + 1}/{repeat}  {launcher:<8} "
                  f"{value:8.3f} {measure.unit}", flush=True)
    return asdict(summarize(measure))


def warm_up() -> None:
    """One unrecorded trivial run of each launcher (page cache, .pyc files)."""
    for launcher in LAUNCHERS:
        with tempfile.TemporaryDirectory(prefix="pliant-bench-warmup-") as tmp:
            sample_launch(launcher, Path(tmp))


@dataclass
class Summary:
    """A measure's outcome: per-launcher statistics, the ratio and the verdict."""

    title: str
    unit: str
    torchrun: dict[str, object]
    pliant: dict[str, object]
    torchrun_median: float
    pliant_median: float
    ratio: float
    target: str
    met: bool | None  # None: shown, no target


def summarize(measure: Measure) -> Summary:
    torchrun = statistics.median(measure.samples["torchrun"])
    pliant = statistics.median(measure.samples["pliant"])
    return Summary(measure.title, measure.unit, stats(measure.samples["torchrun"]),
                   stats(measure.samples["pliant"]), torchrun, pliant, pliant / torchrun,
                   measure.target, measure.met(torchrun, pliant))


# -- the multi-node figures (rendezvous.py does the work) ----------------------------------------


def run_join_burst(repeat: int) -> dict[str, Any]:
    return {"title": "(d) N nodes joining at once, threads of one process, one TCPStore",
            **rendezvous.run_join_burst(repeat)}


def run_two_agents(repeat: int) -> dict[str, Any]:
    """(e) as two table rows shaped like (a)-(c)'s."""
    result = rendezvous.run_two_agents(repeat)
    rows = []
    for key, title, target in (
            ("launch", "(e) 2 agents: launch -> every worker started", "-"),
            ("recovery", "(e) 2 agents: worker crash -> every worker running again",
             "ratio <= 0.25")):
        part = result[key]
        ratio = part["ratio"]
        rows.append(asdict(Summary(title, "s", part["torchrun"], part["pliant"],
                                   part["median"]["torchrun"], part["median"]["pliant"], ratio,
                                   target, ratio <= 0.25 if key == "recovery" else None)))
    return {"title": "(e) two agents, c10d, one worker each", "rows": rows,
            "nonzero_exits": result["nonzero_exits"], "runs": result["runs"]}


def run_scale_up(repeat: int) -> dict[str, Any]:
    return {"title": "(f) scale-up: a third agent joins a running --nnodes 2:3 job",
            **rendezvous.run_scale_up(repeat)}


def run_node_loss(repeat: int) -> dict[str, Any]:
    return {"title": "(h) node loss: one node of a running --nnodes 2:3 job is killed",
            **rendezvous.run_node_loss(repeat)}


def run_etcd_burst(repeat: int) -> dict[str, Any]:
    return {"title": "(i) N nodes joining at once on one etcd server, threads of one process",
            **etcd_figures.run_etcd_burst(repeat)}


def run_failover(repeat: int) -> dict[str, Any]:
    return {"title": f"(j) an etcd member is killed under a running round "
                     f"({etcd_figures.FAILOVER_NODES} pliant-etcd nodes, 3 members)",
            **etcd_figures.run_failover(repeat)}


def run_etcd_rss(repeat: int) -> dict[str, Any]:
    return {"title": "(k) agent peak RSS (VmHWM) with the etcd backend",
            **etcd_figures.run_etcd_rss(repeat)}


def run_put_cost(repeat: int) -> dict[str, Any]:
    return {"title": "(l) cost of one put_metric / events.record call, by handler",
            **observability.run_cost(repeat)}


def run_sink_throughput(repeat: int) -> dict[str, Any]:
    return {"title": f"(m) throughput: {observability.THROUGHPUT_N:,} values from one "
                     f"process to its sink",
            **observability.run_throughput(repeat)}


def run_hang_recovery(repeat: int) -> dict[str, Any]:
    return {"title": "(n) hang detection: a worker's deadline expires -> every worker "
                     "running again",
            **observability.run_timer(repeat)}


def run_training_sinks(repeat: int) -> dict[str, Any]:
    return {"title": "(o) training time with CloudWatch reachable, down, or no handler",
            **observability.run_training(repeat)}


def run_warm_restart(repeat: int) -> dict[str, Any]:
    return {"title": "(p) worker crash -> every rank completed a training step again "
                     "(2-rank gloo DDP, checkpoint and resume)",
            **warm_restart.run_p(repeat)}


def run_first_step(repeat: int) -> dict[str, Any]:
    return {"title": "(q) 2 agents on c10d: launch -> every rank completed its first "
                     "training step",
            **warm_restart.run_q(repeat)}


def run_membership(repeat: int) -> dict[str, Any]:
    return {"title": "(r) scale-up and node loss on --nnodes 2:3: until every rank steps "
                     "again at the new world size (gloo DDP)",
            **membership.run_r(repeat)}


# -- machine facts and reports ------------------------------------------------------------------


def command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return done.stdout.strip()


def torchrun_python() -> str:
    """The interpreter named by torchrun's shebang line (the one that imports torch)."""
    with open(LAUNCHERS["torchrun"][0], "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    return first[2:].strip() if first.startswith("#!") else sys.executable


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine_facts() -> dict[str, Any]:
    version_of = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    return {
        "date": now(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": command_output([torchrun_python(), "-c", version_of, "torch"]),
        "pliant": command_output([LAUNCHERS["pliant"][0], "--version"]).removeprefix("pliant "),
        "git_commit": command_output(["git", "-C", str(HERE), "rev-parse", "HEAD"]),
        "git_dirty": bool(command_output(["git", "-C", str(HERE.parent), "status", "--porcelain",
                                          "--", "core", "plugins"])),
        "launchers": {name: " ".join(argv) for name, argv in LAUNCHERS.items()},
        "resolver": os.environ.get("RES_OPTIONS", "system default"),
    }


def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value:.1f} MB" if unit == "MB" else f"{value:.3f} s"


def verdict(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "NO"


def measure_rows(summaries: list[dict[str, Any]]) -> list[str]:
    rows = ["| measure | torchrun median | pliant median | ratio pliant/torchrun | target | met? |",
            "|---|---|---|---|---|---|"]
    for r in summaries:
        rows.append(f"| {r['title']} | {fmt(r['torchrun_median'], r['unit'])} "
                    f"| {fmt(r['pliant_median'], r['unit'])} | {r['ratio']:.3f} | {r['target']} "
                    f"| {verdict(r['met'])} |")
    return rows


def reliability_rows(g: dict[str, Any]) -> list[str]:
    t, p = g["torchrun"], g["pliant"]
    return ["| measure | torchrun | pliant | target | met? |", "|---|---|---|---|---|",
            f"| {g['title']} | {t['succeeded']}/{t['tries']} | {p['succeeded']}/{p['tries']} "
            f"| {g['target']} | {verdict(g['met'])} |"]


def join_burst_rows(d: dict[str, Any]) -> list[str]:
    rows = ["| nodes | torchrun median | pliant median | speed-up torchrun/pliant "
            "| store ops per round: torchrun (per node) | pliant (per node) | met? |",
            "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        n, median, ops = r["nodes"], r["median"], r["ops_per_round"]
        cells = {}
        for name in LAUNCHERS:
            late = r["timed_out"].get(name)
            if late is not None and median[name] is None:
                done = sum(late["ops"]["round"].values())
                cells[name] = (f"no result in {late['limit_s']:.0f} s ({late['finished']} of {n} "
                               f"nodes done, {done} ops so far)", "-")
            else:
                cells[name] = (fmt(median[name]), f"{ops[name]:.0f} ({ops[name] / n:.1f})")
        speedup = ("-" if r["speedup"] is None else
                   f"{'>= ' if r['speedup_is_lower_bound'] else ''}{r['speedup']:.0f}x")
        rows.append(f"| {n} | {cells['torchrun'][0]} | {cells['pliant'][0]} | {speedup} "
                    f"| {cells['torchrun'][1]} | {cells['pliant'][1]} | {verdict(r['met'])} |")
    rows += ["", f"Target: {d['target']}. A store operation is one call: pliant's on small "
             "keys (`RendezvousStore` get, set, add, compare_set, wait); torch's `get_state` "
             "and `set_state` read or compare-and-set the whole rendezvous state, which grows "
             "with N. Keep-alive traffic is not counted."]
    return rows


def two_agent_rows(e: dict[str, Any]) -> list[str]:
    def exits(name: str) -> str:
        bad = e["nonzero_exits"][name]
        return (f"{name} in {len(bad)} of {e['runs']} runs"
                + (f" (exit codes by node: {bad})" if bad else ""))

    return [*measure_rows(e["rows"]), "",
            f"Agents that exited non-zero after the job's workers all finished (not counted as "
            f"failures): {exits('torchrun')}; {exits('pliant')}."]


def scale_up_rows(f: dict[str, Any]) -> list[str]:
    def cell(name: str, key: str) -> str:
        if name in f["failed"]:
            return "did not grow (below)"
        part = f["launchers"][name][key]
        return "-" if part is None else fmt(part["median"])

    met = verdict(f["met"])
    rows = ["| measure | torchrun median | pliant median | target | met? |",
            "|---|---|---|---|---|",
            f"| third agent launched -> every node runs WORLD_SIZE=3 "
            f"| {cell('torchrun', 'from_launch')} | {cell('pliant', 'from_launch')} | - | - |",
            f"| third agent ready (launcher and torch imported) -> every node runs WORLD_SIZE=3 "
            f"| {cell('torchrun', 'from_ready')} | {cell('pliant', 'from_ready')} "
            f"| <= {f['last_call_timeout_s'] + 1:g} s | {met} |",
            f"| third agent launched -> ready | {cell('torchrun', 'ready')} "
            f"| {cell('pliant', 'ready')} | - | - |",
            "", f"Both launchers with `last_call_timeout={f['last_call_timeout_s']:g}` "
            f"(pliant's default; torch's is 30 s). Target: {f['target']}."]
    for name in LAUNCHERS:
        bad = f["launchers"][name]["nonzero_exits"]
        if bad:
            rows += ["", f"{name}: agents exited non-zero after growing (exit codes by node): "
                     f"{bad}."]
    return rows + gave_up_rows(f["failed"], "{name} did not reach WORLD_SIZE=3")


def node_loss_rows(h: dict[str, Any]) -> list[str]:
    def cell(name: str) -> str:
        if name in h["failed"]:
            return f"not within {h['limit_s']:g} s (below)"
        part = h["launchers"][name]
        return "-" if part is None else fmt(part["median"])

    rows = ["| measure | torchrun median | pliant median | target | met? |",
            "|---|---|---|---|---|",
            f"| node killed (agent and workers) -> both survivors run WORLD_SIZE=2 "
            f"| {cell('torchrun')} | {cell('pliant')} | {h['target']} | {verdict(h['met'])} |",
            "", f"Both launchers with `{h['keep_alive']}`."]
    return rows + gave_up_rows(h["failed"], "{name}: the survivors did not run again")


def gave_up_rows(failed: dict[str, dict[str, Any]], outcome: str) -> list[str]:
    """One paragraph per launcher that was not tried again: what happened, in its agents'
    own last error lines. ``outcome`` is a format string with ``{name}``."""
    rows = []
    for name, run in failed.items():
        rows += ["", f"{outcome.format(name=name)} on try {run['after_tries']} "
                 f"({run['problem']}; worker files: {', '.join(run['files'])}); not tried "
                 f"again. Last error lines: "
                 + "; ".join(f"{node}: `{line}`" if line else f"{node}: none"
                             for node, line in run["errors"].items())]
    return rows


def etcd_setup(fig: dict[str, Any]) -> str:
    e = fig["etcd"]
    return (f"etcd {e['etcd']} ({e['etcd_flags']}; data in {e['data_dir_fs']}), "
            f"etcd-sdk-python {e['etcd_sdk_python']}, grpcio {e['grpcio']}, python-etcd "
            f"{e['python_etcd']}")


def etcd_burst_rows(i: dict[str, Any]) -> list[str]:
    names = etcd_figures.BURST_BACKENDS
    rows = ["| nodes | pliant-etcd median | pliant-c10d median | torch etcd-v2 median "
            "| pliant-etcd: store ops (etcd requests) per node | torch etcd-v2: requests per "
            "node | target | met? |", "|---|---|---|---|---|---|---|---|"]
    for r in i["rows"]:
        n, median, ops = r["nodes"], r["median"], r["ops_per_round"]
        cells = {}
        for name in names:
            late = r["timed_out"].get(name)
            if late is not None and median[name] is None:
                cells[name] = (f"no result in {late['limit_s']:.0f} s ({late['finished']} of "
                               f"{n} nodes done, {late['ops']} requests so far)")
            elif name in i["failed"] and median[name] is None:
                cells[name] = "did not run (below)"
            else:
                cells[name] = fmt(median[name])
        requests = r["etcd_requests_per_round"]
        pliant_ops = ("-" if ops["pliant-etcd"] is None else f"{ops['pliant-etcd'] / n:.1f}"
                      + ("" if requests is None else f" ({requests / n:.1f})"))
        torch_ops = "-" if ops["torch-etcd-v2"] is None else f"{ops['torch-etcd-v2'] / n:.1f}"
        target = "-" if r["met"] is None else f"<= {etcd_figures.BURST_TARGET_S:g} s"
        rows.append(f"| {n} | {cells['pliant-etcd']} | {cells['pliant-c10d']} "
                    f"| {cells['torch-etcd-v2']} | {pliant_ops} | {torch_ops} | {target} "
                    f"| {verdict(r['met'])} |")
    left = sum(sum(r["keys_left"]) for r in i["rows"])
    runs = sum(len(r["keys_left"]) for r in i["rows"])
    shutdown = ", ".join(f"N={r['nodes']}: {fmt(r['shutdown_s']['pliant-etcd'])}"
                         for r in i["rows"] if r["shutdown_s"]["pliant-etcd"] is not None)
    rows += ["", "Timed: from releasing the N node threads (each handler built, its first "
             "connection open) to the last one holding its rank, as in (d); the keep-alive "
             "connection each handler opens in `next_rendezvous` is inside the clock. "
             "pliant-etcd: `EtcdRendezvousHandler` on one etcd server (`EtcdCluster(1)`, "
             "fsync on); pliant-c10d: one TCPStore, as in (d); torch etcd-v2: "
             "`DynamicRendezvousHandler` on `EtcdRendezvousBackend` (python-etcd, etcd's v2 "
             "API, a second etcd server with the same flags and `--enable-v2`). Backends "
             "rotated round by round; a new run id per sample. All nodes are threads of one "
             "Python process on this machine's CPUs, the etcd server beside them: per-request "
             "client CPU counts as much as the server's. Store ops: pliant's "
             "`RendezvousStore` calls; etcd requests: gRPC messages the server received from "
             "the release to the last rank (its `/metrics`; a lost compare-and-set retried "
             "counts again; keep-alive of nodes already done included); torch: `get_state` "
             "and `set_state`, each one HTTP request.",
             "", f"After each sample every handler is shut down (all at once; pliant-etcd "
             f"median {shutdown}). Keys pliant-etcd left under the run's prefix after shutting "
             f"down: {left} in {runs} runs (a finished run should leave none).",
             "", f"Setup: {etcd_setup(i)}. Target: {i['target']}."]
    stuck = {name: sum(r["shutdown_stuck"][name] for r in i["rows"]) for name in names
             if all("shutdown_stuck" in r for r in i["rows"])}
    if any(stuck.values()):
        rows += ["", "Handlers whose `shutdown()` had not returned within 30 s: " + ", ".join(
            f"{name} {count}" for name, count in stuck.items() if count) + "."]
    for name, why in i["failed"].items():
        rows += ["", f"{name} did not run: {why}."]
    return rows


def failover_rows(j: dict[str, Any]) -> list[str]:
    def cell(part: dict[str, Any] | None) -> str:
        if part is None:
            return "-"
        return (f"{fmt(part['median'])} ({part['min']:.3f}-{part['max']:.3f}, "
                f"{len(part['samples'])})")

    rows = ["| member killed | measure | median (min-max, samples) | target | met? |",
            "|---|---|---|---|---|"]
    for victim in ("leader", "follower"):
        op, rdzv = j["parts"][victim]["op"], j["parts"][victim]["rdzv"]
        target = f"<= {etcd_figures.FAILOVER_TARGET_S:g} s" if victim == "leader" else "-"

        def met(part: dict[str, Any] | None, failures: int, victim: str = victim) -> str:
            if victim != "leader":
                return "-"
            return verdict(failures == 0 and part is not None
                           and part["median"] <= etcd_figures.FAILOVER_TARGET_S)

        rows += [f"| {victim} | kill -> a write through every node's own store succeeded "
                 f"| {cell(op['every_node'])} | {target} "
                 f"| {met(op['every_node'], op['failures'])} |",
                 f"| {victim} | ... through a store that was connected to the killed member "
                 f"| {cell(op['on_victim'])} | - | - |",
                 f"| {victim} | ... through a store connected to a surviving member "
                 f"| {cell(op['off_victim'])} | - | - |",
                 f"| {victim} | kill + round end posted -> every node saw the round end "
                 f"| {cell(rdzv['noticed'])} | - | - |",
                 f"| {victim} | kill + round end posted -> every node has its rank in the next "
                 f"round | {cell(rdzv['seconds'])} | {target} "
                 f"| {met(rdzv['seconds'], rdzv['failures'])} |"]
    spurious = [e for v in j["parts"].values() for e in v["op"]["spurious_ends"]]
    left = [k for v in j["parts"].values() for m in ("op", "rdzv") for k in v[m]["keys_left"]]
    failures = {f"{v} {m}": (p[m]["failures"], p[m]["errors"]) for v, p in j["parts"].items()
                for m in ("op", "rdzv") if p[m]["failures"]}
    rows += ["", f"A fresh 3-member cluster per sample (fsync on); {j['nodes']} pliant-etcd "
             "nodes (threads of one process, every member's address given) form round 0, then "
             "one member gets SIGKILL: the raft leader, or the follower most nodes' stores are "
             "connected to (each client picks a member at random). The clock starts when the "
             "signal is sent. Write: at once, every node writes one key through its handler's "
             "own store (idle while the round runs); the slowest node is the figure, also "
             "split by whether that store lost its member (samples without such a store are "
             "left out of that line). Re-rendezvous: at once, node 0 reports a worker failure "
             "(posts the round end); the other nodes are woken by their keep-alive threads (a "
             "watch on the round's `over` key, resumed on another member if its stream broke) "
             "and call `next_rendezvous`, as agents would (stopping and starting workers not "
             "included).",
             "", f"Round ends seen within dead_after + 1 s of the kill when no node failed "
             f"(a member's loss taken for a node's): {len(spurious)}"
             + (f" ({'; '.join(spurious[:3])})" if spurious else "")
             + f". Keys left under the run's prefix after every node shut down: {len(left)} "
             f"in {2 * sum(p['op']['samples'] for p in j['parts'].values())} runs"
             + (f" ({', '.join(sorted({k.rsplit('/', 2)[-2] + '/...' for k in left}))})"
                if left else "") + ".",
             "", f"Setup: {etcd_setup(j)}. Target: {j['target']}."]
    for what, (count, errors) in failures.items():
        rows += ["", f"{what}: {count} sample(s) failed: " + "; ".join(f"`{e}`" for e in errors)]
    return rows


def etcd_rss_rows(k: dict[str, Any]) -> list[str]:
    rows = ["| agent | median peak RSS (min-max) | target | met? |", "|---|---|---|---|"]
    for name, part in k["agents"].items():
        if part is None:
            cell = f"did not run ({k['skipped'].get(name, 'no samples')})"
        else:
            cell = f"{fmt(part['median'], 'MB')} ({part['min']:.1f}-{part['max']:.1f})"
        target = f"<= {etcd_figures.RSS_TARGET_MB:g} MB" if name == "pliant-etcd" else "-"
        met = verdict(k["met"]) if name == "pliant-etcd" else "-"
        rows.append(f"| `{etcd_rss_command(name)}` | {cell} | {target} | {met} |")
    rows += ["", "Each agent: `--nnodes 1:2 --nproc-per-node 1 workers/sleep.py` (it waits out "
             "the 2 s last call alone, then runs one worker for about 1 s); VmHWM of the agent "
             "process only, read every 10 ms until it exits, as in (c). pliant-etcd on a "
             "1-member cluster (fsync on); pliant-c10d hosts its TCPStore (`is_host=1`), which "
             "imports torch; torchrun on a second etcd server with `--enable-v2`, "
             "`last_call_timeout=2`. Agents rotated round by round. Keys pliant-etcd left after "
             f"the job: {sum(k['keys_left'])} in {len(k['keys_left'])} runs.",
             "", f"Setup: {etcd_setup(k)}. Target: {k['target']}."]
    return rows


def etcd_rss_command(name: str) -> str:
    return {"pliant-etcd": "pliant run --rdzv-backend etcd",
            "pliant-c10d": "pliant run --rdzv-backend c10d",
            "torchrun-etcd-v2": "torchrun --rdzv-backend etcd-v2"}.get(name, name)


def run_row(key: str, run: dict[str, Any]) -> str:
    load = run["loadavg_at_start"][0], run["loadavg_at_end"][0]
    return (f"| {key} | {run['date']} | {run['git_commit'][:10]}"
            f"{' (core modified)' if run['git_dirty'] else ''} | {run['repeat']} "
            f"| {load[0]:.2f} -> {load[1]:.2f} | {run['resolver']} |")


def markdown(figures: dict[str, Any], facts: dict[str, Any]) -> str:
    out = [f"# pliant vs torchrun\n\n{facts['nproc']} CPUs ({facts['cpu']}); Python "
           f"{facts['python']}; torch {facts['torch']}; pliant {facts['pliant']}. Medians, "
           f"launchers alternated run by run; when, at which commit and under which load each "
           f"figure was taken is listed at the end. Produced by `python bench/run.py`; raw "
           f"samples, min and max in `bench.json`.", ""]
    charts = plots.markdown_links(figures)
    if charts:
        out += ["## Charts", "", "Drawn by `python bench/plots.py` from `bench.json`: medians with "
                "min-max whiskers; each chart's caption says what its clock includes.", "",
                *[line for chart in charts for line in (chart, "")]]
    single = [figures[k] for k in "abc" if k in figures]
    if single or "g" in figures:
        out += ["## Single node: `--standalone --nproc-per-node 2`", ""]
        if single:
            out += measure_rows(single)
        if "g" in figures:
            out += ["", *reliability_rows(figures["g"])]
    if {"d", "e", "f", "h"} & figures.keys():
        out += ["", "## Multi-node: c10d rendezvous, every node on this machine (loopback)"]
    for key, render in (("d", join_burst_rows), ("e", two_agent_rows), ("f", scale_up_rows),
                        ("h", node_loss_rows)):
        if key in figures:
            out += ["", f"### {figures[key]['title']}", "", *render(figures[key])]
    if {"i", "j", "k"} & figures.keys():
        out += ["", "## etcd: pliant-etcd on real etcd servers on this machine (loopback)"]
    for key, etcd_render in (("i", etcd_burst_rows), ("j", failover_rows), ("k", etcd_rss_rows)):
        if key in figures:
            out += ["", f"### {figures[key]['title']}", "", *etcd_render(figures[key])]
    if {"l", "m", "n", "o"} & figures.keys():
        out += ["", "## Observability: metrics, events and hang detection (pliant only)"]
    for key, obs_render in (("l", observability.cost_rows),
                            ("m", observability.throughput_rows),
                            ("n", observability.timer_rows),
                            ("o", observability.training_rows)):
        if key in figures:
            out += ["", f"### {figures[key]['title']}", "", *obs_render(figures[key])]
    if {"p", "q", "r"} & figures.keys():
        out += ["", "## Warm restart: until training steps again (2-rank gloo DDP on CPU)"]
    for key, warm_render in (("p", warm_restart.p_rows), ("q", warm_restart.q_rows),
                             ("r", membership.r_rows)):
        if key in figures:
            out += ["", f"### {figures[key]['title']}", "", *warm_render(figures[key])]
    if {"s", "t"} & figures.keys():
        out += ["", "## Rendezvous security: the system resolver, and the job's token"]
    for key, security_render in (("s", rdzv_security.s_rows), ("t", rdzv_security.t_rows)):
        if key in figures:
            out += ["", f"### {figures[key]['title']}", "", *security_render(figures[key])]
    out += ["", "## Runs", "",
            "| figure | started | commit | runs per launcher | 1-min load | resolver options |",
            "|---|---|---|---|---|---|"]
    out += [run_row(key, fig["run"]) for key, fig in figures.items()]
    return "\n".join(out) + "\n"


def write_reports(new: dict[str, Any], facts: dict[str, Any]) -> str:
    """Merge this run's figures into bench.json (figures not run keep theirs); render both."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench.json"
    figures = json.loads(path.read_text()).get("figures", {}) if path.exists() else {}
    figures.update(new)
    figures = dict(sorted(figures.items()))
    table = markdown(figures, facts)
    (RESULTS / "bench.md").write_text(table)
    path.write_text(json.dumps({"machine": facts, "figures": figures}, indent=2) + "\n")
    return table


def run_resolvers(repeat: int) -> dict[str, Any]:
    return {"title": f"(s) join bursts (d) and (i) at N={rdzv_security.RESOLVER_NODES}: the "
                     f"system resolver against DNS over TCP",
            **rdzv_security.run_resolvers(repeat)}


def run_token(repeat: int) -> dict[str, Any]:
    return {"title": "(t) the rendezvous token's cost, per round and per value (pliant only)",
            **rdzv_security.run_token(repeat)}


# -- entry point ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark pliant against torchrun.")
    parser.add_argument("--repeat", type=int, default=7, metavar="N",
                        help="runs per launcher and measure (at least 5; default 7)")
    parser.add_argument("--tries", type=int, default=6, metavar="N",
                        help="tries per launcher for the restart reliability figure (g) "
                             "(default 6)")
    parser.add_argument("--only", default=",".join(FIGURES), metavar="LETTERS",
                        help="figures to run, comma-separated, from a (launch) b (recovery) "
                             "c (memory) d (join burst) e (two agents) f (scale-up) g (gloo "
                             "restart) h (node loss) i (join burst on etcd) j (etcd member "
                             "failover) k (agent memory, etcd) l (put_metric cost) m (sink "
                             "throughput) n (hang detection) o (training with CloudWatch) p "
                             "(crash -> DDP stepping again) q (2 agents: launch -> DDP "
                             "first step) r (scale-up and node loss: until DDP steps at the "
                             "new size) s (join bursts d and i under the system resolver) "
                             "t (the rendezvous token's cost); "
                             "default all. Others keep their earlier results.")
    parser.add_argument("--repeat-o", type=int, default=None, metavar="N",
                        help="runs per configuration for figure (o) only, which takes about "
                             "40 s a round (default: --repeat)")
    parser.add_argument("--system-resolver", action="store_true",
                        help=f"do not set RES_OPTIONS={RESOLVER_OPTIONS} (see "
                             "launchers.resolver_env)")
    ns = parser.parse_args(argv)
    if ns.repeat < 5:
        parser.error("--repeat must be at least 5 (the figures are medians of >= 5 runs)")
    if ns.repeat_o is not None and ns.repeat_o < 3:
        parser.error("--repeat-o must be at least 3")
    ns.only = [f.strip().lower() for f in ns.only.split(",") if f.strip()]
    unknown = [f for f in ns.only if f not in FIGURES]
    if unknown or not ns.only:
        parser.error(f"--only {','.join(unknown)}: choose from {', '.join(FIGURES)}")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    missing = [argv[0] for argv in LAUNCHERS.values() if not os.access(argv[0], os.X_OK)]
    if missing:
        print(f"bench: launcher not found next to {sys.executable}: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    resolver_env(ns.system_resolver)
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        **{key: functools.partial(run_measure, m, ns.repeat) for key, m in MEASURES.items()},
        "d": lambda: run_join_burst(ns.repeat),
        "e": lambda: run_two_agents(ns.repeat),
        "f": lambda: run_scale_up(ns.repeat),
        "g": lambda: run_reliability(ns.tries),
        "h": lambda: run_node_loss(ns.repeat),
        "i": lambda: run_etcd_burst(ns.repeat),
        "j": lambda: run_failover(ns.repeat),
        "k": lambda: run_etcd_rss(ns.repeat),
        "l": lambda: run_put_cost(ns.repeat),
        "m": lambda: run_sink_throughput(ns.repeat),
        "n": lambda: run_hang_recovery(ns.repeat),
        "o": lambda: run_training_sinks(ns.repeat_o or ns.repeat),
        "p": lambda: run_warm_restart(ns.repeat),
        "q": lambda: run_first_step(ns.repeat),
        "r": lambda: run_membership(ns.repeat),
        "s": lambda: run_resolvers(ns.repeat),
        "t": lambda: run_token(ns.repeat),
    }
    facts = machine_facts()
    figures: dict[str, Any] = {}
    try:
        if set(ns.only) - {"d", "i", "j", "s", "t"}:  # the others start launchers
            print(f"warming up ({', '.join(LAUNCHERS)}) ...", flush=True)
            warm_up()
        repeats = {"g": ns.tries, "o": ns.repeat_o or ns.repeat}
        for key in sorted(set(ns.only)):
            run = {"date": now(), "git_commit": facts["git_commit"],
                   "git_dirty": facts["git_dirty"], "repeat": repeats.get(key, ns.repeat),
                   "resolver": RESOLVER_BY_FIGURE.get(key, facts["resolver"]),
                   "loadavg_at_start": os.getloadavg()}
            print(f"figure ({key}):", flush=True)
            figures[key] = runners[key]()
            figures[key]["run"] = {**run, "loadavg_at_end": os.getloadavg()}
    except LauncherError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print()
    print(write_reports(figures, facts), end="")
    return plots.main(["--json", str(RESULTS / "bench.json")])


if __name__ == "__main__":
    sys.exit(main())

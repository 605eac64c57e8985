"""Benchmark pliant against torchrun, side by side, on this machine.

Usage: ``python bench/run.py [--repeat N]`` (N >= 5, default 7).

Both launchers are run as subprocesses from the environment of the Python
running this file: ``<bin>/pliant run ...`` and ``<bin>/torchrun ...``, where
``<bin>`` is the directory of ``sys.executable``. Every measure takes N samples
per launcher, alternating the launchers run by run (and which one goes first
in each round), so that machine noise hits both equally; the figure compared is
the median. One unrecorded warm-up run of each launcher comes first, so that
neither pays for a cold page cache. Launchers run in a fresh temporary
directory (no config file from the repository is picked up), without
``PET_*``, ``PLIANT_*`` or ``TORCHELASTIC_*`` variables. The worker scripts
live in ``bench/workers/`` and do as little as possible before the line that
matters. Other load on the machine shows up in the spread (min/max in the
JSON) and in the load averages recorded at start and end.

Measures:

(a) launch to exit: wall time of the whole command
    ``--standalone --nproc-per-node 2 workers/trivial.py``, from just before
    the subprocess is started to just after it exited. Each worker only leaves
    a marker file, which is checked (a launcher that starts no worker does not
    count as fast). Target: pliant/torchrun <= 0.10.

(b) recovery: ``--standalone --nproc-per-node 2 --max-restarts 1
    workers/crash.py``. On attempt 0 (``TORCHELASTIC_RESTART_COUNT=0``) rank 0
    announces itself and sleeps; rank 1 waits for that, writes ``time.time()``
    to a file and calls ``os._exit(1)``. On attempt 1 each rank writes the
    ``time.time()`` taken at its very first line, then exits 0. The figure is
    max(attempt-1 start times) - crash time: from a worker crash until every
    worker is running again (detection, stopping the group, re-rendezvous,
    spawning, interpreter start). ``time.time()`` is one clock across
    processes. Target: pliant/torchrun <= 0.30.

(c) agent peak memory: ``--standalone --nproc-per-node 2 workers/sleep.py``
    (workers sleep about 1 s). ``VmHWM`` of the launcher process itself (not
    its workers) is read from ``/proc/<pid>/status`` every ~10 ms until it
    exits; the last value read is the peak, since VmHWM never decreases.
    Reported in MB (10^6 bytes). Target: pliant <= 40 MB (torchrun shown).

(d) restart reliability: ``--standalone --nproc-per-node 2 --max-restarts 1
    workers/gloo_restart.py``, a gloo group that loses rank 1 once after it
    formed; the figure is how many of the tries end with exit code 0 (a try
    that runs past 120 s counts as failed). Target: pliant succeeds every time.

Writes ``bench/results/bench.md`` (the table, also printed) and
``bench/results/bench.json`` (raw samples, median/min/max, machine facts).
Exits 0 whatever the timings; non-zero only when a launcher fails (non-zero
exit, time-out, workers that did not run as expected).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKERS = HERE / "workers"
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun")],
    "pliant": [str(BIN / "pliant"), "run"],
}
COMMON_FLAGS = ["--standalone", "--nproc-per-node", "2"]
NPROC = 2
TIMEOUT_S = 300.0
SAMPLE_EVERY_S = 0.01
#: Launcher settings (torchrun's PET_*, pliant's PLIANT_*) and an outer launcher's variables.
IGNORED_ENV_PREFIXES = ("PET_", "PLIANT_", "TORCHELASTIC_")


class LauncherError(RuntimeError):
    """A launcher did not run the job as it should have: the bench cannot go on."""


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


# -- running a launcher ---------------------------------------------------------------------


@dataclass
class Launch:
    """A launcher process started in a scratch directory, its output in ``log``."""

    launcher: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    def fail(self, problem: str) -> LauncherError:
        output = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
        return LauncherError(f"{self.launcher}: {problem}\n  command: {' '.join(self.argv)}\n"
                             f"--- its output (last lines) ---\n{output}")


def launcher_env() -> dict[str, str]:
    """This environment without settings that would change what a launcher does."""
    return {k: v for k, v in os.environ.items() if not k.startswith(IGNORED_ENV_PREFIXES)}


def start(launcher: str, scratch: Path, *args: str) -> Launch:
    """Start ``launcher --standalone --nproc-per-node 2 ARGS`` with ``scratch`` as cwd."""
    argv = [*LAUNCHERS[launcher], *COMMON_FLAGS, *args]
    log = scratch / f"{launcher}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=scratch, env=launcher_env(), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Launch(launcher, argv, proc, log)


def finish(launch: Launch) -> None:
    """Wait for a launcher and raise :class:`LauncherError` unless it exited 0.

    The exit is awaited on a pidfd: ``Popen.wait(timeout)`` polls with sleeps of
    up to 50 ms, which would add up to 50 ms to every timing.
    """
    exited: list[int] = [0]
    if launch.proc.returncode is None:  # the memory sampler may have reaped it already
        pidfd = os.pidfd_open(launch.proc.pid)
        try:
            exited, _, _ = select.select([pidfd], [], [], TIMEOUT_S)
        finally:
            os.close(pidfd)
    if not exited:
        launch.proc.kill()
        launch.proc.wait()
        raise launch.fail(f"timed out after {TIMEOUT_S:.0f} s")
    code = launch.proc.wait()
    if code != 0:
        raise launch.fail(f"exited {code}")


def read_time(launch: Launch, path: Path) -> float:
    """A ``time.time()`` value a worker wrote to ``path``."""
    try:
        return float(path.read_text())
    except (OSError, ValueError) as exc:
        raise launch.fail(f"worker file {path.name} missing or unreadable ({exc})") from exc


# -- the three samples ------------------------------------------------------------------------


def sample_launch(launcher: str, scratch: Path) -> float:
    """(a) Seconds from starting the launcher to its exit, trivial workers."""
    begin = time.perf_counter()
    launch = start(launcher, scratch, str(WORKERS / "trivial.py"), str(scratch))
    finish(launch)
    elapsed = time.perf_counter() - begin
    ran = sorted(p.name for p in scratch.glob("ran-*"))
    if ran != [f"ran-{r}" for r in range(NPROC)]:
        raise launch.fail(f"expected ranks 0..{NPROC - 1} to run, saw {ran}")
    return elapsed


def sample_recovery(launcher: str, scratch: Path) -> float:
    """(b) Seconds from rank 1's crash until the last attempt-1 worker started."""
    launch = start(launcher, scratch, "--max-restarts", "1",
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
    launch = start(launcher, scratch, str(WORKERS / "sleep.py"))
    status = Path(f"/proc/{launch.proc.pid}/status")
    peak_kb = 0
    while launch.proc.poll() is None:
        peak_kb = max(peak_kb, read_vmhwm_kb(status))
        time.sleep(SAMPLE_EVERY_S)
    finish(launch)
    if peak_kb == 0:
        raise launch.fail("exited before its VmHWM could be read")
    return peak_kb * 1024 / 1e6


def read_vmhwm_kb(status: Path) -> int:
    """VmHWM in kB, or 0 when the process is gone or a zombie (no memory left)."""
    try:
        text = status.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


RELIABILITY_TIMEOUT_S = 120.0


def restart_succeeds(launcher: str, scratch: Path) -> bool:
    """(d) One try: does a gloo group that lost a worker come back and finish?"""
    argv = [*LAUNCHERS[launcher], *COMMON_FLAGS, "--max-restarts", "1",
            str(WORKERS / "gloo_restart.py")]
    try:
        done = subprocess.run(argv, cwd=scratch, env=launcher_env(), capture_output=True,
                              timeout=RELIABILITY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def run_reliability(tries: int) -> dict[str, dict[str, int]]:
    """``tries`` tries per launcher, alternated; successes and tries by launcher."""
    results = {name: {"succeeded": 0, "tries": 0} for name in LAUNCHERS}
    for round_no in range(tries):
        for launcher in LAUNCHERS:
            with tempfile.TemporaryDirectory(prefix="pliant-bench-gloo-") as tmp:
                ok = restart_succeeds(launcher, Path(tmp))
            results[launcher]["tries"] += 1
            results[launcher]["succeeded"] += ok
            print(f"  gloo      round {round_no + 1}/{tries}  {launcher:<8} "
                  f"{'recovered' if ok else 'FAILED'}", flush=True)
    return results


MEASURES = [
    Measure("launch", "(a) launch to exit, standalone, 2 workers", "s",
            "ratio <= 0.10", lambda t, p: p / t <= 0.10, sample_launch),
    Measure("recovery", "(b) worker crash -> every worker running again", "s",
            "ratio <= 0.30", lambda t, p: p / t <= 0.30, sample_recovery),
    Measure("peak_rss", "(c) agent peak RSS (VmHWM)", "MB",
            "pliant <= 40 MB", lambda t, p: p <= 40.0, sample_peak_rss),
]


# -- the run ----------------------------------------------------------------------------------


def run_measure(measure: Measure, repeat: int) -> None:
    """Take ``repeat`` samples per launcher, alternating launchers and who goes first."""
    measure.samples = {name: [] for name in LAUNCHERS}
    names = list(LAUNCHERS)
    for round_no in range(repeat):
        order = names if round_no % 2 == 0 else names[::-1]
        for launcher in order:
            with tempfile.TemporaryDirectory(prefix=f"pliant-bench-{measure.key}-") as tmp:
                value = measure.sample(launcher, Path(tmp))
            measure.samples[launcher].append(value)
            print(f"  {measure.key:<9} round {round_no + 1}/{repeat}  {launcher:<8} "
                  f"{value:8.3f} {measure.unit}", flush=True)


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
    met: bool


def stats(values: list[float]) -> dict[str, object]:
    return {"samples": [round(v, 6) for v in values], "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def summarize(measure: Measure) -> Summary:
    torchrun = statistics.median(measure.samples["torchrun"])
    pliant = statistics.median(measure.samples["pliant"])
    return Summary(measure.title, measure.unit, stats(measure.samples["torchrun"]),
                   stats(measure.samples["pliant"]), torchrun, pliant, pliant / torchrun,
                   measure.target, measure.met(torchrun, pliant))


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


def machine_facts() -> dict[str, Any]:
    version_of = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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
        "loadavg_at_start": os.getloadavg(),
    }


def fmt(value: float, unit: str) -> str:
    return f"{value:.1f} MB" if unit == "MB" else f"{value:.3f} s"


def markdown(results: dict[str, Summary], reliability: dict[str, dict[str, int]],
             facts: dict[str, Any], repeat: int) -> str:
    rows = ["| measure | torchrun median | pliant median | ratio pliant/torchrun | target | met? |",
            "|---|---|---|---|---|---|"]
    for r in results.values():
        rows.append(f"| {r.title} | {fmt(r.torchrun_median, r.unit)} "
                    f"| {fmt(r.pliant_median, r.unit)} | {r.ratio:.3f} | {r.target} "
                    f"| {'yes' if r.met else 'NO'} |")
    rows += ["", "| measure | torchrun | pliant | target | met? |", "|---|---|---|---|---|"]
    t, p = reliability["torchrun"], reliability["pliant"]
    rows.append(f"| (d) gloo group recovers after a worker crash (runs that exit 0) "
                f"| {t['succeeded']}/{t['tries']} | {p['succeeded']}/{p['tries']} "
                f"| pliant every time | {'yes' if p['succeeded'] == p['tries'] else 'NO'} |")
    load = f"{facts['loadavg_at_start'][0]:.2f} -> {facts['loadavg_at_end'][0]:.2f}"
    header = (f"# pliant vs torchrun\n\n"
              f"{facts['date']}; {facts['nproc']} CPUs ({facts['cpu']}); Python {facts['python']}; "
              f"torch {facts['torch']}; pliant {facts['pliant']} "
              f"({facts['git_commit'][:10]}{', core modified' if facts['git_dirty'] else ''}); "
              f"1-min load average {load}. Median of {repeat} runs per launcher, launchers "
              f"alternated run by run. Produced by `python bench/run.py`; raw samples, min and "
              f"max in `bench.json`.\n\n")
    return header + "\n".join(rows) + "\n"


def write_reports(results: dict[str, Summary], reliability: dict[str, dict[str, int]],
                  facts: dict[str, Any], repeat: int) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = markdown(results, reliability, facts, repeat)
    (RESULTS / "bench.md").write_text(table)
    document = {"machine": facts, "repeat": repeat,
                "measures": {key: asdict(summary) for key, summary in results.items()},
                "restart_reliability": reliability}
    (RESULTS / "bench.json").write_text(json.dumps(document, indent=2) + "\n")
    return table


# -- entry point ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark pliant against torchrun.")
    parser.add_argument("--repeat", type=int, default=7, metavar="N",
                        help="runs per launcher and measure (at least 5; default 7)")
    parser.add_argument("--tries", type=int, default=6, metavar="N",
                        help="tries per launcher for the restart reliability measure (default 6)")
    ns = parser.parse_args(argv)
    if ns.repeat < 5:
        parser.error("--repeat must be at least 5 (the figures are medians of >= 5 runs)")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    missing = [argv[0] for argv in LAUNCHERS.values() if not os.access(argv[0], os.X_OK)]
    if missing:
        print(f"bench: launcher not found next to {sys.executable}: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    try:
        facts = machine_facts()
        print(f"warming up ({', '.join(LAUNCHERS)}) ...", flush=True)
        warm_up()
        results: dict[str, Summary] = {}
        for measure in MEASURES:
            print(f"{measure.title}:", flush=True)
            run_measure(measure, ns.repeat)
            results[measure.key] = summarize(measure)
        print("(d) gloo restart reliability:", flush=True)
        reliability = run_reliability(ns.tries)
        facts["loadavg_at_end"] = os.getloadavg()
    except LauncherError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print()
    print(write_reports(results, reliability, facts, ns.repeat), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

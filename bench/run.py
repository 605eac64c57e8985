"""Benchmark pliant against torchrun, side by side, on this machine.

Usage: ``python bench/run.py [--repeat N]`` (N >= 5, default 7).

Both launchers are run as subprocesses from the environment of the Python
running this file: ``<bin>/pliant run ...`` and ``<bin>/torchrun ...``, where
``<bin>`` is the directory of ``sys.executable``. Every measure takes N samples
per launcher, alternating the launchers run by run (and which one goes first
in each round), so that machine noise hits both equally; the figure compared is
the median. One unrecorded warm-up run of each launcher comes first, so that
neither pays for a cold page cache. Launchers run in a fresh temporary
directory (no config file from the repository is picked up); the worker
scripts live in ``bench/workers/`` and do as little as possible before the
line that matters.

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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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


def launcher_argv(launcher: str, *args: str) -> list[str]:
    return [*LAUNCHERS[launcher], *COMMON_FLAGS, *args]


def start(launcher: str, scratch: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a launcher in ``scratch`` with its output going to a log file there."""
    log = scratch / f"{launcher}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(launcher_argv(launcher, *args), cwd=scratch, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, log


def finish(launcher: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for a launcher and raise :class:`LauncherError` unless it exited 0."""
    try:
        code = proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    if code != 0:
        what = "timed out" if code is None else f"exited {code}"
        raise LauncherError(f"{launcher} {what}: {' '.join(proc.args)}\n"  # type: ignore[arg-type]
                            f"--- its output ---\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def read_time(path: Path, launcher: str, log: Path) -> float:
    try:
        return float(path.read_text())
    except (OSError, ValueError) as exc:
        raise LauncherError(f"{launcher}: worker file {path.name} missing or unreadable "
                            f"({exc})\n--- its output ---\n{tail(log)}") from exc


# -- the three samples ------------------------------------------------------------------------


def sample_launch(launcher: str, scratch: Path) -> float:
    """(a) Seconds from starting the launcher to its exit, trivial workers."""
    begin = time.perf_counter()
    proc, log = start(launcher, scratch, str(WORKERS / "trivial.py"), str(scratch))
    finish(launcher, proc, log)
    elapsed = time.perf_counter() - begin
    ran = sorted(p.name for p in scratch.glob("ran-*"))
    if ran != [f"ran-{r}" for r in range(NPROC)]:
        raise LauncherError(f"{launcher}: expected ranks 0..{NPROC - 1} to run, saw {ran}\n"
                            f"--- its output ---\n{tail(log)}")
    return elapsed


def sample_recovery(launcher: str, scratch: Path) -> float:
    """(b) Seconds from rank 1's crash until the last attempt-1 worker started."""
    proc, log = start(launcher, scratch, "--max-restarts", "1",
                      str(WORKERS / "crash.py"), str(scratch))
    finish(launcher, proc, log)
    ready = read_time(scratch / "ready-0", launcher, log)
    crash = read_time(scratch / "crash", launcher, log)
    starts = [read_time(scratch / f"start-{r}", launcher, log) for r in range(NPROC)]
    if not ready < crash < min(starts):
        raise LauncherError(f"{launcher}: worker times out of order: ready {ready}, "
                            f"crash {crash}, starts {starts}")
    return max(starts) - crash


def sample_peak_rss(launcher: str, scratch: Path) -> float:
    """(c) The launcher's own VmHWM in MB, sampled until it exits."""
    proc, log = start(launcher, scratch, str(WORKERS / "sleep.py"))
    status = Path(f"/proc/{proc.pid}/status")
    peak_kb = 0
    while proc.poll() is None:
        peak_kb = max(peak_kb, read_vmhwm_kb(status))
        time.sleep(SAMPLE_EVERY_S)
    finish(launcher, proc, log)
    if peak_kb == 0:
        raise LauncherError(f"{launcher}: exited before its VmHWM could be read")
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


def summarize(measure: Measure) -> dict[str, object]:
    stats = {name: {"samples": [round(v, 6) for v in values],
                    "median": statistics.median(values), "min": min(values), "max": max(values)}
             for name, values in measure.samples.items()}
    torchrun, pliant = stats["torchrun"]["median"], stats["pliant"]["median"]
    return {
        "title": measure.title,
        "unit": measure.unit,
        **stats,
        "ratio": pliant / torchrun,
        "target": measure.target,
        "met": measure.met(torchrun, pliant),
    }


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


def machine_facts() -> dict[str, object]:
    version_of = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "torch": command_output([torchrun_python(), "-c", version_of, "torch"]),
        "pliant": command_output(LAUNCHERS["pliant"][:1] + ["--version"]).removeprefix("pliant "),
        "launchers": {name: " ".join(argv) for name, argv in LAUNCHERS.items()},
    }


def fmt(value: float, unit: str) -> str:
    return f"{value:.1f} MB" if unit == "MB" else f"{value:.3f} s"


def markdown(results: dict[str, dict[str, object]], facts: dict[str, object],
             repeat: int) -> str:
    rows = ["| measure | torchrun median | pliant median | ratio pliant/torchrun | target | met? |",
            "|---|---|---|---|---|---|"]
    for r in results.values():
        unit = str(r["unit"])
        rows.append(f"| {r['title']} | {fmt(r['torchrun']['median'], unit)} "  # type: ignore[index]
                    f"| {fmt(r['pliant']['median'], unit)} "  # type: ignore[index]
                    f"| {r['ratio']:.3f} | {r['target']} | {'yes' if r['met'] else 'NO'} |")
    header = (f"# pliant vs torchrun\n\n"
              f"{facts['date']}; {facts['nproc']} CPUs ({facts['cpu']}); Python {facts['python']}; "
              f"torch {facts['torch']}; pliant {facts['pliant']}. Median of {repeat} runs per "
              f"launcher, launchers alternated run by run. Produced by `python bench/run.py`; "
              f"raw samples in `bench.json`.\n\n")
    return header + "\n".join(rows) + "\n"


def write_reports(results: dict[str, dict[str, object]], facts: dict[str, object],
                  repeat: int) -> str:
    RESULTS.mkdir(parents=True, exist_ok=True)
    table = markdown(results, facts, repeat)
    (RESULTS / "bench.md").write_text(table)
    document = {"machine": facts, "repeat": repeat, "measures": results}
    (RESULTS / "bench.json").write_text(json.dumps(document, indent=2) + "\n")
    return table


# -- entry point ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark pliant against torchrun.")
    parser.add_argument("--repeat", type=int, default=7, metavar="N",
                        help="runs per launcher and measure (at least 5; default 7)")
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
        results = {}
        for measure in MEASURES:
            print(f"{measure.title}:", flush=True)
            run_measure(measure, ns.repeat)
            results[measure.key] = summarize(measure)
    except LauncherError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    print()
    print(write_reports(results, facts, ns.repeat), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hang detection: from a worker's expired deadline to the group running again.

Usage: ``python bench/timer_bench.py [--repeat N] [--after SECONDS] [--no-torchrun]
[--json PATH]`` (N >= 1, default 7).

Each sample is one ``pliant run --standalone --nproc-per-node 2 --max-restarts 1
--events jsonl workers/hang.py`` in a fresh temporary directory. On attempt 0, rank 0
sleeps and rank 1 hangs inside ``pliant.timer.expires(after=AFTER)`` (default 0.5 s), with
no timer setup at all: the agent's default ``local`` timer is used. On attempt 1 each rank
writes the ``time.time()`` taken at its first line. Three figures per sample, each
measured from the deadline, as the agent's watchdog event gives it (``time.time()`` is
one clock across processes):

* **kill**: until the agent has sent SIGKILL to the hung worker (the timestamp of its
  ``pliant.agent.watchdog`` event, recorded just after the kill). Target: <= 0.5 s;
* **stop**: until the other worker receives SIGTERM (the group restart begins);
* **recovery**: until every worker of attempt 1 is running. Target: <= 1.5 s.

The figure compared is the median; min and max are shown too. For reference, torchrun
runs the same worker once with its file timer (``TORCHELASTIC_ENABLE_FILE_TIMER=1``; the
worker's ``pliant.timer.expires`` writes torch's format to torch's pipe): what it does is
reported (how long until it acted, its exit code, whether the group restarted, and
whether a worker was left running, which the bench then kills).

Benchmarks are not tests: this exits 0 whatever the timings, non-zero only when pliant
fails to run the job. ``sample()``, ``run()`` and ``rows()`` are what ``run.py`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from launchers import (
    LAUNCHERS,
    WORKERS,
    Launch,
    finish,
    launcher_env,
    read_time,
    start,
    stats,
    wait_exit,
)

HANG = WORKERS / "hang.py"
FLAGS = ["--standalone", "--nproc-per-node", "2", "--max-restarts", "1"]
TARGETS = {"kill": 0.5, "recovery": 1.5}
TITLES = {
    "kill": "deadline -> hung worker killed (SIGKILL sent)",
    "stop": "deadline -> other worker told to stop (SIGTERM)",
    "recovery": "deadline -> every worker running again",
}


def sample(scratch: Path, after: float = 0.5) -> dict[str, float]:
    """One pliant run; seconds from the hung worker's deadline to each figure."""
    events = scratch / "events.jsonl"
    launch = start("pliant", scratch, [*FLAGS, "--events", "jsonl", "--events-conf",
                                       f"jsonl.path={events}", str(HANG), str(scratch),
                                       str(after)])
    finish(launch)
    armed = read_time(launch, scratch / "deadline")  # a little before the real one
    stopped = read_time(launch, scratch / "stopped-0")
    starts = [read_time(launch, scratch / f"start-{rank}") for rank in (0, 1)]
    watchdog = [e for e in map(json.loads, events.read_text().splitlines())
                if e["name"] == "pliant.agent.watchdog"]
    if len(watchdog) != 1:
        raise launch.fail(f"expected one watchdog event, got {watchdog}")
    killed = float(watchdog[0]["timestamp"])
    deadline = float(watchdog[0]["metadata"]["expired_at"])  # the deadline the agent held
    if not armed <= deadline <= killed <= stopped < min(starts):
        raise launch.fail(f"times out of order: armed {armed}, deadline {deadline}, "
                          f"killed {killed}, "
                          f"stopped {stopped}, attempt-1 starts {starts}")
    return {"kill": killed - deadline, "stop": stopped - deadline,
            "recovery": max(starts) - deadline}


def torchrun_reference(scratch: Path, after: float = 0.5, limit: float = 60.0,
                       ) -> dict[str, Any]:
    """One torchrun run of the same job with its file timer: what happens."""
    env = {**launcher_env(), "TORCHELASTIC_ENABLE_FILE_TIMER": "1"}
    argv = [*LAUNCHERS["torchrun"], *FLAGS, str(HANG), str(scratch), str(after)]
    log = scratch / "torchrun.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=scratch, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    launch = Launch("torchrun", argv, proc, log)
    exited = wait_exit(proc, limit)
    ended = time.time()
    if not exited:
        proc.kill()
        proc.wait()
    deadline = read_time(launch, scratch / "deadline")
    restarted = all((scratch / f"start-{rank}").exists() for rank in (0, 1))
    orphan = None
    pid = int(float((scratch / "pid-0").read_text()))
    if not (scratch / "stopped-0").exists() and _alive(pid):
        orphan = pid
        os.kill(pid, signal.SIGKILL)  # the bench started it: leave nothing behind
    return {"exit_code": proc.returncode, "exited_s": ended - deadline if exited else None,
            "restarted": restarted, "orphan": orphan, "limit_s": limit}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run(repeat: int, after: float = 0.5, torchrun: bool = True) -> dict[str, Any]:
    """``repeat`` pliant samples (after one unrecorded warm-up) and the torchrun reference."""
    samples: dict[str, list[float]] = {key: [] for key in TITLES}
    with tempfile.TemporaryDirectory(prefix="pliant-bench-timer-") as tmp:
        sample(Path(tmp), after)  # warm-up: page cache, .pyc files
    for round_no in range(repeat):
        with tempfile.TemporaryDirectory(prefix="pliant-bench-timer-") as tmp:
            one = sample(Path(tmp), after)
        for key, value in one.items():
            samples[key].append(value)
        print(f"  timer     round {round_no + 1}/{repeat}  "
              + "  ".join(f"{key} {value:.3f} s" for key, value in one.items()), flush=True)
    result: dict[str, Any] = {"after_s": after, "figures": {}}
    for key, values in samples.items():
        target = TARGETS.get(key)
        median = statistics.median(values)
        result["figures"][key] = {**stats(values), "title": TITLES[key], "target_s": target,
                                  "met": None if target is None else median <= target}
    if torchrun:
        with tempfile.TemporaryDirectory(prefix="pliant-bench-timer-torchrun-") as tmp:
            result["torchrun"] = torchrun_reference(Path(tmp), after)
    return result


def rows(result: dict[str, Any]) -> list[str]:
    """The markdown table (and the torchrun line) for ``result``."""
    lines = ["| measure | pliant median | min | max | target | met? |",
             "|---|---|---|---|---|---|"]
    for fig in result["figures"].values():
        target = "-" if fig["target_s"] is None else f"<= {fig['target_s']} s"
        met = "-" if fig["met"] is None else ("yes" if fig["met"] else "NO")
        lines.append(f"| {fig['title']} | {fig['median']:.3f} s | {fig['min']:.3f} s | "
                     f"{fig['max']:.3f} s | {target} | {met} |")
    ref = result.get("torchrun")
    if ref is not None:
        when = (f"exited {ref['exited_s']:.2f} s after the deadline" if ref["exited_s"]
                is not None else f"still running after {ref['limit_s']:.0f} s (killed)")
        code = ref["exit_code"]
        shown = f"{code} (killed by signal {-code})" if code is not None and code < 0 else code
        lines.append("")
        lines.append(
            f"torchrun, same job with `TORCHELASTIC_ENABLE_FILE_TIMER=1`: the agent {when}, "
            f"exit code {shown}; group restarted: {'yes' if ref['restarted'] else 'no'}; "
            + (f"worker pid {ref['orphan']} was left running (killed by the bench)."
               if ref["orphan"] else "no worker left running."))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="pliant samples (default 7)")
    parser.add_argument("--after", type=float, default=0.5,
                        help="the hung worker's deadline, seconds (default 0.5)")
    parser.add_argument("--no-torchrun", action="store_true",
                        help="skip the torchrun reference run")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    result = run(args.repeat, args.after, not args.no_torchrun)
    print(f"\nHang detection, `pliant run {' '.join(FLAGS)}`, deadline {args.after} s, "
          f"{args.repeat} runs\n")
    print("\n".join(rows(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

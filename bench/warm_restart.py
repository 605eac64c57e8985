"""Warm-restart figures (issue 12): until training steps again, not until a process started.

Every sample is one job of ``workers/ddp_step.py`` (a 2-rank gloo DDP training on
CPU that checkpoints after every step, loses rank 1 once, and resumes from its
checkpoint: see the worker's docstring) run with ``--max-restarts 1`` by:

* ``torchrun``;
* ``pliant``: ``pliant run`` as a user invokes it, with its defaults (so that
  the figure measures warm standby workers once pliant has them, by default);
* ``pliant, --preload ''``: ``pliant run --preload ''`` (no standby workers, every
  worker starts cold), only when the pliant under test lists ``--preload`` in
  ``pliant run --help``; left out, with the reason shown, otherwise.

The variants rotate run by run (which one goes first changes every round), as
the other figures alternate the launchers. Two set-ups: standalone
(``--standalone --nproc-per-node 2``), and two agents on c10d with one worker each
(the store hosted by the first agent, on loopback, as in figure (e)).

(p) crash -> every rank completed a training step again: from the ``time.time()``
    rank 1 of the first attempt wrote just before ``os._exit(1)`` to the last
    rank's first completed step of the next attempt. One clock across processes
    on one machine. The clock includes: the launcher noticing the exit, stopping
    the surviving worker, the re-rendezvous, starting the new workers (or handing
    a standby its rank), interpreter start, ``import torch``,
    ``init_process_group("gloo")``, loading the checkpoint, building
    ``DistributedDataParallel`` and the first step (forward, backward with its
    all-reduce, ``optimizer.step()``). It leaves out everything before the crash
    (how long the job ran; the first attempt runs at least SETTLE_S after its
    first step, so that a launcher can be ready again) and the job's end. Also
    shown: crash -> every new worker started (its first line, as in (b)).
    Target: pliant / torchrun <= 0.20, in both set-ups.

(q) launch -> every rank completed its first step, two agents on c10d: from just
    before both agents are started to the last rank's first completed step of the
    first attempt (taken from (p)'s two-agent jobs: the crash comes later). The
    clock includes the agents' own start (interpreter, imports), the rendezvous,
    starting the workers, and in them everything listed for (p) but the
    checkpoint (there is none yet). Target: pliant / torchrun <= 0.5.

Both launchers' workers run the same code, which puts the process group's keys under a
prefix of the attempt's own: torchrun's restarted gloo group would otherwise read the dead
attempt's addresses from its agent's store (figure (g)) and not step again at all.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from launchers import (
    LAUNCHERS,
    TIMEOUT_S,
    WORKERS,
    Launch,
    LauncherError,
    failure,
    finish,
    free_port,
    launcher_env,
    start,
    stats,
)
from rendezvous import c10d_args, exit_codes, stopped_at_exit, written_times

WORKER = WORKERS / "ddp_step.py"
#: Attempt 0 steps at least this long before rank 1 crashes. On one node pliant starts its
#: standbys --standby-delay (5 s) into a group started cold, and they import for about 3 s
#: on this machine: a crash sooner finds them still importing and the restart waits for them
#: (at 5 s, on 2026-12-03: 0.761 s median, min 0.087 s). A real job crashes minutes in.
SETTLE_S = 10.0
NPROC = 2
STANDALONE_FLAGS = ["--standalone", "--nproc-per-node", str(NPROC)]
COLD = "pliant, --preload ''"
VARIANTS: dict[str, list[str]] = {
    "torchrun": LAUNCHERS["torchrun"],
    "pliant": LAUNCHERS["pliant"],
    COLD: [*LAUNCHERS["pliant"], "--preload", ""],
}
LOG_NAMES = {"torchrun": "torchrun", "pliant": "pliant", COLD: "pliant-cold"}
P_TARGET = 0.20
Q_TARGET = 0.5


def preload_supported() -> tuple[bool, str]:
    """Whether the pliant under test takes ``--preload``, and the reason shown if not."""
    argv = [*LAUNCHERS["pliant"], "--help"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=launcher_env(),
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"`pliant run --help` failed ({exc})"
    if "--preload" in done.stdout:
        return True, ""
    return False, "the pliant under test has no `--preload` flag (`pliant run --help` lists none)"


def variants() -> tuple[list[str], dict[str, str]]:
    """The variants to run, and those left out with why."""
    ok, why = preload_supported()
    names = [name for name in VARIANTS if ok or name != COLD]
    return names, {} if ok else {COLD: why}


def rotation(names: list[str], round_no: int) -> list[str]:
    """All variants, the order rotated round by round."""
    shift = round_no % len(names)
    return names[shift:] + names[:shift]


def check_order(launches: list[Launch], name: str, scratch: Path) -> dict[str, float]:
    """The times the job's workers wrote, checked for order; the three figures."""
    ranks = range(NPROC)
    start0 = written_times(launches, scratch, [f"start-0-{r}" for r in ranks])
    step0 = written_times(launches, scratch, [f"step-0-{r}" for r in ranks])
    crash, = written_times(launches, scratch, ["crash"])
    start1 = written_times(launches, scratch, [f"start-1-{r}" for r in ranks])
    step1 = written_times(launches, scratch, [f"step-1-{r}" for r in ranks])
    if not (max(start0) < min(step0) and max(step0) < crash < min(start1) < min(step1)):
        raise failure(launches, f"{name}: worker times out of order: starts {start0}, first "
                                f"steps {step0}, crash {crash}, restarts {start1}, steps "
                                f"{step1}")
    return {"recovery_step": max(step1) - crash, "recovery_start": max(start1) - crash,
            "first_step_at": max(step0)}


def sample_standalone(name: str, scratch: Path) -> dict[str, float]:
    """One standalone job; (p)'s samples, and launch -> first step."""
    launched = time.time()
    launch = start(name, scratch, [*STANDALONE_FLAGS, "--max-restarts", "1", str(WORKER),
                                   str(scratch), f"{SETTLE_S:g}"],
                   name=LOG_NAMES[name], argv=VARIANTS[name])
    finish(launch)
    times = check_order([launch], name, scratch)
    return {"recovery_step": times["recovery_step"], "recovery_start": times["recovery_start"],
            "launch_step": times["first_step_at"] - launched}


def sample_two_agents(name: str, scratch: Path) -> dict[str, Any]:
    """One job of two agents on c10d; (p)'s and (q)'s samples, the agents' exit codes."""
    port = free_port()
    launched = time.time()
    agents = [start(name, scratch, [*c10d_args(port, "2", node == 0), "--max-restarts", "1",
                                    str(WORKER), str(scratch), f"{SETTLE_S:g}"],
                    name=f"{LOG_NAMES[name]}-node{node}", argv=VARIANTS[name])
              for node in range(2)]
    with stopped_at_exit(agents):
        codes = exit_codes(agents, TIMEOUT_S)
    times = check_order(agents, name, scratch)
    return {"recovery_step": times["recovery_step"], "recovery_start": times["recovery_start"],
            "launch_step": times["first_step_at"] - launched, "exit_codes": codes}


def run_setup(setup: str, repeat: int) -> dict[str, Any]:
    """``repeat`` jobs per variant in one set-up ("standalone" or "c10d"), rotated."""
    names, skipped = variants()
    sample = sample_standalone if setup == "standalone" else sample_two_agents
    samples: dict[str, dict[str, list[float]]] = {
        key: {name: [] for name in names}
        for key in ("recovery_step", "recovery_start", "launch_step")}
    bad_exits: dict[str, list[list[int]]] = {name: [] for name in names}
    for round_no in range(repeat):
        for name in rotation(names, round_no):
            with tempfile.TemporaryDirectory(prefix=f"pliant-bench-pq-{setup}-") as tmp:
                one = sample(name, Path(tmp))
            for key, values in samples.items():
                values[name].append(one[key])
            if any(one.get("exit_codes", [])):
                bad_exits[name].append(one["exit_codes"])
            print(f"  {setup:<10} round {round_no + 1}/{repeat}  {name:<22} crash -> stepping "
                  f"{one['recovery_step']:6.3f} s  (-> started {one['recovery_start']:6.3f} s)"
                  f"  launch -> stepping {one['launch_step']:6.3f} s"
                  + (f"  agent exit codes {one['exit_codes']}" if "exit_codes" in one else ""),
                  flush=True)
    parts = {key: summary(values) for key, values in samples.items()}
    return {"setup": setup, "variants": names, "skipped": skipped, "parts": parts,
            "nonzero_exits": bad_exits, "runs": repeat, "settle_s": SETTLE_S}


def summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    median = {name: statistics.median(v) for name, v in samples.items()}
    return {"median": median,
            "ratio": {name: m / median["torchrun"] for name, m in median.items()},
            **{name: stats(v) for name, v in samples.items()}}


_CACHE: dict[tuple[str, int], dict[str, Any]] = {}


def setup_result(setup: str, repeat: int) -> dict[str, Any]:
    """:func:`run_setup`, once per invocation: (p) and (q) share the two-agent jobs."""
    if (setup, repeat) not in _CACHE:
        _CACHE[setup, repeat] = run_setup(setup, repeat)
    return _CACHE[setup, repeat]


def run_p(repeat: int) -> dict[str, Any]:
    """(p) both set-ups."""
    setups = {setup: setup_result(setup, repeat) for setup in ("standalone", "c10d")}
    met = all(s["parts"]["recovery_step"]["ratio"]["pliant"] <= P_TARGET
              for s in setups.values())
    return {"setups": setups, "target": f"pliant / torchrun <= {P_TARGET:g}, both set-ups",
            "met": met}


def sample_by_hand(scratch: Path) -> float:
    """(q)'s floor: the two workers of a two-agent job started directly, no launcher, with
    the environment a launcher would give them; launch -> the last rank's first step."""
    port = free_port()
    env = {**launcher_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    argv = [sys.executable, str(WORKER), str(scratch), "3600"]  # no crash: killed after
    launched = time.time()
    procs = [subprocess.Popen(argv, cwd=scratch, env={**env, "RANK": str(rank),
                                                      "GROUP_RANK": str(rank)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for rank in range(NPROC)]
    try:
        names = [f"step-0-{rank}" for rank in range(NPROC)]
        deadline = time.monotonic() + TIMEOUT_S
        while not all((scratch / name).exists() for name in names):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise LauncherError(f"(q) by hand: the workers did not step (exit codes "
                                    f"{[p.poll() for p in procs]})")
            time.sleep(0.01)  # the times compared are the ones the workers wrote
        return max(float((scratch / name).read_text()) for name in names) - launched
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run_q(repeat: int) -> dict[str, Any]:
    """(q) from the two-agent jobs, and its floor: the same workers started by hand."""
    shared = ("c10d", repeat) in _CACHE
    c10d = setup_result("c10d", repeat)
    by_hand = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="pliant-bench-q-by-hand-") as tmp:
            by_hand.append(sample_by_hand(Path(tmp)))
    torchrun = c10d["parts"]["launch_step"]["median"]["torchrun"]
    floor = stats(by_hand)
    return {"c10d": c10d, "jobs_of_p": shared, "target": f"pliant / torchrun <= {Q_TARGET:g}",
            "met": c10d["parts"]["launch_step"]["ratio"]["pliant"] <= Q_TARGET,
            "by_hand": {**floor, "ratio": float(floor["median"]) / torchrun}}


# -- bench.md -----------------------------------------------------------------------------------


def verdict(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "NO"


def variant_rows(result: dict[str, Any], key: str, measure: str, target: float | None,
                 show_skipped: bool = True) -> list[str]:
    """One table row per variant of one set-up for one measure (a variant left out: a row
    saying why, if ``show_skipped``)."""
    part = result["parts"][key]
    rows = []
    for name in VARIANTS:
        if name not in result["variants"]:
            if show_skipped:
                rows.append(f"| {measure} | {name} | left out: {result['skipped'][name]} "
                            f"| - | - | - |")
            continue
        s, ratio = part[name], part["ratio"][name]
        cell = f"{s['median']:.3f} s ({s['min']:.3f}-{s['max']:.3f})"
        if name == "torchrun":
            rows.append(f"| {measure} | {name} | {cell} | - | - | - |")
            continue
        goal = "-" if target is None or name != "pliant" else f"<= {target:g}"
        met = None if goal == "-" else ratio <= target
        rows.append(f"| {measure} | {name} | {cell} | {ratio:.3f} | {goal} | {verdict(met)} |")
    return rows


HEADER = ["| measure | launcher | median (min-max) | ratio to torchrun | target | met? |",
          "|---|---|---|---|---|---|"]


def exits_line(result: dict[str, Any]) -> list[str]:
    bad = {name: codes for name, codes in result["nonzero_exits"].items() if codes}
    if result["setup"] != "c10d":
        return []
    return ["", "Agents that exited non-zero after the job's workers all finished (not counted "
            "as failures): " + ("none" if not bad else "; ".join(
                f"{name} in {len(codes)} of {result['runs']} runs (exit codes by node: {codes})"
                for name, codes in bad.items())) + "."]


CLOCK = ("The clock includes: the launcher noticing the exit, stopping the surviving worker, "
         "the re-rendezvous, starting the new workers (or handing a standby its rank), "
         "interpreter start, `import torch`, `init_process_group(\"gloo\")`, loading the "
         "checkpoint, building `DistributedDataParallel` and the first step (forward, backward "
         "with its all-reduce, `optimizer.step()`). It leaves out the job's run before the "
         "crash and its end.")


def p_rows(p: dict[str, Any]) -> list[str]:
    rows = list(HEADER)
    for setup, label in (("standalone", "standalone, 2 workers"),
                         ("c10d", "2 agents on c10d, 1 worker each")):
        result = p["setups"][setup]
        rows += variant_rows(result, "recovery_step",
                             f"{label}: crash -> every rank completed a step again", P_TARGET)
        rows += variant_rows(result, "recovery_start",
                             f"{label}: crash -> every new worker started (its first line)",
                             None, show_skipped=False)
    standalone = p["setups"]["standalone"]
    rows += variant_rows(standalone, "launch_step",
                         "standalone: launch -> every rank completed its first step", None,
                         show_skipped=False)
    rows += ["", f"`workers/ddp_step.py`: a 2-rank gloo DDP training (CPU, a 32-64-1 MLP, "
             f"checkpoint saved by rank 0 after every step) with `--max-restarts 1`; once both "
             f"ranks have stepped for at least {standalone['settle_s']:g} s (and 3 steps; on one "
             f"node pliant's standbys start `--standby-delay` 5 s into a group started cold "
             f"and import for about 3 s, so a crash sooner restarts partly cold), rank "
             f"1 writes `time.time()` and calls `os._exit(1)`; the next attempt loads the "
             f"checkpoint and each rank writes `time.time()` when its first step completed. "
             f"The figure is the last rank's time minus the crash time: one clock across "
             f"processes on one machine. {CLOCK} The workers of every launcher put the "
             f"process group's keys under a prefix of the attempt's own (`PrefixStore` on the "
             f"env:// store): without it torchrun's restarted gloo group finds the dead "
             f"attempt's addresses in its agent's store and fails or hangs (figure (g)). "
             f"`pliant` is `pliant run` with its defaults "
             f"(warm standby workers, where the pliant under test has them); "
             f"`pliant, --preload ''` turns them off. Variants rotated run by run. "
             f"Target: {p['target']}.", *exits_line(p["setups"]["c10d"])]
    return rows


def q_rows(q: dict[str, Any]) -> list[str]:
    rows = variant_rows(q["c10d"], "launch_step",
                        "launch -> every rank completed its first step", Q_TARGET)
    hand = q.get("by_hand")
    if hand:
        rows.append(f"| launch -> every rank completed its first step | no launcher: the two "
                    f"workers started by hand | {hand['median']:.3f} s ({hand['min']:.3f}-"
                    f"{hand['max']:.3f}) | {hand['ratio']:.3f} | - | - |")
    return [*HEADER, *rows, "",
            "Two agents on c10d on loopback (`--nnodes 2 --nproc-per-node 1`, the "
            "store hosted by the first agent), `workers/ddp_step.py` as in (p)"
            + (" (the very jobs of (p)'s two-agent rows, run once for both: their date and "
               "load are (p)'s in the Runs table)" if q.get("jobs_of_p") else "")
            + ". From just before both agents are started to the last "
            "rank's `time.time()` at the end of its first completed step. The clock "
            "includes the agents' own start (interpreter, imports), the rendezvous, "
            "starting the workers, and in them interpreter start, `import torch`, "
            "`init_process_group(\"gloo\")`, building `DistributedDataParallel` and the "
                   f"first step. Target: {q['target']}."
            + (" The floor, `no launcher`: the same two workers started directly with the "
               "environment a launcher gives them (RANK, WORLD_SIZE, MASTER_ADDR, "
               "MASTER_PORT), run right after the launcher jobs; no launcher can start "
               "them sooner, so its ratio bounds any launcher's on this machine."
               if hand else "")]

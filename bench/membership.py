"""Membership-change figure (issue 12): until every rank steps again at the new world size.

(r) A gloo DDP training (``workers/ddp_elastic.py``: CPU, checkpoints after every step,
    a new group resumes from the checkpoint) on ``--nnodes 2:3``, one worker per agent,
    c10d on loopback (the store hosted by the first agent), ``--max-restarts 3``, run by
    the variants of ``warm_restart.py`` (torchrun; ``pliant run`` with its defaults, so
    warm standby workers; ``pliant run --preload ''``, all cold), rotated run by run:

    * scale-up: two agents form a WORLD_SIZE=2 group and train for SETTLE_S; a third
      agent is launched. Clock: from just before the third agent is started to the last
      rank's first completed step at WORLD_SIZE=3. It includes the third agent's start
      (interpreter, imports), the running agents noticing the waiting node, stopping their
      workers, the re-rendezvous, starting the new workers (or handing standbys their
      ranks), and in each worker interpreter start, ``import torch``, the process group,
      loading the checkpoint, building ``DistributedDataParallel`` and the first step.
      All agents with ``last_call_timeout=2`` (pliant's default; torch's is 30 s).
    * node loss: three agents form a WORLD_SIZE=3 group and train for SETTLE_S; one agent
      and its worker are SIGKILLed at once (a host going away). Clock: from the kill to
      the last survivor's first completed step at WORLD_SIZE=2. It includes the survivors'
      all-reduce failing, their agents noticing the failed worker and the lost node
      (``keep_alive_interval=1,keep_alive_max_attempt=3``; ``last_call_timeout=30``), the
      re-rendezvous, and the restart as above.

A variant whose job does not reach the new world size within the limit once is not
tried again (each failure costs the limit); what happened is shown. One clock across
processes on one machine: ``time.time()`` written by the workers, and the bench's.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from launchers import WORKERS, Launch, failure, free_port, start, stats, wait_exit
from rendezvous import (
    KEEP_ALIVE,
    c10d_args,
    last_error,
    lose_node,
    stopped_at_exit,
    wait_for_files,
    worker_files,
    written_times,
)
from warm_restart import LOG_NAMES, VARIANTS, rotation, variants

WORKER = WORKERS / "ddp_elastic.py"
SETTLE_S = 5.0  # the job trains this long before the membership changes
FORM_LIMIT_S = 120.0
CHANGE_LIMIT_S = 90.0
LAST_CALL_S = 2.0
END_LIMIT_S = 60.0  # for the job to end once its workers are told to stop
SCENARIOS = ("scale_up", "node_loss")


def agent(name: str, scratch: Path, port: int, node: int, *conf: str) -> Launch:
    return start(name, scratch, [*c10d_args(port, "2:3", node == 0, *conf),
                                 "--max-restarts", "3", str(WORKER), str(scratch)],
                 name=f"{LOG_NAMES[name]}-node{node}", argv=VARIANTS[name])


def stepped(world_size: int) -> list[str]:
    return [f"step-{world_size}-{rank}" for rank in range(world_size)]


def sample_scale_up(name: str, scratch: Path) -> dict[str, Any]:
    """Two agents stepping, then a third launched; the time until all three stepped."""
    port = free_port()
    conf = f"last_call_timeout={LAST_CALL_S:g}"
    agents = [agent(name, scratch, port, node, conf) for node in range(2)]
    with stopped_at_exit(agents):
        problem = wait_for_files(scratch, stepped(2), agents, FORM_LIMIT_S)
        if problem:
            raise failure(agents, f"{name}: the first two nodes did not step: {problem}")
        time.sleep(SETTLE_S)
        launched = time.time()
        agents.append(agent(name, scratch, port, 2, conf))
        problem = wait_for_files(scratch, stepped(3), agents, CHANGE_LIMIT_S)
        (scratch / "stop").touch()  # the workers leave together at their next step
        if problem:
            return gave_up(problem, scratch, agents)
        last = max(written_times(agents, scratch, stepped(3)))
        codes = end_codes(agents)
    return {"done": True, "seconds": last - launched, "exit_codes": codes}


def sample_node_loss(name: str, scratch: Path) -> dict[str, Any]:
    """Three agents stepping, then one killed; the time until both survivors stepped."""
    port = free_port()
    conf = ("last_call_timeout=30", *KEEP_ALIVE)
    agents = [agent(name, scratch, port, node, *conf) for node in range(3)]
    with stopped_at_exit(agents):
        problem = wait_for_files(scratch, stepped(3), agents, FORM_LIMIT_S)
        if problem:
            raise failure(agents, f"{name}: the three nodes did not step: {problem}")
        time.sleep(SETTLE_S)
        lost = lose_node(agents[2])
        problem = wait_for_files(scratch, stepped(2), agents[:2], CHANGE_LIMIT_S)
        (scratch / "stop").touch()
        if problem:
            return gave_up(problem, scratch, agents[:2])
        last = max(written_times(agents, scratch, stepped(2)))
        codes = end_codes(agents[:2])
    return {"done": True, "seconds": last - lost, "exit_codes": codes}


def end_codes(agents: list[Launch]) -> list[int | None]:
    """The agents' exit codes once the workers were told to stop; None for an agent still
    running END_LIMIT_S later (stopped at exit; the figure was taken before)."""
    deadline = time.monotonic() + END_LIMIT_S
    for agent in agents:
        wait_exit(agent.proc, max(0.0, deadline - time.monotonic()))
    return [agent.proc.poll() for agent in agents]


def gave_up(problem: str, scratch: Path, agents: list[Launch]) -> dict[str, Any]:
    return {"done": False, "problem": problem, "files": worker_files(scratch),
            "errors": {a.log.stem: last_error(a.log) for a in agents}}


SAMPLES = {"scale_up": sample_scale_up, "node_loss": sample_node_loss}


def run_scenario(scenario: str, repeat: int) -> dict[str, Any]:
    """``repeat`` jobs per variant, rotated; a variant that fails once is not tried again."""
    names, skipped = variants()
    times: dict[str, list[float]] = {name: [] for name in names}
    bad_exits: dict[str, list[list[int | None]]] = {name: [] for name in names}
    failed: dict[str, dict[str, Any]] = {}
    for round_no in range(repeat):
        for name in rotation(names, round_no):
            if name in failed:
                continue
            with tempfile.TemporaryDirectory(prefix=f"pliant-bench-r-{scenario}-") as tmp:
                one = SAMPLES[scenario](name, Path(tmp))
            if not one["done"]:
                failed[name] = {**one, "after_tries": len(times[name]) + 1}
                print(f"  r {scenario:<9} round {round_no + 1}/{repeat}  {name:<22} did not "
                      f"step at the new size: {one['problem']}; files {one['files']}; not "
                      f"tried again", flush=True)
                continue
            times[name].append(one["seconds"])
            if any(code != 0 for code in one["exit_codes"]):
                bad_exits[name].append(one["exit_codes"])
            print(f"  r {scenario:<9} round {round_no + 1}/{repeat}  {name:<22} "
                  f"{one['seconds']:6.3f} s  agent exit codes {one['exit_codes']}", flush=True)
    summary = {name: stats(values) if values else None for name, values in times.items()}
    torchrun = summary.get("torchrun")
    ratio = {name: (s["median"] / torchrun["median"] if s and torchrun else None)
             for name, s in summary.items()}
    return {"variants": names, "skipped": skipped, "launchers": summary, "ratio": ratio,
            "failed": failed, "nonzero_exits": bad_exits, "limit_s": CHANGE_LIMIT_S,
            "settle_s": SETTLE_S, "runs": repeat}


def run_r(repeat: int) -> dict[str, Any]:
    return {scenario: run_scenario(scenario, repeat) for scenario in SCENARIOS}


# -- bench.md -----------------------------------------------------------------------------------

LABELS = {"scale_up": "scale-up: third agent launched -> every rank stepped at WORLD_SIZE=3",
          "node_loss": "node loss: agent and worker killed -> both survivors stepped at "
                       "WORLD_SIZE=2"}


def r_rows(r: dict[str, Any]) -> list[str]:
    rows = ["| measure | launcher | median (min-max) | ratio to torchrun |", "|---|---|---|---|"]
    notes = []
    for scenario in SCENARIOS:
        result = r[scenario]
        for name in VARIANTS:
            if name in result["skipped"]:
                rows.append(f"| {LABELS[scenario]} | {name} | left out: "
                            f"{result['skipped'][name]} | - |")
                continue
            s = result["launchers"][name]
            if s is None:
                rows.append(f"| {LABELS[scenario]} | {name} | did not complete (below) | - |")
                continue
            ratio = result["ratio"][name]
            rows.append(f"| {LABELS[scenario]} | {name} | {s['median']:.3f} s "
                        f"({s['min']:.3f}-{s['max']:.3f}) | "
                        f"{'-' if name == 'torchrun' or ratio is None else f'{ratio:.3f}'} |")
        for name, why in result["failed"].items():
            errors = "; ".join(f"{log}: `{line or 'none'}`" for log, line in why["errors"].items())
            notes.append(f"{LABELS[scenario].split(':')[0]}, {name}: did not step at the new "
                         f"world size on try {why['after_tries']} ({why['problem']}; worker "
                         f"files: {', '.join(why['files'])}); not tried again. Last error "
                         f"lines: {errors}.")
        bad = {name: codes for name, codes in result["nonzero_exits"].items() if codes}
        if bad:
            notes.append(f"{LABELS[scenario].split(':')[0]}: agents that exited non-zero "
                         f"after the workers were told to stop (not counted as failures; "
                         f"None: still running {END_LIMIT_S:g} s later, then stopped): "
                         + "; ".join(
                             f"{name} in {len(codes)} runs ({codes})"
                             for name, codes in bad.items()) + ".")
    first = r["scale_up"]
    rows += ["", f"`workers/ddp_elastic.py`: a gloo DDP training (CPU, a 32-64-1 MLP, rank 0 "
             f"checkpoints after every step, a new group resumes from it), one worker per agent, "
             f"`--nnodes 2:3`, c10d on loopback, `--max-restarts 3`; the job trains "
             f"{first['settle_s']:g} s before the change. Scale-up: all agents with "
             f"`last_call_timeout={LAST_CALL_S:g}`; the clock runs from just before the third "
             f"agent is started and includes its start (interpreter, imports), the running "
             f"agents noticing it, stopping their workers, the re-rendezvous and the new "
             f"workers' start, `import torch`, process group, checkpoint load, DDP and first "
             f"step. Node loss: `last_call_timeout=30,{','.join(KEEP_ALIVE)}`; one agent and "
             f"its worker SIGKILLed at once; the clock runs from the kill and includes the "
             f"survivors' all-reduce failing, detection, the re-rendezvous and the restart as "
             f"above. No target ratio is set (the issue asks for the figure against torchrun "
             f"where it completes). A variant that fails once (limit "
             f"{first['limit_s']:g} s) is not tried again.", *(["", *notes] if notes else [])]
    return rows

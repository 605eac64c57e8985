"""Multi-node figures: the c10d rendezvous of pliant and torchrun, side by side.

Every node runs on this machine, on loopback; each figure alternates the
launchers run by run (and which one goes first in each round) and compares
medians, as ``run.py`` does.

(d) join burst: N nodes join one rendezvous at once, as threads of one
    process sharing one TCPStore server, N in :data:`JOIN_NODES`. The figure
    is the time from releasing the threads to the last one holding its
    RendezvousInfo. The store connection the bench gives each node is opened
    before the clock starts; one a handler opens itself (pliant's keep-alive
    connection) is opened inside it.
    Each sample is a fresh process (``join_burst.py``), so that no thread of a
    previous sample is still heartbeating. Store operations made inside
    ``next_rendezvous`` are counted too (pliant: every ``RendezvousStore``
    call; torch: ``get_state``/``set_state`` of its backend, each one whole-
    state read or compare-and-set). A launcher that does not finish within
    :data:`JOIN_LIMIT_S` at some N is not tried again at that N. Target:
    pliant at least 10x faster than torch at every N, and N=256 under 2 s.

(e) two agents: ``--nnodes 2 --nproc-per-node 1 --rdzv-backend c10d
    --max-restarts 1 workers/c10d_crash.py``, the store hosted by the first
    agent (``--rdzv-conf is_host=1``, the other ``is_host=0``). One run gives
    two samples: launch (from starting both agents to both workers started)
    and recovery (rank 1 exits 1 once both run; from that crash to both
    workers of the next group started). Target: pliant's recovery at most
    0.25x torchrun's. Agents that exit non-zero after the job completed are
    counted and shown, not fatal.

(f) scale-up: two agents run ``--nnodes 2:3`` (same store set-up, and
    ``last_call_timeout`` set to :data:`LAST_CALL_S` for both launchers:
    pliant's default; torch's is 30 s) until both workers run; then a third
    agent is started. The figure is the time until every node runs a worker
    with ``WORLD_SIZE=3`` (``workers/scale_up.py``), from the third agent's
    launch, and from the moment its interpreter had imported the launcher and
    torch (pliant imports torch for the c10d store anyway): the new agent is
    started as ``python -c PROBE`` which records that moment and then calls
    the same ``main()`` as the console script. Bounded by
    :data:`SCALE_LIMIT_S`; what happened when it is exceeded is reported.
    Target: pliant within ``last_call_timeout`` + 1 s, from ready.

(h) node loss: three agents run ``--nnodes 2:3`` (both launchers with
    ``keep_alive_interval=1,keep_alive_max_attempt=3``, pliant's defaults) until
    every worker runs; then the third node is lost: its agent and its workers
    get SIGKILL at once, as when a host goes away. The figure is the time from
    the kill until both survivors run a worker with ``WORLD_SIZE=2``. Bounded by
    :data:`LOSS_LIMIT_S`. Target: pliant within the keep-alive bound (3 s)
    plus 2 s.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers import (
    ENTRY_MODULES,
    HERE,
    LAUNCHERS,
    TIMEOUT_S,
    WORKERS,
    Launch,
    LauncherError,
    failure,
    free_port,
    launcher_env,
    start,
    stats,
    stop,
    wait_exit,
)

JOIN_NODES = (2, 8, 32, 128, 256)
JOIN_LIMIT_S = 60.0
LAST_CALL_S = 2.0
SETTLE_S = 1.0  # the first two agents' workers run this long before the third agent starts
FORM_LIMIT_S = 120.0
SCALE_LIMIT_S = 90.0  # beyond torch's 60 s store read timeout, to see how it ends
POLL_S = 0.01  # waiting for worker files; the times compared are the ones written in them
KEEP_ALIVE = ("keep_alive_interval=1", "keep_alive_max_attempt=3")
KEEP_ALIVE_BOUND_S = 3.0
LOSS_LIMIT_S = 30.0


def launcher_order(round_no: int) -> list[str]:
    """Both launchers, the first one alternating round by round."""
    names = list(LAUNCHERS)
    return names if round_no % 2 == 0 else names[::-1]


def c10d_args(port: int, nnodes: str, is_host: bool, *conf: str) -> list[str]:
    """One agent's flags: one worker, c10d rendezvous at 127.0.0.1:PORT, hosting the store
    or not (both launchers take the same flags)."""
    return ["--nnodes", nnodes, "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"bench-{port}",
            "--rdzv-conf", ",".join([f"is_host={int(is_host)}", *conf])]


@contextmanager
def stopped_at_exit(agents: list[Launch]) -> Iterator[None]:
    """Whatever happens, no agent of the job outlives the sample."""
    try:
        yield
    finally:
        for agent in agents:
            stop(agent)


def exit_codes(agents: list[Launch], timeout: float) -> list[int]:
    """Wait for every agent of a job; their exit codes. A time-out is fatal."""
    deadline = time.monotonic() + timeout
    for agent in agents:
        if not wait_exit(agent.proc, max(0.0, deadline - time.monotonic())):
            raise failure(agents, f"{agent.launcher}: the job did not end within {timeout:.0f} s")
    return [agent.proc.returncode for agent in agents]


def written_times(agents: list[Launch], scratch: Path, names: list[str]) -> list[float]:
    """The ``time.time()`` values workers wrote to ``scratch/NAME``."""
    try:
        return [float((scratch / name).read_text()) for name in names]
    except (OSError, ValueError) as exc:
        raise failure(agents, f"{agents[0].launcher}: worker file missing or unreadable "
                              f"({exc}); files present: {worker_files(scratch)}") from None


def worker_files(scratch: Path) -> list[str]:
    return sorted(p.name for p in scratch.iterdir() if p.suffix not in (".log", ".tmp"))


def wait_for_files(scratch: Path, names: list[str], agents: list[Launch],
                   limit: float) -> str | None:
    """Wait until the workers wrote every file in ``names``: None, or why they did not."""
    deadline = time.monotonic() + limit
    while not all((scratch / name).exists() for name in names):
        ended = [f"{a.log.stem} exited {a.proc.returncode}" for a in agents
                 if a.proc.poll() is not None]
        if ended:
            return ", ".join(ended)
        if time.monotonic() > deadline:
            return f"not within {limit:.0f} s"
        time.sleep(POLL_S)
    return None


def last_error(log: Path) -> str:
    """The last line of an agent's output that reports an error ("" if none does)."""
    lines = log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if "Error" in line or "error" in line]
    return errors[-1].strip()[:300] if errors else ""


# -- (d) N nodes joining at once -------------------------------------------------------------


def join_burst_sample(launcher: str, nodes: int,
                      env: dict[str, str] | None = None) -> dict[str, Any]:
    """(d) One sample in a fresh process (in ``env``, by default :func:`launcher_env`); its
    JSON line (see ``join_burst.py``)."""
    argv = [sys.executable, str(HERE / "join_burst.py"), launcher, str(nodes), str(JOIN_LIMIT_S)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env or launcher_env(),
                              timeout=JOIN_LIMIT_S + 120)
    except subprocess.TimeoutExpired:
        raise LauncherError(f"{launcher}: join_burst.py with {nodes} nodes did not exit") from None
    lines = done.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
    if not result or result["errors"] or (result["seconds"] is not None
                                          and result["world_sizes"] != [nodes]):
        raise LauncherError(f"{launcher}: join_burst.py with {nodes} nodes failed (exit code "
                            f"{done.returncode}): {result or ''}\n{done.stderr[-3000:]}")
    return result


def run_join_burst(repeat: int) -> dict[str, Any]:
    """(d) ``repeat`` samples per launcher and N; one row per N."""
    rows = []
    for nodes in JOIN_NODES:
        seconds: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
        ops: dict[str, list[int]] = {name: [] for name in LAUNCHERS}
        ops_by_name: dict[str, dict[str, int]] = {}
        timed_out: dict[str, dict[str, Any]] = {}
        for round_no in range(repeat):
            for launcher in launcher_order(round_no):
                if launcher in timed_out:
                    continue
                one = join_burst_sample(launcher, nodes)
                if one["seconds"] is None:
                    timed_out[launcher] = {"limit_s": JOIN_LIMIT_S, "finished": one["finished"],
                                           "ops": one["ops"]}
                    print(f"  d N={nodes:<4} round {round_no + 1}/{repeat}  {launcher:<8} "
                          f"no result within {JOIN_LIMIT_S:.0f} s ({one['finished']} of "
                          f"{nodes} nodes done); not tried again at this N", flush=True)
                    continue
                seconds[launcher].append(one["seconds"])
                ops[launcher].append(sum(one["ops"]["round"].values()))
                ops_by_name[launcher] = one["ops"]["round"]
                print(f"  d N={nodes:<4} round {round_no + 1}/{repeat}  {launcher:<8} "
                      f"{one['seconds']:8.3f} s  {ops[launcher][-1]:6d} store ops", flush=True)
        rows.append(join_burst_row(nodes, seconds, ops, ops_by_name, timed_out))
    return {"rows": rows, "limit_s": JOIN_LIMIT_S,
            "target": "pliant >= 10x faster than torchrun at every N; N=256 under 2 s"}


def join_burst_row(nodes: int, seconds: dict[str, list[float]], ops: dict[str, list[int]],
                   ops_by_name: dict[str, dict[str, int]],
                   timed_out: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(d) One N: medians, the speed-up (a lower bound when torch timed out), the verdict."""
    median = {name: statistics.median(v) if v else None for name, v in seconds.items()}
    torch, pliant = median["torchrun"], median["pliant"]
    # torch with no result (it timed out at this N) took at least the limit.
    speedup = None if pliant is None else (torch or JOIN_LIMIT_S) / pliant
    met = (pliant is not None and speedup is not None and speedup >= 10
           and (nodes < 256 or pliant < 2.0))
    return {
        "nodes": nodes,
        "seconds": {name: stats(v) if v else None for name, v in seconds.items()},
        "median": median,
        "speedup": speedup,
        "speedup_is_lower_bound": torch is None and "torchrun" in timed_out,
        "ops_per_round": {name: statistics.median(v) if v else None for name, v in ops.items()},
        "ops_by_name": ops_by_name,
        "timed_out": timed_out,
        "met": met,
    }


# -- (e) two agents: launch, and recovery from a worker crash -----------------------------------


@dataclass
class TwoAgentRun:
    launch: float  # s, both agents started -> both workers started
    recovery: float  # s, rank 1's crash -> both workers of the next group started
    exit_codes: list[int]


def sample_two_agents(launcher: str, scratch: Path) -> TwoAgentRun:
    """(e) One two-agent job whose rank 1 crashes once."""
    port = free_port()
    worker = [str(WORKERS / "c10d_crash.py"), str(scratch)]
    launched = time.time()
    agents = [start(launcher, scratch, [*c10d_args(port, "2", node == 0), "--max-restarts", "1",
                                        *worker], name=f"{launcher}-node{node}")
              for node in range(2)]
    with stopped_at_exit(agents):
        codes = exit_codes(agents, TIMEOUT_S)
    starts = written_times(agents, scratch, ["start-0", "start-1"])
    crash, = written_times(agents, scratch, ["crash"])
    restarts = written_times(agents, scratch, ["restart-0", "restart-1"])
    if not max(starts) < crash < min(restarts):
        raise failure(agents, f"{launcher}: worker times out of order: starts {starts}, "
                              f"crash {crash}, restarts {restarts}")
    return TwoAgentRun(max(starts) - launched, max(restarts) - crash, codes)


def run_two_agents(repeat: int) -> dict[str, Any]:
    """(e) ``repeat`` jobs per launcher, alternated; launch and recovery samples."""
    launch: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    recovery: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    bad_exits: dict[str, list[list[int]]] = {name: [] for name in LAUNCHERS}
    for round_no in range(repeat):
        for launcher in launcher_order(round_no):
            with tempfile.TemporaryDirectory(prefix="pliant-bench-e-") as tmp:
                one = sample_two_agents(launcher, Path(tmp))
            launch[launcher].append(one.launch)
            recovery[launcher].append(one.recovery)
            if any(one.exit_codes):
                bad_exits[launcher].append(one.exit_codes)
            print(f"  e round {round_no + 1}/{repeat}  {launcher:<8} launch {one.launch:6.3f} s"
                  f"  recovery {one.recovery:6.3f} s  agent exit codes {one.exit_codes}",
                  flush=True)
    return {"launch": samples_summary(launch), "recovery": samples_summary(recovery),
            "nonzero_exits": bad_exits, "runs": repeat,
            "target": "recovery: pliant/torchrun <= 0.25"}


def samples_summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    median = {name: statistics.median(v) for name, v in samples.items()}
    return {"median": median, "ratio": median["pliant"] / median["torchrun"],
            **{name: stats(v) for name, v in samples.items()}}


# -- (f) scale-up: a third agent joins a running 2:3 job ---------------------------------------

#: How the third agent is started: records when its interpreter is up and when it has
#: imported the launcher and torch (``up ready`` in the file named by its first argument),
#: then runs the console script's ``main()`` on the remaining arguments.
PROBE = """\
import sys, time
up = time.time()
from {module} import main
import torch
ready = time.time()
with open(sys.argv.pop(1), "w") as f:
    f.write(f"{{up!r}} {{ready!r}}")
sys.exit(main())
"""


def probe_argv(launcher: str, ready_file: Path) -> list[str]:
    """The third agent's command: PROBE, then the launcher's own sub-command (``run``)."""
    return [sys.executable, "-c", PROBE.format(module=ENTRY_MODULES[launcher]), str(ready_file),
            *LAUNCHERS[launcher][1:]]


def sample_scale_up(launcher: str, scratch: Path) -> dict[str, Any]:
    """(f) One 2:3 job grown by a third agent; the times, or what happened instead."""
    port = free_port()

    def agent_args(node: int) -> list[str]:
        return [*c10d_args(port, "2:3", node == 0, f"last_call_timeout={LAST_CALL_S:g}"),
                str(WORKERS / "scale_up.py"), str(scratch)]

    agents = [start(launcher, scratch, agent_args(node), name=f"{launcher}-node{node}")
              for node in range(2)]
    with stopped_at_exit(agents):
        problem = wait_for_files(scratch, ["start-2-0", "start-2-1"], agents, FORM_LIMIT_S)
        if problem:
            raise failure(agents, f"{launcher}: the first two nodes did not start: {problem}")
        time.sleep(SETTLE_S)
        ready_file = scratch / "ready"
        launched = time.time()
        agents.append(start(launcher, scratch, agent_args(2), name=f"{launcher}-node2",
                            argv=probe_argv(launcher, ready_file)))
        grown = [f"start-3-{rank}" for rank in range(3)]
        problem = wait_for_files(scratch, grown, agents, SCALE_LIMIT_S)
        (scratch / "stop").touch()  # the workers may exit 0 now
        if problem:
            return {"grown": False, "problem": problem, "files": worker_files(scratch),
                    "errors": {a.log.stem: last_error(a.log) for a in agents}}
        last = max(written_times(agents, scratch, grown))
        up, ready = map(float, ready_file.read_text().split())
        codes = exit_codes(agents, TIMEOUT_S)
    return {"grown": True, "from_launch": last - launched, "from_ready": last - ready,
            "interpreter_up": up - launched, "ready": ready - launched, "exit_codes": codes}


def run_scale_up(repeat: int) -> dict[str, Any]:
    """(f) ``repeat`` tries per launcher, alternated; a launcher that fails to grow the job
    once is not tried again (each failure costs :data:`SCALE_LIMIT_S`)."""
    grown: dict[str, list[dict[str, Any]]] = {name: [] for name in LAUNCHERS}
    failed: dict[str, dict[str, Any]] = {}
    for round_no in range(repeat):
        for launcher in launcher_order(round_no):
            if launcher in failed:
                continue
            with tempfile.TemporaryDirectory(prefix="pliant-bench-f-") as tmp:
                one = sample_scale_up(launcher, Path(tmp))
            if not one["grown"]:
                failed[launcher] = {**one, "after_tries": len(grown[launcher]) + 1}
                print(f"  f round {round_no + 1}/{repeat}  {launcher:<8} did not reach "
                      f"WORLD_SIZE=3: {one['problem']}; files {one['files']}; not tried again",
                      flush=True)
                continue
            grown[launcher].append(one)
            print(f"  f round {round_no + 1}/{repeat}  {launcher:<8} from launch "
                  f"{one['from_launch']:6.3f} s  from ready {one['from_ready']:6.3f} s  (ready "
                  f"{one['ready']:.3f} s after launch)  exit codes {one['exit_codes']}",
                  flush=True)
    summary: dict[str, Any] = {}
    for launcher, runs in grown.items():
        summary[launcher] = {key: stats([r[key] for r in runs]) if runs else None
                             for key in ("from_launch", "from_ready", "ready")}
        summary[launcher]["nonzero_exits"] = [r["exit_codes"] for r in runs if any(r["exit_codes"])]
    pliant = summary["pliant"]["from_ready"]
    return {"launchers": summary, "failed": failed, "last_call_timeout_s": LAST_CALL_S,
            "limit_s": SCALE_LIMIT_S,
            "target": f"pliant from ready <= last_call_timeout + 1 s = {LAST_CALL_S + 1:g} s",
            "met": "pliant" not in failed and pliant is not None
                   and pliant["median"] <= LAST_CALL_S + 1}


# -- (h) node loss ------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    return tree


def lose_node(agent: Launch) -> float:
    """SIGKILL the agent and its workers at once (a host going away); when it happened."""
    import os
    import signal
    from contextlib import suppress

    tree = process_tree(agent.proc.pid)
    lost = time.time()
    for pid in tree:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    agent.proc.wait()
    return lost


def sample_node_loss(launcher: str, scratch: Path) -> dict[str, Any]:
    """(h) One 2:3 job of three nodes that loses one; the time until the survivors run again,
    or what happened instead."""
    port = free_port()

    def agent_args(node: int) -> list[str]:
        return [*c10d_args(port, "2:3", node == 0, "last_call_timeout=30", *KEEP_ALIVE),
                str(WORKERS / "scale_up.py"), str(scratch)]

    agents = [start(launcher, scratch, agent_args(node), name=f"{launcher}-node{node}")
              for node in range(3)]
    with stopped_at_exit(agents):
        problem = wait_for_files(scratch, [f"start-3-{rank}" for rank in range(3)], agents,
                                 FORM_LIMIT_S)
        if problem:
            raise failure(agents, f"{launcher}: the three nodes did not start: {problem}")
        time.sleep(SETTLE_S)
        lost = lose_node(agents[2])
        survivors = ["start-2-0", "start-2-1"]
        problem = wait_for_files(scratch, survivors, agents[:2], LOSS_LIMIT_S)
        (scratch / "stop").touch()
        if problem:
            return {"recovered": False, "problem": problem, "files": worker_files(scratch),
                    "errors": {a.log.stem: last_error(a.log) for a in agents[:2]}}
        last = max(written_times(agents, scratch, survivors))
        codes = exit_codes(agents[:2], TIMEOUT_S)
    return {"recovered": True, "seconds": last - lost, "exit_codes": codes}


def run_node_loss(repeat: int) -> dict[str, Any]:
    """(h) ``repeat`` tries per launcher, alternated; a launcher whose survivors do not run
    again once is not tried again (each failure costs :data:`LOSS_LIMIT_S`)."""
    times: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    failed: dict[str, dict[str, Any]] = {}
    for round_no in range(repeat):
        for launcher in launcher_order(round_no):
            if launcher in failed:
                continue
            with tempfile.TemporaryDirectory(prefix="pliant-bench-h-") as tmp:
                one = sample_node_loss(launcher, Path(tmp))
            if not one["recovered"]:
                failed[launcher] = {**one, "after_tries": len(times[launcher]) + 1}
                print(f"  h round {round_no + 1}/{repeat}  {launcher:<8} survivors did not run "
                      f"again: {one['problem']}; files {one['files']}; not tried again",
                      flush=True)
                continue
            times[launcher].append(one["seconds"])
            print(f"  h round {round_no + 1}/{repeat}  {launcher:<8} {one['seconds']:6.3f} s  "
                  f"exit codes {one['exit_codes']}", flush=True)
    summary = {name: stats(values) if values else None for name, values in times.items()}
    bound = KEEP_ALIVE_BOUND_S + 2
    pliant = summary["pliant"]
    return {"launchers": summary, "failed": failed, "limit_s": LOSS_LIMIT_S,
            "keep_alive": ",".join(KEEP_ALIVE),
            "target": f"pliant <= keep-alive bound {KEEP_ALIVE_BOUND_S:g} s + 2 s = {bound:g} s",
            "met": "pliant" not in failed and pliant is not None
                   and float(pliant["median"]) <= bound}

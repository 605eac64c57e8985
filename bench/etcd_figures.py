"""etcd figures: pliant-etcd (the core rendezvous on etcd's v3 API) on real etcd servers.

Every etcd server runs on this machine, on loopback, with the flags of
``pliant_etcd.testing.EtcdCluster`` (50 ms heartbeats, 500 ms elections) and real fsync
(no ``--unsafe-no-fsync``), its data directory under the system's temporary directory
(the figures record which file system that is). Each figure alternates what it compares
run by run and reports medians, as ``run.py`` does.

(i) join burst on etcd: N nodes (:data:`BURST_NODES`) join one rendezvous at once, as
    threads of one process (``etcd_burst.py``, a fresh process per sample), as in (d):
    the time from releasing the threads to the last one holding its RendezvousInfo.
    Side by side, order rotated round by round: pliant-etcd on one etcd server
    (``EtcdCluster(1)``, started once for the figure; a new run id per sample),
    pliant-c10d on one TCPStore (started in the sample process, as in (d)), and torch's
    ``DynamicRendezvousHandler`` on its etcd-v2 backend (python-etcd; a second etcd
    server with the same flags plus ``--enable-v2``), when python-etcd is installed
    (``bench/requirements.txt``). Every handler is shut down after each sample (all at
    once; timed) and the keys pliant-etcd left under the run's prefix are counted (a
    finished run should leave none). A backend with no result within
    :data:`BURST_LIMIT_S` at some N is not tried again at that N. Target: pliant-etcd,
    N=32 nodes on one etcd server, <= 0.5 s.

(j) member failover: a fresh 3-member cluster per sample, :data:`FAILOVER_NODES`
    pliant-etcd nodes (threads) running round 0, then one member gets SIGKILL: the
    leader, or the follower most nodes are connected to (``etcd_failover.py`` describes
    both measures: a write through every node's own store, and a full re-rendezvous
    after a round end posted at the moment of the kill). Target: the leader's loss costs
    <= 2 s (median) in both measures.

(k) agent peak memory with the etcd backend: one real agent, ``--nnodes 1:2
    --nproc-per-node 1 workers/sleep.py`` (so it waits out the 2 s last call, then runs
    its worker about 1 s), VmHWM of the agent process only, as in (c): ``pliant run
    --rdzv-backend etcd`` on a 1-member cluster, ``pliant run --rdzv-backend c10d`` (the
    agent hosts the TCPStore; it imports torch for it) and, when python-etcd is
    installed, ``torchrun --rdzv-backend etcd-v2`` (``last_call_timeout=2``, as pliant's
    default). Target: pliant-etcd <= 60 MB.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from launchers import (
    BIN,
    HERE,
    WORKERS,
    LauncherError,
    free_port,
    launcher_env,
    peak_rss_mb,
    start,
    stats,
)
from pliant_etcd.testing import (
    ELECTION_TIMEOUT_MS,
    HEARTBEAT_INTERVAL_MS,
    QUOTA_BACKEND_BYTES,
    EtcdCluster,
    etcd_binary,
)

BURST_NODES = (2, 8, 32, 128)
BURST_LIMIT_S = 60.0
BURST_BACKENDS = ("pliant-etcd", "pliant-c10d", "torch-etcd-v2")
BURST_TARGET_NODES, BURST_TARGET_S = 32, 0.5
FAILOVER_NODES = 4
FAILOVER_TARGET_S = 2.0
RSS_AGENTS = ("pliant-etcd", "pliant-c10d", "torchrun-etcd-v2")
RSS_TARGET_MB = 60.0
SERVER_START_S = 30.0


# -- torch's etcd-v2 backend: python-etcd and an etcd server with the v2 API -----------------


def python_etcd_missing() -> str | None:
    """Why torch's etcd-v2 backend cannot run here (None: it can)."""
    if importlib.util.find_spec("etcd") is None:
        return ("python-etcd is not installed (torch's etcd-v2 backend needs it: "
                "pip install -r bench/requirements.txt)")
    return None


class EtcdV2Server:
    """One etcd server with ``--enable-v2`` (``EtcdCluster`` has no such flag), started with
    ``EtcdCluster``'s other flags; a context manager. etcd 3.5 still serves the v2 API
    with the flag (deprecated; 3.6 removes it)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="pliant-bench-etcd-v2-",
                                                ignore_cleanup_errors=True)
        client, peer = free_port(), free_port()
        self.endpoint = f"127.0.0.1:{client}"
        self.log = Path(self._dir.name) / "etcd.log"
        peer_url, client_url = f"http://127.0.0.1:{peer}", f"http://{self.endpoint}"
        argv = [etcd_binary(), "--name", "v2", "--data-dir", str(Path(self._dir.name) / "data"),
                "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
                "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                "--initial-cluster", f"v2={peer_url}", "--initial-cluster-state", "new",
                "--heartbeat-interval", str(HEARTBEAT_INTERVAL_MS),
                "--election-timeout", str(ELECTION_TIMEOUT_MS),
                "--quota-backend-bytes", str(QUOTA_BACKEND_BYTES),
                "--enable-v2", "--log-level", "warn"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_serving()
        except BaseException:
            self.stop()
            raise

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd --enable-v2 exited {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.endpoint}/v2/keys/", timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd --enable-v2 did not serve /v2/keys/ within "
                                   f"{SERVER_START_S:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> EtcdV2Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def start_v2_server() -> tuple[EtcdV2Server | None, str | None]:
    """The v2 server, or why torch's etcd-v2 backend is left out."""
    missing = python_etcd_missing()
    if missing:
        return None, missing
    try:
        return EtcdV2Server(), None
    except (OSError, RuntimeError) as exc:
        return None, f"etcd with --enable-v2 did not start: {exc}"


def etcd_facts() -> dict[str, Any]:
    """What the etcd figures depend on, beyond run.py's machine facts."""
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    etcd_version = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True,
                                  check=False).stdout.splitlines()
    tmp = tempfile.gettempdir()
    df = subprocess.run(["df", "-T", tmp], capture_output=True, text=True,
                        check=False).stdout.splitlines()
    return {"etcd": etcd_version[0].removeprefix("etcd Version: ") if etcd_version else "?",
            "etcd_flags": f"--heartbeat-interval {HEARTBEAT_INTERVAL_MS} --election-timeout "
                          f"{ELECTION_TIMEOUT_MS}, fsync on",
            "data_dir_fs": f"{tmp} on {df[-1].split()[1]}" if len(df) > 1 else tmp,
            "etcd_sdk_python": version("etcd-sdk-python"), "grpcio": version("grpcio"),
            "python_etcd": version("python-etcd")}


# -- (i) join burst on etcd ------------------------------------------------------------------


def burst_order(round_no: int) -> list[str]:
    """The backends, rotated round by round."""
    shift = round_no % len(BURST_BACKENDS)
    return [*BURST_BACKENDS[shift:], *BURST_BACKENDS[:shift]]


def burst_sample(backend: str, nodes: int, endpoint: str, run_id: str,
                 env: dict[str, str] | None = None) -> dict[str, Any]:
    """(i) One sample in a fresh process (in ``env``, by default :func:`launcher_env`); its
    JSON line (see ``etcd_burst.py``), or ``{"failed": why}``."""
    argv = [sys.executable, str(HERE / "etcd_burst.py"), backend, str(nodes),
            str(BURST_LIMIT_S), endpoint, run_id]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env or launcher_env(),
                              timeout=BURST_LIMIT_S + 120)
    except subprocess.TimeoutExpired:
        return {"failed": f"etcd_burst.py {backend} {nodes} did not exit"}
    lines = done.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if done.returncode == 0 and lines else {}
    if not result:
        tail = done.stderr.strip().splitlines()[-3:]
        return {"failed": f"exit code {done.returncode}: {' / '.join(tail)}"}
    if result["errors"]:
        return {"failed": "; ".join(result["errors"])}
    if result["seconds"] is not None and result["world_sizes"] != [nodes]:
        return {"failed": f"world sizes {result['world_sizes']}, expected [{nodes}]"}
    return result


def run_etcd_burst(repeat: int) -> dict[str, Any]:
    """(i) ``repeat`` samples per backend and N; one row per N."""
    rows = []
    with EtcdCluster(1) as cluster:
        v2, v2_missing = start_v2_server()
        try:
            endpoints = {"pliant-etcd": cluster.endpoint, "pliant-c10d": "-",
                         "torch-etcd-v2": v2.endpoint if v2 else ""}
            failed: dict[str, str] = {"torch-etcd-v2": v2_missing} if v2_missing else {}
            for nodes in BURST_NODES:
                rows.append(burst_row(nodes, repeat, cluster, endpoints, failed))
        finally:
            if v2 is not None:
                v2.stop()
    by_n = {r["nodes"]: r for r in rows}
    target = by_n.get(BURST_TARGET_NODES, {}).get("median", {}).get("pliant-etcd")
    return {"rows": rows, "limit_s": BURST_LIMIT_S, "failed": failed, "etcd": etcd_facts(),
            "target": f"pliant-etcd, N={BURST_TARGET_NODES} on one etcd server, "
                      f"<= {BURST_TARGET_S:g} s",
            "met": target is not None and target <= BURST_TARGET_S}


def burst_row(nodes: int, repeat: int, cluster: EtcdCluster, endpoints: dict[str, str],
              failed: dict[str, str]) -> dict[str, Any]:
    """(i) One N. ``failed`` (backend -> why) is updated: a backend that fails is not tried
    again (pliant's failures are fatal)."""
    seconds: dict[str, list[float]] = {name: [] for name in BURST_BACKENDS}
    ops: dict[str, list[int]] = {name: [] for name in BURST_BACKENDS}
    requests: list[int] = []
    requests_by_method: dict[str, int] = {}
    shutdown: dict[str, list[float]] = {name: [] for name in BURST_BACKENDS}
    keys_left: list[int] = []
    stuck: dict[str, int] = {name: 0 for name in BURST_BACKENDS}
    timed_out: dict[str, dict[str, Any]] = {}
    for round_no in range(repeat):
        for backend in burst_order(round_no):
            if backend in failed or backend in timed_out:
                continue
            run_id = f"bench-i-{uuid.uuid4().hex[:8]}"
            one = burst_sample(backend, nodes, endpoints[backend], run_id)
            label = f"  i N={nodes:<4} round {round_no + 1}/{repeat}  {backend:<14}"
            if "failed" in one:
                if backend.startswith("pliant"):
                    raise LauncherError(f"{backend}: {nodes} nodes failed: {one['failed']}")
                failed[backend] = f"N={nodes}: {one['failed']}"
                print(f"{label} FAILED: {one['failed']}; not tried again", flush=True)
                continue
            if one["seconds"] is None:
                timed_out[backend] = {"limit_s": BURST_LIMIT_S, "finished": one["finished"],
                                      "ops": sum(one["ops"]["round"].values())}
                print(f"{label} no result within {BURST_LIMIT_S:.0f} s ({one['finished']} of "
                      f"{nodes} nodes done); not tried again at this N", flush=True)
                continue
            seconds[backend].append(one["seconds"])
            ops[backend].append(sum(one["ops"]["round"].values()))
            shutdown[backend].append(one["shutdown_s"])
            extra = ""
            if backend == "pliant-etcd":
                requests.append(sum(one["etcd_requests"].values()))
                requests_by_method = one["etcd_requests"]
                keys_left.append(len(cluster.keys(f"/pliant/{run_id}/")))
                extra = f"  {requests[-1]:6d} etcd requests  {keys_left[-1]} keys left"
            if one["shutdown_stuck"]:
                stuck[backend] += one["shutdown_stuck"]
                extra += f"  {one['shutdown_stuck']} handlers did not shut down"
            print(f"{label} {one['seconds']:8.3f} s  {ops[backend][-1]:6d} store ops"
                  f"  shutdown {one['shutdown_s']:.3f} s{extra}", flush=True)
    median = {name: statistics.median(v) if v else None for name, v in seconds.items()}
    return {
        "nodes": nodes,
        "seconds": {name: stats(v) if v else None for name, v in seconds.items()},
        "median": median,
        "ops_per_round": {name: statistics.median(v) if v else None for name, v in ops.items()},
        "etcd_requests_per_round": statistics.median(requests) if requests else None,
        "etcd_requests_by_method": requests_by_method,
        "shutdown_s": {name: statistics.median(v) if v else None
                       for name, v in shutdown.items()},
        "keys_left": keys_left,
        "shutdown_stuck": stuck,
        "timed_out": timed_out,
        "met": (None if nodes != BURST_TARGET_NODES else
                median["pliant-etcd"] is not None and median["pliant-etcd"] <= BURST_TARGET_S),
    }


# -- (j) member failover -----------------------------------------------------------------------


def failover_sample(victim: str, measure: str) -> dict[str, Any]:
    """(j) One sample in a fresh process (a fresh cluster); its JSON line."""
    argv = [sys.executable, str(HERE / "etcd_failover.py"), victim, measure,
            str(FAILOVER_NODES)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=launcher_env(),
                              timeout=180)
    except subprocess.TimeoutExpired:
        raise LauncherError(f"etcd_failover.py {victim} {measure} did not exit") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise LauncherError(f"etcd_failover.py {victim} {measure} failed (exit code "
                            f"{done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if not result["formed"]:
        raise LauncherError(f"etcd_failover.py: round 0 did not form: {result['errors']}")
    return result


def run_failover(repeat: int) -> dict[str, Any]:
    """(j) ``repeat`` samples of each victim and measure, the victims alternated."""
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        v: {"op": [], "rdzv": []} for v in ("leader", "follower")}
    for round_no in range(repeat):
        victims = ["leader", "follower"] if round_no % 2 == 0 else ["follower", "leader"]
        for victim in victims:
            for measure in ("op", "rdzv"):
                one = failover_sample(victim, measure)
                samples[victim][measure].append(one)
                print(f"  j round {round_no + 1}/{repeat}  kill {victim:<8} {measure:<4} "
                      f"{failover_line(one)}", flush=True)
    parts = {victim: {"op": summarize_op(by["op"]), "rdzv": summarize_rdzv(by["rdzv"])}
             for victim, by in samples.items()}
    leader = parts["leader"]
    worst = [leader["op"]["every_node"], leader["rdzv"]["seconds"]]
    failures = sum(p[m]["failures"] for p in parts.values() for m in ("op", "rdzv"))
    return {"parts": parts, "nodes": FAILOVER_NODES, "samples": samples, "etcd": etcd_facts(),
            "target": f"leader killed: <= {FAILOVER_TARGET_S:g} s (median), both measures",
            "met": failures == 0 and all(w is not None and w["median"] <= FAILOVER_TARGET_S
                                         for w in worst)}


def failover_line(one: dict[str, Any]) -> str:
    on = sum(one["on_victim"])
    if one["measure"] == "op":
        times = ", ".join("-" if t is None else f"{t:.3f}" for t in one["seconds"])
        line = f"write per node [{times}] s"
        if one["spurious_ends"]:
            line += f"  ROUND ENDED: {one['spurious_ends'][0]}"
    else:
        line = ("FAILED" if one["seconds"] is None else f"re-rendezvous {one['seconds']:.3f} s")
    if one["errors"]:
        line += f"  errors: {one['errors'][0]}"
    return (f"{line}  ({on} of {one['nodes']} nodes on the killed member; keys left "
            f"{len(one['keys_left'] or [])})")


def summarize_op(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """(j) op: per sample, the slowest node overall, among stores on the killed member, and
    among the others; statistics of each over the samples that had such stores."""
    every, on, off = [], [], []
    for run in runs:
        pairs = zip(run["seconds"], run["on_victim"], strict=True)
        times = [(t, v) for t, v in pairs if t is not None]
        if len(times) == len(run["seconds"]):
            every.append(max(t for t, _ in times))
        if any(v for _, v in times):
            on.append(max(t for t, v in times if v))
        if any(not v for _, v in times):
            off.append(max(t for t, v in times if not v))
    return {"every_node": stats(every) if every else None,
            "on_victim": stats(on) if on else None,
            "off_victim": stats(off) if off else None,
            "spurious_ends": [e for run in runs for e in run["spurious_ends"]],
            "keys_left": [k for run in runs for k in run["keys_left"] or []],
            "failures": sum(1 for run in runs if run["errors"]),
            "errors": [e for run in runs for e in run["errors"]][:3],
            "samples": len(runs)}


def summarize_rdzv(runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in runs if r["seconds"] is not None
            and r["world_sizes"] == [FAILOVER_NODES] and r["rounds"] == [1]]
    return {"seconds": stats([r["seconds"] for r in done]) if done else None,
            "noticed": stats([max(r["noticed_s"]) for r in done]) if done else None,
            "keys_left": [k for run in runs for k in run["keys_left"] or []],
            "failures": len(runs) - len(done),
            "errors": [e for run in runs for e in run["errors"]][:3],
            "samples": len(runs)}


# -- (k) agent peak memory -------------------------------------------------------------------


def rss_argv(agent: str, endpoint: str, run_id: str) -> tuple[list[str], list[str]]:
    """(k) The agent's command and its arguments."""
    common = ["--nnodes", "1:2", "--nproc-per-node", "1", "--rdzv-id", run_id]
    worker = [str(WORKERS / "sleep.py")]
    if agent == "pliant-etcd":
        return [str(BIN / "pliant"), "run"], [*common, "--rdzv-backend", "etcd",
                                              "--rdzv-endpoint", endpoint, *worker]
    if agent == "pliant-c10d":
        return [str(BIN / "pliant"), "run"], [*common, "--rdzv-backend", "c10d",
                                              "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
                                              "--rdzv-conf", "is_host=1", *worker]
    return [str(BIN / "torchrun")], [*common, "--rdzv-backend", "etcd-v2", "--rdzv-endpoint",
                                     endpoint, "--rdzv-conf", "last_call_timeout=2", *worker]


def run_etcd_rss(repeat: int) -> dict[str, Any]:
    """(k) ``repeat`` agents of each kind, order rotated round by round."""
    mb: dict[str, list[float]] = {name: [] for name in RSS_AGENTS}
    keys_left: list[int] = []
    with EtcdCluster(1) as cluster:
        v2, v2_missing = start_v2_server()
        skipped = {"torchrun-etcd-v2": v2_missing} if v2_missing else {}
        endpoints = {"pliant-etcd": cluster.endpoint, "pliant-c10d": "",
                     "torchrun-etcd-v2": v2.endpoint if v2 else ""}
        try:
            for round_no in range(repeat):
                shift = round_no % len(RSS_AGENTS)
                for agent in [*RSS_AGENTS[shift:], *RSS_AGENTS[:shift]]:
                    if agent in skipped:
                        continue
                    run_id = f"bench-k-{uuid.uuid4().hex[:8]}"
                    argv, args = rss_argv(agent, endpoints[agent], run_id)
                    with tempfile.TemporaryDirectory(prefix="pliant-bench-k-") as tmp:
                        launch = start(agent, Path(tmp), args, argv=argv)
                        mb[agent].append(peak_rss_mb(launch))
                    extra = ""
                    if agent == "pliant-etcd":
                        keys_left.append(len(cluster.keys(f"/pliant/{run_id}/")))
                        extra = f"  {keys_left[-1]} keys left"
                    print(f"  k round {round_no + 1}/{repeat}  {agent:<16} "
                          f"{mb[agent][-1]:6.1f} MB{extra}", flush=True)
        finally:
            if v2 is not None:
                v2.stop()
    median = {name: statistics.median(v) if v else None for name, v in mb.items()}
    pliant = median["pliant-etcd"]
    return {"agents": {name: stats(v) if v else None for name, v in mb.items()},
            "median": median, "skipped": skipped, "keys_left": keys_left,
            "etcd": etcd_facts(), "target": f"pliant-etcd <= {RSS_TARGET_MB:g} MB",
            "met": pliant is not None and pliant <= RSS_TARGET_MB}

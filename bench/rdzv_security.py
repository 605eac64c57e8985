"""Figures (s) and (t): the rendezvous under this machine's own DNS resolver, and the price of
the job's token.

(s) the in-process join bursts (d) (c10d, pliant against torch's c10d handler) and (i) (etcd,
    pliant-etcd against torch's etcd-v2 handler) at :data:`RESOLVER_NODES` nodes, each sample
    taken twice in the same round: once with the system resolver as it is (``RES_OPTIONS``
    unset: this machine's resolver loses UDP answers, and torch's TCPStore server looks up
    every client's name on its one thread, so one lost answer costs 5 s for every client of
    that store) and once with DNS over TCP (``RES_OPTIONS=use-vc``). Launchers and resolvers
    alternate round by round. The clock is (d)'s and (i)'s: from releasing the N node threads
    to the last one holding its RendezvousInfo; opening the store connections (when the
    handlers are made) is before it, as in an agent. Target: pliant, with the system
    resolver, not slower than torch with the same resolver.

(t) the token's cost. Per round: pliant's (d) at :data:`TOKEN_NODES` nodes and pliant-etcd's
    (i) at 32, with and without ``PLIANT_RDZV_TOKEN_FILE``, alternated, DNS over TCP (the
    figure is about hashing, not DNS). Per operation: :meth:`Seal.wrap` (sign) and
    :meth:`Seal.unwrap` (check) of a 32-node round's ``done`` record, the largest value a
    round writes, timed with ``timeit`` (median of ``repeat`` runs of 20 000 calls).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import timeit
import uuid
from pathlib import Path
from typing import Any

import etcd_figures
import rendezvous
from launchers import LAUNCHERS, RESOLVER_OPTIONS, LauncherError, launcher_env, stats
from pliant_etcd.testing import EtcdCluster

RESOLVER_NODES = 32
RESOLVERS = ("system", RESOLVER_OPTIONS)
TOKEN_NODES = (8, 32, 256)
TOKEN_ETCD_NODES = 32
SEAL_CALLS = 20_000


def _env(resolver: str, token_file: str | None = None) -> dict[str, str]:
    """The launchers' environment with ``resolver`` ("system": RES_OPTIONS unset) and, with
    ``token_file``, the job's token."""
    env = {k: v for k, v in launcher_env().items() if k != "RES_OPTIONS"}
    if resolver != "system":
        env["RES_OPTIONS"] = resolver
    if token_file:
        env["PLIANT_RDZV_TOKEN_FILE"] = token_file
    return env


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- (s) the system resolver against DNS over TCP ------------------------------------------------


def run_resolvers(repeat: int) -> dict[str, Any]:
    """(s) ``repeat`` samples per backend and resolver, for (d) and (i)."""
    c10d: dict[str, dict[str, list[float]]] = {r: {n: [] for n in LAUNCHERS} for r in RESOLVERS}
    etcd: dict[str, dict[str, list[float]]] = {
        r: {b: [] for b in ("pliant-etcd", "torch-etcd-v2")} for r in RESOLVERS}
    failed: dict[str, str] = {}
    with EtcdCluster(1) as cluster:
        v2, v2_missing = etcd_figures.start_v2_server()
        if v2_missing:
            failed["torch-etcd-v2"] = v2_missing
        endpoints = {"pliant-etcd": cluster.endpoint, "torch-etcd-v2": v2.endpoint if v2 else ""}
        try:
            for round_no in range(repeat):
                order = RESOLVERS if round_no % 2 == 0 else RESOLVERS[::-1]
                for resolver in order:
                    env = _env(resolver)
                    for launcher in rendezvous.launcher_order(round_no):
                        one = rendezvous.join_burst_sample(launcher, RESOLVER_NODES, env)
                        _record(c10d[resolver][launcher], one, "d", launcher, resolver,
                                round_no, repeat, failed)
                    backends = ["pliant-etcd", "torch-etcd-v2"]
                    for backend in backends if round_no % 2 == 0 else backends[::-1]:
                        if backend in failed:
                            continue
                        one = etcd_figures.burst_sample(backend, RESOLVER_NODES,
                                                        endpoints[backend],
                                                        f"bench-s-{uuid.uuid4().hex[:8]}", env)
                        if "failed" in one:
                            if backend.startswith("pliant"):
                                raise LauncherError(f"{backend}: {one['failed']}")
                            failed[backend] = one["failed"]
                            continue
                        _record(etcd[resolver][backend], one, "i", backend, resolver,
                                round_no, repeat, failed)
        finally:
            if v2 is not None:
                v2.stop()
    rows = []
    for figure, samples, ours, theirs in (("d", c10d, "pliant", "torchrun"),
                                          ("i", etcd, "pliant-etcd", "torch-etcd-v2")):
        for resolver in RESOLVERS:
            by = samples[resolver]
            median = {name: _median(v) for name, v in by.items()}
            pliant, torch = median[ours], median[theirs]
            rows.append({"figure": figure, "resolver": resolver, "nodes": RESOLVER_NODES,
                         "pliant": ours, "torch": theirs,
                         "seconds": {n: stats(v) if v else None for n, v in by.items()},
                         "median": median,
                         "ratio": pliant / torch if pliant and torch else None,
                         "met": (None if resolver != "system" or pliant is None
                                 else torch is None or pliant <= torch)})
    return {"rows": rows, "failed": failed,
            "target": "with the system resolver, pliant not slower than torch"}


def _record(into: list[float], one: dict[str, Any], figure: str, who: str, resolver: str,
            round_no: int, repeat: int, failed: dict[str, str]) -> None:
    label = (f"  s ({figure}) N={RESOLVER_NODES} round {round_no + 1}/{repeat} "
             f"{resolver:<7} {who:<14}")
    if one.get("seconds") is None:
        failed.setdefault(f"{who} ({resolver})",
                          f"no result within the limit ({one.get('finished')} of "
                          f"{RESOLVER_NODES} nodes done)")
        print(f"{label} no result", flush=True)
        return
    into.append(one["seconds"])
    print(f"{label} {one['seconds']:8.3f} s", flush=True)


def s_rows(s: dict[str, Any]) -> list[str]:
    rows = ["| figure | resolver | torch median | pliant median | ratio pliant/torch | met? |",
            "|---|---|---|---|---|---|"]
    for r in s["rows"]:
        median = r["median"]
        cells = [("-" if median[k] is None else f"{median[k]:.3f} s")
                 for k in (r["torch"], r["pliant"])]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        name = ("(d) c10d, torch's c10d handler" if r["figure"] == "d"
                else "(i) etcd, torch's etcd-v2 handler")
        resolver = ("system (UDP, answers lost here)" if r["resolver"] == "system"
                    else f"`RES_OPTIONS={r['resolver']}` (DNS over TCP)")
        rows.append(f"| {name}, N={r['nodes']} | {resolver} | {cells[0]} | {cells[1]} "
                    f"| {ratio} | {met} |")
    rows += ["", f"Target: {s['target']}. Clock: (d)'s and (i)'s, from releasing the node "
             "threads to the last one holding its RendezvousInfo; the store connections are "
             "opened before it, when the handlers are made, as in an agent."]
    if s["failed"]:
        rows += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in s["failed"].items())]
    return rows


# -- (t) the token's cost ------------------------------------------------------------------------


def run_token(repeat: int) -> dict[str, Any]:
    """(t) Rounds with and without the token, and the per-value cost of signing."""
    with tempfile.TemporaryDirectory(prefix="pliant-bench-t-") as scratch:
        token_file = Path(scratch) / "token"
        token_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex + "\n")
        token_file.chmod(0o600)
        modes = {"no token": None, "token": str(token_file)}
        rounds = [_token_row("c10d", n, repeat, modes) for n in TOKEN_NODES]
        with EtcdCluster(1) as cluster:
            rounds.append(_token_row("etcd", TOKEN_ETCD_NODES, repeat, modes, cluster.endpoint))
        per_op = _seal_cost(token_file.read_bytes().strip(), repeat)
    return {"rounds": rounds, "per_op": per_op}


def _token_row(backend: str, nodes: int, repeat: int, modes: dict[str, str | None],
               endpoint: str = "") -> dict[str, Any]:
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    ops: dict[str, list[int]] = {mode: [] for mode in modes}
    for round_no in range(repeat):
        order = list(modes) if round_no % 2 == 0 else list(modes)[::-1]
        for mode in order:
            env = _env(RESOLVER_OPTIONS, modes[mode])
            if backend == "c10d":
                one = rendezvous.join_burst_sample("pliant", nodes, env)
            else:
                one = etcd_figures.burst_sample("pliant-etcd", nodes, endpoint,
                                                f"bench-t-{uuid.uuid4().hex[:8]}", env)
                if "failed" in one:
                    raise LauncherError(f"pliant-etcd with {mode}: {one['failed']}")
            if one["seconds"] is None:
                raise LauncherError(f"pliant {backend} N={nodes} with {mode}: no result")
            seconds[mode].append(one["seconds"])
            ops[mode].append(sum(one["ops"]["round"].values()))
            print(f"  t {backend} N={nodes:<4} round {round_no + 1}/{repeat} {mode:<9}"
                  f"{one['seconds']:8.3f} s  {ops[mode][-1]:6d} store ops", flush=True)
    median = {mode: _median(v) for mode, v in seconds.items()}
    return {"backend": backend, "nodes": nodes,
            "seconds": {mode: stats(v) for mode, v in seconds.items()}, "median": median,
            "ops_per_round": {mode: _median([float(o) for o in v]) for mode, v in ops.items()},
            "ratio": (median["token"] / median["no token"]
                      if median["token"] and median["no token"] else None)}


def _seal_cost(token: bytes, repeat: int) -> dict[str, Any]:
    """Microseconds per sign and per check of a 32-node round's ``done`` record."""
    from pliant.rendezvous.auth import Seal
    from pliant.rendezvous.keys import encode

    seal = Seal(token, "bench:0", "bench")
    key = "pliant/bench/7/done"
    record = encode({"round": 7, "restart_count": 0, "nodes": [
        {"id": f"node{i:03d}-{os.getpid()}-{uuid.uuid4().hex[:8]}", "host": f"node{i:03d}",
         "addr": f"10.0.{i // 256}.{i % 256}", "port": 29500, "workers": 8}
        for i in range(32)]})
    sealed = seal.wrap(key, record)
    sign = [timeit.timeit(lambda: seal.wrap(key, record), number=SEAL_CALLS) / SEAL_CALLS * 1e6
            for _ in range(repeat)]
    check = [timeit.timeit(lambda: seal.unwrap(key, sealed), number=SEAL_CALLS)
             / SEAL_CALLS * 1e6 for _ in range(repeat)]
    return {"value_bytes": len(record), "sealed_bytes": len(sealed),
            "sign_us": stats(sign), "check_us": stats(check)}


def t_rows(t: dict[str, Any]) -> list[str]:
    rows = ["| round | no token median | token median | ratio token/no token "
            "| store ops per round (no token, token) |",
            "|---|---|---|---|---|"]
    for r in t["rounds"]:
        m, ops = r["median"], r["ops_per_round"]
        rows.append(f"| {r['backend']}, N={r['nodes']} | {m['no token']:.3f} s "
                    f"| {m['token']:.3f} s | {r['ratio']:.3f} "
                    f"| {ops['no token']:.0f}, {ops['token']:.0f} |")
    op = t["per_op"]
    rows += ["", f"Per value (HMAC-SHA256 over key and value, `timeit`, {SEAL_CALLS:,} calls, "
             f"median of the runs): signing a {op['value_bytes']}-byte `done` record of a "
             f"32-node round ({op['sealed_bytes']} bytes sealed) costs "
             f"{op['sign_us']['median']:.2f} µs, checking it {op['check_us']['median']:.2f} µs.",
             "", "Clock as in (d) and (i), DNS over TCP. With a token each value is 78 bytes "
             "longer (`pliant-hmac1:`, the hex digest, a colon), and a joining node makes more "
             "reads: it counts only the join records that verify, up to its own number (anyone "
             "can add to the join counter), and checks a round's outcome before it takes it."]
    return rows


if __name__ == "__main__":  # a quick look: python bench/rdzv_security.py
    print(json.dumps(run_token(5)["per_op"], indent=2))

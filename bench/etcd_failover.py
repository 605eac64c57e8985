"""Figure (j), one sample: an etcd member dies under a running round of pliant-etcd nodes.

Usage: ``python bench/etcd_failover.py VICTIM MEASURE NODES``. Prints one JSON line.

A fresh 3-member ``EtcdCluster`` (real fsync) is started from this process's main thread;
NODES ``pliant_etcd.EtcdRendezvousHandler`` (as threads, each with its own connection,
given every member's address) form round 0 and run it (keep-alive threads beating and
watching). Each node's etcd client picks one member at random; the bench reads which
(``endpoint_in_use`` of the handler's main store) and reports it. Then VICTIM is killed
(SIGKILL; the clock starts just before it is sent):

* ``leader``: the raft leader;
* ``follower``: the follower the most nodes' main stores are connected to.

MEASURE is one of:

* ``op``: at once, each node writes one key through its handler's own store (idle while
  the round runs): ``seconds`` by node, from the kill until the write returned, split by
  whether that store was connected to the killed member. The store retries on another
  member (pliant-etcd's own failover, 20 ms backoff doubling to 500 ms). Afterwards the
  nodes are left running until ``dead_after`` + 1 s after the kill and any round end
  they saw is reported (``spurious_ends``): a member failure must not look like a node's.
* ``rdzv``: at once, node 0 reports a worker failure (``report_failure(restart=True)``
  posts the round end); every other node waits for its keep-alive thread to see it (the
  watch resumes on another member if its stream broke), as an agent is woken, then calls
  ``next_rendezvous``; node 0 calls it right after posting. ``seconds``: from the kill
  until every node holds its rank in round 1 (the round must be 1 and the world size
  NODES).

Every handler is shut down at the end; the keys left under the run's prefix are counted.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

from pliant.rendezvous import RendezvousParameters
from pliant_etcd import EtcdRendezvousHandler
from pliant_etcd.testing import EtcdCluster

FORM_LIMIT_S = 30.0
MEASURE_LIMIT_S = 30.0
SHUTDOWN_LIMIT_S = 30.0
SIZE = 3


def in_threads(fns: list[Any], limit: float) -> list[Any]:
    """Run each function in its own thread, all at once; their results (an exception is
    returned, a thread still running after ``limit`` s gives None)."""
    results: list[Any] = [None] * len(fns)

    def run(i: int) -> None:
        try:
            results[i] = fns[i]()
        except Exception as exc:  # reported by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return results


def member_of(handler: Any, cluster: EtcdCluster) -> int:
    """Index of the member the handler's main store is connected to (bench-only peek)."""
    netloc = handler._store._client.endpoint_in_use.netloc
    return cluster.endpoints.index(netloc)


def choose_victim(victim: str, cluster: EtcdCluster, members: list[int]) -> int:
    leader = cluster.leader()
    if victim == "leader":
        return leader
    followers = [i for i in range(SIZE) if i != leader]
    on = Counter(members)
    return max(followers, key=lambda i: (on[i], -i))


def measure_op(cluster: EtcdCluster, handlers: list[Any], victim: int,
               run_id: str) -> dict[str, Any]:
    def probe(i: int) -> Any:
        handlers[i]._store.set(f"pliant/{run_id}/probe/{i}", b"1")
        return time.perf_counter()

    dead_after = handlers[0].timeouts.dead_after
    killed = time.perf_counter()
    cluster.kill(victim)
    done = in_threads([lambda i=i: probe(i) for i in range(len(handlers))], MEASURE_LIMIT_S)
    errors = [f"{type(r).__name__}: {r}" for r in done if isinstance(r, Exception)]
    times = [r - killed if isinstance(r, float) else None for r in done]
    time.sleep(max(0.0, killed + dead_after + 1.0 - time.perf_counter()))
    ends = [h.round_end() for h in handlers]
    return {"seconds": times, "errors": errors,
            "spurious_ends": [f"{e.reason}: {e.message}" for e in ends if e is not None],
            "watched_s": dead_after + 1.0}


def measure_rdzv(cluster: EtcdCluster, handlers: list[Any], victim: int) -> dict[str, Any]:
    woken = [threading.Event() for _ in handlers]
    for handler, event in zip(handlers, woken, strict=True):
        handler.on_change(event.set)

    def first() -> Any:
        handlers[0].report_failure({"message": "bench: a worker failed", "rank": 0},
                                   restart=True)
        return handlers[0].next_rendezvous(), time.perf_counter()

    def other(i: int) -> Any:
        if not woken[i].wait(MEASURE_LIMIT_S):
            raise TimeoutError(f"node {i} never saw the round end")
        noticed = time.perf_counter()
        return handlers[i].next_rendezvous(), time.perf_counter(), noticed

    killed = time.perf_counter()
    cluster.kill(victim)
    done = in_threads([first, *(lambda i=i: other(i) for i in range(1, len(handlers)))],
                      MEASURE_LIMIT_S)
    errors = [f"{type(r).__name__}: {r}" if r is not None else "no result in time"
              for r in done if not isinstance(r, tuple)]
    if errors:
        return {"seconds": None, "errors": errors}
    infos = [r[0] for r in done]
    return {"seconds": max(r[1] for r in done) - killed, "errors": [],
            "noticed_s": [r[2] - killed for r in done[1:]],
            "world_sizes": sorted({i.world_size for i in infos}),
            "rounds": sorted({i.round for i in infos})}


def main(argv: list[str]) -> None:
    victim_kind, measure, n = argv[0], argv[1], int(argv[2])
    cluster = EtcdCluster(SIZE)
    run_id = f"bench-j-{uuid.uuid4().hex[:8]}"
    params = RendezvousParameters("etcd", cluster.endpoint, run_id, n, n)
    handlers = [EtcdRendezvousHandler(params) for _ in range(n)]
    formed = in_threads([h.next_rendezvous for h in handlers], FORM_LIMIT_S)
    bad = [r for r in formed if r is None or isinstance(r, Exception)]
    if bad:
        print(json.dumps({"formed": False, "errors": [repr(r) for r in bad[:3]]}), flush=True)
        os._exit(0)
    members = [member_of(h, cluster) for h in handlers]
    victim = choose_victim(victim_kind, cluster, members)
    leader = cluster.leader()
    if measure == "op":
        result = measure_op(cluster, handlers, victim, run_id)
    else:
        result = measure_rdzv(cluster, handlers, victim)
    result.update({"formed": True, "victim": victim_kind, "measure": measure, "nodes": n,
                   "victim_was_leader": victim == leader, "members": members,
                   "on_victim": [m == victim for m in members]})
    begin = time.perf_counter()
    stuck = sum(r is None for r in in_threads([h.shutdown for h in handlers], SHUTDOWN_LIMIT_S))
    result["shutdown_s"], result["shutdown_stuck"] = time.perf_counter() - begin, stuck
    result["keys_left"] = ([k.decode() for k in cluster.keys(f"/pliant/{run_id}/")]
                           if not stuck else None)
    print(json.dumps(result), flush=True)
    cluster.stop()
    os._exit(0)  # a stuck handler's threads must not keep this process alive


if __name__ == "__main__":
    main(sys.argv[1:])

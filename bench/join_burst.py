"""Measure (d), one sample: N nodes join one rendezvous at once, as threads of this process.

Usage: ``python bench/join_burst.py LAUNCHER N LIMIT_S`` (LAUNCHER: pliant or
torchrun). Prints one JSON line: ``seconds`` (from releasing the N threads to
the last one holding its RendezvousInfo; null if not all did within LIMIT_S),
``finished`` (how many did), ``ops`` (store operations, by name, from the
release to that moment: ``round`` for those the node threads made inside
``next_rendezvous``, ``background`` for keep-alive threads) and
``world_sizes`` (as the nodes saw them).

One TCPStore server is started here; each node gets its own client connection
to it, opened before the clock starts, as an agent would have it:

* pliant: ``ElasticRendezvousHandler`` over a ``TCPRendezvousStore`` client,
  which is what ``pliant_c10d.C10dRendezvousHandler`` builds, except that the
  store is wrapped in :class:`CountingStore`;
* torchrun: ``DynamicRendezvousHandler.from_backend`` over a
  ``C10dRendezvousBackend`` on a ``TCPStore`` client, which is what torch's
  ``create_handler`` builds for ``--rdzv-backend c10d`` (``_create_tcp_store``:
  ``multi_tenant=True``, ``read_timeout`` 60 s), the backend wrapped to count
  ``get_state`` and ``set_state``.

Every handler is shut down at the end (in parallel, bounded), then the process
exits without waiting for threads a stuck handler may leave behind.
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # store waits time out by design

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pliant.rendezvous import RendezvousParameters
from pliant.rendezvous.conf import Timeouts
from pliant.rendezvous.elastic import ElasticRendezvousHandler
from pliant.rendezvous.store import Beat, RendezvousStore
from pliant_c10d import TCPRendezvousStore
from torch.distributed import TCPStore
from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
    C10dRendezvousBackend,
)
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
    DynamicRendezvousHandler,
)

HOST = "127.0.0.1"
RUN_ID = "bench"
SHUTDOWN_LIMIT_S = 30.0
NODE_THREAD = "node-"


class OpCounter:
    """Store operations by name, counted from :meth:`start` to :meth:`snapshot`.

    Operations made by the node threads (inside ``next_rendezvous``) are the
    round's; those of other threads (keep-alive, heartbeats) are counted apart.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._round: Counter[str] = Counter()
        self._background: Counter[str] = Counter()
        self._on = False

    def count(self, op: str) -> None:
        mine = threading.current_thread().name.startswith(NODE_THREAD)
        with self._lock:
            if self._on:
                (self._round if mine else self._background)[op] += 1

    def start(self) -> None:
        with self._lock:
            self._on = True

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"round": dict(self._round), "background": dict(self._background)}


class CountingStore(RendezvousStore):
    """A RendezvousStore that counts each operation, then lets ``inner`` do it.

    Its clones (the keep-alive thread's connection) count into the same counter.
    """

    def __init__(self, inner: RendezvousStore, ops: OpCounter) -> None:
        self.inner, self.ops = inner, ops
        self.endpoint = inner.endpoint
        self.expiring_beats = inner.expiring_beats  # etcd's leases stay leases

    def get(self, key: str) -> bytes | None:
        self.ops.count("get")
        return self.inner.get(key)

    def set(self, key: str, value: bytes) -> None:
        self.ops.count("set")
        self.inner.set(key, value)

    def add(self, key: str, amount: int) -> int:
        self.ops.count("add")
        return self.inner.add(key, amount)

    def compare_set(self, key: str, expected: bytes | None, desired: bytes) -> bytes:
        self.ops.count("compare_set")
        return self.inner.compare_set(key, expected, desired)

    def wait(self, keys: Sequence[str], timeout: float) -> bool:
        self.ops.count("wait")
        return self.inner.wait(keys, timeout)

    def beat(self, key: str, amount: int = 1) -> int:
        self.ops.count("beat")
        return self.inner.beat(key, amount)

    def last_beat(self, key: str) -> int | None:
        self.ops.count("last_beat")
        return self.inner.last_beat(key)

    def put_beat(self, key: str, value: bytes, left: bool = False) -> None:
        self.ops.count("put_beat")  # a signed beat (with a token)
        self.inner.put_beat(key, value, left)

    def mark_left(self, key: str) -> None:
        self.ops.count("mark_left")
        self.inner.mark_left(key)

    def read_beat(self, key: str) -> Beat:
        self.ops.count("read_beat")
        return self.inner.read_beat(key)

    def clone(self) -> CountingStore:
        return CountingStore(self.inner.clone(), self.ops)

    def close(self) -> None:
        self.inner.close()

    def delete_prefix(self, prefix: str) -> None:
        self.inner.delete_prefix(prefix)


class CountingBackend(C10dRendezvousBackend):
    """torch's c10d rendezvous backend, counting its two operations on the store."""

    def __init__(self, store: Any, run_id: str, ops: OpCounter) -> None:
        self.ops = ops
        super().__init__(store, run_id)

    def get_state(self) -> Any:
        self.ops.count("get_state")
        return super().get_state()

    def set_state(self, state: bytes, token: Any = None) -> Any:
        self.ops.count("set_state")
        return super().set_state(state, token)


def pliant_handlers(port: int, n: int, ops: OpCounter) -> list[Any]:
    params = RendezvousParameters("c10d", f"{HOST}:{port}", RUN_ID, n, n, is_host=False)
    timeouts = Timeouts.defaults()
    return [ElasticRendezvousHandler(
        "c10d", CountingStore(TCPRendezvousStore(HOST, port, timeouts.read_timeout), ops), params,
        timeouts)
        for _ in range(n)]


def torch_handlers(port: int, n: int, ops: OpCounter) -> list[Any]:
    handlers = []
    for _ in range(n):
        store = TCPStore(HOST, port, is_master=False, multi_tenant=True,
                         timeout=timedelta(seconds=60))
        backend = CountingBackend(store, RUN_ID, ops)
        handlers.append(DynamicRendezvousHandler.from_backend(RUN_ID, store, backend, n, n))
    return handlers


def main(argv: list[str]) -> None:
    launcher, n, limit = argv[0], int(argv[1]), float(argv[2])
    server = TCPStore(HOST, 0, is_master=True, wait_for_workers=False, multi_tenant=True)
    ops = OpCounter()
    build = pliant_handlers if launcher == "pliant" else torch_handlers
    handlers = build(server.port, n, ops)
    result = {"launcher": launcher, **burst(handlers, ops, limit)}
    if result["seconds"] is not None:
        shut_down(handlers)
    print(json.dumps(result), flush=True)
    os._exit(0)  # a stuck handler's threads must not keep this process alive


def burst(handlers: list[Any], ops: OpCounter, limit: float) -> dict[str, Any]:
    """Release one thread per handler at once, each calling ``next_rendezvous``; wait up to
    ``limit`` s for all. ``nodes``, ``finished``, ``seconds`` (release to the last node holding
    its RendezvousInfo; None unless all did), ``ops``, ``world_sizes``, ``errors`` (the first
    three)."""
    n = len(handlers)
    release = threading.Barrier(n + 1)
    finished_at: list[float] = []
    world_sizes: list[int] = []
    errors: list[str] = []
    all_done = threading.Event()
    lock = threading.Lock()

    def node(handler: Any) -> None:
        release.wait()
        try:
            info = handler.next_rendezvous()
        except Exception as exc:  # reported, and the sample fails
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
                if len(finished_at) + len(errors) == n:
                    all_done.set()
            return
        done = time.perf_counter()
        with lock:
            finished_at.append(done)
            world_sizes.append(info.world_size)
            if len(finished_at) + len(errors) == n:
                all_done.set()

    for i, handler in enumerate(handlers):
        threading.Thread(target=node, args=(handler,), name=f"{NODE_THREAD}{i}",
                         daemon=True).start()
    ops.start()
    release.wait()
    begin = time.perf_counter()
    all_done.wait(limit)
    with lock:
        return {"nodes": n, "finished": len(finished_at),
                "seconds": max(finished_at) - begin if len(finished_at) == n else None,
                "ops": ops.snapshot(), "world_sizes": sorted(set(world_sizes)),
                "errors": errors[:3]}


def shut_down(handlers: list[Any]) -> int:
    """``shutdown()`` every handler, all at once (one by one, each waits out its keep-alive);
    how many had not returned within :data:`SHUTDOWN_LIMIT_S`."""
    threads = [threading.Thread(target=h.shutdown, daemon=True) for h in handlers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + SHUTDOWN_LIMIT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return sum(t.is_alive() for t in threads)


if __name__ == "__main__":
    main(sys.argv[1:])

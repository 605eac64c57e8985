"""Figure (i), one sample: N nodes join one rendezvous at once, as threads of this process.

Usage: ``python bench/etcd_burst.py BACKEND N LIMIT_S ENDPOINT RUN_ID``. Prints one JSON
line: what ``join_burst.burst`` measures (``seconds`` from releasing the N threads to the
last one holding its RendezvousInfo, ``finished``, ``ops``, ``world_sizes``, ``errors``),
and ``etcd_requests`` (pliant-etcd only: the gRPC requests the etcd server received from
the release to that moment, by method, read from its ``/metrics`` before and after; a
stream message counts as one: a watch created or cancelled, a lease kept alive),
``shutdown_s`` (every handler's ``shutdown()``, all at once) and ``shutdown_stuck`` (how
many had not returned within ``join_burst.SHUTDOWN_LIMIT_S``).

BACKEND is one of:

* ``pliant-etcd``: ``ElasticRendezvousHandler`` over an ``EtcdRendezvousStore`` (etcd's v3
  API at ENDPOINT), which is what ``pliant_etcd.EtcdRendezvousHandler`` builds, the store
  wrapped in ``join_burst.CountingStore``;
* ``torch-etcd-v2``: torch's ``DynamicRendezvousHandler`` over its
  ``EtcdRendezvousBackend`` (python-etcd, etcd's v2 API at ENDPOINT, a server started with
  ``--enable-v2``), built as torch's ``etcd_rendezvous_backend.create_backend`` does, the
  backend counting ``get_state`` and ``set_state`` (each one HTTP request; a
  compare-and-set that loses is followed by a ``get_state``, counted too);
* ``pliant-c10d``: as ``join_burst.py pliant`` (ENDPOINT ``-``: a TCPStore server is
  started here).

Each node gets its own client connection, opened before the clock starts, as an agent
would have it. RUN_ID must be new for every sample: the etcd server outlives it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")  # store waits time out by design

import json
import re
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

from join_burst import (
    HOST,
    CountingStore,
    OpCounter,
    burst,
    pliant_handlers,
    shut_down,
)
from pliant.rendezvous import RendezvousParameters
from pliant.rendezvous.elastic import ElasticRendezvousHandler

BACKENDS = ("pliant-c10d", "pliant-etcd", "torch-etcd-v2")
#: torch's prefixes for its etcd-v2 backend (``create_backend``) and its read timeout.
TORCH_RDZV_PREFIX = "/torch/elastic/rendezvous"
TORCH_STORE_PREFIX = "/torch/elastic/store"
TORCH_READ_TIMEOUT_S = 60
_RECEIVED = re.compile(r'^grpc_server_msg_received_total\{grpc_method="(\w+)",'
                       r'grpc_service="([\w.]+)"[^}]*\} (\S+)$')


def etcd_requests(endpoint: str) -> Counter[str]:
    """Messages the etcd server at ``endpoint`` received so far, by gRPC method."""
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = _RECEIVED.match(line)
        if match and not match.group(2).startswith("grpc.health"):
            counts[match.group(1)] += int(float(match.group(3)))
    return counts


def etcd_handlers(endpoint: str, run_id: str, n: int, ops: OpCounter) -> list[Any]:
    from pliant_etcd import config_from
    from pliant_etcd.store import EtcdRendezvousStore

    params = RendezvousParameters("etcd", endpoint, run_id, n, n)
    return [ElasticRendezvousHandler(
        "etcd", CountingStore(EtcdRendezvousStore(config_from(params)), ops), params)
        for _ in range(n)]


def torch_v2_handlers(endpoint: str, run_id: str, n: int, ops: OpCounter) -> list[Any]:
    import etcd  # type: ignore[import-untyped]  # python-etcd; torch has a stub without it
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        DynamicRendezvousHandler,
    )
    from torch.distributed.elastic.rendezvous.etcd_rendezvous_backend import (
        EtcdRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.etcd_store import EtcdStore

    class CountingEtcdBackend(EtcdRendezvousBackend):
        def get_state(self) -> Any:
            ops.count("get_state")
            return super().get_state()

        def set_state(self, state: bytes, token: Any = None) -> Any:
            ops.count("set_state")
            return super().set_state(state, token)

    host, port = endpoint.rsplit(":", 1)
    handlers = []
    for _ in range(n):
        # What torch's _create_etcd_client and create_backend build for --rdzv-backend etcd-v2.
        client = etcd.Client(host, int(port), read_timeout=TORCH_READ_TIMEOUT_S,
                             protocol="http", cert=None, ca_cert=None, allow_reconnect=True)
        backend = CountingEtcdBackend(client, run_id, key_prefix=TORCH_RDZV_PREFIX)
        store = EtcdStore(client, TORCH_STORE_PREFIX)
        handlers.append(DynamicRendezvousHandler.from_backend(run_id, store, backend, n, n))
    return handlers


def main(argv: list[str]) -> None:
    backend, n, limit, endpoint, run_id = argv[0], int(argv[1]), float(argv[2]), argv[3], argv[4]
    ops = OpCounter()
    if backend == "pliant-c10d":
        from torch.distributed import TCPStore

        server = TCPStore(HOST, 0, is_master=True, wait_for_workers=False, multi_tenant=True)
        handlers = pliant_handlers(server.port, n, ops)
    elif backend == "pliant-etcd":
        handlers = etcd_handlers(endpoint, run_id, n, ops)
    elif backend == "torch-etcd-v2":
        handlers = torch_v2_handlers(endpoint, run_id, n, ops)
    else:
        raise SystemExit(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    before = etcd_requests(endpoint) if backend == "pliant-etcd" else None
    result: dict[str, Any] = {"backend": backend, **burst(handlers, ops, limit)}
    result["etcd_requests"] = (None if before is None
                               else dict(etcd_requests(endpoint) - before))
    result["shutdown_s"] = result["shutdown_stuck"] = None
    if result["seconds"] is not None:
        begin = time.perf_counter()
        result["shutdown_stuck"] = shut_down(handlers)
        result["shutdown_s"] = time.perf_counter() - begin
    print(json.dumps(result), flush=True)
    os._exit(0)  # a stuck handler's threads must not keep this process alive


if __name__ == "__main__":
    main(sys.argv[1:])

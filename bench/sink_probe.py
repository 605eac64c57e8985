"""One sample of (l) or (m), in a fresh process.

Usage: ``sink_probe.py cost KIND`` (KIND: ``metric`` or ``event``) or
``sink_probe.py throughput N``. The handlers are the ones this process's environment
gives, built by pliant on the first call: ``PLIANT_METRICS``/``PLIANT_EVENTS`` and their
``_CONF`` (the handlers themselves, in this process), or, when ``observability.py`` runs
the probe as the worker of ``pliant run``, ``PLIANT_RELAY`` (the relay to the agent, which
holds the handlers). Prints one JSON line.

cost: one untimed first call (it builds the handlers; its time is reported apart), then
:data:`BURSTS` bursts of :data:`BURST` calls timed one by one with ``perf_counter_ns``,
with a :data:`GAP_S` sleep after each burst (a training step between bursts: the sink
thread delivers then, as it would in training). Reports the median and the 99th
percentile of the per-call times, and the cost of an empty timing (two
``perf_counter_ns`` calls), which is included in every per-call time.

throughput: one value and ``metrics.flush()`` first (the handlers are built, the sink
thread runs), then N ``put_metric`` calls as fast as possible, then ``metrics.flush()`` (every
value reached the handlers), then each handler's own ``flush()`` where it has one (for
CloudWatch: every value sent, or given up on). Reports the times of each phase, from the
first call, and what the handlers say they sent and dropped.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

BURST = 100
BURSTS = 200
GAP_S = 0.002
FLUSH_LIMIT_S = 30.0
METRIC = "bench.value"
GROUP = "bench"


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def cost(kind: str) -> dict[str, object]:
    from pliant import events, metrics
    from pliant._delivery.dispatcher import dispatcher

    clock = time.perf_counter_ns
    handlers = metrics.get_handlers if kind == "metric" else events.get_handlers
    put = metrics.put_metric
    record = events.record
    group = os.environ.get("BENCH_GROUP", GROUP)

    begin = clock()
    if kind == "metric":
        put(METRIC, -1.0, group)
    else:
        events.record(events.Event("bench.first", events.EventSource.WORKER))
    first_ns = clock() - begin

    empty = []
    for _ in range(BURST * 20):
        t0 = clock()
        t1 = clock()
        empty.append(t1 - t0)
    timings: list[int] = []
    for burst in range(BURSTS):
        if kind == "metric":
            for i in range(BURST):
                value = float(i)
                t0 = clock()
                put(METRIC, value, group)
                t1 = clock()
                timings.append(t1 - t0)
        else:
            batch = [events.Event("bench.event", events.EventSource.WORKER,
                                  metadata={"step": burst * BURST + i}) for i in range(BURST)]
            for event in batch:
                t0 = clock()
                record(event)
                t1 = clock()
                timings.append(t1 - t0)
        time.sleep(GAP_S)
    flushed = metrics.flush(30.0)
    return {
        "handlers": [type(h).__name__ for h in handlers()],
        "calls": len(timings),
        "first_call_ns": first_ns,
        "median_ns": statistics.median(timings),
        "p99_ns": percentile(timings, 0.99),
        "max_ns": max(timings),
        "empty_timing_ns": statistics.median(empty),
        "flushed": flushed,
        "dispatcher_dropped": dispatcher.dropped,
    }


def throughput(n: int) -> dict[str, object]:
    from pliant import metrics
    from pliant._delivery.dispatcher import dispatcher

    put = metrics.put_metric
    group = os.environ.get("BENCH_GROUP", GROUP)
    put(METRIC, -1.0, "bench-warm-up")  # build the handlers, start the sink thread
    metrics.flush(FLUSH_LIMIT_S)
    begin = time.perf_counter()
    for i in range(n):
        put(METRIC, float(i), group)
    queued = time.perf_counter()
    flushed = metrics.flush(FLUSH_LIMIT_S)
    delivered = time.perf_counter()
    sent_all = True
    for handler in metrics.get_handlers():
        flush = getattr(handler, "flush", None)
        if flush is not None:
            sent_all = bool(flush(FLUSH_LIMIT_S)) and sent_all
    sent = time.perf_counter()
    handlers = metrics.get_handlers()
    return {
        "handlers": [type(h).__name__ for h in handlers],
        "n": n,
        "put_s": queued - begin,
        "delivered_s": delivered - begin,
        "sent_s": sent - begin,
        "dispatcher_flushed": flushed,
        "handler_flushed": sent_all,
        "dispatcher_dropped": dispatcher.dropped,
        "handler_sent": [getattr(h, "sent", None) for h in handlers],
        "handler_dropped": [getattr(h, "dropped", None) for h in handlers],
    }


def main() -> int:
    mode, arg = sys.argv[1], sys.argv[2]
    if os.environ.get("BENCH_STDERR_TO_DEVNULL"):  # the console handler prints to stderr
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (kept open to the end)
    result = cost(arg) if mode == "cost" else throughput(int(arg))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Puts metrics and records events from a worker, the way training code would.

Each worker puts ``step`` for steps 0..STEPS-1 (group ``train``), records a ``checkpoint``
event, then puts ``last`` right before it exits: values emitted just before exit must not
be lost. With FAIL_ONCE set, rank 1 fails on the first attempt, once rank 0 has exited
(a worker still running when its group fails is stopped, and what it had not sent yet
would be lost: the test is about values emitted right before a worker's own exit).
"""

import atexit
import os
import sys
import time
from pathlib import Path

from pliant import events, metrics

attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
if os.environ["RANK"] == "0":
    # Registered first, so it runs last at exit: after pliant has sent what is queued.
    atexit.register(Path(f"rank0-exited-{attempt}").touch)

steps = int(os.environ.get("STEPS", "5"))
for step in range(steps):
    metrics.put_metric("step", step, metric_group="train")
events.record(events.Event("checkpoint", events.EventSource.WORKER, metadata={"steps": steps}))
if os.environ.get("FAIL_ONCE") and os.environ["RANK"] == "1" and attempt == "0":
    deadline = time.monotonic() + 60
    while not Path(f"rank0-exited-{attempt}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.exit(3)
metrics.put_metric("last", 1, metric_group="train")

"""Puts metrics and records events from a worker, the way training code would.

Each worker puts ``step`` for steps 0..STEPS-1 (group ``train``), records a ``checkpoint``
event, then puts ``last`` right before it exits: values emitted just before exit must not
be lost. With FAIL_ONCE set, rank 1 fails on the first attempt.
"""

import os
import sys

from pliant import events, metrics

steps = int(os.environ.get("STEPS", "5"))
for step in range(steps):
    metrics.put_metric("step", step, metric_group="train")
events.record(events.Event("checkpoint", events.EventSource.WORKER, metadata={"steps": steps}))
if os.environ.get("FAIL_ONCE") and os.environ["RANK"] == "1" \
        and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
    sys.exit(3)
metrics.put_metric("last", 1, metric_group="train")

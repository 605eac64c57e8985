"""One worker of a multi-node job: records what it saw, then does what the test asks.

It writes OUT_DIR/<NODE>_<restart count>_<rank>_<pid>.json with its pid, the
label NODE of the agent that started it (the tests give each agent its own),
and the rendezvous part of its environment. Then:

* FAIL_RANK=R: on the first attempt (restart count 0), global rank R waits until
  every worker of the round has written its record, then exits with FAIL_CODE
  (default 1); the other workers of that attempt wait to be stopped. With
  FAIL_AFTER=PATH it waits for that file to exist first.
* EXIT_AT_WORLD=N: a worker whose WORLD_SIZE is not N waits to be stopped (the
  agent stops it when the round ends); with WORLD_SIZE N it exits 0.
* HOLD=1: wait to be stopped, whatever the round.

Otherwise it exits 0 at once. "Wait to be stopped" is a sleep of 120 s: the
agent ends it with SIGTERM (or the worker's death signal when the agent dies).
"""

import json
import os
import sys
import time

KEYS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_RUN_ID",
)

out = os.environ["OUT_DIR"]
node = os.environ.get("NODE", "node")
env = {k: os.environ.get(k) for k in KEYS}
rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
attempt = int(env["TORCHELASTIC_RESTART_COUNT"])
record = {"node": node, "pid": os.getpid(), "env": env}
name = os.path.join(out, f"{node}_{attempt}_{rank}_{os.getpid()}.json")
with open(name + ".tmp", "w") as f:
    json.dump(record, f)
os.replace(name + ".tmp", name)
print(f"node {node} rank {rank} of {world} attempt {attempt}", flush=True)


def round_started() -> bool:
    """Every worker of this round (same MASTER_PORT) has written its record."""
    seen = 0
    for entry in os.listdir(out):
        if entry.endswith(".json"):
            with open(os.path.join(out, entry)) as f:
                seen += json.load(f)["env"]["MASTER_PORT"] == env["MASTER_PORT"]
    return seen >= world


fail_rank = os.environ.get("FAIL_RANK")
if fail_rank is not None and attempt == 0:
    if rank == int(fail_rank):
        deadline = time.monotonic() + 60
        while not round_started() and time.monotonic() < deadline:
            time.sleep(0.02)
        while os.environ.get("FAIL_AFTER") and not os.path.exists(os.environ["FAIL_AFTER"]):
            time.sleep(0.02)
        print(f"rank {rank} fails on purpose", file=sys.stderr, flush=True)
        sys.exit(int(os.environ.get("FAIL_CODE", "1")))
    time.sleep(120)
elif os.environ.get("HOLD") == "1" or (
    os.environ.get("EXIT_AT_WORLD") and world != int(os.environ["EXIT_AT_WORLD"])
):
    time.sleep(120)

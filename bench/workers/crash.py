"""Measure (b): attempt 0 crashes rank 1 while rank 0 runs; attempt 1 records start times.

Usage: crash.py OUT_DIR. Files written (each holds one time.time() value):

* attempt 0: rank 0 writes ``ready-0`` then sleeps (it is stopped by the launcher);
  rank 1 waits for ``ready-0``, writes ``crash`` and calls ``os._exit(1)``;
* attempt 1: each rank writes ``start-<RANK>`` with the time taken at its first line.
"""
import time

T0 = time.time()  # the very first thing the worker does

import os  # noqa: E402
import sys  # noqa: E402

OUT = sys.argv[1]
RANK = os.environ["RANK"]


def write(name: str, value: float) -> None:
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(repr(value))
    os.replace(tmp, os.path.join(OUT, name))  # readers never see a half-written file


if os.environ["TORCHELASTIC_RESTART_COUNT"] != "0":
    write("start-" + RANK, T0)
elif RANK == "0":
    write("ready-0", time.time())
    time.sleep(120)  # running (sleeping) when rank 1 crashes
    os._exit(3)  # never reached in a sane run: the launcher stops this worker
else:
    ready = os.path.join(OUT, "ready-0")
    deadline = time.time() + 60
    while not os.path.exists(ready) and time.time() < deadline:
        time.sleep(0.002)
    time.sleep(0.05)  # rank 0 is now well inside its sleep
    write("crash", time.time())
    os._exit(1)

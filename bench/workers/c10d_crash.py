"""Measure (e): two agents with one worker each; rank 1 crashes once, after both started.

Usage: c10d_crash.py OUT_DIR. Files written (each holds one time.time() value):

* ``start-<RANK>``: the time taken at the very first line of a worker of the
  first group;
* ``crash``: the first group's rank 1 waits until rank 0 has started too, lets
  the agents settle for half a second, writes this and calls ``os._exit(1)``;
* ``restart-<RANK>``: the time taken at the very first line of a worker
  started after the crash, which then exits 0.

Which group a worker belongs to is told by the ``crash`` file, not by
``TORCHELASTIC_RESTART_COUNT``: torchrun counts restarts per agent, so the
agent whose worker did not fail restarts with a count of 0 again.
The first group's rank 0 sleeps until its agent stops it.
"""
import time

T0 = time.time()  # the very first thing the worker does

import os  # noqa: E402
import sys  # noqa: E402

OUT = sys.argv[1]
RANK = os.environ["RANK"]
SETTLE_S = 0.5  # both agents are past their start-up work when the crash comes


def write(name: str, value: float) -> None:
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(repr(value))
    os.replace(tmp, os.path.join(OUT, name))  # readers never see a half-written file


if os.path.exists(os.path.join(OUT, "crash")):
    write("restart-" + RANK, T0)
    sys.exit(0)
write("start-" + RANK, T0)
if RANK == "0":
    time.sleep(120)  # running (sleeping) when rank 1 crashes
    os._exit(3)  # never reached in a sane run: the launcher stops this worker
other = os.path.join(OUT, "start-0")
deadline = time.time() + 60
while not os.path.exists(other) and time.time() < deadline:
    time.sleep(0.002)
time.sleep(SETTLE_S)
write("crash", time.time())
os._exit(1)

"""Measure (hang): attempt 0 hangs rank 1 inside a deadline; attempt 1 records start times.

Usage: hang.py OUT_DIR [AFTER]. Files written (each holds one time.time() value):

* attempt 0: rank 0 writes ``pid-0`` (its pid) and ``ready-0``, sleeps, and writes
  ``stopped-0`` when the launcher stops it (SIGTERM); rank 1 waits for ``ready-0``, writes
  ``deadline`` (now + AFTER, taken just before the deadline is armed, so never later than
  it) and hangs inside ``pliant.timer.expires(after=AFTER)`` (AFTER defaults to 0.5 s);
* attempt 1: each rank writes ``start-<RANK>`` with the time taken at its first line.

No setup is needed for the deadline: ``expires`` writes to the pipe named in
``TORCHELASTIC_TIMER_FILE``, which pliant's default ``local`` timer sets (and torchrun's
file timer, with ``TORCHELASTIC_ENABLE_FILE_TIMER=1``).
"""
import time

T0 = time.time()  # the very first thing the worker does

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

OUT = sys.argv[1]
AFTER = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
RANK = os.environ["RANK"]


def write(name: str, value: float) -> None:
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(repr(value))
    os.replace(tmp, os.path.join(OUT, name))  # readers never see a half-written file


def stopped(signum: int, frame: object) -> None:
    write("stopped-0", time.time())
    os._exit(0)


if os.environ["TORCHELASTIC_RESTART_COUNT"] != "0":
    write("start-" + RANK, T0)
elif RANK == "0":
    signal.signal(signal.SIGTERM, stopped)
    write("pid-0", os.getpid())
    write("ready-0", time.time())
    time.sleep(120)  # running (sleeping) when rank 1 hangs
    os._exit(3)  # never reached in a sane run: the launcher stops this worker
else:
    from pliant.timer import expires

    ready = os.path.join(OUT, "ready-0")
    deadline = time.time() + 60
    while not os.path.exists(ready) and time.time() < deadline:
        time.sleep(0.002)
    write("deadline", time.time() + AFTER)
    with expires(after=AFTER, scope="hung-step"):
        time.sleep(120)  # hung
    os._exit(3)  # never reached: the launcher kills this worker

"""Measure (f): record when each worker starts, and with which WORLD_SIZE.

Usage: scale_up.py OUT_DIR. Each worker writes ``start-<WORLD_SIZE>-<RANK>``
holding the time.time() taken at its very first line, then waits until the
bench creates ``OUT_DIR/stop`` (or 300 s pass) and exits 0. Workers of the
2-node round are stopped by their agents when the third node is admitted.
"""
import time

T0 = time.time()  # the very first thing the worker does

import os  # noqa: E402
import sys  # noqa: E402

OUT = sys.argv[1]
name = f"start-{os.environ['WORLD_SIZE']}-{os.environ['RANK']}"
with open(os.path.join(OUT, name + ".tmp"), "w") as f:
    f.write(repr(T0))
os.replace(os.path.join(OUT, name + ".tmp"), os.path.join(OUT, name))
stop = os.path.join(OUT, "stop")
deadline = time.time() + 300
while not os.path.exists(stop) and time.time() < deadline:
    time.sleep(0.05)  # not timed: the bench waits for the start files only

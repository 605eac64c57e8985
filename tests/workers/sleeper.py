"""Writes its pid to OUT_DIR/pid_<rank>, traps SIGTERM/SIGINT (recording them), then sleeps."""

import os
import signal
import sys
import time

out = os.environ["OUT_DIR"]
rank = os.environ["RANK"]


def on_signal(signum, frame):
    with open(os.path.join(out, f"signal_{rank}"), "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(0)


if os.environ.get("TRAP", "1") == "1":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
if os.environ.get("IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.path.join(out, f"pid_{rank}.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(out, f"pid_{rank}.tmp"), os.path.join(out, f"pid_{rank}"))
time.sleep(float(os.environ.get("SLEEP", "60")))

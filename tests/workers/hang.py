"""Rank HANG_RANK hangs inside a 1 s deadline on attempt 0; everyone records what happened.

Files in OUT_DIR: ``pid_<attempt>_<rank>`` (the worker's pid), ``deadline`` (the hung
deadline's ``time.time()``), ``signal_<attempt>_<rank>`` (a signal the worker received,
when it was stopped rather than killed) and ``done_<attempt>_<rank>``.

CLIENT picks how the deadline is armed: ``pliant`` (default: ``pliant.timer.expires`` with no
setup), ``torch`` (torch's own ``FileTimerClient`` on ``TORCHELASTIC_TIMER_FILE``) or
``child`` (a child process of the worker arms it, with ``pliant.timer.expires``).
"""

import os
import signal
import subprocess
import sys
import time

out = os.environ["OUT_DIR"]
rank = int(os.environ["RANK"])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
client = os.environ.get("CLIENT", "pliant")


def write(name: str, value: object) -> None:
    with open(os.path.join(out, name + ".tmp"), "w") as f:
        f.write(str(value))
    os.replace(os.path.join(out, name + ".tmp"), os.path.join(out, name))


def on_term(signum, frame):
    write(f"signal_{attempt}_{rank}", signal.Signals(signum).name)
    sys.exit(0)


if client == "torch":
    from torch.distributed.elastic.timer import FileTimerClient, configure, expires

    configure(FileTimerClient(os.environ["TORCHELASTIC_TIMER_FILE"]))
else:
    from pliant.timer import expires

signal.signal(signal.SIGTERM, on_term)
write(f"pid_{attempt}_{rank}", os.getpid())
if attempt == 0 and rank == int(os.environ.get("HANG_RANK", "1")):
    if client == "child":
        code = ("import time; from pliant.timer import expires\n"
                "with expires(after=1, scope='child-step'): time.sleep(60)")
        subprocess.run([sys.executable, "-c", code])
        sys.exit(3)  # never reached: the agent kills this worker's whole process group
    write("deadline", time.time() + 1)
    with expires(after=1, scope="step"):
        time.sleep(60)  # hung
    sys.exit(3)  # never reached
if attempt == 0:
    time.sleep(60)  # still running when the other rank hangs; stopped by the restart
# Deadlines armed and released in time never fire, even once they would have passed.
for _ in range(3):
    with expires(after=0.2, scope="quick"):
        time.sleep(0.01)
time.sleep(0.4)
write(f"done_{attempt}_{rank}", 1)

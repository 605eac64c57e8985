"""Rank FAIL_RANK fails on the first FAIL_TIMES attempts; everyone records each start.

The failing rank raises ValueError (exit code 1), or exits with FAIL_CODE when set.
Other ranks sleep long enough to still be running when it fails.
"""

import os
import sys
import time

rank = int(os.environ["RANK"])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
out = os.environ["OUT_DIR"]
with open(os.path.join(out, f"start_{attempt}_{rank}"), "w") as f:
    f.write(os.environ["MASTER_PORT"])
print(f"rank {rank} attempt {attempt} port {os.environ['MASTER_PORT']}")
if rank == int(os.environ.get("FAIL_RANK", "1")) and attempt < int(os.environ["FAIL_TIMES"]):
    time.sleep(0.3)
    if os.environ.get("FAIL_CODE"):
        sys.exit(int(os.environ["FAIL_CODE"]))
    raise ValueError(f"injected failure on attempt {attempt}")
time.sleep(
    float(os.environ.get("OTHERS_SLEEP", "0.1"))
    if attempt < int(os.environ["FAIL_TIMES"])
    else 0.05
)

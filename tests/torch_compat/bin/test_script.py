"""Worker for the ports of torch's launcher tests (torch's ``launcher/bin/test_script.py``).

Checks that the agent set torchrun's variables and passed the parent's environment through,
then either fails (``--fail``) or touches ``<touch-file-dir>/<RANK>`` and writes into it the
variables it saw, as JSON, for the tests that look further.
"""

import argparse
import json
import os
from pathlib import Path

AGENT_VARS = [
    "LOCAL_RANK", "RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE",
    "WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID",
    "OMP_NUM_THREADS", "TEST_SENTINEL_PARENT", "TORCHELASTIC_ERROR_FILE",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fail", action="store_true", help="raise a RuntimeError")
    parser.add_argument("--touch-file-dir", "--touch_file_dir", help="where to touch RANK")
    args = parser.parse_args()
    # A missing variable is a KeyError: the worker fails, and so does the test.
    seen = {name: os.environ[name] for name in AGENT_VARS}
    for name, value in seen.items():
        print(f"{name} = {value}")
    if args.fail:
        raise RuntimeError("raising exception since --fail flag was set")
    path = Path(args.touch_file_dir) / os.environ["RANK"]
    path.write_text(json.dumps(seen))
    print(f"Success, created {path}")


if __name__ == "__main__":
    main()

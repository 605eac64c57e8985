"""Writes the worker's environment and argv to OUT_DIR/<attempt>_<rank>.json."""

import json
import os
import sys

out = os.environ["OUT_DIR"]
keys = [k for k in os.environ if k.startswith(("TORCH", "PLIANT", "OMP"))] + [
    "RANK",
    "LOCAL_RANK",
    "GROUP_RANK",
    "ROLE_RANK",
    "ROLE_NAME",
    "LOCAL_WORLD_SIZE",
    "WORLD_SIZE",
    "GROUP_WORLD_SIZE",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
]
record = {
    "env": {k: os.environ.get(k) for k in keys},
    "argv": sys.argv,
    "main_file": __file__,
    "name": __name__,
    "path0": sys.path[0],
}
name = f"{os.environ['TORCHELASTIC_RESTART_COUNT']}_{os.environ['RANK']}.json"
with open(os.path.join(out, name), "w") as f:
    json.dump(record, f)
print(f"hello from rank {os.environ['RANK']}")
print(f"stderr of rank {os.environ['RANK']}", file=sys.stderr)

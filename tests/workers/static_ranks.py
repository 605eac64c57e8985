"""Records what a worker of a multi-node job sees, then joins a gloo group and all_reduces.

Writes OUT_DIR/<restart count>_<RANK>.json with the ranks, world sizes, role and master
address of its environment, and the sum of RANK + 1 over the group. With FAIL_RANK=R,
global rank R exits 3 after the all_reduce on the first attempt (restart count 0).
"""

import json
import os

import torch
import torch.distributed as dist

KEYS = ("RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "ROLE_NAME", "LOCAL_WORLD_SIZE",
        "WORLD_SIZE", "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT")

record = {k: os.environ.get(k) for k in KEYS}
dist.init_process_group("gloo")
value = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(value)
record["allreduce"] = value.item()
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
path = os.path.join(os.environ["OUT_DIR"], f"{attempt}_{record['RANK']}.json")
with open(path + ".tmp", "w") as f:
    json.dump(record, f)
os.replace(path + ".tmp", path)
if os.environ.get("FAIL_RANK") == record["RANK"] and attempt == 0:
    os._exit(3)
dist.barrier()
dist.destroy_process_group()

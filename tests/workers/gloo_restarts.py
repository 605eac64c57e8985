"""Joins a gloo group via env:// on every attempt; rank 1 dies right after joining
on the first FAIL_TIMES attempts. Under torchrun the restarted workers can read the
dead worker's address from the previous attempt's store and fail to connect."""
import os

import torch
import torch.distributed as dist

attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
dist.init_process_group("gloo")
rank = dist.get_rank()
value = torch.tensor([rank + 1.0])
dist.all_reduce(value)
print(f"attempt {attempt} rank {rank} allreduce {value.item():.0f}", flush=True)
if rank == 1 and attempt < int(os.environ["FAIL_TIMES"]):
    os._exit(3)
dist.barrier()
dist.destroy_process_group()

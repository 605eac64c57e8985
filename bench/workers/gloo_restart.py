"""Measure (d): a 2-worker gloo job whose rank 1 dies once after the group formed.

On attempt 0 both ranks join the gloo group through env:// and all-reduce once,
then rank 1 exits with code 1. On attempt 1 both join again, all-reduce and
exit 0. Under torchrun the restarted workers can read the dead attempt's
addresses from the store it left behind, and the gloo connect is refused.
"""
import os

import torch
import torch.distributed as dist

attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
dist.init_process_group("gloo")
value = torch.ones(1)
dist.all_reduce(value)
if attempt == 0 and dist.get_rank() == 1:
    os._exit(1)
dist.barrier()
dist.destroy_process_group()

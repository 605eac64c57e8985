"""A real 2-worker gloo DDP training that checkpoints every step.

With --crash-at K, rank 1 dies (os._exit(3)) right after step K's checkpoint on
the first attempt; the restarted group resumes from the checkpoint. Rank 0
saves the final weights to --out. Data depends only on (rank, step), so a
resumed run must end with exactly the weights of an uninterrupted one.
"""

import argparse
import gc
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--crash-at", type=int, default=-1)
    # Seconds rank 1 waits before that crash (warm-restart tests: standbys get ready).
    parser.add_argument("--crash-delay", type=float, default=0.0)
    args = parser.parse_args()

    dist.init_process_group("gloo")  # env://, exactly as under torchrun
    rank = dist.get_rank()
    attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    start = 0
    if os.path.exists(args.checkpoint):
        state = torch.load(args.checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    print(f"rank {rank} attempt {attempt} starts at step {start}", flush=True)
    for step in range(start, args.steps):
        data = torch.Generator().manual_seed(1000 * step + rank)
        x = torch.randn(16, 8, generator=data)
        loss = torch.nn.functional.mse_loss(ddp(x), x[:, :4] * 2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0:
            tmp = args.checkpoint + ".tmp"
            torch.save(
                {"step": step + 1, "model": model.state_dict(), "opt": opt.state_dict()}, tmp
            )
            os.replace(tmp, args.checkpoint)
        dist.barrier()
        if step + 1 == args.crash_at and attempt == 0 and rank == 1:
            time.sleep(args.crash_delay)
            os._exit(3)
    if rank == 0:
        torch.save(model.state_dict(), args.out)
    # Free DDP (it holds the process group) before destroying the group: left to
    # interpreter teardown, gloo's threads can abort the process at exit.
    del ddp, model, opt
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

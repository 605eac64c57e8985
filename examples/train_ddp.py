"""A small, real DDP training: unchanged from what you would run under torchrun.

    pliant run --nproc-per-node 2 examples/train_ddp.py

Each worker joins the gloo process group through ``env://`` (MASTER_ADDR,
MASTER_PORT, RANK and WORLD_SIZE come from the launcher), trains a linear
model on its own shard of synthetic data, and rank 0 reports the loss.
"""

import argparse
import gc

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    true_w = torch.arange(1.0, 9.0).unsqueeze(1)
    model = DDP(torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(rank)
    for step in range(args.steps):
        x = torch.randn(32, 8, generator=data)
        loss = torch.nn.functional.mse_loss(model(x), x @ true_w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:3d}  loss {loss.item():.4f}  (world size {world})")
    # Free DDP (it holds the process group) before destroying the group: left to
    # interpreter teardown, gloo's threads can abort the process at exit.
    del model, opt
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

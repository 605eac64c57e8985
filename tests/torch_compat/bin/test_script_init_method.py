"""Joins a gloo process group with ``--init-method`` and checks the world size with an
all_reduce (the port of torch's ``bin/test_script_init_method.py``)."""

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--init-method", "--init_method", required=True)
    parser.add_argument("--world-size", "--world_size", type=int,
                        default=int(os.getenv("WORLD_SIZE", "-1")))
    parser.add_argument("--rank", type=int, default=int(os.getenv("RANK", "-1")))
    args = parser.parse_args()
    dist.init_process_group(backend="gloo", init_method=args.init_method,
                            world_size=args.world_size, rank=args.rank)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    one_hot = F.one_hot(torch.tensor(rank), num_classes=world_size)
    dist.all_reduce(one_hot)
    derived = int(torch.sum(one_hot).item())
    if derived != world_size:
        raise RuntimeError(f"Wrong world size derived. Expected: {world_size}, Got: {derived}")
    dist.destroy_process_group()
    print("Done")


if __name__ == "__main__":
    main()

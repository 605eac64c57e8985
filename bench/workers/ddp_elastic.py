"""Measure (r): a gloo DDP training that keeps stepping, checkpointing, at whatever world size.

Usage: ddp_elastic.py OUT_DIR. Files written in OUT_DIR (each holds one ``time.time()``
value; WS is the worker's ``WORLD_SIZE``):

* ``start-<WS>-<RANK>``: taken at the worker's very first line;
* ``step-<WS>-<RANK>``: taken when the worker's first training step at this world size
  completed (forward, backward with DDP's gradient all-reduce, ``optimizer.step()``);
* ``ckpt.pt``: rank 0 saves model, optimizer and step count after every step (written
  aside and renamed: a reader never sees half a file); a new group resumes from it.

The worker steps (a short sleep after each, so that the ranks do not keep a small
machine's CPUs busy between the moments measured) until ``OUT_DIR/stop`` exists for any
rank (agreed on by an all-reduce before each step), then exits 0. A peer that goes away
makes the all-reduce raise: the worker exits non-zero and its launcher restarts the group.
The process group's keys go under a prefix of the world size's own: torchrun's restarted
workers would otherwise read the previous group's gloo addresses from their agent's store
(see ``ddp_step.py``).
"""
import time

T0 = time.time()  # the very first thing the worker does

import os  # noqa: E402
import sys  # noqa: E402

OUT = sys.argv[1]
RANK = int(os.environ["RANK"])
WORLD_SIZE = int(os.environ["WORLD_SIZE"])
PAUSE_S = 0.02  # between steps


def write(name: str, value: float) -> None:
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(repr(value))
    os.replace(tmp, os.path.join(OUT, name))  # readers never see a half-written file


write(f"start-{WORLD_SIZE}-{RANK}", T0)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

store, rank, world_size = next(dist.rendezvous("env://"))
dist.init_process_group("gloo", store=dist.PrefixStore(f"world-{WORLD_SIZE}", store),
                        rank=rank, world_size=world_size)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
ckpt = os.path.join(OUT, "ckpt.pt")
step = 0
if os.path.exists(ckpt):
    state = torch.load(ckpt)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    step = state["step"]
ddp = DistributedDataParallel(model)
stepped = False
stop = os.path.join(OUT, "stop")
while True:
    # all ranks leave at the same step: one that left alone would fail its peer's all-reduce
    leave = torch.tensor([float(os.path.exists(stop))])
    dist.all_reduce(leave, op=dist.ReduceOp.MAX)
    if leave.item():
        break
    data = torch.Generator().manual_seed(1000 * step + RANK)
    x, y = torch.randn(16, 32, generator=data), torch.randn(16, 1, generator=data)
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(ddp(x), y).backward()
    optimizer.step()
    step += 1
    if not stepped:
        stepped = True
        write(f"step-{WORLD_SIZE}-{RANK}", time.time())
    if RANK == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
    time.sleep(PAUSE_S)
dist.destroy_process_group()

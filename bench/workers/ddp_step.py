"""Measures (p) and (q): a 2-rank gloo DDP training that checkpoints, crashes once, resumes.

Usage: ddp_step.py OUT_DIR SETTLE_S. Files written in OUT_DIR (each holds one
``time.time()`` value; ATTEMPT is 0 before the crash, 1 after it):

* ``start-<ATTEMPT>-<RANK>``: taken at the worker's very first line;
* ``step-<ATTEMPT>-<RANK>``: taken when the worker's first training step of the
  attempt completed (forward, backward with DDP's gradient all-reduce,
  ``optimizer.step()``), before anything else;
* ``crash``: attempt 0's rank 1, once it completed at least :data:`CRASH_STEP`
  steps and at least SETTLE_S seconds passed since its first step, writes this
  and calls ``os._exit(1)``;
* ``ckpt.pt``: rank 0 saves model, optimizer and step count after every step
  (written aside and renamed: a reader never sees half a file).

Each worker of either attempt: first line, ``import torch``,
``init_process_group("gloo")`` (on the env:// store, under a prefix of the attempt's
own: see below), a small MLP, the checkpoint loaded if
there is one, ``DistributedDataParallel(model)``, then steps (each followed by a
short sleep, so that two ranks do not keep a small machine's CPUs busy between
the moments that are measured). Attempt 1 resumes from the checkpoint and exits 0
:data:`STEPS_AFTER` steps later. SETTLE_S gives the launcher time to be ready
again after the start (a real job crashes minutes into its training, not seconds).

The attempt is told by the ``crash`` file, not by ``TORCHELASTIC_RESTART_COUNT``:
torchrun counts restarts per agent, so with two agents the agent whose worker
did not fail restarts its worker with a count of 0 again.
"""
import time

T0 = time.time()  # the very first thing the worker does

import os  # noqa: E402
import sys  # noqa: E402

OUT = sys.argv[1]
SETTLE_S = float(sys.argv[2])
RANK = int(os.environ["RANK"])
ATTEMPT = 1 if os.path.exists(os.path.join(OUT, "crash")) else 0
CRASH_STEP = 3  # attempt 0's rank 1 crashes after this many steps (at the earliest)
STEPS_AFTER = 2  # attempt 1 stops this many steps after the one it resumed from
PAUSE_S = 0.02  # between steps


def write(name: str, value: float) -> None:
    tmp = os.path.join(OUT, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(repr(value))
    os.replace(tmp, os.path.join(OUT, name))  # readers never see a half-written file


write(f"start-{ATTEMPT}-{RANK}", T0)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

# The process group's keys go under a prefix of their own for each attempt: torchrun's
# workers share their agent's store, where the dead attempt's gloo addresses are still
# found under the same keys (the restarted group then connects to dead peers and fails or
# hangs: figure (g)). A user who restarts gloo under torchrun has to do this; pliant's
# workers do the same, so that both run the same code.
store, rank, world_size = next(dist.rendezvous("env://"))
dist.init_process_group("gloo", store=dist.PrefixStore(f"attempt-{ATTEMPT}", store),
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
last = step + STEPS_AFTER if ATTEMPT == 1 else None
first_step_at = None
while last is None or step < last:
    data = torch.Generator().manual_seed(1000 * step + RANK)
    x, y = torch.randn(16, 32, generator=data), torch.randn(16, 1, generator=data)
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(ddp(x), y).backward()
    optimizer.step()
    step += 1
    if first_step_at is None:
        first_step_at = time.time()
        write(f"step-{ATTEMPT}-{RANK}", first_step_at)
    if RANK == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
    if (ATTEMPT == 0 and RANK == 1 and step >= CRASH_STEP
            and time.time() - first_step_at >= SETTLE_S):
        write("crash", time.time())
        os._exit(1)
    time.sleep(PAUSE_S)
dist.destroy_process_group()

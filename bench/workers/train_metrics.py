"""Measure (o): a small DDP training that reports a metric every step and an event every few.

Usage: train_metrics.py OUT_DIR STEPS. Each rank joins a gloo group (``env://``), trains
an MLP on its own shard of synthetic data for STEPS steps (one thread each), and per step
calls ``pliant.metrics.put_metric`` twice (``bench.loss`` and ``bench.step.ms``, group
``train``); every :data:`EVENT_EVERY` steps it records a ``bench.checkpoint`` event. The
handlers are whatever the agent passed on (``--metrics``/``--events``): none, or
CloudWatch. Each rank writes ``train-<RANK>`` (JSON): the seconds its training loop took
(after a barrier, to the end of the last step), and how many put_metric/record calls it
made.
"""
import gc
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from pliant import events, metrics
from torch.nn.parallel import DistributedDataParallel as DDP

EVENT_EVERY = 10
OUT, STEPS = sys.argv[1], int(sys.argv[2])


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                    torch.nn.Linear(256, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.Generator().manual_seed(rank)
    true_w = torch.randn(64, 1, generator=torch.Generator().manual_seed(0))
    puts = records = 0
    dist.barrier()
    begin = time.perf_counter()
    for step in range(STEPS):
        started = time.perf_counter()
        x = torch.randn(128, 64, generator=data)
        loss = torch.nn.functional.mse_loss(model(x), x @ true_w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        metrics.put_metric("bench.loss", loss.item(), "train")
        metrics.put_metric("bench.step.ms", (time.perf_counter() - started) * 1000.0, "train")
        puts += 2
        if step % EVENT_EVERY == 0:
            events.record(events.Event("bench.checkpoint", events.EventSource.WORKER,
                                       metadata={"step": step}))
            records += 1
    seconds = time.perf_counter() - begin
    with open(os.path.join(OUT, f"train-{rank}"), "w") as f:
        json.dump({"seconds": seconds, "puts": puts, "records": records}, f)
    # DDP holds the group: free it before destroying the group (left to interpreter
    # teardown, gloo's threads can abort the process at exit), as examples/train_ddp.py does.
    del model, opt
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

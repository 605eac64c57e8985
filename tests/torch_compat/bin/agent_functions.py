"""Function entrypoints for the port of torch's ``local_elastic_agent_test.py`` (torch's
module-level functions, rewritten). The agent pickles them by reference and each worker
imports this module, so it imports nothing heavy at the top: only the functions that use
torch import it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any


def _happy_function() -> None:
    return


def _sad_function() -> None:
    raise RuntimeError("sad because i throw")


def dummy_compute() -> Any:
    """A random 100 x 100 tensor."""
    import torch

    return torch.rand(100, 100)


def dummy_compute_simulate_rank_failure() -> Any:
    """Rank 1 kills itself (SIGKILL) on the first attempt; otherwise as dummy_compute."""
    if os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        os.kill(os.getpid(), 9)
    return dummy_compute()


def _check_master_port_addr_override(expected_master_addr: str,
                                     expected_master_port: int) -> None:
    actual = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
    if actual != (expected_master_addr, expected_master_port):
        raise RuntimeError(f"Expected addr: {expected_master_addr}:{expected_master_port}, "
                           f"got addr: {actual[0]}:{actual[1]}")


def _bipolar_function() -> None:
    if int(os.environ["RANK"]) % 2 == 0:
        _happy_function()
    else:
        _sad_function()


def _bipolar_sleep_function(sleep_sec: float) -> None:
    if int(os.environ["RANK"]) % 2 == 0:
        _sleep(sleep_sec)
    else:
        _sad_function()


def _dist_sum(wait: float = 0) -> None:
    """All-reduce the ranks over gloo and check the sum is 0 + 1 + ... + (WORLD_SIZE - 1)."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    dist.init_process_group(backend="gloo")
    t = torch.tensor(rank)
    time.sleep(wait)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    expected_sum = sum(range(world_size))
    actual = t.item()
    dist.destroy_process_group()
    if expected_sum != actual:
        raise RuntimeError(f"Expected rank sum {expected_sum}, got {actual}")


def _sleep(sleep_sec: float) -> int:
    time.sleep(sleep_sec)
    return int(os.environ["RANK"])


@dataclass
class RankInfo:
    rank: int
    role_rank: int
    group_rank: int
    role_world_size: int
    world_size: int


def _get_role_info() -> RankInfo:
    e = os.environ
    return RankInfo(int(e["RANK"]), int(e["ROLE_RANK"]), int(e["GROUP_RANK"]),
                    int(e["ROLE_WORLD_SIZE"]), int(e["WORLD_SIZE"]))


def _echo(msg: Any) -> Any:
    return msg


#: What torch's ``_check_env_function`` requires every worker to see.
AGENT_ENV_VARS = (
    "RANK", "LOCAL_RANK", "ROLE_RANK", "ROLE_NAME", "GROUP_RANK", "LOCAL_WORLD_SIZE",
    "ROLE_WORLD_SIZE", "WORLD_SIZE", "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_USE_AGENT_STORE", "TORCH_NCCL_ASYNC_ERROR_HANDLING",
)


def _check_env_function() -> None:
    missing = [var for var in AGENT_ENV_VARS if var not in os.environ]
    if missing:
        raise RuntimeError(f"missing from the worker's environment: {missing}")


def _check_env_value(key: str, expected: str) -> None:
    if key not in os.environ:
        raise RuntimeError(f"Environment variable {key} not found in os.environ")
    actual = os.environ[key]
    if expected != actual:
        raise RuntimeError(f"os.environ['{key}']={actual} does not equal the expected value: "
                           f"{expected}")


def _check_local_watchdog_setup(key: str, should_exist: bool) -> None:
    if should_exist and key not in os.environ:
        raise RuntimeError(f"Environment variable {key} not found in os.environ")
    if not should_exist and key in os.environ:
        raise RuntimeError(f"Environment variable {key} found in os.environ")


def _init_rpc(name: str) -> Any:
    import torch.distributed.rpc as rpc

    rpc.init_rpc(name=name, backend=rpc.BackendType.TENSORPIPE,
                 rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    return rpc


def rpc_master(msg: str) -> str:
    rpc = _init_rpc("master")
    ret = rpc.rpc_sync(to="worker", func=_echo, args=(msg,))
    rpc.shutdown()
    return f"{ret} from worker"


def rpc_worker() -> None:
    _init_rpc("worker").shutdown()

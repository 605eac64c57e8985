"""Function entrypoints for the Python API tests (imported by the spawned workers)."""

import os


def square_rank(offset: int) -> int:
    return int(os.environ["RANK"]) ** 2 + offset


def fail_on_rank_one() -> None:
    if os.environ["RANK"] == "1":
        raise RuntimeError("function worker failed")

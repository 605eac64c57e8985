"""Helpers shared by the end-to-end tests (``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

WORKERS = Path(__file__).parent / "workers"
PLIANT = str(Path(sys.executable).parent / "pliant")


def run_pliant(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``pliant ARGS...`` to completion, with its exit code and output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [PLIANT, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for something a subprocess does (a file appears); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

"""Helpers for tests/torch_compat/test_flags_*.py: the same command line under torchrun and
pliant, side by side (``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pliant_e2e import PLIANT

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def launch(launcher: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``torchrun ARGS...`` (launcher "torchrun") or ``pliant run ARGS...`` to completion."""
    argv = [TORCHRUN, *args] if launcher == "torchrun" else [PLIANT, "run", *args]
    return subprocess.run(argv, env={**os.environ, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def write_script(path: Path, body: str) -> Path:
    path.write_text(body)
    return path

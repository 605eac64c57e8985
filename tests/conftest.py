"""Fixtures for the end-to-end tests: the real ``pliant`` command in subprocesses."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pliant_e2e import PLIANT, WORKERS


@pytest.fixture
def start_pliant() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``pliant ARGS...`` in the background; whatever is left is killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [PLIANT, *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def workers() -> Path:
    """The folder of worker scripts: ``workers / "env_dump.py"``."""
    return WORKERS


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A folder the workers write their observations to (passed as OUT_DIR)."""
    path = tmp_path / "out"
    path.mkdir()
    return path

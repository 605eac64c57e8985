"""Fixtures for the end-to-end tests: the real ``pliant`` command in subprocesses."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pliant_e2e import PLIANT, WORKERS, Agent, free_port


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


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    return free_port()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """``start_agent(name, ARGS..., env=...)`` starts ``pliant ARGS...`` in the background as an
    :class:`Agent` (output in files under tmp_path/agents). Agents left running at teardown
    are killed (their workers die with them)."""
    log_dir = tmp_path / "agents"
    log_dir.mkdir()
    started: list[Agent] = []

    def start(name: str, *args: str, env: dict[str, str] | None = None) -> Agent:
        agent = Agent(name, args, env, log_dir)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.returncode is None:
            agent.kill()


@pytest.fixture
def pliant_store() -> Iterator[str]:
    """A standalone ``pliant store --port 0`` on 127.0.0.1; yields its endpoint HOST:PORT."""
    proc = subprocess.Popen([PLIANT, "store", "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("pliant store (c10d) listening on 127.0.0.1:"), (
            line + proc.stderr.read() if proc.stderr else line)
        port = int(line.split("listening on 127.0.0.1:")[1].split(";")[0])
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


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

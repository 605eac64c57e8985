"""Signals reach the workers, and a killed agent leaves no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pliant_e2e import pid_alive, wait_for

Start = Callable[..., subprocess.Popen[str]]


def _pids(out: Path) -> list[int]:
    wait_for(lambda: all((out / f"pid_{r}").exists() for r in (0, 1)))
    return [int((out / f"pid_{r}").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_and_agent_exits_conventionally(
    start_pliant: Start, workers: Path, out: Path, sig: signal.Signals
) -> None:
    agent = start_pliant(
        "run", "--nproc-per-node", "2", str(workers / "sleeper.py"), env={"OUT_DIR": str(out)}
    )
    pids = _pids(out)
    agent.send_signal(sig)
    agent.wait(timeout=30)
    assert agent.returncode == 128 + sig
    for rank in (0, 1):
        assert (out / f"signal_{rank}").read_text() == sig.name
    assert not any(pid_alive(p) for p in pids)


def test_worker_ignoring_sigterm_is_killed_after_shutdown_timeout(
    start_pliant: Start, workers: Path, out: Path
) -> None:
    agent = start_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--shutdown-timeout",
        "0.5",
        str(workers / "sleeper.py"),
        env={"OUT_DIR": str(out), "TRAP": "0", "IGNORE_TERM": "1"},
    )
    pids = _pids(out)
    agent.send_signal(signal.SIGTERM)
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 128 + signal.SIGTERM
    assert "sending SIGKILL" in stderr
    assert not any(pid_alive(p) for p in pids)


def test_unhandled_signal_list_is_respected(start_pliant: Start, workers: Path, out: Path) -> None:
    # Only SIGINT is handled: SIGTERM then takes Python's default action, which kills the
    # agent outright; the workers must still not outlive it.
    agent = start_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--signals-to-handle",
        "SIGINT",
        str(workers / "sleeper.py"),
        env={"OUT_DIR": str(out)},
    )
    pids = _pids(out)
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    assert agent.returncode == -signal.SIGTERM
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10)


def test_sigkilled_agent_leaves_no_worker(start_pliant: Start, workers: Path, out: Path) -> None:
    agent = start_pliant(
        "run", "--nproc-per-node", "2", str(workers / "sleeper.py"), env={"OUT_DIR": str(out)}
    )
    pids = _pids(out)
    assert all(pid_alive(p) for p in pids)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(timeout=10)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10)
    time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids)


def test_signal_during_a_restart_is_not_lost(start_pliant: Start, tmp_path: Path,
                                             out: Path) -> None:
    # Rank 1 fails; rank 0 ignores SIGTERM, so stopping the group takes the whole
    # --shutdown-timeout; the agent is told to stop right then, and must not restart.
    script = tmp_path / "slow_stop.py"
    script.write_text(
        "import os, signal, time\n"
        "out, rank = os.environ['OUT_DIR'], os.environ['RANK']\n"
        "attempt = os.environ['TORCHELASTIC_RESTART_COUNT']\n"
        "open(os.path.join(out, f'start_{attempt}_{rank}'), 'w').close()\n"
        "if rank == '1':\n"
        "    time.sleep(0.2)\n"
        "    open(os.path.join(out, 'failing'), 'w').close()\n"
        "    raise SystemExit(1)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "time.sleep(60)\n")
    agent = start_pliant("run", "--nproc-per-node", "2", "--max-restarts", "3",
                         "--shutdown-timeout", "2", str(script), env={"OUT_DIR": str(out)})
    wait_for(lambda: (out / "failing").exists())
    time.sleep(0.5)  # the agent is now waiting for rank 0 to stop
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    assert agent.returncode == 128 + signal.SIGTERM
    assert not (out / "start_1_0").exists() and not (out / "start_1_1").exists()


def test_second_signal_kills_without_waiting(start_pliant: Start, workers: Path,
                                             out: Path) -> None:
    agent = start_pliant("run", "--nproc-per-node", "2", "--shutdown-timeout", "60",
                         str(workers / "sleeper.py"),
                         env={"OUT_DIR": str(out), "TRAP": "0", "IGNORE_TERM": "1"})
    pids = _pids(out)
    agent.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert agent.poll() is None  # waiting for the workers, which ignore SIGTERM
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=10)  # far less than --shutdown-timeout
    assert agent.returncode == 128 + signal.SIGTERM
    assert not any(pid_alive(p) for p in pids)

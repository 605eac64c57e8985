"""Hang detection end to end: ``pliant.timer.expires`` in a worker, the agent's ``local`` timer.

A worker that hangs past its deadline is killed by the agent (that worker only), and
its death is an ordinary failure: the group restarts within ``--max-restarts``, and
the report says which timer expired.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pliant_e2e import WORKERS, run_pliant

HANG = str(WORKERS / "hang.py")


def read(out: Path, name: str) -> str:
    return (out / name).read_text()


def test_a_hung_worker_is_killed_and_the_group_restarts(out: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    result = run_pliant("run", "--nproc-per-node", "2", "--max-restarts", "1",
                        "--events", "jsonl", "--events-conf", f"jsonl.path={events}",
                        HANG, env={"OUT_DIR": str(out)})
    assert result.returncode == 0, result.stderr
    hung_pid = int(read(out, "pid_0_1"))
    assert f"timer 'step' of rank 1 (local rank 1, pid {hung_pid}) expired" in result.stderr
    assert "killing the worker (SIGKILL)" in result.stderr
    assert "worker group failed (rank 1 on " in result.stderr
    assert ": timer expired: scope 'step' passed its deadline" in result.stderr
    assert "restarting, attempt 2 of 2" in result.stderr
    # Only the hung worker was killed: its sibling was stopped by the group restart
    # (SIGTERM, which it handled); neither ever wrote a signal file on attempt 1.
    assert read(out, "signal_0_0") == "SIGTERM"
    assert not (out / "signal_0_1").exists()
    assert {p.name for p in out.glob("done_*")} == {"done_1_0", "done_1_1"}

    recorded = [json.loads(line) for line in events.read_text().splitlines()]
    watchdog = [e for e in recorded if e["name"] == "pliant.agent.watchdog"]
    assert len(watchdog) == 1, recorded
    assert watchdog[0]["source"] == "AGENT"
    meta = watchdog[0]["metadata"]
    assert (meta["pid"], meta["local_rank"], meta["scope"], meta["killed"]) == (
        hung_pid, 1, "step", True)
    assert abs(meta["expired_at"] - float(read(out, "deadline"))) < 0.1


def test_with_no_restart_left_the_report_names_the_timer(out: Path) -> None:
    result = run_pliant("run", "--nproc-per-node", "2", HANG, env={"OUT_DIR": str(out)})
    assert result.returncode == 137, result.stderr  # 128 + SIGKILL
    assert "Root cause (first observed failure):" in result.stderr
    assert "rank       : 1 (local rank 1)" in result.stderr
    assert f"killed by SIGKILL (signal 9, pid {read(out, 'pid_0_1')})" in result.stderr
    assert "message    : timer expired: scope 'step' passed its deadline" in result.stderr
    assert "Other failures" not in result.stderr  # rank 0 was stopped, it did not fail
    assert "Traceback" not in result.stderr


def test_torchs_file_timer_client_is_honoured(out: Path) -> None:
    result = run_pliant("run", "--max-restarts", "1", HANG,
                        env={"OUT_DIR": str(out), "HANG_RANK": "0", "CLIENT": "torch"})
    assert result.returncode == 0, result.stderr
    assert "timer expired: scope 'step' passed its deadline" in result.stderr
    assert (out / "done_1_0").exists()


def test_a_deadline_armed_by_a_workers_child_kills_that_worker(out: Path) -> None:
    result = run_pliant("run", HANG, env={"OUT_DIR": str(out), "HANG_RANK": "0",
                                          "CLIENT": "child"})
    assert result.returncode == 137, result.stderr
    assert "message    : timer expired: scope 'child-step' (armed by pid" in result.stderr
    assert "exit code 3" not in result.stderr  # the worker did not outlive its child


def test_without_a_timer_expires_does_nothing(out: Path) -> None:
    result = run_pliant("run", "--timer", "", "-m", "timeit", "-n", "1", "-r", "1",
                        "import os, time, pliant.timer as t\n"
                        "assert 'TORCHELASTIC_TIMER_FILE' not in os.environ\n"
                        "with t.expires(after=0.1): time.sleep(0.3)")
    assert result.returncode == 0, result.stderr


def test_expires_outside_pliant_is_a_no_op() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TORCHELASTIC_TIMER_FILE"}
    code = ("import time\nfrom pliant.timer import expires\n"
            "with expires(after=0.05):\n    time.sleep(0.2)\nprint('done')")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")

"""``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``: how long workers that ignore SIGTERM get before SIGKILL,
read as torchrun reads it; ``--shutdown-timeout`` (and ``PET_SHUTDOWN_TIMEOUT``) win over it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from flags_compat import TORCHRUN, write_script
from pliant_e2e import PLIANT, pid_alive, run_pliant, wait_for

STUBBORN = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_workers_ignoring_sigterm_are_killed_after_the_env_timeout(launcher: str,
                                                                   tmp_path: Path) -> None:
    script = write_script(tmp_path / "stubborn.py", STUBBORN)
    ready = tmp_path / "pid"
    argv = [TORCHRUN] if launcher == "torchrun" else [PLIANT, "run"]
    proc = subprocess.Popen([*argv, str(script), str(ready)],
                            env={**os.environ, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ready.exists, timeout=60)
        worker = int(ready.read_text())
        proc.send_signal(signal.SIGTERM)
        # The default (30 s) would outlast this wait: the worker was killed after about 1 s.
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    wait_for(lambda: not pid_alive(worker), timeout=10)


def test_precedence_flag_then_pet_then_torch_variable(tmp_path: Path) -> None:
    env = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "7"}
    shown = run_pliant("config", env=env, cwd=tmp_path).stdout
    assert "shutdown_timeout = 7.0  # env TORCH_ELASTIC_SHUTDOWN_TIMEOUT" in shown
    shown = run_pliant("config", env={**env, "PET_SHUTDOWN_TIMEOUT": "5"}, cwd=tmp_path).stdout
    assert "shutdown_timeout = 5.0  # env PET_SHUTDOWN_TIMEOUT" in shown
    shown = run_pliant("config", "--shutdown-timeout", "3", env=env, cwd=tmp_path).stdout
    assert "shutdown_timeout = 3.0  # flag --shutdown-timeout" in shown
    bad = run_pliant("config", env={"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "soon"}, cwd=tmp_path)
    assert bad.returncode == 2
    assert ("invalid shutdown_timeout 'soon' (from env TORCH_ELASTIC_SHUTDOWN_TIMEOUT)"
            in bad.stderr)

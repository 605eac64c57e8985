"""Helpers shared by the end-to-end tests (``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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


def without_own_lines(stderr: str) -> str:
    """``pliant run``'s stderr without pliant's own ``[pliant] `` lines (its start line comes
    before anything can fail at the rendezvous): what is left starts with the error."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("[pliant] "))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Agent:
    """One ``pliant run`` in the background. Its output goes to files, so that a test can
    wait for a line while it runs, and no pipe fills up however much it prints."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str] | None,
                 log_dir: Path) -> None:
        self.name = name
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen([PLIANT, *args], env={**os.environ, **(env or {})},
                                         stdout=stdout, stderr=stderr, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait(self, timeout: float = 120) -> int:
        """The exit code, once it exits (fails after ``timeout``, describing the agent)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout}s\n{self.describe()}"
                                 ) from None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the agent (its workers are in sessions of their own)."""
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the agent dies at once, as on a lost machine."""
        self.proc.kill()
        self.proc.wait()

    def describe(self) -> str:
        return (f"--- agent {self.name} (pid {self.pid}, exit {self.returncode}) ---\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}")

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, pid={self.pid}, returncode={self.returncode})"


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (an agent's workers and standbys)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def standby_pids(agent_pid: int) -> list[int]:
    """The agent's children started as warm standbys (handed a worker or not)."""
    found = []
    for pid in children(agent_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"pliant._bootstrap import standby" in cmdline:
            found.append(pid)
    return found


def gated_worker(tmp_path: Path, worker: str) -> tuple[str, Path]:
    """A script that runs ``worker``, then waits for a "gate" file before exiting 0: the
    script and the gate. A test looks at the running job, then creates the gate."""
    gate = tmp_path / "gate"
    script = tmp_path / "gated_worker.py"
    script.write_text(
        "import os, runpy, time\n"
        f"runpy.run_path({worker!r}, run_name='__main__')\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n")
    return str(script), gate

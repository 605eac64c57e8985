"""Starting pliant and torchrun the same way, waiting for them, reading what workers wrote.

Shared by ``run.py`` (single-node figures) and ``rendezvous.py`` (multi-node
figures). Both launchers are run from the environment of the Python running
the bench: ``<bin>/pliant run ...`` and ``<bin>/torchrun ...``, where ``<bin>``
is the directory of ``sys.executable``.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKERS = HERE / "workers"
BIN = Path(sys.executable).parent
LAUNCHERS = {
    "torchrun": [str(BIN / "torchrun")],
    "pliant": [str(BIN / "pliant"), "run"],
}
#: The Python module whose ``main()`` each launcher's console script calls.
ENTRY_MODULES = {"torchrun": "torch.distributed.run", "pliant": "pliant.cli"}
TIMEOUT_S = 300.0
SAMPLE_EVERY_S = 0.01  # how often a launcher's VmHWM is read (see peak_rss_mb)
#: Launcher settings (torchrun's PET_*, pliant's PLIANT_*) and an outer launcher's variables.
IGNORED_ENV_PREFIXES = ("PET_", "PLIANT_", "TORCHELASTIC_")
#: glibc resolver options for everything the bench starts; see :func:`resolver_env`.
RESOLVER_OPTIONS = "use-vc"


class LauncherError(RuntimeError):
    """A launcher did not run the job as it should have: the bench cannot go on."""


def resolver_env(system_resolver: bool) -> None:
    """Make reverse DNS lookups fail fast (unless ``system_resolver``), for both launchers.

    torch's TCPStore server looks up the name of every client that connects
    (``getnameinfo`` on the peer address, in its one event-loop thread), and
    so does each client. Loopback peers are ``::ffff:127.0.0.1``, which no
    hosts file names, so each connection asks DNS. Where the resolver drops
    UDP queries under a burst (this sandbox does from ~30 at once), glibc
    retries after 5 s, and the whole store stalls for 5 s: every client of
    it waits, whichever launcher it serves. ``use-vc`` sends the queries over
    TCP, which is not dropped; the answer (no name) is the same.
    """
    if not system_resolver and "RES_OPTIONS" not in os.environ:
        os.environ["RES_OPTIONS"] = RESOLVER_OPTIONS


def launcher_env() -> dict[str, str]:
    """This environment without settings that would change what a launcher does."""
    return {k: v for k, v in os.environ.items() if not k.startswith(IGNORED_ENV_PREFIXES)}


@dataclass
class Launch:
    """A launcher process started in a scratch directory, its output in ``log``."""

    launcher: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    def fail(self, problem: str) -> LauncherError:
        output = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
        return LauncherError(f"{self.launcher}: {problem}\n  command: {' '.join(self.argv)}\n"
                             f"--- its output (last lines) ---\n{output}")


def start(launcher: str, scratch: Path, args: list[str], name: str | None = None,
          argv: list[str] | None = None) -> Launch:
    """Start ``launcher ARGS`` with ``scratch`` as cwd; output goes to ``scratch/NAME.log``.

    ``argv`` replaces the launcher's command (the arguments still follow).
    """
    argv = [*(argv or LAUNCHERS[launcher]), *args]
    log = scratch / f"{name or launcher}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=scratch, env=launcher_env(), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Launch(launcher, argv, proc, log)


def failure(launches: list[Launch], problem: str) -> LauncherError:
    """A :class:`LauncherError` showing the last lines of every launcher's output (several
    agents of one job)."""
    parts = [problem]
    for launch in launches:
        output = "\n".join(launch.log.read_text(errors="replace").splitlines()[-25:])
        parts.append(f"--- {launch.log.name} (exit code {launch.proc.returncode}), command: "
                     f"{' '.join(launch.argv)}\n{output}")
    return LauncherError("\n".join(parts))


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for ``proc`` to exit; False on time-out.

    The exit is awaited on a pidfd: ``Popen.wait(timeout)`` polls with sleeps of
    up to 50 ms, which would add up to 50 ms to every timing.
    """
    if proc.returncode is None:  # the memory sampler may have reaped it already
        pidfd = os.pidfd_open(proc.pid)
        try:
            exited, _, _ = select.select([pidfd], [], [], timeout)
        finally:
            os.close(pidfd)
        if not exited:
            return False
    proc.wait()
    return True


def finish(launch: Launch, timeout: float = TIMEOUT_S) -> None:
    """Wait for a launcher and raise :class:`LauncherError` unless it exited 0."""
    if not wait_exit(launch.proc, timeout):
        launch.proc.kill()
        launch.proc.wait()
        raise launch.fail(f"timed out after {timeout:.0f} s")
    if launch.proc.returncode != 0:
        raise launch.fail(f"exited {launch.proc.returncode}")


def stop(launch: Launch, grace: float = 10.0) -> None:
    """End a launcher that is still running: SIGTERM (it stops its workers), then SIGKILL."""
    if launch.proc.poll() is not None:
        return
    launch.proc.send_signal(signal.SIGTERM)
    if not wait_exit(launch.proc, grace):
        launch.proc.kill()
        launch.proc.wait()


def read_time(launch: Launch, path: Path) -> float:
    """A ``time.time()`` value a worker wrote to ``path``."""
    try:
        return float(path.read_text())
    except (OSError, ValueError) as exc:
        raise launch.fail(f"worker file {path.name} missing or unreadable ({exc})") from exc


def peak_rss_mb(launch: Launch) -> float:
    """The launcher process's own VmHWM in MB (10^6 bytes), read from ``/proc/<pid>/status``
    every :data:`SAMPLE_EVERY_S` until it exits (VmHWM never decreases: the last value read is
    the peak); then :func:`finish`. Its workers are other processes, not counted."""
    status = Path(f"/proc/{launch.proc.pid}/status")
    peak_kb = 0
    while launch.proc.poll() is None:
        peak_kb = max(peak_kb, read_vmhwm_kb(status))
        time.sleep(SAMPLE_EVERY_S)
    finish(launch)
    if peak_kb == 0:
        raise launch.fail("exited before its VmHWM could be read")
    return peak_kb * 1024 / 1e6


def read_vmhwm_kb(status: Path) -> int:
    """VmHWM in kB, or 0 when the process is gone or a zombie (no memory left)."""
    try:
        text = status.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    """A TCP port nothing listens on now (for a store the launchers start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stats(values: list[float]) -> dict[str, object]:
    return {"samples": [round(v, 6) for v in values], "median": statistics.median(values),
            "min": min(values), "max": max(values)}

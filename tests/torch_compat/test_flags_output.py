"""Worker output as torchrun shows it: on a terminal, with nothing asked of the output, the
workers write to the terminal themselves (``isatty()`` is true: progress bars and colours
work); ``TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE`` sets the console prefix of the lines the
launcher passes on (under torchrun: the tee'd ones)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest
from flags_compat import TORCHRUN, launch, write_script
from pliant_e2e import PLIANT

TTY = """\
import os, sys
# One write per line (torchrun runs python -u), so that two ranks' lines never interleave.
os.write(1, f"out {os.environ['RANK']} tty={sys.stdout.isatty()}\\n".encode())
os.write(2, f"err {os.environ['RANK']} tty={sys.stderr.isatty()}\\n".encode())
"""


def on_terminal(argv: list[str], env: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[int, list[str]]:
    """Run ``argv`` with a pseudo-terminal as its stdin, stdout and stderr, as from a shell;
    its exit code and the lines the terminal showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower,
                            env={**os.environ, **(env or {})})
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([leader], [], [], left)[0]:
                continue
            try:
                data = os.read(leader, 1 << 16)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    return code, b"".join(chunks).decode(errors="replace").splitlines()


def _worker_lines(lines: list[str]) -> list[str]:
    return sorted(line.strip() for line in lines if " tty=" in line)


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_workers_keep_the_terminal(launcher: str, tmp_path: Path) -> None:
    script = write_script(tmp_path / "tty.py", TTY)
    argv = [TORCHRUN] if launcher == "torchrun" else [PLIANT, "run"]
    code, lines = on_terminal([*argv, "--nproc-per-node", "2", str(script)])
    assert code == 0, lines
    # No prefix: the launcher did not see these lines, the terminal did.
    assert _worker_lines(lines) == ["err 0 tty=True", "err 1 tty=True",
                                    "out 0 tty=True", "out 1 tty=True"]


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_tee_passes_lines_on_with_a_prefix(launcher: str, tmp_path: Path) -> None:
    script = write_script(tmp_path / "tty.py", TTY)
    argv = [TORCHRUN] if launcher == "torchrun" else [PLIANT, "run"]
    code, lines = on_terminal([*argv, "--tee", "1", str(script)])
    assert code == 0, lines
    shown = _worker_lines(lines)
    # stdout, tee'd, goes through a file the launcher reads; stderr keeps the terminal.
    assert len(shown) == 2 and "err 0 tty=True" in shown
    (out,) = (line for line in shown if line.endswith("out 0 tty=False"))
    assert out.startswith("[")


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_prefix_template_on_teed_lines(launcher: str, tmp_path: Path) -> None:
    script = write_script(tmp_path / "tty.py", TTY)
    result = launch(launcher, "--nproc-per-node", "2", "--tee", "3", str(script), env={
        "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "<${role_name}|${rank}|${local_rank}|${x}> "})
    assert result.returncode == 0, result.stderr
    out = sorted(line for line in result.stdout.splitlines() if " tty=" in line)
    err = sorted(line for line in result.stderr.splitlines() if " tty=" in line)
    # ${x} is no variable of torch's: it is left as it is (safe_substitute).
    assert out == ["<default|0|0|${x}> out 0 tty=False", "<default|1|1|${x}> out 1 tty=False"]
    assert err == ["<default|0|0|${x}> err 0 tty=False", "<default|1|1|${x}> err 1 tty=False"]


def test_pliant_prefixes_piped_output_and_a_template_replaces_its_prefix(
        tmp_path: Path) -> None:
    # A difference, on purpose (docs/migration.md): when its output is not a terminal (a log
    # file, a scheduler), pliant passes worker lines on with a [node:rank] prefix where
    # torchrun lets the workers write unprefixed; a template replaces that prefix.
    script = write_script(tmp_path / "tty.py", TTY)
    plain = launch("pliant", str(script))
    assert plain.returncode == 0, plain.stderr
    assert "[0:0] out 0 tty=False" in plain.stdout.splitlines()
    code, lines = on_terminal([PLIANT, "run", str(script)], env={
        "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[${role_name}${local_rank}]:"})
    assert code == 0, lines
    assert _worker_lines(lines) == ["[default0]:err 0 tty=False", "[default0]:out 0 tty=False"]


def test_a_warm_restarted_worker_keeps_the_terminal(tmp_path: Path) -> None:
    # The replacement comes from a warm standby, which is handed the terminal as a cold
    # worker would be.
    script = write_script(tmp_path / "warm.py", """\
import os, sys
warm = "torch" in sys.modules  # a warm standby imported it before the script ran
import torch
attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
os.write(1, f"attempt {attempt} warm={warm} tty={sys.stdout.isatty()}\\n".encode())
sys.exit(1 if attempt == "0" else 0)
""")
    code, lines = on_terminal([PLIANT, "run", "--max-restarts", "1", "--standby-delay", "0",
                               str(script)], timeout=120)
    assert code == 0, lines
    shown = [line.strip() for line in lines if line.startswith("attempt")]
    assert shown == ["attempt 0 warm=False tty=True", "attempt 1 warm=True tty=True"], lines

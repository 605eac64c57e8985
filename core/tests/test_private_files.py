"""What pliant leaves on disk for a run is the user's alone: another local user can neither
read a worker's logs or error file nor send timer requests or metrics to the agent."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from pliant._delivery.relay import Relay

WORKER = '''
import json, os, sys
from pliant import record
paths = {k: os.environ[k] for k in ("TORCHELASTIC_TIMER_FILE", "TORCHELASTIC_ERROR_FILE")}
json.dump(paths, open(os.environ["OUT"], "w"))

@record
def main():
    raise RuntimeError("the secret is in this traceback")

main()
'''


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_logs_error_files_and_the_timer_pipe_are_private(pliant, tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out, logs = tmp_path / "paths.json", tmp_path / "logs"
    os.umask(0o022)  # the usual umask: without care, files would be world-readable
    result = pliant("run", "--log-dir", str(logs), "--redirects", "3", str(worker),
                    env={"OUT": str(out)})
    assert result.returncode == 1, result
    paths = json.loads(out.read_text())
    error_file = Path(paths["TORCHELASTIC_ERROR_FILE"])
    assert mode(error_file) == 0o600, oct(mode(error_file))
    (run_dir,) = logs.iterdir()
    assert mode(run_dir) == 0o700
    assert mode(error_file.parent) == 0o700  # the rank's folder: its logs and error file
    assert list(error_file.parent.glob("*.log")) or list(error_file.parent.glob("std*")), \
        list(error_file.parent.iterdir())
    # The timer pipe is gone with its run; its folder was private while it lived (the worker
    # saw it): the name shows the folder mkdtemp made (0700).
    assert Path(paths["TORCHELASTIC_TIMER_FILE"]).parent.name.startswith("pliant-timer-")


def test_the_timer_pipe_is_private_while_it_lives() -> None:
    from pliant.timer.fifo import LocalTimerServer

    server = LocalTimerServer()
    try:
        path = server.worker_env()["TORCHELASTIC_TIMER_FILE"]
        assert mode(path) == 0o600 and mode(os.path.dirname(path)) == 0o700
    finally:
        server.stop()


def test_the_metrics_relay_socket_is_private() -> None:
    relay = Relay(on_metric=lambda _: None, on_event=lambda _: None)
    try:
        assert mode(relay.path) == 0o600
        assert mode(os.path.dirname(relay.path)) == 0o700
    finally:
        relay.stop()

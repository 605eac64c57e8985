"""torch's HealthCheckServer, served for real, and TORCHELASTIC_HEALTH_CHECK_PORT."""

from __future__ import annotations

import inspect
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pliant.agent import HealthCheckServer, create_healthcheck_server
from pliant_e2e import free_port, run_pliant, wait_for
from torch.distributed.elastic.agent.server import health_check_server as torch_health


def get(port: int) -> tuple[int, dict[str, Any]]:
    """GET the health check: its status and JSON body."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_signature_and_factory_are_torchs() -> None:
    theirs = list(inspect.signature(torch_health.HealthCheckServer).parameters)
    assert list(inspect.signature(HealthCheckServer).parameters)[:3] == theirs
    assert (list(inspect.signature(create_healthcheck_server).parameters)
            == list(inspect.signature(torch_health.create_healthcheck_server).parameters))

    def callback() -> int:
        return int(time.time())

    ours = create_healthcheck_server(callback, 0, 60)
    assert isinstance(ours, HealthCheckServer)
    assert ours.alive_callback is callback
    assert torch_health.create_healthcheck_server(callback, 0, 60).alive_callback is callback


def test_serves_200_while_alive_and_503_once_the_heartbeat_is_stale() -> None:
    last = {"time": time.time()}
    server = HealthCheckServer(lambda: last["time"], 0, timeout=30)
    server.start()
    try:
        status, body = get(server.port)
        assert status == 200 and body["alive"] is True and body["timeout_s"] == 30
        last["time"] = time.time() - 31
        status, body = get(server.port)
        assert status == 503 and body["alive"] is False and body["age_s"] >= 31
    finally:
        server.stop()
    with pytest.raises(OSError):
        get(server.port)  # stopped: nothing listens


# A worker that fails on its first attempt, then waits for the test to let it finish.
WORKER = """
import os, sys, time
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
if attempt == 0 and os.environ["LOCAL_RANK"] == "1":
    sys.exit(3)
open(os.path.join(sys.argv[1], f"ready{os.environ['LOCAL_RANK']}-{attempt}"), "w").close()
while not os.path.exists(os.path.join(sys.argv[1], "finish")):
    time.sleep(0.05)
"""


def test_agent_serves_its_health_during_a_real_run(tmp_path: Path, start_agent: Any) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    agent = start_agent("health", "run", "--nproc-per-node", "2", "--max-restarts", "1",
                        "--rdzv-id", "hc-run", str(script), str(tmp_path),
                        env={"TORCHELASTIC_HEALTH_CHECK_PORT": str(port)})
    wait_for(lambda: (tmp_path / "ready0-1").exists() and (tmp_path / "ready1-1").exists(),
             timeout=120)
    status, body = get(port)
    assert status == 200, body
    assert body["alive"] is True and body["state"] == "HEALTHY"
    assert body["restart_count"] == 1 and body["max_restarts"] == 1
    assert body["run_id"] == "hc-run" and body["role"] == "default"
    assert [w["local_rank"] for w in body["workers"]] == [0, 1]
    assert all(w["running"] for w in body["workers"])
    assert time.time() - body["last_progress_time"] <= body["timeout_s"]
    (tmp_path / "finish").write_text("")
    assert agent.wait(timeout=120) == 0
    with pytest.raises(OSError):
        get(port)  # the server stops with the agent


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "never.py"
    script.write_text("print('never')\n")
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_pliant("run", str(script), env={"TORCHELASTIC_HEALTH_CHECK_PORT": str(port)})
    assert done.returncode != 0 and "never" not in done.stdout
    assert (f"cannot serve the health check on port {port} (from env "
            "TORCHELASTIC_HEALTH_CHECK_PORT)") in done.stderr
    assert "Traceback" not in done.stderr
    bad = run_pliant("run", str(script), env={"TORCHELASTIC_HEALTH_CHECK_PORT": "http"})
    assert bad.returncode != 0
    assert "TORCHELASTIC_HEALTH_CHECK_PORT='http' is not a port" in bad.stderr


def test_agent_serves_the_health_check_server_it_is_given(tmp_path: Path) -> None:
    import threading

    from api_compat import python_spec
    from pliant.agent import LocalElasticAgent

    server = HealthCheckServer(lambda: int(time.time()), 0, 60)
    code = ("import os, time\n"
            f"while not os.path.exists({str(tmp_path / 'finish')!r}):\n"
            "    time.sleep(0.05)\n")
    agent = LocalElasticAgent(python_spec(code), None, health_check_server=server)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(agent.run()))
    thread.start()
    try:
        wait_for(lambda: server._server is not None)
        status, body = get(server.port)
        assert status == 200 and body["alive"] is True  # torch's callback, pliant's server
    finally:
        (tmp_path / "finish").write_text("")
        thread.join(timeout=60)
    assert results and not results[0].is_failed()

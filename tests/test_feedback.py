"""What ``pliant run`` prints of its own: the start line, the summary, the line a handled
signal prints, and ``--quiet``. Real ``pliant run`` processes and workers throughout."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pliant_e2e import PLIANT, Agent, pid_alive, run_pliant, wait_for

StartAgent = Callable[..., Agent]

#: A worker that says hello, and fails with FAIL_CODE on rank FAIL_RANK while its restart
#: count is below FAIL_UNTIL (for ever without it).
FLAKY = """\
import os, sys
rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
print(f"hello from rank {rank}", flush=True)
if rank == int(os.environ.get("FAIL_RANK", "-1")) and \\
        attempt < int(os.environ.get("FAIL_UNTIL", "1000")):
    sys.exit(int(os.environ.get("FAIL_CODE", "3")))
"""

#: A worker that records its pid and the signals it gets, ignores SIGINT and SIGTERM (only
#: SIGKILL ends it), and sleeps. Rank FAIL_RANK fails at once instead, after the others
#: have written their pids.
STUBBORN = """\
import os, signal, sys, time
out, rank = os.environ["OUT_DIR"], os.environ["RANK"]
attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
def note(signum, frame):
    open(os.path.join(out, f"got_{signal.Signals(signum).name}_{rank}"), "w").close()
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
with open(os.path.join(out, f"pid_{attempt}_{rank}.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(out, f"pid_{attempt}_{rank}.tmp"),
           os.path.join(out, f"pid_{attempt}_{rank}"))
if rank == os.environ.get("FAIL_RANK"):
    while not os.path.exists(os.path.join(out, "pid_0_0")):
        time.sleep(0.01)
    sys.exit(1)
while True:
    time.sleep(1)
"""

START = re.compile(r"^\[pliant\] pliant \S+: starting (\d+) workers? (.*)$")
WALL = r"\d+(?:\.\d+ s| min \d\d s| h \d\d min)"


@pytest.fixture
def flaky(tmp_path: Path) -> Path:
    path = tmp_path / "flaky.py"
    path.write_text(FLAKY)
    return path


@pytest.fixture
def stubborn(tmp_path: Path) -> Path:
    path = tmp_path / "stubborn.py"
    path.write_text(STUBBORN)
    return path


def _own(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[pliant] ")]


def _pids(out: Path, attempt: int = 0, ranks: tuple[int, ...] = (0, 1)) -> list[int]:
    wait_for(lambda: all((out / f"pid_{attempt}_{r}").exists() for r in ranks))
    return [int((out / f"pid_{attempt}_{r}").read_text()) for r in ranks]


# -- the start line -----------------------------------------------------------------------


def test_start_line_comes_before_any_worker_starts(tmp_path: Path) -> None:
    # The workers wait for the test's go: the start line must be out before they print, and
    # before they are even asked to go, i.e. it does not wait for them.
    script = tmp_path / "waits.py"
    script.write_text("import os, time\n"
                      "while not os.path.exists(os.environ['GO']):\n"
                      "    time.sleep(0.01)\n"
                      "print('worker', os.environ['RANK'], 'running', flush=True)\n")
    go = tmp_path / "go"
    proc = subprocess.Popen([PLIANT, "run", "--nproc-per-node", "2", str(script)],
                            env={**os.environ, "GO": str(go)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "pliant printed nothing within 60 s"
        first = proc.stdout.readline().rstrip("\n")
        match = START.match(first)
        assert match, first
        assert match[1] == "2"
        assert "(rendezvous embedded, run '" in match[2], first
        go.touch()
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, rest
    assert "[0:0] worker 0 running" in rest and "[0:1] worker 1 running" in rest


def test_start_line_names_the_run_id_restarts_and_the_log_folder(tmp_path: Path,
                                                                  flaky: Path) -> None:
    logs = tmp_path / "logs"
    result = run_pliant("run", "--nproc-per-node", "2", "--rdzv-id", "job7", "--max-restarts",
                        "2", "--log-dir", str(logs), "-r", "3", str(flaky))
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    match = START.match(first)
    assert match, result.stderr
    assert match[2].startswith("(rendezvous embedded, run 'job7', up to 2 restarts); "
                               "worker logs in "), first
    named = Path(first.split("; worker logs in ", 1)[1])
    # The folder named is the one that holds this run's logs.
    assert named.parent == logs and named.name.startswith("job7_")
    assert (named / "attempt_0" / "1" / "stdout.log").read_text() == "hello from rank 1\n"
    assert [p.name for p in logs.iterdir()] == [named.name]  # and the only one
    assert "worker logs: " not in result.stderr  # said once, in the start line


def test_start_line_on_several_nodes_names_the_endpoint_and_the_node_count(
        start_agent: StartAgent, pliant_store: str, flaky: Path) -> None:
    args = ("run", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", pliant_store,
            "--rdzv-id", f"fb{os.getpid()}", str(flaky))
    agents = [start_agent(f"node{i}", *args) for i in (0, 1)]
    for agent in agents:
        assert agent.wait(timeout=120) == 0, agent.describe()
    for agent in agents:
        first = agent.stderr.splitlines()[0]
        assert first.endswith(f"starting 1 worker on this node, one of 2 nodes (rendezvous "
                              f"c10d at {pliant_store}, run 'fb{os.getpid()}')"), \
            agent.describe()
        assert re.search(rf"\[pliant\] succeeded in {WALL}, on attempt 1 of 1 \(restart "
                         r"count 0\)$", agent.stderr.rstrip("\n").splitlines()[-1]), \
            agent.describe()


def test_start_line_comes_before_the_rendezvous_waits_for_other_nodes(
        start_agent: StartAgent, pliant_store: str, flaky: Path) -> None:
    # Nobody else joins: the start line is out all the same, and a signal ends the wait.
    agent = start_agent("lone", "run", "--nnodes", "2:3", "--nproc-per-node", "2",
                        "--rdzv-backend", "c10d", "--rdzv-endpoint", pliant_store,
                        "--rdzv-id", f"fbw{os.getpid()}", str(flaky))
    wait_for(lambda: "starting" in agent.stderr)
    first = agent.stderr.splitlines()[0]
    assert first.endswith(f"starting 2 workers on this node, one of 2-3 nodes (rendezvous "
                          f"c10d at {pliant_store}, run 'fbw{os.getpid()}')"), agent.describe()
    assert agent.returncode is None  # still waiting for a second node
    wait_for(lambda: "1 joined (min 2, max 3)" in agent.stderr)  # in the rendezvous now
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 128 + signal.SIGTERM, agent.describe()
    assert agent.stdout == ""  # no worker ever ran
    assert re.fullmatch(rf"\[pliant\] interrupted by SIGTERM in {WALL}, on attempt 1 of 1 "
                        r"\(restart count 0\); exit code 143", _own(agent.stderr)[-1]), \
        agent.describe()


def test_a_configuration_mistake_comes_without_a_start_line(flaky: Path) -> None:
    result = run_pliant("run", "--rdzv-backend", "no-such-backend", "--rdzv-endpoint", "x:1",
                        str(flaky))
    assert result.returncode == 2
    assert result.stderr.startswith("pliant: error: unknown rendezvous backend "
                                    "'no-such-backend'"), result.stderr
    assert "[pliant]" not in result.stderr


# -- the summary --------------------------------------------------------------------------


def test_summary_after_a_success(flaky: Path) -> None:
    result = run_pliant("run", "--nproc-per-node", "2", "--max-restarts", "2", str(flaky))
    assert result.returncode == 0, result.stderr
    own = _own(result.stderr)
    assert len(own) == 2, result.stderr  # the start line and the summary, nothing else
    assert re.fullmatch(rf"\[pliant\] succeeded in {WALL}, on attempt 1 of 3 \(restart "
                        r"count 0\)", own[1]), result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == own[1]


def test_summary_after_a_restart_that_succeeded(flaky: Path) -> None:
    result = run_pliant("run", "--nproc-per-node", "2", "--max-restarts", "2", str(flaky),
                        env={"FAIL_RANK": "1", "FAIL_UNTIL": "1"})
    assert result.returncode == 0, result.stderr
    own = _own(result.stderr)
    assert "restarting, attempt 2 of 3 (restart count 1)" in own[1], result.stderr
    assert re.fullmatch(rf"\[pliant\] succeeded in {WALL}, on attempt 2 of 3 \(restart "
                        r"count 1\)", own[-1]), result.stderr


def test_summary_after_a_failure_names_the_rank_the_attempts_and_the_exit_code(
        flaky: Path) -> None:
    result = run_pliant("run", "--nproc-per-node", "2", "--max-restarts", "1", str(flaky),
                        env={"FAIL_RANK": "1", "FAIL_CODE": "7"})
    assert result.returncode == 7, result.stderr
    lines = result.stderr.rstrip("\n").splitlines()
    host = socket.gethostname()
    assert re.fullmatch(rf"\[pliant\] failed in {WALL}, on attempt 2 of 2 \(restart count 1\): "
                        rf"rank 1 on {re.escape(host)} exited with code 7; exit code 7",
                        lines[-1]), result.stderr
    # Last: after the failure report, which ends with its rule.
    assert lines[-2] == "=" * 72 and "flaky.py FAILED" in result.stderr


def test_summary_names_a_signal_that_killed_the_worker_and_torchruns_exit_code(
        tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text("import os, signal\n"
                      "if os.environ['RANK'] == '0':\n"
                      "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = run_pliant("run", "--nproc-per-node", "2", "--exit-code", "torchrun", str(script))
    assert result.returncode == 1, result.stderr
    last = result.stderr.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(rf"\[pliant\] failed in {WALL}, on attempt 1 of 1 \(restart count 0\): "
                        r"rank 0 on \S+ killed by SIGKILL; exit code 1", last), result.stderr


# -- --quiet ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["-q", "--quiet", "--qui", "env", "file"])
def test_quiet_hides_pliants_own_lines_but_not_the_failure(tmp_path: Path, flaky: Path,
                                                           how: str) -> None:
    flags = [how] if how.startswith("-") else []
    env = {"FAIL_RANK": "0", "FAIL_CODE": "5"}
    if how == "env":
        env["PLIANT_QUIET"] = "1"
    if how == "file":
        (tmp_path / "pliant.toml").write_text("quiet = true\n")
    result = run_pliant("run", *flags, "--nproc-per-node", "2", "--max-restarts", "1",
                        str(flaky), cwd=tmp_path, env=env)
    assert result.returncode == 5, result.stderr
    assert "[pliant]" not in result.stderr, result.stderr  # no start, restart or summary
    assert "flaky.py FAILED (run " in result.stderr and "exit code 5" in result.stderr
    assert "[0:0] hello from rank 0" in result.stdout  # the workers' output is theirs


def test_quiet_still_shows_warnings(flaky: Path) -> None:
    result = run_pliant("run", "-q", "--rdzv-conf", "join_timout=5", str(flaky))
    assert result.returncode == 0, result.stderr
    assert _own(result.stderr) == [
        "[pliant] rdzv_conf key 'join_timout' (from flag --rdzv-conf) is not a setting of "
        "rendezvous backend 'embedded'; ignored (did you mean 'join_timeout'?)"]


def test_quiet_is_a_setting_pliant_config_shows() -> None:
    result = run_pliant("config", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "quiet = True  # flag --quiet" in result.stdout.splitlines()


# -- signals ------------------------------------------------------------------------------


def test_ctrl_c_says_what_happens_next_and_a_second_one_kills_at_once(
        start_agent: StartAgent, stubborn: Path, out: Path) -> None:
    agent = start_agent("a", "run", "--nproc-per-node", "2", "--shutdown-timeout", "300",
                        str(stubborn), env={"OUT_DIR": str(out)})
    pids = _pids(out)
    agent.send_signal(signal.SIGINT)
    line = ("[pliant] received SIGINT, passed on to the workers; waiting up to 300 s "
            "(shutdown_timeout from flag --shutdown-timeout) for them to exit, then SIGKILL; "
            "Ctrl-C again kills them at once")
    wait_for(lambda: line in agent.stderr)
    wait_for(lambda: all((out / f"got_SIGINT_{r}").exists() for r in (0, 1)))
    assert agent.returncode is None and all(pid_alive(p) for p in pids)  # they ignore it
    agent.send_signal(signal.SIGINT)
    assert agent.wait(timeout=60) == 130, agent.describe()  # far less than the 300 s
    assert not any(pid_alive(p) for p in pids)
    own = _own(agent.stderr)
    assert own[1:3] == [line, "[pliant] second signal (SIGINT): killing the workers now "
                              "(SIGKILL)"], agent.describe()
    assert re.fullmatch(rf"\[pliant\] interrupted by SIGINT in {WALL}, on attempt 1 of 1 "
                        r"\(restart count 0\); exit code 130", own[-1]), agent.describe()
    assert "still running after signal" not in agent.stderr  # the line above said it
    assert len(own) == 4, agent.describe()


@pytest.mark.parametrize("env, where", [
    ({}, "the default of --shutdown-timeout"),
    ({"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "45"}, "shutdown_timeout from env "
                                               "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"),
], ids=["default", "torch-env"])
def test_sigterm_from_a_scheduler_prints_the_same_line(
        start_agent: StartAgent, workers: Path, out: Path, env: dict[str, str],
        where: str) -> None:
    agent = start_agent("a", "run", "--nproc-per-node", "2", str(workers / "sleeper.py"),
                        env={"OUT_DIR": str(out), **env})
    wait_for(lambda: all((out / f"pid_{r}").exists() for r in (0, 1)))
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=60) == 128 + signal.SIGTERM, agent.describe()
    timeout = env.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "30")
    assert (f"[pliant] received SIGTERM, passed on to the workers; waiting up to {timeout} s "
            f"({where}) for them to exit, then SIGKILL; a second signal kills them at once"
            in agent.stderr), agent.describe()
    assert "interrupted by SIGTERM in " in _own(agent.stderr)[-1], agent.describe()


def test_ctrl_c_while_a_failed_group_stops_also_kills_at_once_the_second_time(
        start_agent: StartAgent, stubborn: Path, out: Path) -> None:
    # Rank 1 fails; rank 0 ignores the SIGTERM that stops the group, so the agent waits out
    # --shutdown-timeout before the restart. A Ctrl-C then says so, and a second one ends it.
    agent = start_agent("a", "run", "--nproc-per-node", "2", "--max-restarts", "3",
                        "--shutdown-timeout", "300", str(stubborn),
                        env={"OUT_DIR": str(out), "FAIL_RANK": "1"})
    pids = _pids(out)
    wait_for(lambda: (out / "got_SIGTERM_0").exists())  # the agent is stopping the group
    agent.send_signal(signal.SIGINT)
    line = ("[pliant] received SIGINT while the workers stop; waiting up to 300 s "
            "(shutdown_timeout from flag --shutdown-timeout) for them to exit, then SIGKILL; "
            "Ctrl-C again kills them at once")
    wait_for(lambda: line in agent.stderr)
    assert agent.returncode is None and pid_alive(pids[0])
    agent.send_signal(signal.SIGINT)
    assert agent.wait(timeout=60) == 130, agent.describe()  # far less than the 300 s
    assert not any(pid_alive(p) for p in pids)
    assert not (out / "pid_1_0").exists() and not (out / "pid_1_1").exists()  # no restart
    assert "; restarting" not in agent.stderr, agent.describe()
    assert (f"[pliant] [default] worker group failed (rank 1 on {socket.gethostname()}: exited "
            "with code 1); not restarting: stopping on SIGINT") in agent.stderr, agent.describe()
    assert re.fullmatch(rf"\[pliant\] interrupted by SIGINT in {WALL}, on attempt 1 of 4 "
                        r"\(restart count 0\); exit code 130", _own(agent.stderr)[-1]), \
        agent.describe()

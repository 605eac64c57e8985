"""Warm restart: a standby worker runs the job exactly as a cold one, and never costs one.

Standbys here preload ``json`` (cheap) so these tests do not depend on torch's import
time; the DDP test uses the default (``auto``: torch and what DDP imports).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import torch
from pliant_e2e import WORKERS, pid_alive, run_pliant, standby_pids, wait_for

#: A worker that records what it sees; attempt 0 fails after a while (the standbys get
#: ready meanwhile), attempt 1 succeeds.
RECORDER = textwrap.dedent("""
    import json, os, sys, time
    record = {"name": __name__, "argv": sys.argv, "path0": sys.path[0], "file": __file__,
              "env": dict(os.environ), "cwd": os.getcwd()}
    attempt, rank = os.environ["TORCHELASTIC_RESTART_COUNT"], os.environ["RANK"]
    print(f"out {rank} {attempt}")
    print(f"err {rank} {attempt}", file=sys.stderr)
    with open(os.path.join(os.environ["OUT_DIR"], f"rec_{attempt}_{rank}.json"), "w") as f:
        json.dump(record, f)
    if attempt == "0":
        time.sleep(float(os.environ.get("FAIL_AFTER", "2")))
        sys.exit(3)
""")


def started_events(path: Path) -> list[dict[str, object]]:
    """The metadata of the agent's worker_started events, in order."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["metadata"] for r in records if r["name"] == "pliant.agent.worker_started"]


def _run_recorder(tmp: Path, preload: str, env: dict[str, str] | None = None
                  ) -> tuple[subprocess.CompletedProcess[str], Path, list[dict[str, object]]]:
    tmp.mkdir()
    script = tmp / "job" / "record.py"
    script.parent.mkdir()
    script.write_text(RECORDER)
    events = tmp / "events.jsonl"
    result = run_pliant(
        "run", "--nproc-per-node", "2", "--max-restarts", "1", "--rdzv-id", "job",
        "--preload", preload, "--standby-delay", "0", "--events", "jsonl",
        "--events-conf", f"jsonl.path={events}",
        str(script), "first", "--second", "a b",
        cwd=tmp, env={"OUT_DIR": str(tmp), **(env or {})}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, tmp, started_events(events)


#: Chosen afresh by each agent (a free port, its pid, its temporary sockets).
PER_AGENT = ("MASTER_PORT", "PLIANT_AGENT_PID", "TORCHELASTIC_TIMER_FILE", "PLIANT_RELAY")


def _normalised(record: dict[str, object], tmp: Path) -> dict[str, object]:
    """What must be the same in two runs: per-run paths and ports taken out."""
    env = dict(record["env"])  # type: ignore[call-overload]
    run_dir = str(Path(env["TORCHELASTIC_ERROR_FILE"]).parents[2])
    for key in PER_AGENT:
        env.pop(key)
    text = json.dumps({**record, "env": env}).replace(run_dir, "RUN").replace(str(tmp), "TMP")
    normalised: dict[str, object] = json.loads(text)
    return normalised


def test_warm_worker_sees_what_a_cold_one_sees(tmp_path: Path) -> None:
    warm, warm_dir, warm_events = _run_recorder(tmp_path / "warm", "json")
    _, cold_dir, cold_events = _run_recorder(tmp_path / "cold", "")
    assert [e["warm"] for e in cold_events] == [False] * 4
    # Attempt 1 starts once the standbys have long been ready: it runs warm.
    assert [e["warm"] for e in warm_events if e["attempt"] == 1] == [True, True]
    for rank in (0, 1):
        got = _normalised(json.loads((warm_dir / f"rec_1_{rank}.json").read_text()), warm_dir)
        want = _normalised(json.loads((cold_dir / f"rec_1_{rank}.json").read_text()), cold_dir)
        assert got == want
        # The per-agent values are the agent's own: the same as its attempt 0's (the
        # master port is chosen per round).
        warm_env = json.loads((warm_dir / f"rec_1_{rank}.json").read_text())["env"]
        first_env = json.loads((warm_dir / f"rec_0_{rank}.json").read_text())["env"]
        assert {k: warm_env[k] for k in PER_AGENT[1:]} == {k: first_env[k] for k in PER_AGENT[1:]}
        assert got["name"] == "__main__"
        assert got["argv"] == ["TMP/job/record.py", "first", "--second", "a b"]
        assert got["path0"] == got["file"].rsplit("/", 1)[0] == "TMP/job"  # type: ignore[attr-defined]
        assert got["cwd"] == "TMP"
        # Output reaches the console through the same routes, prefixed.
        assert f"[0:{rank}] out {rank} 1" in warm.stdout
        assert f"[0:{rank}] err {rank} 1" in warm.stderr


def test_ddp_job_through_a_crash_warm_matches_uninterrupted_run(tmp_path: Path) -> None:
    def train(name: str, *extra: str, restarts: str = "0") -> tuple[Path, str]:
        tmp = tmp_path / name
        tmp.mkdir()
        out = tmp / "weights.pt"
        result = run_pliant(
            "run", "--nproc-per-node", "2", "--max-restarts", restarts, "--standby-delay", "0",
            "--events", "jsonl", "--events-conf",
            f"jsonl.path={tmp / 'events.jsonl'}", str(WORKERS / "ddp_checkpoint.py"),
            "--checkpoint", str(tmp / "ckpt.pt"), "--out", str(out), *extra, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        return out, result.stdout

    clean, _ = train("clean")
    # Rank 1 waits before it crashes, so the standbys (importing torch) are ready by then.
    resumed, stdout = train("crashy", "--crash-at", "5", "--crash-delay", "10", restarts="1")
    assert "rank 0 attempt 1 starts at step 5" in stdout
    assert "rank 1 attempt 1 starts at step 5" in stdout
    restarted = [e["warm"] for e in started_events(tmp_path / "crashy" / "events.jsonl")
                 if e["attempt"] == 1]
    assert restarted == [True, True]
    expected, got = torch.load(clean), torch.load(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


KILL_STANDBYS = textwrap.dedent("""
    import os, signal, sys, time
    out, attempt = os.environ["OUT_DIR"], os.environ["TORCHELASTIC_RESTART_COUNT"]
    agent = int(os.environ["PLIANT_AGENT_PID"])
    if attempt == "0":
        open(os.path.join(out, f"pid_{os.environ['RANK']}"), "w").write(str(os.getpid()))
    if attempt == "0" and os.environ["RANK"] == "0":
        sys.path.insert(0, os.environ["TESTS_DIR"])
        from pliant_e2e import standby_pids
        while not os.path.exists(os.path.join(out, "pid_1")):
            time.sleep(0.05)
        workers = {os.getpid(), int(open(os.path.join(out, "pid_1")).read() or 0)}
        # Warm workers were standbys: kill only the two waiting ones (refilled after start).
        while len(waiting := set(standby_pids(agent)) - workers) < 2:
            time.sleep(0.05)
        for pid in waiting:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        sys.exit(3)
    open(os.path.join(out, f"done_{attempt}_{os.environ['RANK']}"), "w").close()
""")


def test_a_standby_killed_before_its_hand_off_gives_a_cold_start(tmp_path: Path) -> None:
    script = tmp_path / "kill_standbys.py"
    script.write_text(KILL_STANDBYS)
    events = tmp_path / "events.jsonl"
    result = run_pliant(
        "run", "--nproc-per-node", "2", "--max-restarts", "1", "--preload", "json",
        "--standby-delay", "0",
        "--events", "jsonl", "--events-conf", f"jsonl.path={events}", str(script),
        env={"OUT_DIR": str(tmp_path), "TESTS_DIR": str(Path(__file__).parent)}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "done_1_0").exists() and (tmp_path / "done_1_1").exists()
    assert [e["warm"] for e in started_events(events) if e["attempt"] == 1] == [False, False]


def test_sigkilled_agent_leaves_no_standby(start_pliant: Callable[..., subprocess.Popen[str]],
                                           tmp_path: Path) -> None:
    agent = start_pliant("run", "--nproc-per-node", "2", "--preload", "json",
                         "--standby-delay", "0",
                         str(WORKERS / "sleeper.py"), env={"OUT_DIR": str(tmp_path)})
    wait_for(lambda: len(standby_pids(agent.pid)) == 2)
    standbys = standby_pids(agent.pid)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(timeout=10)
    wait_for(lambda: not any(pid_alive(p) for p in standbys), timeout=10)


def test_empty_preload_starts_no_standby(start_pliant: Callable[..., subprocess.Popen[str]],
                                         tmp_path: Path) -> None:
    agent = start_pliant("run", "--nproc-per-node", "2", "--preload", "",
                         str(WORKERS / "sleeper.py"), env={"OUT_DIR": str(tmp_path)})
    wait_for(lambda: (tmp_path / "pid_0").exists() and (tmp_path / "pid_1").exists())
    assert standby_pids(agent.pid) == []
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)


def test_a_preload_that_fails_warns_and_starts_cold(tmp_path: Path) -> None:
    script = tmp_path / "quick.py"
    script.write_text("import time\ntime.sleep(1.5)\nprint('trained')\n")
    result = run_pliant("run", "--nproc-per-node", "2", "--preload", "json,no_such_module_xyz",
                        "--standby-delay", "0", str(script), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[0:0] trained" in result.stdout and "[0:1] trained" in result.stdout
    assert "cannot preload 'no_such_module_xyz': ModuleNotFoundError" in result.stderr
    assert "--preload MODULES" in result.stderr
    assert result.stderr.count("cannot preload") == 1


def test_auto_preload_starts_no_standby_for_a_script_that_does_not_import_torch(
        start_pliant: Callable[..., subprocess.Popen[str]], tmp_path: Path) -> None:
    agent = start_pliant("run", "--nproc-per-node", "2", str(WORKERS / "sleeper.py"),
                         env={"OUT_DIR": str(tmp_path)})  # the default: --preload auto
    wait_for(lambda: (tmp_path / "pid_0").exists() and (tmp_path / "pid_1").exists())
    assert standby_pids(agent.pid) == []
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)


def test_standbys_wait_for_their_delay_into_the_group(
        start_pliant: Callable[..., subprocess.Popen[str]], tmp_path: Path) -> None:
    agent = start_pliant("run", "--nproc-per-node", "2", "--preload", "json",
                         "--standby-delay", "20", str(WORKERS / "sleeper.py"),
                         env={"OUT_DIR": str(tmp_path)})
    wait_for(lambda: (tmp_path / "pid_0").exists() and (tmp_path / "pid_1").exists())
    assert standby_pids(agent.pid) == []  # a short job never has them importing beside it
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)

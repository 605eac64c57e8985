"""`pliant run` end to end on one node, with real worker processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from pliant_e2e import PLIANT, run_pliant


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def test_success_gives_each_worker_torchruns_environment(workers: Path, out: Path) -> None:
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        str(workers / "env_dump.py"),
        "--lr",
        "0.1",
        env={"OUT_DIR": str(out)},
    )
    assert result.returncode == 0, result.stderr
    records = _records(out)
    assert sorted(records) == ["0_0", "0_1"]
    for rank in (0, 1):
        rec = records[f"0_{rank}"]
        env = rec["env"]
        assert env["RANK"] == env["LOCAL_RANK"] == env["ROLE_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == env["ROLE_WORLD_SIZE"] == "2"
        assert env["GROUP_RANK"] == "0" and env["GROUP_WORLD_SIZE"] == "1"
        assert env["ROLE_NAME"] == "default"
        assert env["MASTER_ADDR"] == "127.0.0.1" and int(env["MASTER_PORT"]) > 0
        assert env["TORCHELASTIC_RESTART_COUNT"] == "0"
        assert env["TORCHELASTIC_MAX_RESTARTS"] == "0"
        assert env["TORCHELASTIC_RUN_ID"]
        assert env["TORCHELASTIC_USE_AGENT_STORE"] == "False"
        assert env["TORCHELASTIC_ERROR_FILE"].endswith("error.json")
        assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
        assert env["OMP_NUM_THREADS"] == "1"
        # The script sees itself as __main__ with its own argv and directory, as under python.
        assert rec["name"] == "__main__"
        assert rec["argv"] == [str(workers / "env_dump.py"), "--lr", "0.1"]
        assert rec["path0"] == str(workers)
    assert records["0_0"]["env"]["MASTER_PORT"] == records["0_1"]["env"]["MASTER_PORT"]
    assert "[0:0] hello from rank 0" in result.stdout
    assert "[0:1] hello from rank 1" in result.stdout
    assert "[0:1] stderr of rank 1" in result.stderr


def test_console_traceback_starts_in_user_code(tmp_path: Path) -> None:
    script = tmp_path / "boom.py"
    script.write_text("def f():\n    raise RuntimeError('boom')\nf()\n")
    result = run_pliant("run", "--start-method", "fork", str(script))
    assert result.returncode == 1
    console = [line for line in result.stderr.splitlines() if line.startswith("[0:0]")]
    assert console[:2] == ["[0:0] Traceback (most recent call last):",
                           f'[0:0]   File "{script}", line 3, in <module>']
    assert "_bootstrap" not in result.stderr
    # The report's error file outlives the run, though no --log-dir was given.
    error_file = re.search(r"error file : (\S+)", result.stderr)
    assert error_file and os.path.exists(error_file.group(1))


def test_torchrun_env_vars_and_underscore_flags_are_accepted(workers: Path, out: Path) -> None:
    result = run_pliant(
        "run",
        "--nproc_per_node",
        "1",
        "--max_restarts",
        "2",
        str(workers / "env_dump.py"),
        env={"OUT_DIR": str(out), "PET_ROLE": "trainer"},
    )
    assert result.returncode == 0, result.stderr
    env = _records(out)["0_0"]["env"]
    assert env["ROLE_NAME"] == "trainer" and env["TORCHELASTIC_MAX_RESTARTS"] == "2"
    assert (
        "OMP_NUM_THREADS" not in {k for k, v in env.items() if v is not None}
        or os.environ.get("OMP_NUM_THREADS") == env["OMP_NUM_THREADS"]
    )


def test_crash_restarts_the_group_on_a_fresh_port(workers: Path, out: Path) -> None:
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "2",
        str(workers / "flaky.py"),
        env={"OUT_DIR": str(out), "FAIL_TIMES": "2", "OTHERS_SLEEP": "5"},
    )
    assert result.returncode == 0, result.stderr
    starts = sorted(p.name for p in out.glob("start_*"))
    assert starts == ["start_0_0", "start_0_1", "start_1_0", "start_1_1", "start_2_0", "start_2_1"]
    ports = {a: (out / f"start_{a}_0").read_text() for a in range(3)}
    assert len(set(ports.values())) == 3, f"every attempt needs a fresh port, got {ports}"
    assert "restarting, attempt 2 of 3" in result.stderr
    assert "restarting, attempt 3 of 3" in result.stderr


def test_exhausted_budget_reports_the_root_cause(workers: Path, out: Path) -> None:
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        str(workers / "flaky.py"),
        env={"OUT_DIR": str(out), "FAIL_TIMES": "9", "OTHERS_SLEEP": "30"},
    )
    assert result.returncode == 1
    report = result.stderr[result.stderr.index("FAILED") :]
    assert "2 attempts" in report
    assert "rank       : 1 (local rank 1)" in report
    assert f"host       : {os.uname().nodename}" in report
    assert "exit code 1" in report
    assert "ValueError: injected failure on attempt 1" in report
    assert 'File "' + str(workers / "flaky.py") + '"' in report
    assert "pliant/_bootstrap.py" not in report  # the traceback starts in user code
    # Rank 0 was stopped by the agent, so it is not reported as a failure.
    assert "Other failures" not in report


def test_exit_code_is_the_root_cause_workers(workers: Path, out: Path) -> None:
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        str(workers / "flaky.py"),
        env={"OUT_DIR": str(out), "FAIL_TIMES": "1", "FAIL_CODE": "7", "OTHERS_SLEEP": "30"},
    )
    assert result.returncode == 7
    assert "exit code 7" in result.stderr
    assert "<none written>" in result.stderr  # sys.exit(7) is not an exception


def test_log_dir_keeps_every_attempts_files(workers: Path, out: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "1",
        "--log-dir",
        str(logs),
        "-r",
        "3",
        "--rdzv-id",
        "job7",
        str(workers / "flaky.py"),
        env={"OUT_DIR": str(out), "FAIL_TIMES": "1"},
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = logs.iterdir()
    assert run_dir.name.startswith("job7_")
    for attempt in (0, 1):
        for rank in (0, 1):
            text = (run_dir / f"attempt_{attempt}" / str(rank) / "stdout.log").read_text()
            assert f"rank {rank} attempt {attempt} port" in text
    err = (run_dir / "attempt_0" / "1" / "stderr.log").read_text()
    assert "ValueError: injected failure on attempt 0" in err
    error_file = json.loads((run_dir / "attempt_0" / "1" / "error.json").read_text())
    assert "injected failure" in error_file["message"]["message"]
    assert "rank 0 attempt" not in result.stdout  # redirected: files only


def test_tee_and_local_ranks_filter(workers: Path, out: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--log-dir",
        str(logs),
        "-t",
        "1",
        "--local-ranks-filter",
        "1",
        str(workers / "env_dump.py"),
        env={"OUT_DIR": str(out)},
    )
    assert result.returncode == 0, result.stderr
    assert "[0:1] hello from rank 1" in result.stdout
    assert "hello from rank 0" not in result.stdout
    (run_dir,) = logs.iterdir()
    assert (run_dir / "attempt_0" / "0" / "stdout.log").read_text() == "hello from rank 0\n"
    assert not (run_dir / "attempt_0" / "0" / "stderr.log").exists()


def test_module_and_no_python(workers: Path, out: Path) -> None:
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "1",
        "-m",
        "env_dump",
        "x",
        cwd=workers,
        env={"OUT_DIR": str(out)},
    )
    assert result.returncode == 0, result.stderr
    rec = _records(out)["0_0"]
    assert rec["name"] == "__main__" and rec["argv"][1:] == ["x"]

    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--no-python",
        "sh",
        "-c",
        'echo "rank $RANK of $WORLD_SIZE"',
    )
    assert result.returncode == 0, result.stderr
    assert "[0:0] rank 0 of 2" in result.stdout and "[0:1] rank 1 of 2" in result.stdout


def test_torch_record_decorator_fills_the_report(tmp_path: Path) -> None:
    script = tmp_path / "recorded.py"
    script.write_text(
        "from torch.distributed.elastic.multiprocessing.errors import record\n"
        "@record\n"
        "def main():\n"
        "    raise KeyError('from torch record')\n"
        "main()\n"
    )
    result = run_pliant("run", "--nproc-per-node", "1", str(script))
    assert result.returncode == 1
    assert "KeyError" in result.stderr and "from torch record" in result.stderr
    assert "error file : " in result.stderr and "<none written>" not in result.stderr


def test_pliant_record_decorator(tmp_path: Path) -> None:
    script = tmp_path / "recorded.py"
    script.write_text(
        "import pliant\n"
        "@pliant.record\n"
        "def main():\n"
        "    raise ZeroDivisionError('from pliant record')\n"
        "main()\n"
    )
    result = run_pliant("run", "--nproc-per-node", "1", str(script))
    assert result.returncode == 1
    assert re.search(r"message\s+: ZeroDivisionError: from pliant record", result.stderr)


def test_a_program_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    program = tmp_path / "broken.sh"
    program.write_text("#!/nonexistent/interpreter\n")
    program.chmod(0o755)
    result = run_pliant("run", "--nproc-per-node", "2", "--no-python", str(program))
    assert result.returncode == 2
    assert f"cannot start worker 0 with '{program}'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_killed_by_a_signal_is_reported_with_it(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text("import os, signal, time\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    os.kill(os.getpid(), signal.SIGKILL)\n"
                      "time.sleep(30)\n")
    result = run_pliant("run", "--nproc-per-node", "2", str(script))
    assert result.returncode == 128 + 9
    assert "killed by SIGKILL (signal 9" in result.stderr
    assert "rank       : 1 (local rank 1)" in result.stderr


def test_progress_bars_redraw_with_their_prefix(tmp_path: Path) -> None:
    script = tmp_path / "bar.py"
    script.write_text(
        "import sys\n"
        "for i in range(3):\n"
        "    sys.stdout.write(f'\\rstep {i}/3'); sys.stdout.flush()\n"
        "sys.stdout.write('\\r\\ndone\\n')\n")
    result = subprocess.run([PLIANT, "run", str(script)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Each redraw is shown as it comes, prefixed; \r\n still ends one line.
    assert result.stdout == b"[0:0] step 0/3\r[0:0] step 1/3\r[0:0] step 2/3\r\n[0:0] done\n"

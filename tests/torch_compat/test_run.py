"""torch's launcher tests, ``test/distributed/launcher/test_run.py`` (formerly
``run_test.py``), ported to ``pliant run``: each ``launch.main(args)`` is a ``pliant run``
subprocess with the same arguments, and each case keeps torch's assertions (a
``ValueError`` from ``launch.main`` is pliant's usage error: exit code 2 and a message
naming the value). Workers are scaled down from torch's 4 per node to 2. CASES.md lists
every case and its status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pliant_e2e import PLIANT, free_port

pytestmark = pytest.mark.timeout(180)

BIN = Path(__file__).parent / "bin"
SCRIPT = str(BIN / "test_script.py")
SCRIPT_SH = str(BIN / "test_script.sh")
IS_LAUNCHED = str(BIN / "test_script_is_torchelastic_launched.py")
INIT_METHOD = str(BIN / "test_script_init_method.py")
NPROC = 2


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment as torch's setUp leaves it: no PET_* variable, and the
    sentinel that ``bin/test_script.py`` checks its workers inherit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    env["TEST_SENTINEL_PARENT"] = "FOOBAR"
    return {**env, **(extra or {})}


def pliant_run(*args: str, env: dict[str, str] | None = None,
               timeout: float = 150) -> subprocess.CompletedProcess[str]:
    """``pliant run ARGS...`` to completion (torch's ``launch.main(args)``)."""
    return subprocess.run([PLIANT, "run", *args], env=_env(env), capture_output=True,
                          text=True, timeout=timeout)


def start_pliant_run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([PLIANT, "run", *args], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def _refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """torch's ``assertRaises(ValueError)``: pliant refuses before any worker starts, with
    exit code 2 and one message naming what was wrong (docs/reference/cli.md)."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "unrecognized arguments" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def _touched(test_dir: Path) -> set[str]:
    return set(os.listdir(test_dir))


@pytest.fixture
def test_dir(tmp_path: Path) -> Path:
    path = tmp_path / "touched"
    path.mkdir()
    return path


def test_launch_user_script_python(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_user_script_python."""
    result = pliant_run("--nnodes=1", f"--nproc-per-node={NPROC}",
                        f"--rdzv-id={uuid.uuid4().int}", "--monitor-interval=1",
                        "--start-method=spawn", SCRIPT, f"--touch-file-dir={test_dir}")
    _ok(result)
    assert _touched(test_dir) == {str(i) for i in range(NPROC)}


def test_launch_user_script_python_caffe2_bc(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_user_script_python_caffe2_bc.

    Beyond torch's assertion, the workers' MASTER_ADDR/MASTER_PORT are the ones given, as
    torchrun 2.13 gives them (checked side by side)."""
    port = free_port()
    result = pliant_run("--nnodes=1", f"--nproc-per-node={NPROC}", "--monitor-interval=1",
                        "--start-method=spawn", "--master-addr=localhost",
                        f"--master-port={port}", "--node-rank=0", SCRIPT,
                        f"--touch-file-dir={test_dir}")
    _ok(result)
    assert _touched(test_dir) == {str(i) for i in range(NPROC)}
    for rank in range(NPROC):
        seen = json.loads((test_dir / str(rank)).read_text())
        assert (seen["MASTER_ADDR"], seen["MASTER_PORT"]) == ("localhost", str(port))


def test_launch_user_script_bash(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_user_script_bash."""
    args = ["--nnodes=1", f"--nproc-per-node={NPROC}", f"--rdzv-id={uuid.uuid4().int}",
            "--monitor-interval=1", "--start-method=spawn", "--no-python"]
    script_args = [SCRIPT_SH, str(test_dir)]
    # --no-python cannot be used with --module
    _refused(pliant_run(*args, "--module", *script_args), "--module", "--no-python")
    _ok(pliant_run(*args, *script_args))
    assert _touched(test_dir) == {str(i) for i in range(NPROC)}


def test_launch_user_script_default_nproc(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_user_script_default_nproc."""
    args = ["--nnodes=1", f"--rdzv-id={uuid.uuid4().int}", "--monitor-interval=1",
            "--start-method=spawn", "--no-python"]
    script_args = [SCRIPT_SH, str(test_dir)]
    _refused(pliant_run(*args, "--module", *script_args), "--module", "--no-python")
    _ok(pliant_run(*args, *script_args))
    assert _touched(test_dir) == {"0"}


def test_launch_with_env_vars(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_with_env_vars."""
    env = {"PET_NNODES": "1", "PET_NPROC_PER_NODE": str(NPROC),
           "PET_RDZV_ID": str(uuid.uuid4().int), "PET_MONITOR_INTERVAL": "1",
           "PET_START_METHOD": "spawn", "PET_NO_PYTHON": "1"}
    script_args = [SCRIPT_SH, str(test_dir)]
    _refused(pliant_run(*script_args, env={**env, "PET_MODULE": "1"}),
             "PET_MODULE", "PET_NO_PYTHON")  # the message names where each value came from
    _ok(pliant_run(*script_args, env={**env, "PET_MODULE": "0"}))
    assert _touched(test_dir) == {str(i) for i in range(NPROC)}


def _nproc_launch(test_dir: Path, nproc_type: str) -> subprocess.CompletedProcess[str]:
    return pliant_run("--nnodes=1", f"--nproc-per-node={nproc_type}",
                      f"--rdzv-id={uuid.uuid4().int}", "--monitor-interval=1",
                      "--start-method=spawn", "--no-python", SCRIPT_SH, str(test_dir))


def test_nproc_launch_auto_configurations(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_nproc_launch_auto_configurations (no accelerator here,
    as torch's case patches: ``auto`` is torch's CPU count)."""
    expected = int(subprocess.run(
        [sys.executable, "-c", "import torch; print(torch._utils.cpu_count())"],
        capture_output=True, text=True, check=True).stdout)
    _ok(_nproc_launch(test_dir, "auto"))
    assert _touched(test_dir) == {str(i) for i in range(expected)}


def test_nproc_launch_number_configurations(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_nproc_launch_number_configurations ("4" there, "2"
    here)."""
    _ok(_nproc_launch(test_dir, "2"))
    assert _touched(test_dir) == {"0", "1"}


def test_nproc_launch_unknown_configurations(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_nproc_launch_unknown_configurations (ValueError there;
    here exit code 2, naming the value and the flag)."""
    _refused(_nproc_launch(test_dir, "unknown"), "'unknown'", "--nproc-per-node")
    assert _touched(test_dir) == set()


def _c10d_args(port: int, conf: str) -> list[str]:
    return ["--nnodes=1:2", f"--nproc-per-node={NPROC}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=localhost:{port}", conf, f"--rdzv-id={uuid.uuid4().int}",
            "--monitor-interval=1"]


def test_launch_elastic(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_elastic. The ``--rdzv-conf`` value keeps the
    single quotes torch's test passes (no shell strips them there either)."""
    args = _c10d_args(free_port(), "--rdzv-conf='join_timeout=5,last_call_timeout=1,timeout=5'")
    result = pliant_run(*args, "--start-method=spawn", SCRIPT, f"--touch-file-dir={test_dir}")
    _ok(result)
    # we are only launching 1 node (even though max = 2)
    assert _touched(test_dir) == {str(i) for i in range(NPROC)}


def test_launch_elastic_worker_raise_exception(tmp_path: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_elastic_worker_raise_exception.

    torch asserts ``ChildFailedError`` and one ``events.record`` call (the agent's outcome).
    Here: the run fails with the workers' exit code (1, as torchrun's), the failure report
    shows the worker's exception, and the agent records exactly one run-outcome event
    (seen through ``--events jsonl``)."""
    events = tmp_path / "events.jsonl"
    args = _c10d_args(free_port(), "--rdzv-conf='join_timeout=5,last_call_timeout=1,timeout=5'")
    result = pliant_run(*args, "--max-restarts=0", "--start-method=spawn", "--events=jsonl",
                        f"--events-conf=jsonl.path={events}", SCRIPT, "--fail")
    assert result.returncode == 1, result.stderr
    assert "FAILED" in result.stderr
    assert "RuntimeError: raising exception since --fail flag was set" in result.stderr
    names = [json.loads(line)["name"] for line in events.read_text().splitlines()]
    outcomes = [n for n in names if n in ("pliant.agent.run_failed", "pliant.agent.run_succeeded")]
    assert outcomes == ["pliant.agent.run_failed"], names


def test_launch_standalone(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_standalone."""
    _ok(pliant_run("--nnodes=1", f"--nproc-per-node={NPROC}", "--standalone",
                   "--monitor-interval=1", "--start-method=spawn", SCRIPT,
                   f"--touch-file-dir={test_dir}"))
    assert _touched(test_dir) == {str(i) for i in range(NPROC)}


def test_launch_run_path(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_run_path."""
    _ok(pliant_run("--run-path", "--nnodes=1", f"--nproc-per-node={NPROC}",
                   "--monitor-interval=1", "--start-method=spawn", SCRIPT,
                   f"--touch-file-dir={test_dir}"))
    assert _touched(test_dir) == {str(i) for i in range(NPROC)}


def test_launch_elastic_multiple_agents(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_elastic_multiple_agents (2 agents, --nnodes=1:2)."""
    nnodes = 2
    args = [*_c10d_args(free_port(), "--rdzv_conf=timeout=5"), "--start-method=spawn",
            SCRIPT, f"--touch-file-dir={test_dir}"]
    others = [start_pliant_run(*args) for _ in range(nnodes - 1)]
    _ok(pliant_run(*args))
    for proc in others:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{out}\n{err}"
    assert _touched(test_dir) == {str(i) for i in range(nnodes * NPROC)}


def _config_nnodes(value: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLIANT, "config", f"--nnodes={value}"], env=_env(),
                          capture_output=True, text=True, timeout=60)


def test_min_max_nodes_parse() -> None:
    """torch: ElasticLaunchTest.test_min_max_nodes_parse. torch calls
    ``parse_min_max_nnodes``; pliant's parse is seen through ``pliant config``: ``1`` is
    min = max = 1, ``2:20`` is 2 to 20, ``2:20:30`` is refused (RuntimeError there, exit 2
    here)."""
    for value, parsed in (("1", "1:1"), ("2:20", "2:20")):
        result = _config_nnodes(value)
        _ok(result)
        assert f"nnodes = {parsed}  # flag --nnodes" in result.stdout
    _refused(_config_nnodes("2:20:30"), "'2:20:30'", "--nnodes")


def test_launch_shutdown(pliant_store: str, tmp_path: Path) -> None:
    """torch: ElasticLaunchTest.test_launch_shutdown. torch mocks the agent and asserts the
    launcher calls ``rdzv_handler.shutdown()`` once, which closes the rendezvous; here its
    effect is seen: after a run on a standalone store, an agent with the same run id is
    refused before any worker starts (torchrun: RendezvousClosedError, exit 1; checked)."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    run_id = str(uuid.uuid4().int)

    def launch(touch_dir: Path) -> subprocess.CompletedProcess[str]:
        return pliant_run("--nnodes=1:2", f"--nproc-per-node={NPROC}", "--rdzv-backend=c10d",
                          f"--rdzv-endpoint={pliant_store}", "--rdzv-conf=last_call_timeout=1",
                          f"--rdzv-id={run_id}", "--monitor-interval=1", SCRIPT,
                          f"--touch-file-dir={touch_dir}")

    _ok(launch(first))
    assert _touched(first) == {str(i) for i in range(NPROC)}
    again = launch(second)
    assert again.returncode == 1, f"{again.stdout}\n{again.stderr}"
    assert "already ended" in again.stderr, again.stderr
    assert _touched(second) == set()


def test_is_torchelastic_launched(tmp_path: Path) -> None:
    """torch: ElasticLaunchTest.test_is_torchelastic_launched."""
    out_file = tmp_path / "out"
    _ok(pliant_run("--run-path", "--nnodes=1", "--nproc-per-node=1", "--monitor-interval=1",
                   IS_LAUNCHED, f"--out-file={out_file}"))
    assert out_file.read_text() == "True"


def test_is_torchelastic_launched_with_logs_spec_defined(tmp_path: Path) -> None:
    """torch: ElasticLaunchTest.test_is_torchelastic_launched_with_logs_spec_defined. torch
    mocks the entry point; here the real one torch installs (``torchrun.logs_specs``:
    ``default = ...:DefaultLogsSpecs``) is found."""
    out_file = tmp_path / "out"
    _ok(pliant_run("--run-path", "--nnodes=1", "--nproc-per-node=1", "--monitor-interval=1",
                   "--logs_specs=default", IS_LAUNCHED, f"--out-file={out_file}"))
    assert out_file.read_text() == "True"


def test_logs_logs_spec_entrypoint_must_be_defined(tmp_path: Path) -> None:
    """torch: ElasticLaunchTest.test_logs_logs_spec_entrypoint_must_be_defined (ValueError
    there; here exit code 2 naming the value)."""
    out_file = tmp_path / "out"
    _refused(pliant_run("--run-path", "--nnodes=1", "--nproc-per-node=1",
                        "--monitor-interval=1", "--logs_specs=DOESNOT_EXIST", IS_LAUNCHED,
                        f"--out-file={out_file}"), "DOESNOT_EXIST")
    assert not out_file.exists()


def test_is_not_torchelastic_launched(tmp_path: Path) -> None:
    """torch: ElasticLaunchTest.test_is_not_torchelastic_launched: the same script, run by
    python without a launcher (and without the variables a pliant agent sets), says False."""
    out_file = tmp_path / "out"
    env = {k: v for k, v in _env().items() if not k.startswith("TORCHELASTIC_")}
    subprocess.run([sys.executable, IS_LAUNCHED, f"--out-file={out_file}"], env=env,
                   check=True, timeout=60)
    assert out_file.read_text() == "False"


def _init_method_run(init_method: str) -> subprocess.CompletedProcess[str]:
    port = free_port()
    return pliant_run("--run-path", "--nnodes=1", f"--nproc-per-node={NPROC}",
                      "--master-addr=localhost", f"--master-port={port}",
                      "--monitor-interval=1", INIT_METHOD,
                      f"--init-method={init_method.format(port=port)}")


def test_init_method_tcp_with_torchelastic() -> None:
    """torch: ElasticLaunchTest.test_init_method_tcp_with_torchelastic (torch: "just make
    sure it runs"; here also every worker's all_reduce saw the whole world)."""
    result = _init_method_run("tcp://localhost:{port}")
    _ok(result)
    assert result.stdout.count("Done") == NPROC


def test_init_method_env_with_torchelastic() -> None:
    """torch: ElasticLaunchTest.test_init_method_env_with_torchelastic."""
    result = _init_method_run("env://")
    _ok(result)
    assert result.stdout.count("Done") == NPROC


def test_capture_logs_using_default_logs_specs(test_dir: Path) -> None:
    """torch: ElasticLaunchTest.test_capture_logs_using_default_logs_specs: ``--redirect``
    (an argparse prefix of ``--redirects``) with ``--tee``, and the line prefix from
    ``TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE``."""
    result = pliant_run("--nnodes=1", f"--nproc-per-node={NPROC}",
                        f"--rdzv-id={uuid.uuid4().int}", "--redirect=3", "--tee=3",
                        "--monitor-interval=1", "--start-method=spawn", "--no-python",
                        SCRIPT_SH, str(test_dir),
                        env={"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": "[rank${rank}]: "})
    _ok(result)
    for i in range(NPROC):
        assert f"[rank{i}]: creating " in result.stdout, result.stdout

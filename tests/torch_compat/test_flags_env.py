"""Every torchrun flag is also read from its ``PET_*`` variable, as torchrun reads them; a
``PET_*``/``PLIANT_*`` variable that means nothing to pliant is a warning, never silence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flags_compat import launch, write_script
from pliant import config
from pliant_e2e import run_pliant

#: A valid value for each torchrun option pliant reads, as a PET_* variable would hold it.
SAMPLES = {
    "nnodes": "1:2", "nproc_per_node": "3", "rdzv_backend": "etcd", "rdzv_endpoint": "h:1",
    "rdzv_id": "job7", "rdzv_conf": "join_timeout=5", "standalone": "1",
    "max_restarts": "4", "monitor_interval": "0.5", "start_method": "fork",
    "event_log_handler": "dynamic_rendezvous", "role": "trainer", "module": "1",
    "no_python": "1", "run_path": "1", "log_dir": "/tmp/x", "redirects": "3", "tee": "0:1",
    "local_ranks_filter": "0,1", "duplicate_stdout_filters": "a,b",
    "duplicate_stderr_filters": "c", "node_rank": "1", "master_addr": "10.0.0.1",
    "master_port": "29501", "local_addr": "10.0.0.2", "numa_binding": "socket",
    "signals_to_handle": "SIGTERM,SIGUSR1", "shutdown_timeout": "9",
    "virtual_local_rank": "1", "logs_specs": "default",
}


def test_samples_cover_every_torchrun_option() -> None:
    assert set(SAMPLES) == set(config.TORCHRUN_OPTIONS) - {"help"}


@pytest.mark.parametrize("name", sorted(set(SAMPLES) & {s.name for s in config.CORE_SETTINGS}))
def test_each_torchrun_flag_is_read_from_its_pet_variable(name: str, tmp_path: Path) -> None:
    var = f"PET_{name.upper()}"
    result = run_pliant("config", env={var: SAMPLES[name]}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"{name} = "))
    assert line.endswith(f"# env {var}"), line
    assert "not a pliant setting" not in result.stderr


def test_pet_variables_act_as_their_flags_under_both(tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", (
        "import json, os, sys\n"
        "print(json.dumps({k: os.environ[k] for k in ('WORLD_SIZE', 'ROLE_NAME', "
        "'TORCHELASTIC_MAX_RESTARTS')}))\n"))
    env = {"PET_NPROC_PER_NODE": "2", "PET_MAX_RESTARTS": "1", "PET_ROLE": "trainer",
           "PET_LOCAL_RANKS_FILTER": "1"}
    for launcher in ("torchrun", "pliant"):
        result = launch(launcher, str(script), env=env)
        assert result.returncode == 0, (launcher, result.stderr)
        # Only local rank 1 reaches the console (PET_LOCAL_RANKS_FILTER).
        shown = [json.loads(line[line.index("{"):]) for line in result.stdout.splitlines()
                 if "{" in line]
        assert shown == [{"WORLD_SIZE": "2", "ROLE_NAME": "trainer",
                          "TORCHELASTIC_MAX_RESTARTS": "1"}], launcher


def test_a_mistyped_variable_is_a_warning_with_the_close_match(tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    result = launch("pliant", str(script), env={"PLIANT_NPROC_PR_NODE": "2",
                                                "PET_MAX_RESTRATS": "1", "PET_BANANA": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ran") == 1  # the typo did nothing but warn
    assert ("env PLIANT_NPROC_PR_NODE is not a pliant setting; ignored (did you mean "
            "PLIANT_NPROC_PER_NODE?)") in result.stderr
    assert "env PET_MAX_RESTRATS is not a pliant setting; ignored (did you mean " \
        "PET_MAX_RESTARTS?)" in result.stderr
    assert "env PET_BANANA is not a pliant setting; ignored" in result.stderr


def test_pliants_own_worker_variables_are_not_warned_about(tmp_path: Path) -> None:
    # A worker that runs `pliant run` itself inherits them from its agent.
    result = run_pliant("config", env={"PLIANT_NODE": "n1", "PLIANT_AGENT_PID": "1",
                                       "PLIANT_RETURN_FILE": "/tmp/r"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ignored" not in result.stderr

"""torch 2.13's newer torchrun flags, side by side under torchrun and ``pliant run``:
``--virtual-local-rank``, ``--duplicate-std*-filters``, ``--event-log-handler``,
``--numa-binding``; and ``--run-path`` with ``--no-python`` or ``-m``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flags_compat import launch, write_script

RECORD = """\
import json, os, sys
keys = ("LOCAL_RANK", "CUDA_VISIBLE_DEVICES")
with open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w") as f:
    json.dump({k: os.environ.get(k) for k in keys} | {"argv": sys.argv[2:]}, f)
"""


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@pytest.mark.parametrize(("launcher", "how"), [("torchrun", "flag"), ("pliant", "flag"),
                                                ("torchrun", "env"), ("pliant", "env")])
def test_virtual_local_rank(launcher: str, how: str, tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", RECORD)
    out = tmp_path / "out"
    out.mkdir()
    flag = ["--virtual-local-rank"] if how == "flag" else []
    env = {"CUDA_VISIBLE_DEVICES": "3,5"} | ({"PET_VIRTUAL_LOCAL_RANK": "1"} if how == "env"
                                             else {})
    result = launch(launcher, "--nproc-per-node", "2", *flag, str(script), str(out), env=env)
    assert result.returncode == 0, result.stderr
    # Each worker is local rank 0 of the one GPU it sees: its entry of the agent's list.
    assert _records(out) == {
        "0": {"LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "3", "argv": []},
        "1": {"LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "5", "argv": []},
    }


def test_without_virtual_local_rank_ranks_and_devices_are_untouched(tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", RECORD)
    out = tmp_path / "out"
    out.mkdir()
    result = launch("pliant", "--nproc-per-node", "2", str(script), str(out),
                    env={"CUDA_VISIBLE_DEVICES": "3,5", "PET_VIRTUAL_LOCAL_RANK": "0"})
    assert result.returncode == 0, result.stderr
    assert [(r["LOCAL_RANK"], r["CUDA_VISIBLE_DEVICES"]) for r in _records(out).values()] == [
        ("0", "3,5"), ("1", "3,5")]


def test_virtual_local_rank_needs_a_device_per_worker(tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    result = launch("pliant", "--nproc-per-node", "3", str(script),
                    env={"CUDA_VISIBLE_DEVICES": "3,5", "PET_VIRTUAL_LOCAL_RANK": "1"})
    assert result.returncode == 2
    assert ("virtual_local_rank (from env PET_VIRTUAL_LOCAL_RANK) gives each of the 3 workers "
            "one device of CUDA_VISIBLE_DEVICES='3,5'") in result.stderr
    assert "ran" not in result.stdout


FRUIT = """\
import sys
print("apple one")
print("pear")
print("orange, two")
print("err apple", file=sys.stderr)
"""


def _filtered(log_dir: Path, name: str) -> list[str]:
    (path,) = log_dir.glob(f"*/attempt_0/{name}")
    # torchrun's lines start with [default0]:, pliant's with [0:0] (its console prefix).
    return sorted(re.sub(r"^\[(?:\d+:|\D*)(\d+)\]:? ?", r"\1 ", line)
                  for line in path.read_text().splitlines())


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_duplicate_filters_copy_matching_teed_lines(launcher: str, tmp_path: Path) -> None:
    script = write_script(tmp_path / "fruit.py", FRUIT)
    logs = tmp_path / "logs"
    result = launch(launcher, "--nproc-per-node", "2", "--tee", "3", "--log-dir", str(logs),
                    "--duplicate-stdout-filters", "apple,orange,,", str(script),
                    env={"PET_DUPLICATE_STDERR_FILTERS": "apple"})
    assert result.returncode == 0, result.stderr
    # "orange,," is the filter "orange," (a doubled comma is a literal one).
    assert _filtered(logs, "filtered_stdout.log") == [
        "0 apple one", "0 orange, two", "1 apple one", "1 orange, two"]
    assert _filtered(logs, "filtered_stderr.log") == ["0 err apple", "1 err apple"]
    assert "pear" in result.stdout  # the console still shows everything tee'd


def test_no_filters_no_filtered_file(tmp_path: Path) -> None:
    script = write_script(tmp_path / "fruit.py", FRUIT)
    logs = tmp_path / "logs"
    result = launch("pliant", "--tee", "3", "--log-dir", str(logs), str(script))
    assert result.returncode == 0, result.stderr
    assert not list(logs.rglob("filtered_*.log"))


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_event_log_handler_null_is_accepted(launcher: str, tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    result = launch(launcher, "--event-log-handler", "null", str(script),
                    env={"PET_EVENT_LOG_HANDLER": "null"})
    assert result.returncode == 0, result.stderr
    assert "ran" in result.stdout


def test_event_log_handler_selects_a_pliant_event_handler(tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    events = tmp_path / "events.jsonl"
    result = launch("pliant", "--event-log-handler", "jsonl", "--events-conf",
                    f"jsonl.path={events}", str(script))
    assert result.returncode == 0, result.stderr
    names = {json.loads(line)["name"] for line in events.read_text().splitlines()}
    assert any(name.endswith("workers_started") for name in names), names


def test_event_log_handler_pliant_lacks_is_refused_naming_it_and_the_choices(
        tmp_path: Path) -> None:
    # torchrun's "console" prints events through logging; pliant has no such event handler
    # (docs/migration.md): it says so before starting anything.
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    result = launch("pliant", "--event-log-handler", "console", str(script))
    assert result.returncode == 2
    assert "unknown event handler 'console' (from flag --event-log-handler)" in result.stderr
    assert "available: " in result.stderr and "jsonl" in result.stderr
    assert "ran" not in result.stdout


def test_numa_binding_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    torchrun = launch("torchrun", "--numa-binding", "node", str(script))
    pliant = launch("pliant", "--numa-binding", "node", str(script))
    assert torchrun.returncode != 0 and pliant.returncode == 2
    assert "numa_binding 'node' (from flag --numa-binding)" in pliant.stderr
    assert "Traceback" not in pliant.stderr and "ran" not in pliant.stdout
    bad = launch("pliant", "--numa_binding", "nodes", str(script))
    assert bad.returncode == 2
    assert "invalid numa_binding 'nodes'" in bad.stderr
    assert "node, socket, exclusive, core-complex" in bad.stderr


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
@pytest.mark.parametrize("other", ["--no-python", "-m"])
def test_run_path_wins_over_no_python_and_module(launcher: str, other: str,
                                                 tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", RECORD)  # not executable: only python runs it
    out = tmp_path / "out"
    out.mkdir()
    result = launch(launcher, "--run-path", other, str(script), str(out), "x")
    assert result.returncode == 0, result.stderr
    assert _records(out)["0"]["argv"] == ["x"]

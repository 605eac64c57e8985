"""torchrun's parser takes unambiguous prefixes of its flags (``--nproc-per 2``, torch's own
tests pass ``--redirect 3`` and ``--max-restart 1``); so does ``pliant run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flags_compat import launch, write_script
from pliant_e2e import run_pliant

SCRIPT = """\
import json, os, sys
print("out of", os.environ["RANK"])
with open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w") as f:
    json.dump({k: os.environ[k] for k in ("WORLD_SIZE", "TORCHELASTIC_MAX_RESTARTS")} |
              {"argv": sys.argv[2:]}, f)
"""


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_prefixes_of_dash_and_underscore_spellings(launcher: str, tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    result = launch(launcher, "--nproc-per", "2", "--max_restart", "1",
                    "--redirect", "3", "--log_d", str(tmp_path / "logs"),
                    str(script), str(out), "--lr", "x")
    assert result.returncode == 0, result.stderr
    records = [json.loads((out / f"{rank}.json").read_text()) for rank in (0, 1)]
    for record in records:
        # The prefixes meant --nproc-per-node and --max-restarts; after the script, words are
        # the script's, prefixes or not.
        assert record == {"WORLD_SIZE": "2", "TORCHELASTIC_MAX_RESTARTS": "1",
                          "argv": ["--lr", "x"]}
    # --redirect 3: the output went to the log files, not the console.
    assert "out of" not in result.stdout
    logs = sorted(p.read_text() for p in (tmp_path / "logs").rglob("stdout.log"))
    assert logs == ["out of 0\n", "out of 1\n"]


def test_a_prefix_of_a_torchrun_flag_and_a_pliant_one_means_torchruns(tmp_path: Path) -> None:
    # --stan: torchrun's --standalone, though pliant's --standby-delay starts the same way.
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    for launcher in ("torchrun", "pliant"):
        result = launch(launcher, "--stan", str(script))
        assert result.returncode == 0, (launcher, result.stderr)
        assert "ran" in result.stdout


def test_an_ambiguous_prefix_is_refused_naming_the_candidates(tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    torchrun = launch("torchrun", "--st", "spawn", str(script))
    pliant = launch("pliant", "--st", "spawn", str(script))
    assert torchrun.returncode == pliant.returncode == 2
    assert "ambiguous option: --st could match" in torchrun.stderr
    assert "ambiguous option: --st could match" in pliant.stderr
    assert "--standalone" in pliant.stderr and "--start-method" in pliant.stderr
    assert "ran" not in pliant.stdout


def test_prefixes_with_equals_and_in_pliant_config(tmp_path: Path) -> None:
    result = run_pliant("config", "--nproc-per=3", "--max_rest", "2", "--exit-c", "torchrun",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nproc_per_node = 3  # flag --nproc-per-node" in result.stdout
    assert "max_restarts = 2  # flag --max-restarts" in result.stdout
    assert "exit_code = torchrun  # flag --exit-code" in result.stdout
    unknown = run_pliant("config", "--nproc-per-nodes", "3", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "unrecognized arguments: --nproc-per-nodes" in unknown.stderr

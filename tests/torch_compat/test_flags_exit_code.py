"""Exit codes: pliant exits with the root-cause worker's code (128+N when a signal N ended
it); torchrun exits 1. ``--exit-code torchrun`` (``PLIANT_EXIT_CODE``, config ``exit_code``)
gives torchrun's 1 for wrappers and retry policies that test for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from flags_compat import launch, write_script

EXIT3 = "import sys\nsys.exit(3)\n"
KILLED = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"


@pytest.mark.parametrize(("body", "pliant_code"), [(EXIT3, 3), (KILLED, 128 + 9)])
def test_failure_exit_codes_side_by_side(body: str, pliant_code: int, tmp_path: Path) -> None:
    script = write_script(tmp_path / "fail.py", body)
    assert launch("torchrun", str(script)).returncode == 1
    assert launch("pliant", str(script)).returncode == pliant_code
    assert launch("pliant", "--exit-code", "torchrun", str(script)).returncode == 1
    assert launch("pliant", str(script), env={"PLIANT_EXIT_CODE": "torchrun"}).returncode == 1


def test_exit_code_from_the_config_file_and_its_errors(tmp_path: Path) -> None:
    script = write_script(tmp_path / "fail.py", EXIT3)
    (tmp_path / "pliant.toml").write_text('exit_code = "torchrun"\n')
    assert launch("pliant", str(script), cwd=tmp_path).returncode == 1
    # A flag still wins over the file.
    assert launch("pliant", "--exit-code", "worker", str(script), cwd=tmp_path).returncode == 3
    ok = write_script(tmp_path / "ok.py", "pass\n")
    assert launch("pliant", str(ok), cwd=tmp_path).returncode == 0
    bad = launch("pliant", "--exit-code", "one", str(script))
    assert bad.returncode == 2
    assert "invalid exit_code 'one' (from flag --exit-code): expected one of worker, torchrun" \
        in bad.stderr

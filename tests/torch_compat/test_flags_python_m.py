"""``python -m pliant`` is the ``pliant`` command, as ``python -m torch.distributed.run`` is
torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pliant._version import __version__


def test_python_m_pliant_runs_the_cli(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text("import os\nprint('rank', os.environ['RANK'])\n")
    result = subprocess.run([sys.executable, "-m", "pliant", "run", "--nproc-per-node", "2",
                             str(script)], capture_output=True, text=True, timeout=60,
                            env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert "rank 0" in result.stdout and "rank 1" in result.stdout
    version = subprocess.run([sys.executable, "-m", "pliant", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"pliant {__version__}"
    bad = subprocess.run([sys.executable, "-m", "pliant", "run", "--nproc-per-node", "x",
                          str(script)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "invalid nproc_per_node 'x' (from flag --nproc-per-node)" in bad.stderr

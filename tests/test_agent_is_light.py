"""On one node the agent needs no server and never imports torch."""

from __future__ import annotations

import subprocess
import sys

from pliant_e2e import WORKERS


def test_embedded_run_does_not_import_torch(tmp_path) -> None:
    code = (
        "import sys\n"
        "from pliant.cli import main\n"
        f"rc = main(['run', '--nproc-per-node', '2', {str(WORKERS / 'env_dump.py')!r}])\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH', rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"OUT_DIR": str(tmp_path), "PATH": ""},
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "NO_TORCH 0", result.stderr

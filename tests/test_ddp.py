"""A real gloo DDP training, launched unmodified, survives a crash with the same weights."""

from __future__ import annotations

from pathlib import Path

import torch
from pliant_e2e import WORKERS, run_pliant


def _train(tmp: Path, *extra: str, restarts: str = "0") -> tuple[Path, str]:
    tmp.mkdir()
    out = tmp / "weights.pt"
    result = run_pliant(
        "run",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        restarts,
        str(WORKERS / "ddp_checkpoint.py"),
        "--checkpoint",
        str(tmp / "ckpt.pt"),
        "--out",
        str(out),
        *extra,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout


def test_crash_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    clean, _ = _train(tmp_path / "clean")
    resumed, stdout = _train(tmp_path / "crashy", "--crash-at", "5", restarts="1")
    assert "rank 1 attempt 1 starts at step 5" in stdout
    assert "rank 0 attempt 1 starts at step 5" in stdout
    expected, got = torch.load(clean), torch.load(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_gloo_group_reforms_after_every_restart() -> None:
    result = run_pliant("run", "--nproc-per-node", "2", "--max-restarts", "3",
                        str(WORKERS / "gloo_restarts.py"), env={"FAIL_TIMES": "3"}, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    for attempt in range(4):
        for rank in (0, 1):
            assert f"[0:{rank}] attempt {attempt} rank {rank} allreduce 3" in result.stdout

"""Assertions shared by the core CLI tests (``core/tests`` is on pytest's pythonpath)."""

from __future__ import annotations

from typing import Any


def assert_user_error(result: Any, *fragments: str) -> None:
    """Exit code 2, a short ``pliant: error:`` message holding every fragment, no traceback."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.output, result
    assert result.stdout == "", result
    assert result.stderr.startswith("pliant: error: "), result
    assert len(result.stderr.splitlines()) <= 6, result
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"

"""The failure report a user reads when a run fails, and the exit code it implies."""

from __future__ import annotations

import signal
import textwrap

from pliant.agent.api import ProcessFailure, RunResult

__all__ = ["exit_code", "format_report"]


def exit_code(failure: ProcessFailure | None) -> int:
    """The root cause's exit code; 128+N for a worker killed by signal N; else 1."""
    if failure is None:
        return 1
    if failure.exitcode > 0:
        return failure.exitcode
    if failure.exitcode < 0:
        return 128 - failure.exitcode
    return 1


def _describe_exit(failure: ProcessFailure) -> str:
    if failure.signal:
        return f"killed by {failure.signal} (signal {-failure.exitcode}, pid {failure.pid})"
    return f"exit code {failure.exitcode} (pid {failure.pid})"


def format_report(result: RunResult, name: str, run_id: str) -> str:
    """A readable account of the root cause, then any other failures."""
    root = result.root_cause()
    if root is None:
        return f"{name} failed (run {run_id!r}) with no worker failure recorded"
    attempts = result.restart_count + 1
    rule = "=" * 72
    lines = [
        rule,
        f"{name} FAILED (run {run_id!r}, {attempts} attempt{'s' if attempts > 1 else ''})",
        "-" * 72,
        "Root cause (first observed failure):",
        f"  rank       : {root.global_rank} (local rank {root.local_rank})",
        f"  host       : {root.hostname}",
        f"  exit       : {_describe_exit(root)}",
        f"  time       : {root.timestamp_iso()}",
        f"  error file : {root.error_file if root.error_file_data else '<none written>'}",
        f"  message    : {root.message}",
    ]
    if root.traceback:
        lines.append("  traceback  :")
        lines.append(textwrap.indent(root.traceback.rstrip(), "    "))
    elif not root.error_file_data:
        lines.append("  traceback  : <none: the worker wrote no error file; see its stderr above>")
    others = sorted((f for f in result.failures.values() if f is not root),
                    key=lambda f: f.global_rank)
    if others:
        lines.append("Other failures:")
        lines.extend(f"  rank {f.global_rank} on {f.hostname}: {_describe_exit(f)} at "
                     f"{f.timestamp_iso()}: {f.message.splitlines()[0] if f.message else ''}"
                     for f in others)
    lines.append(rule)
    return "\n".join(lines)


def signal_exit_code(sig: signal.Signals) -> int:
    """The shell's convention for a process ended by ``sig``."""
    return 128 + int(sig)

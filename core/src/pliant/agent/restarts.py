"""The restart budget, and the number and folder name of each attempt.

An attempt's number is its **restart count**: 0 for the first run, one more
after each failure that was restarted, as in torch. It is what a worker reads
in ``TORCHELASTIC_RESTART_COUNT``, what the events carry as ``attempt``, and it
names the attempt's log folder ``attempt_<n>/``. The console's
``attempt N of M`` counts runs from one (N = restart count + 1), so it also
shows the restart count.

A membership change (a node joined, died or left) is not a failure: it forms
a new group with the same restart count. That group's folder is
``attempt_<n>.<k>``, the k-th regroup at that count, so two groups never
share a folder.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["RestartBudget", "attempt_folder"]


@dataclass(frozen=True)
class RestartBudget:
    """How many restarts the run may use (``max_restarts``) and has used (``used``, the
    restart count). The agent replaces its budget, it never changes one."""

    max_restarts: int
    used: int = 0

    @property
    def remaining(self) -> int:
        return max(self.max_restarts - self.used, 0)

    @property
    def exhausted(self) -> bool:
        """No failure may be restarted any more."""
        return self.remaining == 0

    def after_failure(self) -> RestartBudget:
        """The budget once a failed group is restarted."""
        return replace(self, used=self.used + 1)

    def for_round(self, restart_count: int | None) -> RestartBudget:
        """The budget for a rendezvous round. A backend that counts restarts for the whole
        job (``restart_count`` not None, the same on every node) overrides this node's own
        count: a node that joins late, or saw another node's failure, uses the job's."""
        return self if restart_count is None else replace(self, used=restart_count)

    def progress(self) -> str:
        """The attempt a restart starts, as the console shows it."""
        return (f"attempt {self.used + 1} of {self.max_restarts + 1} "
                f"(restart count {self.used})")


def attempt_folder(restart_count: int, regroup: int) -> str:
    """The folder of an attempt: ``attempt_<restart count>``, plus ``.<regroup>`` for the
    groups that membership changes formed at the same restart count."""
    return f"attempt_{restart_count}" + (f".{regroup}" if regroup else "")

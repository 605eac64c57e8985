"""The restart budget and the attempt folders (pliant.agent.restarts)."""

from __future__ import annotations

import dataclasses

import pytest
from pliant.agent.restarts import RestartBudget, attempt_folder


def test_each_restarted_failure_uses_one_restart_until_none_is_left() -> None:
    budget = RestartBudget(max_restarts=2)
    assert (budget.used, budget.remaining, budget.exhausted) == (0, 2, False)
    once = budget.after_failure()
    assert budget.used == 0  # a value: the agent replaces its budget
    assert (once.used, once.remaining, once.exhausted) == (1, 1, False)
    twice = once.after_failure()
    assert (twice.used, twice.remaining, twice.exhausted) == (2, 0, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        twice.used = 0  # type: ignore[misc]


def test_no_restarts_means_the_first_failure_ends_the_run() -> None:
    assert RestartBudget(max_restarts=0).exhausted


def test_a_job_wide_count_overrides_this_nodes_own() -> None:
    budget = RestartBudget(max_restarts=3)
    assert budget.for_round(None) is budget  # the backend keeps no count: ours stands
    joined_late = budget.for_round(2)
    assert (joined_late.used, joined_late.remaining) == (2, 1)
    assert budget.for_round(5).remaining == 0  # never below zero


def test_the_console_shows_the_run_from_one_and_the_restart_count() -> None:
    assert RestartBudget(2).after_failure().progress() == "attempt 2 of 3 (restart count 1)"


def test_groups_formed_by_membership_changes_get_their_own_folder() -> None:
    assert attempt_folder(0, 0) == "attempt_0"
    assert attempt_folder(1, 0) == "attempt_1"
    assert attempt_folder(1, 2) == "attempt_1.2"

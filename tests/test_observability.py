"""Metrics and events from the agent and its workers, end to end, through the built-in
debugging sinks: ``--metrics console`` (stderr) and ``--events jsonl`` (a shared file)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from pliant_e2e import WORKERS, run_pliant

WORKER = str(WORKERS / "observed.py")


def metric_lines(output: str) -> list[dict[str, str]]:
    """``[metric] group.name = value  k=v ...`` lines, wherever pliant's prefix put them."""
    found = []
    for match in re.finditer(r"\[metric\] (\S+) = (\S+)  ?(.*)", output):
        tags = dict(item.split("=", 1) for item in match.group(3).split())
        found.append({"name": match.group(1), "value": match.group(2), **tags})
    return found


def test_agent_and_worker_records_reach_the_sinks_tagged(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    result = run_pliant(
        "run", "--nproc-per-node", "2", "--max-restarts", "1", "--rdzv-id", "obs1",
        "--metrics", "console", "--events", "jsonl", "--events-conf", f"jsonl.path={log}",
        WORKER, env={"STEPS": "5", "FAIL_ONCE": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    metrics = metric_lines(result.stdout + result.stderr)
    train = [m for m in metrics if m["name"] in ("train.step", "train.last")]
    # Attempt 0: rank 0 finishes (5 steps + last), rank 1 fails after its steps; attempt 1:
    # both finish. Nothing emitted right before an exit is lost.
    for rank, count in (("0", 12), ("1", 11)):
        mine = [m for m in train if m.get("rank") == rank]
        assert len(mine) == count, (rank, mine)
        assert {m["run_id"] for m in mine} == {"obs1"}
        assert {m["role"] for m in mine} == {"default"}
        assert {m.get("restart_count") for m in mine} == {"0", "1"}
        assert [m for m in mine if m["name"] == "train.last"]

    recorded = [json.loads(line) for line in log.read_text().splitlines()]
    by_name: dict[str, list[dict]] = {}
    for event in recorded:
        by_name.setdefault(event["name"], []).append(event)
    checkpoints = by_name["checkpoint"]
    assert sorted(e["metadata"]["rank"] for e in checkpoints) == ["0", "0", "1", "1"]
    assert all(e["source"] == "WORKER" and e["metadata"]["run_id"] == "obs1"
               and e["metadata"]["steps"] == 5 for e in checkpoints)
    agent = [e for e in recorded if e["source"] == "AGENT"]
    assert agent, recorded
    assert all(e["metadata"]["run_id"] == "obs1" and "node" in e["metadata"]
               and e["timestamp"] > 0 for e in agent)
    names = {e["name"] for e in agent}
    assert {"pliant.agent.rendezvous_joined", "pliant.agent.rendezvous_completed",
            "pliant.agent.workers_started", "pliant.agent.worker_started",
            "pliant.agent.worker_succeeded", "pliant.agent.worker_failed",
            "pliant.agent.restart", "pliant.agent.run_succeeded"} <= names, names
    failed = by_name["pliant.agent.worker_failed"][0]["metadata"]
    assert (failed["rank"], failed["exitcode"]) == (1, 3), failed
    rounds = [e["metadata"] for e in by_name["pliant.agent.rendezvous_completed"]]
    assert [(r["world_size"], r["workers"], r["restart_count"]) for r in rounds] == [
        (1, 2, 0), (1, 2, 1)], rounds
    started = [e["metadata"] for e in by_name["pliant.agent.worker_started"]]
    assert sorted((m["restart_count"], m["rank"]) for m in started) == [
        (0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(m["pid"] > 0 for m in started)
    # The agent's own metrics are tagged too (no rank: they are the node's).
    agent_metrics = [m for m in metrics if m["name"].startswith("pliant.agent.")]
    assert {"pliant.agent.rendezvous.duration.ms", "pliant.agent.restarts"} <= {
        m["name"] for m in agent_metrics}
    assert all(m["run_id"] == "obs1" and "rank" not in m for m in agent_metrics)


def test_a_sink_that_cannot_be_built_in_a_worker_does_not_stop_training() -> None:
    # What a worker does with the agent's choice in its environment, here one that fails.
    code = ("from pliant import events, metrics\n"
            "events.record(events.Event('x', events.EventSource.WORKER))\n"
            "metrics.put_metric('loss', 1.0)\n"
            "print('trained')\n")
    env = {**os.environ, "PLIANT_EVENTS": "jsonl",
           "PLIANT_EVENTS_CONF": "jsonl.path=/nonexistent/dir/x", "PLIANT_METRICS": "nope"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "trained\n", result
    assert "events handlers from the environment not built" in result.stderr
    assert "/nonexistent/dir/x" in result.stderr
    assert "metrics handlers from the environment not built" in result.stderr
    assert "'nope'" in result.stderr

"""pliant-null is found through its entry point and its handlers run and drop everything."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pliant import events, metrics
from pliant.plugins import PluginManager

PLIANT = str(Path(sys.executable).parent / "pliant")


def test_registered_through_its_entry_point() -> None:
    infos = {i.name: i for i in PluginManager().plugins()}
    null = infos["null"]
    assert (null.distribution, null.status, null.module) == ("pliant-null", "loaded", "pliant_null")
    assert null.hooks == ["pliant_event_handlers", "pliant_metric_handlers",
                          "pliant_timer_backends"]


def test_each_null_backend_builds_and_does_nothing() -> None:
    pm = PluginManager()
    handler = pm.select("metrics", "null", "test").create()
    handler.emit(metrics.MetricData(time.time(), "g", "n", 1.0))
    sink = pm.select("events", "null", "test").create()
    sink.record(events.Event("e", events.EventSource.AGENT))
    timer = pm.select("timer", "null", "test").create()
    timer.start()
    timer.stop()
    assert timer.worker_env() == {}


def test_selected_by_flags_in_a_real_run(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text("import os; print('rank', os.environ['RANK'])\n")
    result = subprocess.run([PLIANT, "run", "--nproc-per-node", "2", "--metrics", "null",
                             "--events", "null", "--timer", "null", str(script)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[0:1] rank 1" in result.stdout


def test_listed_by_pliant_plugins() -> None:
    result = subprocess.run([PLIANT, "plugins", "--json"], capture_output=True, text=True,
                            timeout=60)
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert listed["null"]["status"] == "loaded" and listed["null"]["version"] == "0.1.0"

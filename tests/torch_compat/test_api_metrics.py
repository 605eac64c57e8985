"""torch.distributed.elastic.metrics against pliant.metrics: the same calls, the same names."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch.distributed.elastic.metrics as torch_metrics
from pliant import metrics


class Recorder(metrics.MetricHandler, torch_metrics.MetricHandler):
    """One handler class both libraries accept: records (group, name) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.values: list[Any] = []

    def emit(self, metric_data: Any) -> None:
        self.seen.append((metric_data.group_name, metric_data.name))
        self.values.append(metric_data.value)


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    """(torch's, pliant's): each library's default handler, for the length of a test."""
    theirs, ours = Recorder(), Recorder()
    torch_metrics.configure(theirs)
    metrics.configure(ours)
    yield theirs, ours
    torch_metrics.configure(torch_metrics.NullMetricHandler())
    metrics.configure([])


def both(recorders: tuple[Recorder, Recorder], call: Callable[[Any], None]) -> None:
    """Make the same call against torch's module and pliant's, then compare what reached
    their handlers."""
    theirs, ours = recorders
    call(torch_metrics)
    call(metrics)
    assert metrics.flush()
    assert ours.seen == theirs.seen and ours.seen


def module_level(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x


class Trainer:
    def step(self) -> int:
        return 1


def test_prof_names_a_module_level_function_module_dot_function(recorders: Any) -> None:
    def call(lib: Any) -> None:
        assert lib.prof(module_level)(2) == 2
        assert lib.prof(group="agent")(Trainer.step)(Trainer()) == 1

    both(recorders, call)
    leaf = __name__.rsplit(".", 1)[-1]
    assert recorders[1].seen == [
        ("torchelastic", f"{leaf}.module_level.success"),
        ("torchelastic", f"{leaf}.module_level.duration.ms"),
        ("agent", "Trainer.step.success"), ("agent", "Trainer.step.duration.ms")]


def test_prof_emits_failure_then_duration_when_the_function_raises(recorders: Any) -> None:
    def call(lib: Any) -> None:
        with pytest.raises(ValueError, match="negative"):
            lib.prof(module_level)(-1)

    both(recorders, call)
    assert [name.rsplit(".", 2)[-2:] for _, name in recorders[1].seen] == [
        ["module_level", "failure"], ["duration", "ms"]]


def test_prof_on_keyboard_interrupt_emits_only_the_duration(recorders: Any) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    def call(lib: Any) -> None:
        with pytest.raises(KeyboardInterrupt):
            lib.prof(interrupted)()

    both(recorders, call)
    assert [name.rsplit(".", 2)[-2:] for _, name in recorders[1].seen] == [["duration", "ms"]]


def test_put_metric_takes_torchs_keywords_and_streams(recorders: Any) -> None:
    def call(lib: Any) -> None:
        lib.put_metric(metric_name="loss", metric_value=3, metric_group="train")
        lib.put_metric("steps", 1)
        lib.getStream("io").add_value("bytes", 7)
        lib.getStream("io").add_value(metric_name="files", metric_value=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(FutureWarning, match="put_metric"):
                lib.publish_metric("old", "n", 1)

    both(recorders, call)
    theirs, ours = recorders
    assert ours.seen == [("train", "loss"), ("torchelastic", "steps"), ("io", "bytes"),
                         ("io", "files")]
    assert ours.values == theirs.values == [3, 1, 7, 2]


def test_handlers_per_group_and_the_names_torch_exports() -> None:
    theirs, ours = Recorder(), Recorder()
    torch_metrics.configure(theirs, group="special")
    metrics.configure(ours, group="special")
    try:
        for lib in (torch_metrics, metrics):
            lib.put_metric("a", 1, "special")
            lib.put_metric("b", 2, "other")
        assert metrics.flush()
    finally:
        torch_metrics.configure(torch_metrics.NullMetricHandler(), group="special")
        metrics.configure([], group="special")
    assert ours.seen == theirs.seen == [("special", "a")]
    stream = metrics.MetricStream("direct", ours)
    stream.add_value("now", 5)  # a stream given a handler calls it at once, as torch's
    assert ours.seen[-1] == ("direct", "now")
    data = metrics.MetricData(1.0, "g", "n", 2)  # torch's positional fields
    assert (data.timestamp, data.group_name, data.name, data.value) == tuple(
        torch_metrics.MetricData(1.0, "g", "n", 2))
    missing = [n for n in torch_metrics.api.__all__
               if n not in ("profile",) and not hasattr(metrics, n)]
    assert missing == []
    assert metrics.MetricsConfig().params == torch_metrics.MetricsConfig().params == {}
    assert isinstance(metrics.get_elapsed_time_ms(0.0), int)
    metrics.NullMetricHandler().emit(data)
    assert isinstance(metrics.ConsoleMetricHandler(), metrics.MetricHandler)

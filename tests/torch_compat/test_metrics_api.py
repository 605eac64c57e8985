"""torch's ``test/distributed/elastic/metrics/api_test.py`` ported to :mod:`pliant.metrics`.

torch patches its private ``getStream`` to catch what ``prof`` emits; here a handler is
configured with :func:`pliant.metrics.configure` for the ``torchelastic`` group (the one
``prof`` uses by default, as torch's), and :func:`pliant.metrics.flush` waits until the
background thread delivered everything. torch's private ``_get_metric_name`` is seen
through the names ``prof`` emits.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator

import pytest
from pliant import metrics
from pliant.metrics import MetricData, MetricHandler, prof

GROUP = "torchelastic"


class _Collect(MetricHandler):
    def __init__(self) -> None:
        self.metric_data: dict[str, MetricData] = {}

    def emit(self, metric_data: MetricData) -> None:
        self.metric_data[metric_data.name] = metric_data


@pytest.fixture
def handler() -> Iterator[_Collect]:
    """A handler for the ``torchelastic`` group; the group's handlers are put back after."""
    before = metrics.get_handlers(GROUP)
    collect = _Collect()
    metrics.configure(collect, GROUP)
    yield collect
    metrics.configure(list(before), GROUP)


def _emitted(handler: _Collect) -> dict[str, MetricData]:
    assert metrics.flush(10.0)
    return handler.metric_data


class _Parent(abc.ABC):
    @abc.abstractmethod
    def func(self) -> None:
        raise NotImplementedError

    def base_func(self) -> None:
        self.func()


class Child(_Parent):
    # need to decorate the implementation not the abstract method!
    @prof
    def func(self) -> None:
        pass


class MetricsApiTest:
    """torch's test class; its methods are what ``prof`` decorates."""

    def foo_2(self) -> None:
        pass

    @prof
    def bar(self) -> None:
        pass

    @prof
    def throw(self) -> None:
        raise RuntimeError

    @prof(group="torchelastic")
    def bar2(self) -> None:
        pass


def test_get_metric_name(handler: _Collect) -> None:
    """torch: MetricsApiTest.test_get_metric_name. A module-level function is named
    ``<module>.<function>`` (torch sets ``foo_1.__module__ = "api_test"``; here it is
    defined in a module of that name), a method ``<Class>.<method>``."""
    namespace: dict[str, object] = {"__name__": "api_test"}
    exec("def foo_1():\n    pass\n", namespace)
    prof(namespace["foo_1"])()
    prof(MetricsApiTest().foo_2)()
    emitted = _emitted(handler)
    assert "api_test.foo_1.success" in emitted, sorted(emitted)
    assert "MetricsApiTest.foo_2.success" in emitted, sorted(emitted)


def test_profile(handler: _Collect) -> None:
    """torch: MetricsApiTest.test_profile."""
    test = MetricsApiTest()
    test.bar()
    emitted = _emitted(handler)
    assert emitted["MetricsApiTest.bar.success"].value == 1
    assert "MetricsApiTest.bar.failure" not in emitted
    assert "MetricsApiTest.bar.duration.ms" in emitted

    with pytest.raises(RuntimeError):
        test.throw()
    emitted = _emitted(handler)
    assert emitted["MetricsApiTest.throw.failure"].value == 1
    assert "MetricsApiTest.throw.success" not in emitted
    assert "MetricsApiTest.throw.duration.ms" in emitted, sorted(emitted)

    test.bar2()
    assert _emitted(handler)["MetricsApiTest.bar2.success"].group_name == "torchelastic"


def test_inheritance(handler: _Collect) -> None:
    """torch: MetricsApiTest.test_inheritance."""
    Child().base_func()
    emitted = _emitted(handler)
    assert emitted["Child.func.success"].value == 1
    assert "Child.func.duration.ms" in emitted

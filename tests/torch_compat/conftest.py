"""The ports of torch's own launcher and TorchElastic tests (see CASES.md).

``bin/`` holds worker scripts, not tests: their names are torch's (``test_script.py``...),
so pytest is told not to collect them.
"""

collect_ignore = ["bin"]

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from pliant._delivery.handlers import event_handlers, metric_handlers  # noqa: E402


@pytest.fixture(autouse=True)
def _handlers_restored() -> Iterator[None]:
    """Each test leaves this process's metric and event handlers as it found them, per group
    too: ``configure(h, group)`` has no undo in torch's API (nor pliant's), and a group
    left configured would take the metrics a later test expects at its default handler."""
    saved = [(s, list(s.default), dict(s.by_group), s.looked_up)
             for s in (metric_handlers, event_handlers)]
    yield
    for handler_set, default, by_group, looked_up in saved:
        handler_set.default, handler_set.by_group = default, by_group
        handler_set.looked_up = looked_up

"""What a plugin hands to pliant: typed, frozen registrations.

Each registration hook (see :mod:`pliant.hookspecs`) returns a sequence of one
of these. A registration is cheap to build: ``factory`` is called only when a
user selects the backend, so a plugin imports its heavy dependencies (torch,
boto3, an etcd client) inside the factory, and ``pliant plugins`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pliant.settings import Setting

__all__ = ["EventBackend", "MetricBackend", "Registration", "RendezvousBackend", "TimerBackend"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Registration:
    """A named backend: ``factory`` builds it, ``settings`` is what it accepts.

    The factory receives the settings already validated and parsed: a dict with
    one entry per declared :class:`~pliant.settings.Setting`.
    """

    name: str
    factory: Callable[..., Any]
    settings: tuple[Setting, ...] = ()
    description: str = ""

    kind: ClassVar[str] = "backend"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"{self.kind} name {self.name!r} must be lowercase letters, digits, "
                             "'-', '_' or '.'")
        if not callable(self.factory):
            raise TypeError(f"{self.kind} {self.name!r}: factory must be callable")
        if not all(isinstance(s, Setting) for s in self.settings):
            raise TypeError(f"{self.kind} {self.name!r}: settings must be pliant.Setting objects")


@dataclass(frozen=True)
class RendezvousBackend(Registration):
    """``factory(params: RendezvousParameters, settings: dict) -> RendezvousHandler``.

    ``params`` is the job's shape (endpoint, run id, node counts); ``settings``
    holds the ``--rdzv-conf`` settings, validated and parsed once against the
    declared ``settings`` (every key present, defaults filled in). ``serve``,
    when given, runs the backend's store in the foreground (``serve(host, port)``)
    for ``pliant store``: a coordination point outside every training node.
    """

    serve: Callable[[str, int], None] | None = None

    kind: ClassVar[str] = "rendezvous backend"


@dataclass(frozen=True)
class MetricBackend(Registration):
    """``factory(settings: dict) -> pliant.metrics.MetricHandler``."""

    kind: ClassVar[str] = "metric handler"


@dataclass(frozen=True)
class EventBackend(Registration):
    """``factory(settings: dict) -> pliant.events.EventHandler``."""

    kind: ClassVar[str] = "event handler"


@dataclass(frozen=True)
class TimerBackend(Registration):
    """``factory(settings: dict) -> pliant.timer.TimerServer``."""

    kind: ClassVar[str] = "timer backend"

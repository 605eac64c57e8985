"""What a plugin hands to pliant: typed, frozen registrations.

Each registration hook (see :mod:`pliant.hookspecs`) returns a sequence of one
of these. A registration is cheap to build: ``factory`` is called only when a
user selects the backend, so a plugin imports its heavy dependencies (torch,
boto3, an etcd client) inside the factory, and ``pliant plugins`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pliant.settings import Setting

if TYPE_CHECKING:
    from pliant.events.types import EventHandler
    from pliant.metrics.types import MetricHandler
    from pliant.rendezvous.api import RendezvousHandler, RendezvousParameters
    from pliant.rendezvous.store import RendezvousStore
    from pliant.timer.types import TimerServer

__all__ = [
    "ClientStoreFactory",
    "EventBackend",
    "EventFactory",
    "MetricBackend",
    "MetricFactory",
    "Registration",
    "RendezvousBackend",
    "RendezvousFactory",
    "Settings",
    "TimerBackend",
    "TimerFactory",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

#: What a factory receives: one parsed value per declared :class:`~pliant.settings.Setting`
#: (the user's, else the setting's default), by setting name.
Settings = Mapping[str, Any]
#: Builds a rendezvous handler for one job from torch's parameters and the parsed settings.
RendezvousFactory = Callable[["RendezvousParameters", Settings], "RendezvousHandler"]
#: Opens a client connection to a job's store, for reading only (``pliant status``):
#: ``client_store(endpoint, settings, timeout) -> RendezvousStore``.
ClientStoreFactory = Callable[[str, Settings, float], "RendezvousStore"]
#: Builds a metric handler from its parsed settings.
MetricFactory = Callable[[Settings], "MetricHandler"]
#: Builds an event handler from its parsed settings.
EventFactory = Callable[[Settings], "EventHandler"]
#: Builds a timer server from its parsed settings.
TimerFactory = Callable[[Settings], "TimerServer"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Registration(Generic[F]):
    """A named backend: ``factory`` builds it, ``settings`` is what it accepts.

    The factory receives the settings already validated and parsed (:data:`Settings`);
    each kind's registration says what else it receives and what it returns.
    """

    name: str
    factory: F
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
class RendezvousBackend(Registration[RendezvousFactory]):
    """``factory(params: RendezvousParameters, settings: Settings) -> RendezvousHandler``.

    ``params`` is the job's shape (backend, endpoint, run id, node counts, local address);
    ``settings`` holds the ``--rdzv-conf`` settings, validated and parsed once against the
    declared ``settings`` (every key present, defaults filled in). ``serve``,
    when given, runs the backend's store in the foreground (``serve(host, port)``)
    for ``pliant store``: a coordination point outside every training node.

    ``client_store``, when given, opens a client connection to the store of a job at
    ``endpoint`` (``client_store(endpoint, settings, timeout)``), so that ``pliant status``
    can read the job through the core's protocol: it must never host a store nor write
    (it may not even connect as a node would), must give up with a
    ``RendezvousConnectionError`` naming the endpoint after ``timeout`` seconds, and every
    call on the store it returns must too. A backend on
    :class:`~pliant.rendezvous.elastic.ElasticRendezvousHandler` provides one; without it,
    ``pliant status`` says that the backend cannot be read.
    """

    serve: Callable[[str, int], None] | None = None
    client_store: ClientStoreFactory | None = None

    kind: ClassVar[str] = "rendezvous backend"


@dataclass(frozen=True)
class MetricBackend(Registration[MetricFactory]):
    """``factory(settings: Settings) -> pliant.metrics.MetricHandler``."""

    kind: ClassVar[str] = "metric handler"


@dataclass(frozen=True)
class EventBackend(Registration[EventFactory]):
    """``factory(settings: Settings) -> pliant.events.EventHandler``."""

    kind: ClassVar[str] = "event handler"


@dataclass(frozen=True)
class TimerBackend(Registration[TimerFactory]):
    """``factory(settings: Settings) -> pliant.timer.TimerServer``."""

    kind: ClassVar[str] = "timer backend"

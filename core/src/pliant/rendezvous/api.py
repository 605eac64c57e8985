"""The rendezvous interface, as torch defines it, without importing torch.

A rendezvous handler gathers the nodes of a job into a round and tells each
node its rank, the world size, and where the workers of this round meet
(``master_addr``/``master_port``). Backends are plugins: see
:func:`pliant.rendezvous.create_handler`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from pliant.errors import PliantError

__all__ = [
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousGracefulExitError",
    "RendezvousHandler",
    "RendezvousInfo",
    "RendezvousParameters",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "RoundEnd",
]


class RendezvousError(PliantError):
    """Base of the rendezvous errors."""


class RendezvousClosedError(RendezvousError):
    """The rendezvous is closed: the job is over."""


class RendezvousTimeoutError(RendezvousError):
    """A rendezvous round did not complete in time."""


class RendezvousConnectionError(RendezvousError):
    """The rendezvous backend (store, server) cannot be reached."""


class RendezvousStateError(RendezvousError):
    """The rendezvous state is corrupt or inconsistent."""


class RendezvousGracefulExitError(RendezvousError):
    """This node was asked to leave the job without an error."""


@dataclass(frozen=True)
class RendezvousInfo:
    """One completed round, as seen by this node.

    ``rank`` and ``world_size`` count nodes; ``master_addr`` and
    ``master_port`` are where this round's workers meet (rank 0 listens there);
    ``round`` numbers the rounds of the job.
    """

    rank: int
    world_size: int
    master_addr: str
    master_port: int
    round: int = 0
    store: Any = None
    #: The job-wide restart count, when the backend keeps one (the same on every
    #: node); None lets the agent count its own restarts, as torch does.
    restart_count: int | None = None
    #: Workers on each node, in node rank order, when the backend shares them: nodes
    #: may then run different ``--nproc-per-node``. None: every node runs as many as this one.
    node_sizes: tuple[int, ...] | None = None
    #: Each node's role, in node rank order, when the backend shares them: ``ROLE_RANK`` and
    #: ``ROLE_WORLD_SIZE`` then count the workers of this node's role. None: every node runs
    #: this node's role.
    node_roles: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RoundEnd:
    """Why a running round ended, as every node of the job sees it.

    ``reason`` is one of ``failure`` (a worker failed; restart), ``failed`` (a
    worker failed and no restart is left), ``join`` (a node arrived), ``dead``
    (a node stopped sending heartbeats), ``left`` (a node's agent stopped before
    finishing, e.g. on a signal), ``lost`` (too few nodes remain),
    ``succeeded`` (every node finished), ``closed`` (``set_closed``), ``store``
    (the store cannot be reached). ``restart`` says whether the nodes form a
    new round; ``failure`` is the root cause's :meth:`ProcessFailure.as_dict`;
    ``survivors`` is how many nodes the next round expects back.
    """

    reason: str
    message: str
    restart: bool
    failure: dict[str, Any] | None = None
    survivors: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundEnd:
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise RendezvousStateError(f"not a round outcome: {data!r:.200}") from exc


class RendezvousParameters:
    """What a backend factory receives: the job's shape and the backend's settings.

    ``config`` holds ``--rdzv-conf`` (already validated against the backend's
    declared settings when it came through ``pliant run``).
    """

    def __init__(
        self,
        backend: str,
        endpoint: str,
        run_id: str,
        min_nodes: int,
        max_nodes: int,
        local_addr: str | None = None,
        **config: Any,
    ) -> None:
        if not backend:
            raise ValueError("the rendezvous backend name must not be empty")
        if min_nodes < 1 or max_nodes < min_nodes:
            raise ValueError(f"min_nodes={min_nodes} and max_nodes={max_nodes} must satisfy "
                             "1 <= min_nodes <= max_nodes")
        self.backend = backend
        self.endpoint = endpoint
        self.run_id = run_id
        self.min_nodes = min_nodes
        self.max_nodes = max_nodes
        self.local_addr = local_addr
        self.config = config

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def get_as_bool(self, key: str, default: bool | None = None) -> bool | None:
        value = self.get(key, default)
        if value is None or isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "t", "yes", "y", "on"):
            return True
        if text in ("0", "false", "f", "no", "n", "off"):
            return False
        raise ValueError(f"rdzv-conf {key}={value!r} is not a valid boolean")

    def get_as_int(self, key: str, default: int | None = None) -> int | None:
        value = self.get(key, default)
        try:
            return None if value is None else int(value)
        except ValueError:
            raise ValueError(f"the rendezvous option {key!r} is {value!r}, which is not an "
                             f"integer; set --rdzv-conf {key}=N") from None

    def get_as_float(self, key: str, default: float | None = None) -> float | None:
        value = self.get(key, default)
        try:
            return None if value is None else float(value)
        except ValueError:
            raise ValueError(f"the rendezvous option {key!r} is {value!r}, which is not a "
                             f"number; set --rdzv-conf {key}=SECONDS") from None


class RendezvousHandler(ABC):
    """The interface every rendezvous backend implements (torch's, unchanged)."""

    #: Whether the agent must ask :meth:`num_nodes_waiting` every monitor
    #: interval to notice new nodes. A backend that can never see a new node
    #: (one node) sets this to False, and the agent then sleeps until a worker
    #: exits or a signal arrives.
    polls_membership: bool = True

    #: This node's worker count; the agent sets it before :meth:`next_rendezvous` so that
    #: a backend can share it with the other nodes (see ``RendezvousInfo.node_sizes``).
    local_world_size: int = 1
    #: This node's role (``WorkerSpec.role``), set by the agent like ``local_world_size``
    #: (see ``RendezvousInfo.node_roles``).
    role: str = "default"
    #: This node's restart budget (``--max-restarts``), set by the agent like
    #: ``local_world_size``, so that a backend can publish it (``pliant status`` shows it).
    #: None: not told (a handler used without pliant's agent).
    max_restarts: int | None = None

    @abstractmethod
    def get_backend(self) -> str:
        """The backend's name."""

    @abstractmethod
    def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and block until it completes."""

    @abstractmethod
    def is_closed(self) -> bool:
        """Whether the job is over."""

    @abstractmethod
    def set_closed(self) -> None:
        """Mark the job as over: every node leaves at its next rendezvous."""

    @abstractmethod
    def num_nodes_waiting(self) -> int:
        """Nodes that arrived after the current round and wait for the next."""

    @abstractmethod
    def get_run_id(self) -> str:
        """The job's run id."""

    def shutdown(self) -> bool:
        """Release the backend's resources; True on success."""
        return True

    @property
    def use_agent_store(self) -> bool:
        """Whether workers share a store hosted by the agent (pliant's don't)."""
        return False

    # -- pliant's extensions: optional, with defaults that keep torch's behaviour ----------

    def on_change(self, wake: Callable[[], None] | None) -> bool:
        """Call ``wake`` (from any thread) when the running round ends.

        Returns False when the handler cannot notify; the agent then asks
        :meth:`num_nodes_waiting` every monitor interval, as torch's does.
        """
        return False

    def round_end(self) -> RoundEnd | None:
        """Why the running round ended; None while it runs."""
        return None

    def report_failure(self, failure: dict[str, Any], restart: bool) -> RoundEnd:
        """A worker on this node failed: end the round for every node.

        ``restart`` says whether the job-wide budget allows another attempt.
        Returns the outcome every node sees (another node's report may have
        come first).
        """
        return RoundEnd("failure" if restart else "failed", str(failure.get("message", "")),
                        restart=restart, failure=failure)

    def report_success(self) -> None:  # noqa: B027 - optional
        """Every worker on this node exited 0."""

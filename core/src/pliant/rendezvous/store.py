"""What a store backend implements: the small interface the elastic protocol needs.

A store plugin (``pliant-c10d`` on torch's TCPStore, ``pliant-etcd`` on etcd)
provides a :class:`RendezvousStore` and hands it to
:class:`~pliant.rendezvous.elastic.ElasticRendezvousHandler`; everything else
(rounds, ranks, restarts, liveness, scale-up) is written once, in the core.

The interface is three things:

* **compare-and-set on keys** (:meth:`~RendezvousStore.compare_set`), plus an
  atomic counter (:meth:`~RendezvousStore.add`) that lets a burst of joins take
  numbers without a single failed compare-and-set;
* **change notification** (:meth:`~RendezvousStore.wait`): block until keys
  exist, woken by the store (TCPStore's wait, an etcd watch), never by polling;
* **liveness** (:meth:`~RendezvousStore.beat`, :meth:`~RendezvousStore.mark_left`
  and :meth:`~RendezvousStore.read_beat`): heartbeat counters by default, which
  the watching node must see move; a node that leaves normally says so with
  ``mark_left``, and readers see ``Beat.left``. A store with leases overrides
  ``beat`` and sets :attr:`~RendezvousStore.expiring_beats`, and then a node is
  alive while its key exists; its mark of having left must outlive the lease.

Values are bytes, and never empty (TCPStore cannot tell an empty value from a
missing key in a compare-and-set). Every method raises
:class:`~pliant.rendezvous.api.RendezvousConnectionError` (naming the
endpoint) when the store cannot be reached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LEFT", "Beat", "RendezvousStore"]

#: What :meth:`RendezvousStore.mark_left` adds to a heartbeat counter: a count at or above it
#: says the node left. Part of the wire format (agents of every version read it alike).
LEFT = 1 << 40


@dataclass(frozen=True)
class Beat:
    """One reading of a node's heartbeat key (:meth:`RendezvousStore.read_beat`)."""

    #: The beat count; None before the first beat, or once the store expired the key.
    count: int | None
    #: The node said it left normally (:meth:`RendezvousStore.mark_left`).
    left: bool


class RendezvousStore(ABC):
    """A key-value store shared by the nodes of a job."""

    #: Where the store is, for error messages (``host:port``, a list of members).
    endpoint: str = ""

    #: False (counters): a node is alive while its beat count moves, and dead after
    #: ``dead_after`` seconds without a change. True (leases): ``beat`` keeps the node's key
    #: alive, the store deletes the key once the node stops beating for its lease's time to
    #: live, and a node is dead as soon as its key is gone.
    expiring_beats: bool = False

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The key's value, or None when it does not exist. Never blocks on a missing key."""

    @abstractmethod
    def set(self, key: str, value: bytes) -> None:
        """Write the key."""

    @abstractmethod
    def add(self, key: str, amount: int) -> int:
        """Atomically add ``amount`` to the integer at ``key`` (missing = 0); the new value."""

    @abstractmethod
    def compare_set(self, key: str, expected: bytes | None, desired: bytes) -> bytes:
        """Write ``desired`` if the key holds ``expected`` (None: does not exist).

        Returns the value the key holds afterwards: ``desired`` when the swap
        happened, the current value when it did not.
        """

    @abstractmethod
    def wait(self, keys: Sequence[str], timeout: float) -> bool:
        """Block until every key exists (True) or ``timeout`` seconds pass (False)."""

    @abstractmethod
    def clone(self) -> RendezvousStore:
        """Another connection to the same store, for use from another thread."""

    def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release this connection."""

    def delete_prefix(self, prefix: str) -> None:  # noqa: B027 - optional
        """Delete every key under ``prefix`` (a store that cannot may keep them)."""

    # -- liveness: heartbeat counters unless the store has something better ----------

    def beat(self, key: str, amount: int = 1) -> int:
        """Say "this node is alive" under ``key``; returns the new beat count.

        :meth:`mark_left` adds :data:`LEFT` here: a count that reaches it must stay readable
        until the run's keys are deleted, even on a store whose beats expire."""
        return self.add(key, amount)

    def last_beat(self, key: str) -> int | None:
        """The beat count under ``key``, or None before the first beat."""
        value = self.get(key)
        return None if value is None else int(value)

    def mark_left(self, key: str) -> None:
        """Say "this node left normally" under its heartbeat ``key``: the node watching it moves
        on instead of calling it dead. Read back by :meth:`read_beat` as ``left``."""
        self.beat(key, LEFT)

    def put_beat(self, key: str, value: bytes, left: bool = False) -> None:
        """Write this node's heartbeat under ``key`` as ``value`` (a signed beat, see
        :mod:`pliant.rendezvous.connection`), kept as :meth:`beat` keeps its key: a store whose
        beats expire attaches it to its lease, unless the node ``left``."""
        self.set(key, value)

    def read_beat(self, key: str) -> Beat:
        """The heartbeat under ``key``, and whether its node left; one store read."""
        count = self.last_beat(key)
        return Beat(count, count is not None and count >= LEFT)

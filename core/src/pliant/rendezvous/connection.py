"""One connection to the rendezvous store, as the protocol uses it.

Every store call the protocol makes goes through :class:`Connection`, so that a
store that went away is reported the same way on every path: a
:class:`~pliant.rendezvous.api.RendezvousConnectionError` naming the endpoint,
and :attr:`Connection.lost` set, after which the handler stops talking to it.

With a token (:mod:`pliant.rendezvous.auth`), a heartbeat is a signed write of a
value that changes every beat, and "left" a signed value, on every store: a
stranger's ``add`` or ``put`` can neither keep a dead node alive for good (a
copied value does not move) nor say that a live one left. A store whose beats
expire (etcd's leases) still attaches them to its lease, so they are cleaned
up, but liveness is then judged as on any store, by a count that must move
(:attr:`Connection.expiring_beats` is False): a key that merely exists proves
nothing once strangers can write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pliant.rendezvous.api import RendezvousConnectionError, RendezvousError
from pliant.rendezvous.auth import ForgedValueError, Seal
from pliant.rendezvous.store import Beat, RendezvousStore

__all__ = ["WAIT_SLICE", "Connection"]

T = TypeVar("T")

#: The longest one store wait lasts before control returns to Python, so that a signal
#: (Ctrl-C, SIGTERM) reaches the agent while it waits. The wait still ends the moment the
#: key appears: this bounds signal latency, it is not a poll of the state.
WAIT_SLICE = 0.5


class Connection:
    """A :class:`RendezvousStore` whose failures are typed and remembered."""

    def __init__(self, store: RendezvousStore, seal: Seal | None = None) -> None:
        self.store = store
        self.seal = seal or Seal(None, store.endpoint, "")
        self._signed_beats = self.seal.signs
        self.endpoint = store.endpoint
        #: A call found the store unreachable: every later one would wait out read_timeout.
        self.lost = False

    @property
    def expiring_beats(self) -> bool:
        """Whether a beat key that exists proves its node alive (see the module's text)."""
        return self.store.expiring_beats and not self._signed_beats

    def get(self, key: str) -> bytes | None:
        return self._call(self.store.get, key)

    def set(self, key: str, value: bytes) -> None:
        self._call(self.store.set, key, value)

    def add(self, key: str, amount: int) -> int:
        return self._call(self.store.add, key, amount)

    def compare_set(self, key: str, expected: bytes | None, desired: bytes) -> bytes:
        return self._call(self.store.compare_set, key, expected, desired)

    def wait(self, keys: Sequence[str], deadline: float) -> bool:
        """Wait for every key until ``deadline`` (monotonic), in slices short enough for
        signals."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.wait_once(keys, min(left, WAIT_SLICE)):
                return True

    def wait_once(self, keys: Sequence[str], timeout: float) -> bool:
        """One store wait, for a caller that returns to Python often by itself."""
        return self._call(self.store.wait, keys, timeout)

    def beat(self, key: str) -> None:
        if self._signed_beats:
            self.seal.signed_beat(key, lambda value: self._call(self.store.put_beat, key, value))
        else:
            self._call(self.store.beat, key)

    def mark_left(self, key: str) -> None:
        if self._signed_beats:
            self.seal.signed_beat(
                key, lambda value: self._call(self.store.put_beat, key, value, True), left=True)
        else:
            self._call(self.store.mark_left, key)

    def read_beat(self, key: str) -> Beat:
        if not self._signed_beats:
            return self._call(self.store.read_beat, key)
        value = self.get(key)
        if value is None:
            return Beat(None, False)
        try:
            payload = self.seal.unwrap(key, value)
        except ForgedValueError as exc:
            self.seal.reject(exc)
            return Beat(None, False)  # no reading: neither a sign of life nor a departure
        if payload == b"left":
            return Beat(None, True)
        return Beat(int(payload), False)

    def delete_prefix(self, prefix: str) -> None:
        self._call(self.store.delete_prefix, prefix)

    def clone(self) -> Connection:
        """Another connection to the same store, for another thread; lost on its own."""
        return Connection(self._call(self.store.clone), self.seal)

    def close(self) -> None:
        self.store.close()

    def _call(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return fn(*args)
        except RendezvousConnectionError:
            self.lost = True
            raise
        except RendezvousError:
            raise
        except (OSError, RuntimeError) as exc:
            self.lost = True
            raise RendezvousConnectionError(
                f"rendezvous store at {self.endpoint} failed: {exc}") from exc

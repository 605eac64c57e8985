"""An in-memory :class:`~pliant.rendezvous.store.RendezvousStore`, for tests.

Every handle made by :meth:`MemoryRendezvousStore.clone` shares one dict, so
the handlers of one test meet in it as agents meet in a real store. ``wait``
is woken by the writes themselves (a condition variable), never by polling.
Nothing here needs torch, a server or a network.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pliant.rendezvous.api import RendezvousConnectionError
from pliant.rendezvous.store import RendezvousStore

__all__ = ["MemoryRendezvousStore"]

_names = itertools.count(1)


class _State:
    """What the handles of one store share."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.changed = threading.Condition()
        self.name = f"memory:{next(_names)}"


class MemoryRendezvousStore(RendezvousStore):
    """A store in this process's memory; :meth:`clone` is another handle on the same keys."""

    def __init__(self, state: _State | None = None) -> None:
        self._state = state or _State()
        self.endpoint = self._state.name
        self._closed = False

    def get(self, key: str) -> bytes | None:
        with self._open() as values:
            return values.get(key)

    def set(self, key: str, value: bytes) -> None:
        with self._open() as values:
            values[key] = bytes(value)
            self._state.changed.notify_all()

    def add(self, key: str, amount: int) -> int:
        with self._open() as values:
            new = int(values.get(key, b"0")) + amount
            values[key] = str(new).encode()
            self._state.changed.notify_all()
            return new

    def compare_set(self, key: str, expected: bytes | None, desired: bytes) -> bytes:
        with self._open() as values:
            current = values.get(key)
            if current != expected:
                return current if current is not None else b""
            values[key] = bytes(desired)
            self._state.changed.notify_all()
            return bytes(desired)

    def wait(self, keys: Sequence[str], timeout: float) -> bool:
        with self._open() as values:
            return self._state.changed.wait_for(lambda: all(k in values for k in keys),
                                                max(timeout, 0.0))

    def clone(self) -> MemoryRendezvousStore:
        # A new connection, as a network store opens one: it works after this one closed.
        return MemoryRendezvousStore(self._state)

    def close(self) -> None:
        self._closed = True

    def delete_prefix(self, prefix: str) -> None:
        with self._open() as values:
            for key in [k for k in values if k.startswith(prefix)]:
                del values[key]

    def _check(self) -> None:
        if self._closed:
            raise RendezvousConnectionError(f"the store connection to {self.endpoint} is closed")

    @contextmanager
    def _open(self) -> Iterator[dict[str, bytes]]:
        """The shared keys, under the lock every handle's waits sleep on."""
        self._check()
        with self._state.changed:
            yield self._state.values

"""Liveness: heartbeats, and telling a node that died from one that is only quiet.

While a round runs, each node's keep-alive thread (:func:`keep_alive`) beats
under its own key and watches one other node, the next in rank order
(:class:`Ring`), so liveness costs O(1) per node. Nodes outside the round (a
spare, the agent keeping the store up at exit) judge several nodes at once
(:class:`Pulses`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pliant.rendezvous.connection import Connection
from pliant.rendezvous.keys import Keys
from pliant.rendezvous.store import Beat

__all__ = ["Pulse", "Pulses", "Ring", "keep_alive"]


class Pulse:
    """Whether one watched node still lives, judged by its heartbeat key as the store keeps
    it: a counter that must keep rising, or (``expiring_beats``) a key that exists while the
    node's lease lives and vanishes when the store expires it.

    Only a count above every count seen before is a sign of life. A reading that is missing
    or did not verify (a stranger's value, with a token) is no evidence either way, and an
    old signed count copied back is not a new one: someone else writing the key cannot keep
    a dead node alive by making its value change."""

    def __init__(self, expiring: bool, dead_after: float) -> None:
        self._expiring, self._dead_after = expiring, dead_after
        self._last: int | None = None
        self._seen = False
        self._since = time.monotonic()

    def dead(self, beat: int | None, now: float, stalled: bool = False) -> bool:
        """Record a reading of the node's beat; True once it counts as dead. ``stalled``: the
        store itself was too slow to answer, which silenced everyone and is not a death."""
        if self._expiring:
            if beat is not None:
                self._seen, self._since = True, now
                return False
            # Gone after being seen: the store expired its lease. Never seen: it had
            # dead_after seconds to start beating.
            return self._seen or now - self._since > self._dead_after
        if stalled or (beat is not None and (self._last is None or beat > self._last)):
            self._last = beat if beat is not None else self._last
            self._since = now
            return False
        return now - self._since > self._dead_after


class Pulses:
    """The pulses of several nodes, by id, each started at its first reading."""

    def __init__(self, expiring: bool, dead_after: float) -> None:
        self._expiring, self._dead_after = expiring, dead_after
        self._by_id: dict[str, Pulse] = {}

    def start(self, node_id: str) -> None:
        """Start judging ``node_id`` now, before its first reading."""
        self._by_id.setdefault(node_id, Pulse(self._expiring, self._dead_after))

    def running(self, node_id: str, beat: Beat, now: float) -> bool:
        """Whether the node is still in the job: it neither left nor fell silent."""
        if beat.left:
            return False
        self.start(node_id)
        return not self._by_id[node_id].dead(beat.count, now)


class Ring:
    """The node this one watches: the next in rank order that has not left."""

    def __init__(self, nodes: list[dict[str, Any]], rank: int, keys: Keys, expiring: bool,
                 dead_after: float, interval: float) -> None:
        self._ring = nodes[rank + 1:] + nodes[:rank]
        self._keys, self._expiring, self._dead_after = keys, expiring, dead_after
        self._interval = interval
        self._pulse = Pulse(expiring, dead_after)

    def dead(self, conn: Connection, started: float) -> dict[str, Any] | None:
        """Read the watched node's beat: the node, once it counts as dead. ``started``: when
        this turn of the keep-alive loop began."""
        while self._ring:
            beat = conn.read_beat(self._keys.beat(self._ring[0]["id"]))
            if beat.left:  # it left normally: watch the one after it
                self._ring.pop(0)
                self._pulse = Pulse(self._expiring, self._dead_after)
                continue
            # A store that stalled this long (torch's server blocks while it looks up a new
            # client's name) silenced everyone: that is not a death.
            stalled = time.monotonic() - started > self._interval
            return self._ring[0] if self._pulse.dead(beat.count, time.monotonic(),
                                                     stalled) else None
        return None


def keep_alive(conn: Connection, beat_key: str, over_key: str, ring: Ring, interval: float,
               stop: threading.Event, on_dead: Callable[[dict[str, Any]], None],
               genuine: Callable[[], bool] = lambda: True) -> bool:
    """Beat every ``interval`` under ``beat_key``, watch ``ring`` and wait for ``over_key``
    (the round's end), until ``stop``. True when the round ended, False when stopped.
    ``on_dead`` is told of the watched node once it counts as dead (until the round ends).
    ``genuine`` says whether the ``over_key`` that appeared verifies; one that does not is
    waited past (the round goes on)."""
    next_beat = 0.0
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_beat:
            conn.beat(beat_key)
            next_beat = now + interval
        if conn.wait_once([over_key], interval / 2):
            if genuine():
                return True
            stop.wait(interval / 2)  # a forged end is there: the key cannot be waited on
        dead = ring.dead(conn, now)
        if dead is not None:
            on_dead(dead)
    return False

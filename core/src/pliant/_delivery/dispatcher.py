"""Getting metrics and events from the caller to the handlers without slowing the caller.

``put_metric`` and ``record`` only append to a bounded queue: 1 to 2 µs a call (measured,
bench figure l), no lock, no I/O. One daemon thread per process ("pliant-sinks") hands what
is queued to the handlers, so a slow or dead sink (a network endpoint that times out) delays
that thread, never training. When the queue is full, what does not fit is dropped and
counted; the count, with what the handlers say they dropped, goes to the callback the
metrics API registers (:meth:`Dispatcher.report_drops_with`), which puts it as the metric
``pliant.dropped`` (group ``pliant``). At exit, what is still queued is delivered and each
handler's ``close()`` (or ``flush()``) is called, within a bound.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["CAPACITY", "Dispatcher", "dispatcher"]

log = logging.getLogger("pliant.sinks")

#: Records that may wait for the handlers; beyond this, new ones are dropped and counted.
CAPACITY = 100_000
#: How often the thread reports what was dropped, and wakes to deliver if nobody woke it.
REPORT_INTERVAL = 1.0
#: The thread delivers at most once per this many seconds: a record after a quiet spell
#: goes at once, but at hundreds of records a second it wakes 20 times a second, not once
#: a record, so the caller (training, holding the GIL) is interrupted for batches, not for
#: each value. :meth:`Dispatcher.flush` and exit do not wait.
GATHER = 0.05
#: At exit, how long delivering what is left and closing the handlers may take.
EXIT_BOUND = 5.0

Deliver = Callable[[Any], None]


class Dispatcher:
    """A bounded queue and the thread that empties it into the handlers."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._queue: deque[tuple[Deliver, Any]] = deque()
        self._capacity = capacity
        self._wake = threading.Event()
        self._hurry = threading.Event()  # flush() or close(): deliver without gathering
        self._lock = threading.Lock()  # only to start the thread once
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closers: list[Callable[[], list[Any]]] = []
        self._idle: list[Callable[[], None]] = []
        self._report: Callable[[int], None] | None = None
        self._stopping = False
        #: Records dropped because the queue was full or a handler raised.
        self.dropped = 0
        self._reported = 0

    def put(self, deliver: Deliver, item: Any) -> None:
        """Queue ``deliver(item)`` for the thread. Never blocks, never raises."""
        if self._pid != os.getpid():  # first use in this process (or a forked child)
            self._start()
        queue = self._queue
        if len(queue) >= self._capacity:
            self.dropped += 1
            return
        queue.append((deliver, item))
        if len(queue) == 1:
            self._wake.set()

    def flush(self, timeout: float = EXIT_BOUND) -> bool:
        """Wait until everything queued before this call was delivered; False on timeout."""
        if self._pid != os.getpid():
            return True  # nothing was ever queued in this process
        done = threading.Event()

        def delivered(_: Any) -> None:
            self._run_idle()  # what a handler batches (the relay) goes out too
            done.set()

        self._queue.append((delivered, None))  # past the capacity: never dropped
        self._hurry.set()
        self._wake.set()
        return done.wait(timeout)

    def handlers_of(self, closers: Callable[[], list[Any]]) -> None:
        """Register where to find handlers to flush and close at exit."""
        self._closers.append(closers)

    def report_drops_with(self, report: Callable[[int], None]) -> None:
        """Have ``report(total)`` called, on the thread, whenever the count of dropped records
        changed (the metrics API puts it as ``pliant.dropped``)."""
        self._report = report

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the thread each time it has emptied the queue (a handler
        that batches sends its batch then)."""
        self._idle.append(callback)

    def _run_idle(self) -> None:
        for callback in self._idle:
            try:
                callback()
            except Exception:
                log.debug("%r failed", callback, exc_info=True)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            forked = self._pid != 0
            if forked:  # what the parent queued is the parent's to deliver
                self._queue.clear()
                self._stopping = False
            self._pid = os.getpid()
            self._wake = threading.Event()
            self._hurry = threading.Event()
            self._thread = threading.Thread(target=self._run, name="pliant-sinks", daemon=True)
            self._thread.start()
            if not forked:  # a forked child inherits the registration
                atexit.register(self.close)

    def _run(self) -> None:
        next_report = time.monotonic() + REPORT_INTERVAL
        last_drain = 0.0
        while not self._stopping:
            self._wake.wait(REPORT_INTERVAL)
            # A record after a quiet spell goes at once; one that follows others closely
            # waits for those still coming, up to GATHER after the last delivery.
            queued = bool(self._queue)
            gather = last_drain + GATHER - time.monotonic()
            if queued and gather > 0 and self._hurry.wait(gather):
                self._hurry.clear()
            self._wake.clear()
            self.drain()
            if queued:
                last_drain = time.monotonic()
            if not self._queue and not self._stopping:
                self._run_idle()
            if time.monotonic() >= next_report:
                self._report_dropped()
                next_report = time.monotonic() + REPORT_INTERVAL

    def drain(self, deadline: float | None = None) -> None:
        """Deliver what is queued (until ``deadline``, a monotonic time, when given)."""
        queue = self._queue
        while queue:
            if deadline is not None and time.monotonic() > deadline:
                return
            if self._stopping and threading.current_thread() is self._thread:
                return  # close() delivers the rest, from one thread
            try:
                deliver, item = queue.popleft()
            except IndexError:  # emptied by the other thread
                return
            try:
                deliver(item)
            except Exception:  # a broken sink must never stop anything
                self.dropped += 1
                log.debug("delivering %r failed", item, exc_info=True)

    def total_dropped(self) -> int:
        """What was dropped here, plus what each handler says it gave up on (``dropped``)."""
        return self.dropped + sum(int(getattr(h, "dropped", 0) or 0) for h in self._handlers())

    def _handlers(self) -> list[Any]:
        unique: dict[int, Any] = {}
        for closers in self._closers:
            for handler in closers():
                unique.setdefault(id(handler), handler)
        return list(unique.values())

    def _report_dropped(self) -> None:
        dropped = self.total_dropped()
        if dropped != self._reported and self._report is not None:
            self._reported = dropped
            try:
                self._report(dropped)
            except Exception:
                log.debug("reporting %d dropped records failed", dropped, exc_info=True)

    def close(self) -> None:
        """At exit: deliver what is left, report drops, flush and close every handler."""
        deadline = time.monotonic() + EXIT_BOUND
        self._stopping = True
        self._hurry.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))  # finish its delivery
        self.drain(deadline)
        for handler in self._handlers():
            # close() sends what the handler still holds; flush() for one without it.
            method = getattr(handler, "close", None) or getattr(handler, "flush", None)
            if method is None or time.monotonic() > deadline:
                continue
            try:
                method()
            except Exception:
                log.debug("closing %r failed", handler, exc_info=True)
        # Last, what was dropped, counting what the handlers gave up on as they closed: a
        # handler still open (the console) shows it even when the others' sink is down.
        self._report_dropped()
        self.drain(deadline)


#: The process's one dispatcher.
dispatcher = Dispatcher()

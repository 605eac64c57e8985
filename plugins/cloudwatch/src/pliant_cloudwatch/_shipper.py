"""A bounded buffer and the one thread that sends it, in batches, to an AWS API.

Both handlers are built on :class:`Shipper`: the caller (pliant's dispatcher thread)
only appends to a buffer under a lock; a daemon thread per handler wakes every
``flush_interval`` seconds, or as soon as a full batch is waiting, and sends. What
cannot be sent is counted in :attr:`Shipper.dropped`, never raised:

- a value offered while the buffer holds ``max_buffer`` items;
- a batch the service refuses for good (a 4xx other than throttling, missing
  credentials): retrying it would fail again;
- what is still buffered when :meth:`Shipper.close` gives up.

A batch that fails for a reason that may pass (no connection, a timeout, a 5xx or
throttling, after botocore's own retries) goes back to the front of the buffer and is
tried again on the next tick; the buffer's bound still holds, so an endpoint that stays
down costs memory up to ``max_buffer`` items and no more.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pliant_cloudwatch._aws import client_of, describe, is_transient

__all__ = ["CLOSE_TIMEOUT", "FLUSH_INTERVAL", "MAX_BUFFER", "Shipper"]

log = logging.getLogger("pliant_cloudwatch")

# The defaults of both handlers, and of their settings (``flush_interval``, ``max_buffer``,
# ``close_timeout``): written here only.
#: Seconds between sends; a full batch goes at once.
FLUSH_INTERVAL = 5.0
#: Most items waiting to be sent; beyond it new ones are dropped and counted.
MAX_BUFFER = 10_000
#: Most seconds that sending what is left may take at exit.
CLOSE_TIMEOUT = 5.0

T = TypeVar("T")


class Shipper(ABC, Generic[T]):
    """Buffers items of type ``T`` and sends them in batches from its own thread."""

    def __init__(self, client: Any, *, thread_name: str, flush_interval: float,
                 max_buffer: int, close_timeout: float, batch_count: int,
                 batch_bytes: int) -> None:
        self._client = client  # a boto3 client, or a LazyClient the thread makes first
        self._flush_interval = flush_interval
        self._max_buffer = max_buffer
        self._close_timeout = close_timeout
        self._batch_count = batch_count
        self._batch_bytes = batch_bytes
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)  # notified when a send ends
        self._buffer: deque[T] = deque()
        self._buffered_bytes = 0
        self._accepted = 0  # items ever put into the buffer
        self._settled = 0  # of those, sent or given up
        self._failed_sends = 0
        self._closing = False
        self._final_deadline = 0.0
        self._abandoned = False  # close() stopped waiting: the thread must change nothing
        self._wake = threading.Event()
        # After a send failed for a passing reason, a full buffer does not wake the thread
        # before this (monotonic) time: it waits for its next tick instead of retrying at
        # every value, each retry rebuilding a large request while training wants the GIL.
        self._quiet_until = 0.0
        #: Values or events given up on (buffer full, refused, or unsent at close).
        self.dropped = 0
        #: Values or events the service accepted.
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    # What a concrete shipper provides.

    @abstractmethod
    def _size(self, item: T) -> int:
        """Bytes ``item`` adds to a request, as the API counts them (or an upper bound)."""

    @abstractmethod
    def _send(self, batch: list[T]) -> int:
        """Send one batch; return how many items the service rejected. May raise."""

    @property
    def client(self) -> Any:
        """The boto3 client the handler sends with (to add botocore hooks)."""
        return client_of(self._client)

    def _take_batch(self) -> list[T]:
        """Remove and return the next batch (lock held). By default the oldest items, within
        the batch count and bytes."""
        batch: list[T] = []
        size = 0
        while self._buffer and len(batch) < self._batch_count:
            item_size = self._size(self._buffer[0])
            if batch and size + item_size > self._batch_bytes:
                break
            batch.append(self._buffer.popleft())
            size += item_size
        self._buffered_bytes -= size
        return batch

    # The caller's side.

    def _offer(self, item: T) -> None:
        """Buffer ``item`` for the thread; count it as dropped when there is no room."""
        size = self._size(item)
        with self._lock:
            if self._closing or len(self._buffer) >= self._max_buffer:
                self.dropped += 1
                return
            self._buffer.append(item)
            self._buffered_bytes += size
            self._accepted += 1
            full = (len(self._buffer) >= self._batch_count
                    or self._buffered_bytes >= self._batch_bytes)
        if full and time.monotonic() >= self._quiet_until:
            self._wake.set()

    def _accept(self, convert: Callable[[Any], T | None], raw: Any) -> None:
        """Buffer ``convert(raw)``; count ``raw`` as dropped when it converts to None (the
        service would refuse it) or cannot be read at all. Never raises."""
        try:
            item = convert(raw)
        except Exception:
            log.debug("cloudwatch: cannot send %r", raw, exc_info=True)
            item = None
        if item is None:
            self._drop()
        else:
            self._offer(item)

    def _drop(self, count: int = 1) -> None:
        """Count items refused before they reached the buffer (invalid values)."""
        with self._lock:
            self.dropped += count

    def flush(self, timeout: float | None = None) -> bool:
        """Send what is buffered now; wait until it is sent or given up, up to ``timeout``
        seconds (default: ``close_timeout``).

        Returns True when all of it was delivered; False as soon as a request fails (what
        failed for a passing reason stays buffered and is tried again; what was refused for
        good is dropped), or when the time runs out. Never raises.
        """
        limit = self._close_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._lock:
            target = self._accepted
            failures = self._failed_sends
        self._wake.set()
        with self._lock:
            while self._settled < target and self._failed_sends == failures:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._progress.wait(left)
            return self._failed_sends == failures

    def close(self, timeout: float | None = None) -> None:
        """Send what is buffered and stop, within ``timeout`` seconds (default
        ``close_timeout``) even when the endpoint does not answer; what is left unsent then
        is counted as dropped. Later values are dropped. Never raises."""
        limit = self._close_timeout if timeout is None else timeout
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._final_deadline = time.monotonic() + limit
        self._wake.set()
        self._thread.join(limit)
        with self._lock:
            if self._thread.is_alive():  # stuck in a request: give up on it and the rest
                self._abandoned = True
                self.dropped += self._accepted - self._settled
                self._settled = self._accepted
                self._buffer.clear()
                self._buffered_bytes = 0
                self._progress.notify_all()

    # The thread's side.

    def _run(self) -> None:
        try:
            client_of(self._client)  # made here, not in the caller's thread
        except Exception:  # said once by whoever failed; sending tries again
            log.debug("cloudwatch: preparing to send failed", exc_info=True)
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            with self._lock:
                closing = self._closing
            try:
                self._drain(final=closing)
            except Exception:  # a bug here must not kill the thread silently
                log.debug("cloudwatch: sending failed unexpectedly", exc_info=True)
            if closing:
                self._give_up_rest()
                return

    def _drain(self, *, final: bool) -> None:
        """Send batches until the buffer is empty, a send fails for a passing reason (not
        final: try again next tick), or, when final, the close deadline passes."""
        while True:
            with self._lock:
                if self._gone() or (final and time.monotonic() > self._final_deadline):
                    return
                batch = self._take_batch()
            if not batch:
                return
            try:
                rejected = self._send(batch)
            except Exception as exc:
                retry = not final and is_transient(exc)
                log.debug("cloudwatch: a batch of %d failed (%s); %s", len(batch), describe(exc),
                          "will retry" if retry else "dropped", exc_info=True)
                with self._lock:
                    if self._gone():
                        return
                    self._failed_sends += 1
                    if retry:
                        self._put_back(batch)
                        self._quiet_until = time.monotonic() + self._flush_interval
                    else:
                        self.dropped += len(batch)
                        self._settled += len(batch)
                    self._progress.notify_all()
                if retry or (final and is_transient(exc)):
                    return  # the endpoint is unwell: wait for the next tick, or give up
                continue
            with self._lock:
                if self._gone():
                    return
                rejected = max(0, min(rejected, len(batch)))
                self.sent += len(batch) - rejected
                self.dropped += rejected
                self._settled += len(batch)
                self._progress.notify_all()

    def _gone(self) -> bool:
        """Whether close() stopped waiting for this thread (lock held): then the thread
        changes nothing, close() has counted what was left."""
        return self._abandoned

    def _put_back(self, batch: list[T]) -> None:
        """Return a failed batch to the front of the buffer (lock held); what no longer fits
        under ``max_buffer`` is dropped, newest first."""
        self._buffer.extendleft(reversed(batch))
        self._buffered_bytes += sum(self._size(item) for item in batch)
        while len(self._buffer) > self._max_buffer:
            self._buffered_bytes -= self._size(self._buffer.pop())
            self.dropped += 1
            self._settled += 1

    def _give_up_rest(self) -> None:
        with self._lock:
            if self._gone():
                return
            left = len(self._buffer)
            self.dropped += left
            self._settled += left
            self._buffer.clear()
            self._buffered_bytes = 0
            self._progress.notify_all()

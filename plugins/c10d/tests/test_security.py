"""pliant-c10d and a network shared with others: what the store listens on, the warning for a
job without a token, and a handler that is never shut down."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pliant.rendezvous import RendezvousParameters
from pliant.testing.rendezvous import FAST_TIMEOUTS, joined, new_run_id
from pliant_c10d import C10dRendezvousHandler

PLIANT = str(Path(sys.executable).parent / "pliant")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_on(port: int) -> list[str]:
    """The local addresses (as /proc/net/tcp spells them) of the sockets listening on port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.append(addr)
    return found


def handler(endpoint: str, **conf: object) -> C10dRendezvousHandler:
    return C10dRendezvousHandler(RendezvousParameters(
        "c10d", endpoint, new_run_id(), 1, 1, **{**FAST_TIMEOUTS, **conf}))


def test_the_hosting_agent_listens_on_the_endpoint_address_only() -> None:
    port = free_port()
    host = handler(f"127.0.0.1:{port}", is_host=True)
    try:
        assert listening_on(port) == ["0100007F"]  # 127.0.0.1, not 0.0.0.0
        joined([host])
    finally:
        host.shutdown()


def test_pliant_store_listens_on_its_host_only() -> None:
    proc = subprocess.Popen([PLIANT, "store", "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"listening on 127\.0\.0\.1:(\d+);", proc.stdout.readline())
        assert found
        assert listening_on(int(found[1])) == ["0100007F"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "reachable from other hosts" not in err  # loopback: nobody else can reach it


def test_a_job_without_a_token_on_a_reachable_store_is_warned_once(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    import pliant_c10d

    pliant_c10d._warned = False
    port = free_port()
    caplog.set_level(logging.WARNING, logger="pliant.c10d")
    made = [handler(f"0.0.0.0:{port}", is_host=True), handler(f"0.0.0.0:{port}", is_host=False)]
    try:
        warnings = [r.getMessage() for r in caplog.records if "token" in r.getMessage()]
        assert len(warnings) == 1 and "token_file" in warnings[0], warnings
        assert f"0.0.0.0:{port}" in warnings[0]
        pliant_c10d._warned = False
        caplog.clear()
        token = tmp_path / "token"
        token.write_text("secret")
        token.chmod(0o600)
        made.append(handler(f"0.0.0.0:{port}", is_host=False, token_file=str(token)))
        assert not [r for r in caplog.records if "token" in r.getMessage()]
    finally:
        for h in reversed(made):
            h.shutdown()


def test_a_loopback_store_without_a_token_is_not_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    import pliant_c10d

    pliant_c10d._warned = False
    caplog.set_level(logging.WARNING, logger="pliant.c10d")
    host = handler(f"127.0.0.1:{free_port()}", is_host=True)
    host.shutdown()
    assert not [r for r in caplog.records if "token" in r.getMessage()]


LEFT_RUNNING = """
from pliant.rendezvous import RendezvousParameters
from pliant_c10d import C10dRendezvousHandler
import sys
handler = C10dRendezvousHandler(RendezvousParameters(
    "c10d", "127.0.0.1:" + sys.argv[1], "never-shut-down", 1, 1, is_host=True,
    last_call_timeout=0, keep_alive_interval=0.2))
info = handler.next_rendezvous()
print("rank", info.rank, flush=True)
# no shutdown(): the interpreter exits with the keep-alive thread in a store wait
"""


def test_a_handler_never_shut_down_exits_0() -> None:
    done = subprocess.run([sys.executable, "-c", LEFT_RUNNING, str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rank 0" in done.stdout
    assert "terminate called" not in done.stderr


def test_listen_addr_asks_for_every_interface() -> None:
    port = free_port()
    host = handler(f"127.0.0.1:{port}", is_host=True, listen_addr="0.0.0.0")
    try:
        assert listening_on(port) == ["00000000"]  # 0.0.0.0
        joined([host])
    finally:
        host.shutdown()


def test_pliant_store_on_every_interface_says_to_use_a_token_and_a_firewall() -> None:
    proc = subprocess.Popen([PLIANT, "store", "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"listening on 0\.0\.0\.0:(\d+);", proc.stdout.readline())
        assert found
        assert listening_on(int(found[1])) == ["00000000"]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "reachable from other hosts" in err and "token_file" in err and "firewall" in err


@pytest.mark.parametrize(("host", "addresses", "listens"), [
    ("127.0.0.1", ["127.0.0.1"], ["127.0.0.1"]),  # loopback asked for by address
    ("localhost", ["127.0.0.1", "::1"], ["127.0.0.1", "::1"]),
    ("node0", ["10.1.2.3"], ["10.1.2.3"]),  # the machine's real address
    # Debian's "127.0.1.1 node0" in /etc/hosts: the other nodes reach node0 elsewhere
    ("node0", ["127.0.1.1"], ["0.0.0.0"]),
])
def test_where_the_hosting_agent_listens(host: str, addresses: list[str], listens: list[str],
                                         caplog: pytest.LogCaptureFixture) -> None:
    from pliant_c10d import _listen_on

    with caplog.at_level(logging.WARNING):
        assert _listen_on(host, addresses, None) == listens
    assert ("listens on every interface" in caplog.text) == (listens == ["0.0.0.0"])
    assert _listen_on(host, addresses, "192.0.2.1") == ["192.0.2.1"]  # listen_addr wins


def _proc_net_hex(addr: str) -> str:
    """An IPv4 address as /proc/net/tcp spells it (little-endian hex)."""
    return socket.inet_aton(addr)[::-1].hex().upper()


def test_pliant_store_listens_on_this_machines_name_by_default() -> None:
    from pliant_c10d import _listen_on

    name = socket.gethostname()
    resolved = sorted({str(i[4][0]) for i in socket.getaddrinfo(name, None,
                                                                type=socket.SOCK_STREAM)})
    expected = sorted(_listen_on(name, resolved, None), key=lambda a: ":" in a)[0]
    proc = subprocess.Popen([PLIANT, "store", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(rf"listening on {re.escape(name)}:(\d+);", proc.stdout.readline())
        assert found
        if ":" not in expected:
            assert listening_on(int(found[1])) == [_proc_net_hex(expected)]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)

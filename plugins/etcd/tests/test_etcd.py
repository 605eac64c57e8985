"""pliant-etcd beyond the conformance suite: endpoints and settings, leases, failover between
members, TLS and authentication, all against real etcd servers on loopback."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pliant.errors import ConfigError
from pliant.rendezvous import RendezvousConnectionError, RendezvousParameters
from pliant.rendezvous.keys import CLOSED
from pliant_etcd import config_from, parse_endpoints
from pliant_etcd.store import EtcdAuthError, EtcdConfig, EtcdRendezvousStore
from pliant_etcd.testing import EtcdCluster


def params(endpoint: str, **conf: Any) -> RendezvousParameters:
    return RendezvousParameters("etcd", endpoint, "run", 1, 2, **conf)


def open_store(cluster: EtcdCluster, **overrides: Any) -> EtcdRendezvousStore:
    members, _ = parse_endpoints(cluster.endpoint)
    settings: dict[str, Any] = {"members": members, "timeout": 10.0, "lease_ttl": 1}
    if cluster.tls:
        settings.update(tls=True, cacert=str(cluster.ca_file), cert=str(cluster.cert_file),
                        key=str(cluster.key_file))
    if cluster.user:
        settings.update(user=cluster.user, password=cluster.password)
    return EtcdRendezvousStore(EtcdConfig(**{**settings, **overrides}))


@pytest.fixture
def store(etcd: EtcdCluster) -> Iterator[EtcdRendezvousStore]:
    opened = open_store(etcd)
    yield opened
    opened.close()


def unique(name: str) -> str:
    return f"pliant/test-{time.monotonic_ns()}/{name}"


def eventually(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


# -- endpoints and settings ---------------------------------------------------------------


@pytest.mark.parametrize("endpoint, members, https", [
    ("h1", (("h1", 2379),), False),
    ("h1:2380", (("h1", 2380),), False),
    ("h1:2379,h2:2379, h3:2379", (("h1", 2379), ("h2", 2379), ("h3", 2379)), False),
    ("https://h1:2379,https://h2", (("h1", 2379), ("h2", 2379)), True),
    ("[::1]:2379,[fe80::1]", (("::1", 2379), ("fe80::1", 2379)), False),
])
def test_endpoints_name_one_or_more_members(endpoint: str, members: Any, https: bool) -> None:
    assert parse_endpoints(endpoint) == (members, https)


@pytest.mark.parametrize("endpoint, fragment", [
    ("", "needs --rdzv-endpoint"),
    ("h1:", "has a ':' but no port"),
    ("h1:abc", "port 'abc' is not a number"),
    ("h1:70000", "port '70000' is not a number"),
    ("ftp://h1", "'ftp' is not http or https"),
])
def test_bad_endpoints_are_refused_naming_the_value(endpoint: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        parse_endpoints(endpoint)
    assert endpoint in str(caught.value) or not endpoint


def test_the_lease_lives_as_long_as_a_silent_node_may(etcd: EtcdCluster) -> None:
    config = config_from(params(etcd.endpoint, keep_alive_interval=0.5, keep_alive_max_attempt=5))
    assert config.lease_ttl == 3  # ceil(0.5 s x 5)
    assert config.prefix == "/pliant/" and not config.tls


@pytest.mark.parametrize("conf, fragment", [
    ({"cacert": "/no/such/ca.pem"}, "cacert=/no/such/ca.pem (from --rdzv-conf"),
    ({"protocol": "https"}, "protocol https needs cacert=FILE"),
    ({"user": "alice"}, "user and password (from --rdzv-conf"),
    ({"password": "x"}, "user and password"),
])
def test_incomplete_security_settings_are_refused(conf: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        config_from(params("127.0.0.1:2379", **conf))


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"cert and key .* go together"):
        config_from(params("127.0.0.1:2379", cert=str(cert)))


def test_the_password_is_not_in_the_configs_repr() -> None:
    config = EtcdConfig(members=(("h", 1),), user="alice", password="s3cret")
    assert "s3cret" not in repr(config)


def test_the_plugin_and_its_handler_do_not_import_torch(etcd: EtcdCluster) -> None:
    code = (
        "import sys, pliant_etcd\n"
        "assert 'pyetcd' not in sys.modules and 'grpc' not in sys.modules, 'listing is heavy'\n"
        "from pliant.rendezvous import RendezvousParameters\n"
        f"p = RendezvousParameters('etcd', {etcd.endpoint!r}, 'x', 1, 1)\n"
        "h = pliant_etcd.create_handler(p)\n"
        "h.next_rendezvous(); h.shutdown()\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- keys and leases ------------------------------------------------------------------------


def test_keys_live_under_the_configured_prefix(etcd: EtcdCluster) -> None:
    prefix = f"/teams/{time.monotonic_ns()}/"
    custom = open_store(etcd, prefix=prefix)
    try:
        custom.set("pliant/run-a/meta", b"1")
        assert etcd.keys(prefix) == [f"{prefix}run-a/meta".encode()]
        custom.delete_prefix("pliant/run-a/")
        assert etcd.keys(prefix) == []
    finally:
        custom.close()


def test_a_node_that_stops_beating_loses_its_key_when_its_lease_expires(
        store: EtcdRendezvousStore) -> None:
    key = unique("beat/node")
    node = store.clone()
    node.beat(key)
    assert store.last_beat(key) is not None
    started = time.monotonic()
    eventually(lambda: store.last_beat(key) is None, "the lease expired")  # nobody beats now
    assert time.monotonic() - started < 5  # a 1 s lease, checked twice a second by etcd
    node.close()


def test_beats_keep_the_key_alive_past_its_lease(store: EtcdRendezvousStore) -> None:
    key = unique("beat/node")
    node = store.clone()
    try:
        for _ in range(8):  # 2 s: twice the lease
            node.beat(key)
            time.sleep(0.25)
            assert store.last_beat(key) is not None
    finally:
        node.close()


def test_an_exiting_node_revokes_its_lease_at_once(store: EtcdRendezvousStore) -> None:
    key = unique("beat/node")
    node = store.clone()
    node.beat(key)
    node.close()
    assert store.last_beat(key) is None


def test_a_node_that_left_stays_marked_after_its_connection_closes(
        store: EtcdRendezvousStore) -> None:
    key = unique("beat/node")
    node = store.clone()
    node.beat(key)
    node.mark_left(key)
    node.close()
    time.sleep(1.5)  # past the lease
    beat = store.last_beat(key)
    assert beat is not None and beat >= CLOSED


def test_a_wait_is_woken_by_the_write_not_by_a_poll(store: EtcdRendezvousStore) -> None:
    key = unique("ready")
    writer = store.clone()
    try:
        timer = threading.Timer(0.3, writer.set, (key, b"1"))
        timer.start()
        started = time.monotonic()
        assert store.wait([key], 5.0) is True
        assert time.monotonic() - started < 1.0
        timer.join()
    finally:
        writer.close()


# -- several members: failover ----------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[EtcdCluster]:
    with EtcdCluster(3) as three:
        yield three


def test_calls_go_on_through_another_member_when_one_dies(cluster: EtcdCluster) -> None:
    store = open_store(cluster)
    try:
        store.set(unique("a"), b"1")
        for i in range(3):  # whichever member the client uses, one of the kills hits it
            cluster.kill(i)
            key = unique(f"after-kill-{i}")
            store.set(key, b"1")  # how long failover takes is bench/'s business
            assert store.get(key) == b"1"
            cluster.start(i)
    finally:
        store.close()


def test_a_wait_resumes_on_another_member_and_misses_nothing(cluster: EtcdCluster) -> None:
    waiter, writer = open_store(cluster), open_store(cluster)
    try:
        key = unique("over")
        assert waiter.wait([key], 0.1) is False  # the watch is established
        for i in range(3):  # kill the member the waiter's stream is on, whichever it is
            cluster.kill(i)
            assert waiter.wait([key], 0.3) is False
            cluster.start(i)
        cluster.kill(0)
        writer.set(key, b"1")  # written while the stream may be down
        assert waiter.wait([key], 10.0) is True
    finally:
        waiter.close()
        writer.close()


def test_adds_are_applied_once_each_while_members_die(cluster: EtcdCluster) -> None:
    """An add whose answer is lost with a dying member must not be applied twice when it is
    retried: the counter ends at exactly the number of adds."""
    key = unique("joined")
    stores = [open_store(cluster) for _ in range(3)]
    per_store = 60
    results: list[list[int]] = [[] for _ in stores]

    def adder(i: int) -> None:
        for _ in range(per_store):
            results[i].append(stores[i].add(key, 1))

    threads = [threading.Thread(target=adder, args=(i,)) for i in range(len(stores))]
    try:
        for thread in threads:
            thread.start()
        for i in range(3):
            time.sleep(0.15)
            cluster.kill(i)
            time.sleep(0.3)
            cluster.start(i)
        for thread in threads:
            thread.join(60)
        numbers = sorted(n for got in results for n in got)
        assert numbers == list(range(1, len(stores) * per_store + 1))
        assert int(stores[0].get(key) or 0) == len(stores) * per_store
    finally:
        for opened in stores:
            opened.close()


def test_all_members_down_is_a_clear_error_within_the_timeout() -> None:
    with EtcdCluster(1) as lone:
        store = open_store(lone, timeout=2.0)
        store.set(unique("a"), b"1")
        lone.kill(0)
        started = time.monotonic()
        with pytest.raises(RendezvousConnectionError) as caught:
            store.get(unique("a"))
        assert time.monotonic() - started < 4
        message = str(caught.value)
        assert lone.endpoint in message and "read_timeout=2s" in message, message
        store.close()


def test_nothing_listening_is_a_clear_error_naming_every_member() -> None:
    with EtcdCluster(1) as gone:
        endpoint = gone.endpoint
    members, _ = parse_endpoints(f"{endpoint},127.0.0.1:1")
    with pytest.raises(RendezvousConnectionError, match="cannot reach etcd at") as caught:
        EtcdRendezvousStore(EtcdConfig(members=members, timeout=1.0))
    assert endpoint in str(caught.value) and "127.0.0.1:1" in str(caught.value)


# -- TLS and authentication ----------------------------------------------------------------


def test_tls_with_client_certificates() -> None:
    with EtcdCluster(1, tls=True, client_cert_auth=True) as secure:
        store = open_store(secure)
        try:
            store.set(unique("a"), b"1")
            assert store.wait([unique("missing")], 0.1) is False
        finally:
            store.close()
        with pytest.raises(RendezvousConnectionError, match="cannot reach etcd at https://"):
            open_store(secure, cert=None, key=None, timeout=1.0)
        with pytest.raises(RendezvousConnectionError, match="cannot reach etcd"):
            open_store(secure, tls=False, cacert=None, cert=None, key=None, timeout=1.0)


def test_authentication() -> None:
    with EtcdCluster(1, user="alice", password="s3cret-pw") as guarded:
        store = open_store(guarded)
        try:
            store.set(unique("a"), b"1")
            assert store.add(unique("n"), 2) == 2
            assert store.wait([unique("missing")], 0.1) is False
        finally:
            store.close()
        with pytest.raises(EtcdAuthError, match="refused user 'alice'") as caught:
            open_store(guarded, password="wrong")
        assert "wrong" not in str(caught.value)
        assert "authentication failed" in str(caught.value)
        with pytest.raises(EtcdAuthError, match="refused no user"):
            open_store(guarded, user=None, password=None)

"""pliant_etcd.testing itself: real etcd members start, fail, restart and stop as promised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from pliant_etcd.testing import EtcdCluster
from pyetcd.exceptions import ConnectionFailedError


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` (not our child) has exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":  # exited, waiting for a parent that is gone to be reaped by init
            return True
        time.sleep(0.05)
    return False


def test_one_member_serves_and_stop_cleans_up() -> None:
    with EtcdCluster() as cluster:
        (member,) = cluster.members
        assert member.name == "m0"
        assert cluster.endpoint == f"127.0.0.1:{member.client_port}" == cluster.endpoints[0]
        assert cluster.scheme == "http"
        assert cluster.ca_file is None
        assert cluster.leader() == 0
        with cluster.client() as client:
            client.put("/run/a", "1")
            client.put("/other", "2")
            assert client.get("/run/a")[0] == b"1"
        assert cluster.keys("/run/") == [b"/run/a"]
        assert cluster.keys("") == [b"/other", b"/run/a"]
        data_dir = cluster.data_dir
        assert member.log_path.is_file()
    assert member.process is not None
    assert member.process.returncode is not None
    assert not data_dir.exists()
    cluster.stop()  # idempotent


def test_three_members_survive_the_leader_and_take_it_back() -> None:
    with EtcdCluster(3) as cluster:
        assert [m.name for m in cluster.members] == ["m0", "m1", "m2"]
        assert len(set(cluster.endpoints)) == 3
        old = cluster.leader()
        cluster.kill(old)
        assert not cluster.members[old].running
        new = cluster.leader()
        assert new != old
        other = next(i for i in range(3) if i != old)
        with cluster.client(other) as client:
            client.put("/after-kill", "yes")
        with pytest.raises(ConnectionFailedError), cluster.client(old, timeout=1) as client:
            client.get("/after-kill")

        cluster.start(old)
        assert cluster.members[old].running
        with cluster.client(old) as client:
            assert client.get("/after-kill")[0] == b"yes"
        assert cluster.leader() in range(3)


def test_tls_with_client_certificates() -> None:
    with EtcdCluster(tls=True, client_cert_auth=True) as cluster:
        assert cluster.scheme == "https"
        assert cluster.ca_file is not None and cluster.ca_file.is_file()
        assert cluster.cert_file is not None and cluster.key_file is not None
        with cluster.client() as client:
            client.put("k", "v")
            assert client.get("k")[0] == b"v"
        with pytest.raises(ConnectionFailedError), cluster.client(
            cert_cert=None, cert_key=None, timeout=2
        ) as client:
            client.get("k")  # the handshake fails: no client certificate
        with pytest.raises(ConnectionFailedError), cluster.client(
            ca_cert=None, cert_cert=None, cert_key=None, timeout=2
        ) as client:
            client.get("k")  # plain HTTP/2 to a TLS port


def test_password_authentication() -> None:
    with EtcdCluster(user="alice", password="s3cret") as cluster:
        assert (cluster.user, cluster.password) == ("alice", "s3cret")
        with cluster.client() as client:
            client.put("/anywhere/k", "v")
            assert client.get("/anywhere/k")[0] == b"v"
        assert cluster.keys("/anywhere/") == [b"/anywhere/k"]
        with pytest.raises(grpc.RpcError) as wrong:
            cluster.client(password="wrong")
        assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid user ID or password" in (wrong.value.details() or "")
        with pytest.raises(grpc.RpcError) as anonymous, cluster.client(
            user=None, password=None
        ) as client:
            client.get("/anywhere/k")
        assert "user name is empty" in (anonymous.value.details() or "")


def test_a_member_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    (tmp_path / "m0").write_text("a file where the data directory should be")
    with pytest.raises(RuntimeError, match=r"etcd member m0 exited.*m0\.log:\n.*"):
        EtcdCluster(data_dir=tmp_path)


def test_members_die_with_a_killed_parent() -> None:
    script = (
        "import os, sys\n"
        "from pliant_etcd.testing import EtcdCluster\n"
        "cluster = EtcdCluster()\n"
        "print(cluster.members[0].process.pid, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid = int(done.stdout.split()[0])
    if not _gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail("etcd outlived the process that started it")

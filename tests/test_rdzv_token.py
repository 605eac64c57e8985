"""A c10d job with a rendezvous token, and a stranger on the same store.

Two real agents on 127.0.0.1 meet at a `pliant store`; a stranger process, with
nothing but torch's own ``TCPStore`` client, reads the job's keys and writes
well-formed but unsigned values: a false end of the running round, a false
outcome of the next one (pointing every worker at its own address), a join
record, and a heartbeat saying a node left. Each is refused, and the job goes
on, restarts once and finishes with the workers meeting where the agents said.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from pliant_e2e import PLIANT, WORKERS, wait_for

WORKER = str(WORKERS / "node_worker.py")
FAST = "keep_alive_interval=0.5,last_call_timeout=1,join_timeout=20"
EVIL_ADDR, EVIL_PORT = "203.0.113.7", 6666

STRANGER = r'''
import json, sys
from datetime import timedelta
from torch.distributed import TCPStore

host, port, run_id, evil_addr, evil_port = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=30))
prefix = f"pliant/{run_id}/"
keys = [k for k in store.list_keys() if k.startswith(prefix)]
print("read", len(keys), "keys", flush=True)       # reading is possible: the values are public
k = int(store.get(prefix + "round").decode().rsplit(":", 1)[-1])
beats = [key for key in keys if key.startswith(prefix + "beat/")]
nodes = [key.rsplit("/", 1)[1] for key in beats]
rec = lambda value: json.dumps({"v": 1, **value})
evil = [{"id": n, "host": "evil", "addr": evil_addr, "port": int(evil_port), "workers": 1}
        for n in nodes]
store.set(prefix + f"{k}/over", rec({"reason": "failed", "message": "forged", "restart": False}))
store.set(prefix + f"{k + 1}/done", rec({"round": k + 1, "restart_count": 0, "nodes": evil}))
number = store.add(prefix + f"{k + 1}/joined", 1)
store.set(prefix + f"{k + 1}/join/{number}", rec(evil[0] | {"id": "stranger"}))
store.set(beats[0], str(1 << 40))                   # "this node left", unsigned
print("forged", flush=True)
'''


def test_a_stranger_cannot_steer_a_token_job(start_agent: Any, pliant_store: str, out: Path,
                                             tmp_path: Path) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    token = tmp_path / "token"
    token.write_text(secret + "\n")
    token.chmod(0o600)
    run_id = f"tok-{uuid.uuid4().hex[:10]}"
    go = tmp_path / "go"
    # 2:3 nodes: a join counter a stranger added to must not leave the next round short.
    agents = [start_agent(name, "run", "--nnodes", "2:3", "--rdzv-backend", "c10d",
                          "--rdzv-endpoint", pliant_store, "--rdzv-id", run_id,
                          "--rdzv-conf", f"{FAST},token_file={token}", "--max-restarts", "1",
                          WORKER, env={"OUT_DIR": str(out), "NODE": name, "FAIL_RANK": "1",
                                       "FAIL_AFTER": str(go)})
              for name in ("a", "b")]
    wait_for(lambda: len(list(out.glob("*_0_*.json"))) == 2, timeout=120)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert secret not in ps

    host, port = pliant_store.rsplit(":", 1)
    stranger = subprocess.run([sys.executable, "-c", STRANGER, host, port, run_id,
                               EVIL_ADDR, str(EVIL_PORT)],
                              capture_output=True, text=True, timeout=120)
    assert stranger.returncode == 0, stranger.stderr
    assert "forged" in stranger.stdout
    # Both agents refuse the forged end of their round, and their workers keep running.
    wait_for(lambda: all("ignored a rendezvous value" in a.stderr for a in agents), timeout=60)
    assert all(a.returncode is None for a in agents)
    go.touch()
    codes = [a.wait(180) for a in agents]
    logs = "\n".join(a.describe() for a in agents)
    assert codes == [0, 0], logs

    recs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    second = [r["env"] for r in recs if r["env"]["TORCHELASTIC_RESTART_COUNT"] == "1"]
    assert sorted(e["RANK"] for e in second) == ["0", "1"], logs
    assert {e["WORLD_SIZE"] for e in second} == {"2"}, logs
    assert {e["MASTER_ADDR"] for e in second} == {"127.0.0.1"}, logs
    assert len({e["MASTER_PORT"] for e in second}) == 1
    assert {e["MASTER_PORT"] for e in second} != {str(EVIL_PORT)}
    for agent in agents:
        assert secret not in agent.stdout + agent.stderr
        assert "worker" in agent.stderr and "failed" in agent.stderr, logs
    assert not any(secret in p.read_text(errors="replace") for p in tmp_path.rglob("*")
                   if p.is_file() and p != token)


def test_pliant_config_hides_the_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("not-for-your-eyes")
    shown = subprocess.run([PLIANT, "config", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                            "127.0.0.1:29400", "--rdzv-conf", f"token_file={token}"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert str(token) not in shown.stdout + shown.stderr
    assert "not-for-your-eyes" not in shown.stdout + shown.stderr
    assert "token_file" in shown.stdout and "<hidden>" in shown.stdout, shown.stdout


def test_an_agent_with_another_token_is_refused_naming_the_run_and_the_store(
        start_agent: Any, pliant_store: str, out: Path, tmp_path: Path) -> None:
    run_id = f"tok-{uuid.uuid4().hex[:10]}"
    files = []
    for name in ("mine", "theirs"):
        path = tmp_path / name
        path.write_text(f"{name}-{uuid.uuid4().hex}")
        path.chmod(0o600)
        files.append(path)

    def start(name: str, token: Path) -> Any:
        return start_agent(name, "run", "--nnodes", "2", "--rdzv-backend", "c10d",
                           "--rdzv-endpoint", pliant_store, "--rdzv-id", run_id,
                           "--rdzv-conf", f"{FAST},token_file={token}", WORKER,
                           env={"OUT_DIR": str(out), "NODE": name})

    first = start("a", files[0])
    from torch.distributed import TCPStore

    host, port = pliant_store.rsplit(":", 1)
    client = TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=30))
    wait_for(lambda: bool(client.check([f"pliant/{run_id}/meta"])), timeout=60)  # a joined
    other = start("b", files[1])
    assert other.wait(120) != 0
    assert run_id in other.stderr and pliant_store in other.stderr, other.describe()
    assert "token" in other.stderr
    assert files[1].read_text() not in other.stderr and files[0].read_text() not in other.stderr
    first.kill()

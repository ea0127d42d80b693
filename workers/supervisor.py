"""`facetrail up`: every role as a `facetrail worker ROLE` subprocess, restarted with backoff when it crashes.

With no redis.url the supervisor starts the embedded redis-server once and hands its unix:// URL to every child
(FACETRAIL_REDIS_URL). SIGTERM/SIGINT are forwarded; children finish their batch, ack and exit."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from pipeline.backbone import child_env, connect, redis_url
from pipeline.cameras import CameraRegistry
from pipeline.config import Settings

log = logging.getLogger("facetrail.supervisor")

WORKER_CMD = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


def worker_command(role: str, config_files: list[str] | None = None, consumer: str | None = None,
                   verbose: int = 0) -> list[str]:
    cmd = list(WORKER_CMD)
    for f in config_files or []:
        cmd += ["-c", str(f)]
    if verbose:
        cmd.append("-" + "v" * verbose)
    cmd += ["worker", role]
    if consumer:
        cmd += ["--consumer", consumer]
    return cmd


def role_plan(settings: Settings, roles: list[str] | None = None) -> list[str]:
    """One entry per child: grabber x1, detector/embedder/matcher x settings.workers.*, api x1."""
    w = settings.workers
    plan = ["grabber"] + ["detector"] * w.detectors + ["embedder"] * w.embedders + ["matcher"] * w.matchers + ["api"]
    if roles:
        plan = [p for p in plan if p in roles]
    return plan


@dataclass
class Child:
    role: str
    slot: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    backoff: float = 1.0
    history: list = field(default_factory=list)


class Supervisor:
    def __init__(self, settings: Settings, *, config_files: list[str] | None = None, roles: list[str] | None = None,
                 verbose: int = 0, env: dict | None = None):
        self.settings = settings
        self.config_files = config_files or []
        self.verbose = verbose
        self.env = dict(os.environ if env is None else env)
        self.children = [Child(role, i) for i, role in enumerate(role_plan(settings, roles))]
        self.stopping = threading.Event()

    def prepare(self) -> str:
        """Start (or find) Redis once, seed the YAML cameras into the registry; returns the URL children use."""
        url = redis_url(self.settings)  # embedded: started here, owned by this process (both servers)
        self.env.update(child_env(self.settings))
        r = connect(self.settings)
        added = CameraRegistry(r, self.settings).seed(self.settings.cameras)
        log.info("redis %s; %d camera(s) from config registered (%d new)", url.split("@")[-1],
                 len(self.settings.cameras), added)
        return url

    def _spawn(self, c: Child) -> None:
        cmd = worker_command(c.role, self.config_files, verbose=self.verbose)
        c.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        c.started = time.monotonic()
        log.info("started %s #%d pid=%d", c.role, c.slot, c.proc.pid)

    def poll(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                if now >= c.next_start:
                    self._spawn(c)
                continue
            rc = c.proc.poll()
            if rc is None:
                if now - c.started > 60:
                    c.backoff = 1.0  # ran long enough: the next crash restarts quickly again
                continue
            c.restarts += 1
            c.next_start = now + c.backoff
            log.error("%s #%d pid=%d exited with code %s; restart #%d in %.0fs", c.role, c.slot, c.proc.pid, rc,
                      c.restarts, c.backoff)
            c.backoff = min(c.backoff * 2, 30.0)
            c.proc = None

    def stop(self, timeout_s: float = 20.0) -> None:
        self.stopping.set()
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for p in live:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop within %.0fs: killing", p.pid, timeout_s)
                p.kill()
                p.wait()

    def banner(self) -> str:
        """What `up` is running and where to look: printed even without -v (without it `up` said nothing)."""
        st = self.settings
        roles: dict[str, int] = {}
        for c in self.children:
            roles[c.role] = roles.get(c.role, 0) + 1
        lines = ["facetrail up: " + ", ".join(f"{n} {r}" for r, n in roles.items())]
        lines.append(f"  redis (durable): {self.env.get('FACETRAIL_REDIS_URL', '').split('@')[-1]}")
        lines.append(f"  redis (frames in flight): "
                     f"{self.env.get('FACETRAIL_REDIS__TRANSIENT_URL', '').split('@')[-1]}")
        if "api" in roles:
            host = "127.0.0.1" if st.api.host in ("0.0.0.0", "::") else st.api.host
            lines.append(f"  API: http://{host}:{st.api.port}  (docs /docs, events /v1/events, metrics /metrics)")
        lines.append(f"  events: Redis stream {st.redis.key_prefix}:events, `facetrail events --follow`"
                     + (f", MQTT {st.sinks.mqtt.host}:{st.sinks.mqtt.port} topics {st.sinks.mqtt.topic_prefix}/#"
                        if st.sinks.mqtt.enabled else " (MQTT off: sinks.mqtt.enabled)"))
        try:
            cams = CameraRegistry(connect(st), st).list()
            shown = ", ".join(f"{c.name} (fps {c.fps if c.fps else 'every frame'})" for c in cams) or "none"
            lines.append(f"  cameras: {shown} (`facetrail camera list` for their state)")
        except Exception:  # noqa: BLE001 - the banner never stops `up`
            pass
        if not self.verbose:
            lines.append("  logs: run `facetrail -v up` (-vv for debug); Ctrl-C stops every worker")
        return "\n".join(lines)

    def run(self, stop: threading.Event | None = None) -> int:
        stop = stop or threading.Event()
        self.prepare()
        print(self.banner(), file=sys.stderr, flush=True)

        def _sig(signum, _frame):
            log.info("signal %d: stopping workers", signum)
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _sig)
            signal.signal(signal.SIGINT, _sig)
        try:
            while not stop.is_set():
                self.poll()
                stop.wait(0.5)
        finally:
            self.stop()
        return 0


def start_children(roles: list[str], settings: Settings, env: dict, config_files: list[str] | None = None,
                   verbose: int = 0) -> list[subprocess.Popen]:
    """Plain subprocesses for `facetrail process`' embedded pipeline (no restart loop)."""
    return [subprocess.Popen(worker_command(r, config_files, verbose=verbose), env=env, stdin=subprocess.DEVNULL)
            for r in roles]


def stop_children(procs: list[subprocess.Popen], timeout_s: float = 20.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

"""Loop helpers every stream worker shares: consumer names, a batch reader over a changing set of streams
(max batch / max wait, fair across cameras, reclaim of idle pending entries), dead-lettering, the run loop."""
from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from typing import Callable, Sequence

import redis

from pipeline.backbone import key
from pipeline.config import Settings
from pipeline.metrics import Heartbeat, StageMetrics
from pipeline.streams import UNAVAILABLE, ensure_group, reclaim_entries

log = logging.getLogger("facetrail.workers")

Entry = tuple[str, str, bytes]  # (stream, message id, payload)


def default_consumer(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def apply_cv_threads(settings: Settings) -> None:
    """workers.cv_threads > 0 pins OpenCV's thread pool of this process (several workers on few cores)."""
    if settings.workers.cv_threads:
        import cv2

        cv2.setNumThreads(settings.workers.cv_threads)


def deadletter_key(settings: Settings) -> str:
    return key(settings, "deadletter")


class BatchReader:
    """XREADGROUP across the streams streams_fn() names (re-read every refresh_s, so cameras added at runtime
    are picked up), up to batch_max entries, waiting at most batch_wait_ms after the first one arrives.
    Entries pending on a dead consumer for longer than reclaim_idle_ms are claimed first (XAUTOCLAIM).

    With `role` set, a consumer of the group whose heartbeat (<p>:hb:{role}:{consumer}) has expired is known dead
    (kill -9, OOM): its entries are claimed as soon as they are DEAD_IDLE_MS idle, not reclaim_idle_ms, so the
    frames a killed worker held are redone within seconds and the matcher never waits long for them."""

    DEAD_IDLE_MS = 1000

    def __init__(self, r: redis.Redis, settings: Settings, group: str, consumer: str,
                 streams_fn: Callable[[], Sequence[str]], *, refresh_s: float = 1.0, idle_block_ms: int = 500,
                 role: str | None = None, hb: redis.Redis | None = None):
        self.r = r  # the server of the streams read (transient for frames/faces)
        self.hb = hb if hb is not None else r  # the server of the heartbeats (durable)
        self.settings = settings
        self.role = role
        self._last_dead_check = 0.0
        self.group = group
        self.consumer = consumer
        self.streams_fn = streams_fn
        self.refresh_s = refresh_s
        self.idle_block_ms = idle_block_ms
        w = settings.workers
        self.batch_max = w.batch_max
        self.batch_wait_ms = w.batch_wait_ms
        self.reclaim_idle_ms = w.reclaim_idle_ms
        self.reclaim_every_s = max(0.1, w.reclaim_idle_ms / 2000.0)
        self.streams: list[str] = []
        self._known: set[str] = set()
        self._last_refresh = 0.0
        self._last_reclaim = 0.0
        self._last_forget = time.monotonic()
        self.reclaimed = 0

    def refresh(self, force: bool = False) -> list[str]:
        now = time.monotonic()
        if force or now - self._last_refresh >= self.refresh_s:
            self._last_refresh = now
            streams = list(dict.fromkeys(self.streams_fn()))
            for s in streams:
                if s not in self._known:
                    ensure_group(self.r, s, self.group)
                    self._known.add(s)
                    log.info("%s: reading %s (group %s)", self.consumer, s, self.group)
            for s in set(self.streams) - set(streams):
                log.info("%s: no longer reading %s", self.consumer, s)
                self._known.discard(s)
            self.streams = streams
        return self.streams

    def _forget_dead_consumers(self) -> None:
        """Consumers that hold nothing and have been silent for long (crashed and restarted under a new name)
        are removed from the group, so XINFO and metrics do not fill up with them. Nothing pending is lost."""
        idle_limit = max(10 * self.reclaim_idle_ms, 120_000)
        for s in self.streams:
            try:
                for c in self.r.xinfo_consumers(s, self.group):
                    name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                    if name != self.consumer and int(c["pending"]) == 0 and int(c["idle"]) > idle_limit:
                        self.r.xgroup_delconsumer(s, self.group, name)
                        log.info("%s: removed idle consumer %s from %s/%s", self.consumer, name, s, self.group)
            except redis.ResponseError:
                continue

    def _claim_dead(self) -> list[Entry]:
        """Entries of consumers whose heartbeat is gone (dead), claimed after DEAD_IDLE_MS of idleness."""
        from pipeline.metrics import heartbeat_key

        out: list[Entry] = []
        if self.role is None:  # (called only with a role: dead consumers are known by their role's heartbeats)
            return out
        role = self.role
        for s in self.streams:
            try:
                summary = self.r.xpending(s, self.group)
            except redis.ResponseError:
                continue
            for c in summary.get("consumers") or []:
                name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                if name == self.consumer or self.hb.exists(heartbeat_key(self.settings, role, name)):
                    continue
                rows = self.r.xpending_range(s, self.group, min="-", max="+", count=self.batch_max - len(out),
                                             consumername=name, idle=self.DEAD_IDLE_MS)
                ids = [row["message_id"] for row in rows]
                if not ids:
                    continue
                got = self.r.xclaim(s, self.group, self.consumer, self.DEAD_IDLE_MS, ids)
                live = [(s, i.decode() if isinstance(i, bytes) else i, f.get(b"m", f.get("m")))
                        for i, f in got if f]
                gone = [i for i in ids if i not in {g[0] for g in got if g[1]}]
                for i in gone:  # claimed, but the message was deleted meanwhile: nothing to redo
                    self.r.xack(s, self.group, i)
                if live:
                    log.warning("%s: consumer %s is dead (no heartbeat): took over %d entries of %s",
                                self.consumer, name, len(live), s)
                out += live
                if len(out) >= self.batch_max:
                    return out
        return out

    def _reclaim(self) -> list[Entry]:
        now = time.monotonic()
        if self.role and now - self._last_dead_check >= 1.0:
            self._last_dead_check = now
            got = self._claim_dead()
            if got:
                self.reclaimed += len(got)
                return got
        if now - self._last_reclaim < self.reclaim_every_s:
            return []
        self._last_reclaim = now
        if now - self._last_forget > 60:
            self._last_forget = now
            self._forget_dead_consumers()
        out: list[Entry] = []
        for s in self.streams:
            got = reclaim_entries(self.r, s, self.group, self.consumer, self.reclaim_idle_ms,
                                  self.batch_max - len(out))
            if got:
                log.warning("%s: reclaimed %d idle entries of %s (a consumer died or stalled)",
                            self.consumer, len(got), s)
            out += got
            if len(out) >= self.batch_max:
                break
        self.reclaimed += len(out)
        return out

    def _read(self, want: int, block_ms: int | None) -> list[Entry]:
        from pipeline.streams import _flatten, xreadgroup_many

        per_stream = max(1, math.ceil(want / max(1, len(self.streams))))  # fair share per camera
        try:
            resp = xreadgroup_many(self.r, self.group, self.consumer, {s: ">" for s in self.streams},
                                   count=per_stream, block_ms=block_ms)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            self.refresh(force=True)  # a stream was deleted (camera removed); recreate groups and retry later
            for s in self.streams:
                ensure_group(self.r, s, self.group)
            return []
        return _flatten(resp)

    def next_batch(self) -> list[Entry]:
        self.refresh()
        if not self.streams:
            time.sleep(min(0.2, self.refresh_s))
            return []
        batch = self._reclaim()
        if batch:
            return batch
        batch = self._read(self.batch_max, self.idle_block_ms)
        if not batch:
            return []
        deadline = time.monotonic() + self.batch_wait_ms / 1000.0
        while len(batch) < self.batch_max:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms < 1:
                break
            more = self._read(self.batch_max - len(batch), remaining_ms)
            if not more:
                break
            batch += more
        return batch


def dead_letter(r: redis.Redis, settings: Settings, stage: str, stream: str, msg_id: str, error: str,
                payload: bytes | None = None, *, camera: str | None = None, seq: int | None = None,
                rt: redis.Redis | None = None) -> None:
    """A message that can never be processed: keep it (bounded) with the reason, so nothing is lost silently.
    camera/seq are recorded when the message could be read that far (`facetrail process` counts them)."""
    log.error("%s: dead-lettering %s %s (camera=%s seq=%s): %s", stage, stream, msg_id, camera, seq, error)
    fields = {"stage": stage, "stream": stream, "id": msg_id, "error": error[:2000], "at": time.time()}
    if camera is not None:
        fields["camera"] = camera
    if seq is not None:
        fields["seq"] = seq
    if payload is not None and len(payload) < 4_000_000:
        fields["m"] = payload
    r.xadd(deadletter_key(settings), fields, maxlen=10_000, approximate=True)
    if camera is not None and seq is not None and stage in ("detector", "embedder"):
        from pipeline.streams import StreamNames, mark_gone

        # the matcher need not wait for it
        mark_gone(rt if rt is not None else r, StreamNames.of(settings), camera, [seq])


def run_loop(role: str, consumer: str, stop: threading.Event, reader: BatchReader,
             handle: Callable[[list[Entry]], None], metrics: StageMetrics, heartbeat: Heartbeat,
             before_read: Callable[[], bool] | None = None) -> None:
    """read batch -> handle (stage + emit + ack) -> repeat, until stop is set; the batch in hand is always
    finished and acked before returning (graceful SIGTERM). Redis outages are waited out: unacked entries stay
    pending and are redone by whoever reads them next."""
    backoff = 0.1
    heartbeat.beat(force=True)
    log.info("%s %s: started", role, consumer)
    try:
        while not stop.is_set():
            try:
                heartbeat.beat()
                if before_read is not None and not before_read():
                    stop.wait(0.05)
                    continue
                batch = reader.next_batch()
                if reader.reclaimed:
                    metrics.reclaimed += reader.reclaimed
                    reader.reclaimed = 0
                if not batch:
                    metrics.maybe_flush()
                    continue
                handle(batch)
                backoff = 0.1
            except UNAVAILABLE as e:  # incl. a Redis Cluster failover in progress
                metrics.errors += 1
                log.warning("%s %s: redis unavailable (%s); retrying in %.1fs", role, consumer, e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
    finally:
        metrics.maybe_flush(force=True)
        heartbeat.clear()
        log.info("%s %s: stopped", role, consumer)

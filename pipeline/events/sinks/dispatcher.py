"""SinkDispatcher: one thread per sink, each reading the events stream through its own consumer group
`sink:<name>`. A sink that fails keeps its event pending and retries with capped exponential backoff,
so it lags (in order) and catches up later; the matcher and the other sinks never wait for it. Pending
events of a crashed process are reclaimed by the dispatcher of another process (XAUTOCLAIM)."""
from __future__ import annotations

import logging
import threading
import time

import redis

from ...config import Settings
from ...streams import StreamNames, reclaim
from ..model import Event
from . import SINKS
from .base import PermanentSinkError, Sink

log = logging.getLogger("facetrail.sinks")

NEW_SINK_BACKLOG_S = 3600  # a sink's group is created this far back: a new sink gets the last hour of events


def build_sinks(settings: Settings, stop: threading.Event | None = None) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.sinks.mqtt.enabled:
        sinks.append(SINKS.create("mqtt", settings.sinks.mqtt))
    for wh in settings.sinks.webhooks:
        sinks.append(SINKS.create("webhook", wh, stop=stop))
    return sinks


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


class SinkDispatcher:
    def __init__(self, r: redis.Redis, settings: Settings, sinks: list[Sink], *, consumer: str,
                 stop: threading.Event, block_ms: int = 1000):
        self.r = r
        self.settings = settings
        self.sinks = sinks
        self.consumer = consumer
        self.stop = stop
        self.block_ms = block_ms
        self.stream = StreamNames.of(settings).events
        self.threads: list[threading.Thread] = []
        self.delivered: dict[str, int] = {s.name: 0 for s in sinks}
        self.dropped: dict[str, int] = {s.name: 0 for s in sinks}

    def group(self, sink: Sink) -> str:
        return f"sink:{sink.name}"

    def ensure_group(self, sink: Sink) -> None:
        start = f"{max(0, int((time.time() - NEW_SINK_BACKLOG_S) * 1000))}-0"
        try:
            self.r.xgroup_create(self.stream, self.group(sink), id=start, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def start(self) -> "SinkDispatcher":
        for sink in self.sinks:
            self.ensure_group(sink)
            t = threading.Thread(target=self._loop, args=(sink,), name=f"sink-{sink.name}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def join(self, timeout: float = 10.0) -> None:
        for t in self.threads:
            t.join(timeout)
        for s in self.sinks:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                log.exception("closing sink %s", s.name)

    def _read(self, sink: Sink) -> list[tuple[str, bytes | None]]:
        """This consumer's pending entries first (retries, in order), then others' stale ones, then new."""
        group = self.group(sink)
        resp = self.r.xreadgroup(group, self.consumer, {self.stream: "0"}, count=50)
        entries = [(_s(i), (f or {}).get(b"m")) for _, rows in resp or [] for i, f in rows]
        if entries:
            return entries
        stale = reclaim(self.r, self.stream, group, self.consumer, self.settings.workers.reclaim_idle_ms, 50)
        if stale:
            return [(i, m) for _, i, m in stale]
        resp = self.r.xreadgroup(group, self.consumer, {self.stream: ">"}, count=50, block=self.block_ms)
        return [(_s(i), (f or {}).get(b"m")) for _, rows in resp or [] for i, f in rows]

    def _loop(self, sink: Sink) -> None:
        group = self.group(sink)
        failures = 0
        while not self.stop.is_set():
            try:
                entries = self._read(sink)
            except redis.RedisError as e:
                log.warning("sink=%s reading %s: %s", sink.name, self.stream, e)
                self.stop.wait(1.0)
                continue
            for msg_id, raw in entries:
                if self.stop.is_set():
                    return
                if raw is None:  # trimmed from the stream before this sink got to it
                    log.warning("sink=%s stream=%s id=%s: event trimmed before delivery", sink.name, self.stream,
                                msg_id)
                    self.r.xack(self.stream, group, msg_id)
                    continue
                try:
                    ev = Event.decode(raw)
                except ValueError as e:  # a newer schema or garbage: never deliverable by this build
                    log.error("sink=%s stream=%s id=%s: unreadable event, skipped: %s", sink.name, self.stream,
                              msg_id, e)
                    self.dropped[sink.name] += 1
                    self.r.xack(self.stream, group, msg_id)
                    continue
                try:
                    sink.deliver(ev, raw if isinstance(raw, bytes) else raw.encode())
                except PermanentSinkError as e:
                    log.error("sink=%s event id=%s refused for good, dropped: %s", sink.name, msg_id, e)
                    self.dropped[sink.name] += 1
                except Exception as e:  # noqa: BLE001 - any failure: keep it pending, back off, retry in order
                    failures += 1
                    wait = min(self.settings.sinks.max_backoff_s, 0.5 * 2 ** min(failures - 1, 10))
                    log.warning("sink=%s event stream id=%s delivery failed (%s); retry in %.1fs", sink.name,
                                msg_id, e, wait)
                    self.stop.wait(wait)
                    break
                else:
                    self.delivered[sink.name] += 1
                    failures = 0
                self.r.xack(self.stream, group, msg_id)

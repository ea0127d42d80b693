"""Prometheus exposition built at scrape time from what the workers keep in Redis (no state in the API process,
so any API replica gives the same numbers)."""
from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("facetrail.api")


class _Collector:
    def __init__(self, st):
        self.st = st

    def collect(self):
        st = self.st
        up = GaugeMetricFamily("facetrail_redis_up", "1 when Redis answers a PING")
        try:
            st.redis.ping()
            up.add_metric([], 1)
        except Exception:  # noqa: BLE001
            up.add_metric([], 0)
            yield up
            return
        yield up
        yield from _camera_metrics(st)
        yield from _pipeline_metrics(st)
        yield from _event_metrics(st)


def _camera_metrics(st):
    from ..cameras import STATES, CameraRegistry

    reg = CameraRegistry(st.redis, st.settings)
    state = GaugeMetricFamily("facetrail_camera_state", "1 for the camera's current state", labels=["camera", "state"])
    fps = GaugeMetricFamily("facetrail_camera_fps", "frames per second read from the camera", labels=["camera"])
    age = GaugeMetricFamily("facetrail_camera_last_frame_age_seconds", "seconds since the last frame",
                            labels=["camera"])
    frames = CounterMetricFamily("facetrail_camera_frames", "frames read", labels=["camera"])
    drops = CounterMetricFamily("facetrail_camera_drops", "frames dropped at the source (overload)",
                                labels=["camera"])
    reconnects = CounterMetricFamily("facetrail_camera_reconnects", "reconnects", labels=["camera"])
    now = time.time()
    for name in reg.names():
        s = reg.status(name)
        for k in STATES:
            state.add_metric([name, k], 1.0 if s.get("state") == k else 0.0)
        if s.get("fps") is not None:
            fps.add_metric([name], float(s["fps"]))
        if s.get("last_frame_at"):
            age.add_metric([name], max(0.0, now - float(s["last_frame_at"])))
        frames.add_metric([name], float(s.get("frames", 0) or 0))
        drops.add_metric([name], float(s.get("drops", 0) or 0))
        reconnects.add_metric([name], float(s.get("reconnects", 0) or 0))
    yield from (state, fps, age, frames, drops, reconnects)


def _pipeline_metrics(st):
    from ..metrics import read_metrics

    try:
        data = read_metrics(st.redis, st.settings)
    except Exception as e:  # noqa: BLE001 - a broken probe must not break the scrape
        log.warning("metrics: read_metrics failed: %s", e)
        return
    yield from families_from(data)


_STAGE_GAUGES = {"fps": "frames per second processed (last window)", "lag": "entries waiting behind this consumer",
                 "batch_size_avg": "average batch size"}
_STAGE_COUNTERS = {"frames": "frames (or faces) processed", "batches": "batches processed",
                   "errors": "processing errors", "drops": "items dropped", "reclaimed": "entries reclaimed from "
                                                                                     "crashed consumers",
                   "skipped": "items passed over on purpose (detector: faces tracked without a new embedding)",
                   "motion_skipped": "frames passed on without a detector pass: nothing moved (detector; grabber: "
                                     "sent without pixels)"}


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def families_from(data: dict) -> list:
    """pipeline.metrics.read_metrics() -> Prometheus metric families (per stage and consumer, per queue)."""
    out = []
    stages = data.get("stages") or {}
    gauges = {f: GaugeMetricFamily(f"facetrail_stage_{f}", h, labels=["stage", "consumer"])
              for f, h in _STAGE_GAUGES.items()}
    latency = GaugeMetricFamily("facetrail_stage_latency_seconds", "capture to this stage's output (last batch)",
                                labels=["stage", "consumer"])
    counters = {f: CounterMetricFamily(f"facetrail_stage_{f}", h, labels=["stage", "consumer"])
                for f, h in _STAGE_COUNTERS.items()}
    for stage, body in sorted(stages.items()):
        for consumer, vals in sorted((body.get("consumers") or {}).items()):
            for f, fam in gauges.items():
                v = _num(vals.get(f))
                if v is not None:
                    fam.add_metric([stage, consumer], v)
            v = _num(vals.get("latency_ms"))
            if v is not None:
                latency.add_metric([stage, consumer], v / 1000.0)
            for f, cfam in counters.items():
                v = _num(vals.get(f))
                if v is not None:
                    cfam.add_metric([stage, consumer], v)
    out += [*gauges.values(), latency, *counters.values()]
    qlen = GaugeMetricFamily("facetrail_queue_depth", "entries in the stream not yet finished", labels=["stream"])
    qpend = GaugeMetricFamily("facetrail_queue_pending", "entries delivered but not acknowledged", labels=["stream"])
    qcons = GaugeMetricFamily("facetrail_queue_consumers", "consumers in the stream's group", labels=["stream"])
    for stream, q in sorted((data.get("queues") or {}).items()):
        for fam, f in ((qlen, "length"), (qpend, "pending"), (qcons, "consumers")):
            v = _num((q or {}).get(f))
            if v is not None:
                fam.add_metric([stream], v)
    out += [qlen, qpend, qcons]
    drops = CounterMetricFamily("facetrail_source_drops", "frames dropped at the source, all cameras (overload)")
    drops.add_metric([], float(data.get("drops_total") or 0))
    workers = GaugeMetricFamily("facetrail_workers", "live workers (heartbeat within 3 intervals)", labels=["role"])
    roles: dict[str, int] = {}
    for w in data.get("workers") or []:
        roles[str(w.get("role", "?"))] = roles.get(str(w.get("role", "?")), 0) + 1
    for role, n in sorted(roles.items()):
        workers.add_metric([role], n)
    out += [drops, workers]
    return out


def count_events_by_type(st, max_rounds: int = 20, chunk: int = 5000) -> dict[str, int]:
    """Events by type since the first scrape ever: the events stream is read incrementally from a cursor kept in
    Redis (one API process at a time, under a short lock), so every replica reports the same monotonic counts."""
    from ..backbone import key
    from ..events.model import EVENT_TYPES
    from ..streams import StreamNames

    r, settings = st.redis, st.settings
    stream = StreamNames.of(settings).events
    h, lock = key(settings, "apimetrics", "events"), key(settings, "apimetrics", "events", "lock")
    if r.set(lock, "1", nx=True, px=10_000):
        try:
            cur = r.hget(h, "_cursor")
            cur = cur.decode() if isinstance(cur, bytes) else (cur or "0-0")
            for _ in range(max_rounds):
                rows = r.xrange(stream, min="(" + cur, max="+", count=chunk)
                if not rows:
                    break
                counts: dict[str, int] = {}
                for msg_id, fields in rows:
                    cur = msg_id.decode() if isinstance(msg_id, bytes) else msg_id
                    try:
                        t = str(json.loads(fields.get(b"m", fields.get("m")) or b"{}").get("type", "unknown"))
                    except (ValueError, AttributeError):
                        t = "unreadable"
                    counts[t] = counts.get(t, 0) + 1
                pipe = r.pipeline(transaction=True)
                for t, n in counts.items():
                    pipe.hincrby(h, t[:64], n)
                pipe.hset(h, "_cursor", cur)
                pipe.execute()
                if len(rows) < chunk:
                    break
        finally:
            r.delete(lock)
    out = {t: 0 for t in EVENT_TYPES}
    for k, v in (r.hgetall(h) or {}).items():
        k = k.decode() if isinstance(k, bytes) else k
        if k != "_cursor":
            out[k] = int(v)
    return out


def _event_metrics(st):
    try:
        counts = count_events_by_type(st)
    except Exception as e:  # noqa: BLE001
        log.warning("metrics: counting events failed: %s", e)
        return
    fam = CounterMetricFamily("facetrail_events", "events emitted, by type", labels=["type"])
    for t, n in sorted(counts.items()):
        fam.add_metric([t], float(n))
    yield fam


def render(st) -> tuple[bytes, str]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(st))
    return generate_latest(reg), CONTENT_TYPE_LATEST

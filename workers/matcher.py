"""Matcher role: embeddings:{camera} (group "matchers") -> tracks, identities, events. The loop (MatcherWorker)
finds cameras, takes their leases and feeds each owned camera's CameraMatcher (workers/camera_matcher.py: the
reorder-and-match path around pipeline.stages.MatcherStage).

One matcher owns a camera at a time through a lease in Redis (`<p>:lease:matcher:{camera}`, SET NX PX
tracking.lease_ttl_s, renewed, fencing token from INCR). Only the owner reads the camera's stream. Per batch:
reorder by seq (ReorderBuffer) -> MatcherStage (tracker + identity voting) -> one Lua commit that, only if the
lease is still ours, writes the new events (each id once), the checkpoint (tracker state + next seq), the
progress key, and acks the applied input entries (trimmed from the stream a minute after they were applied:
`facetrail process` reads the stream too). Crash anywhere: nothing or everything of a batch
is committed; the next owner (after the lease TTL) loads the checkpoint, claims the dead owner's pending
entries (those not applied yet) and carries on — no event lost, none repeated.

Sinks (MQTT, webhooks) are delivered by SinkDispatcher threads inside this process (settings.sinks.in_matcher):
they read the events stream through one consumer group per sink, so they never slow the matching down.
"""
from __future__ import annotations

import logging
import math
import threading
import time

import redis

from pipeline.backbone import connect, key, transient_client
from pipeline.cameras import CameraRegistry
from pipeline.config import Settings
from pipeline.events.sinks import SinkDispatcher, build_sinks
from pipeline.events.store import EventStore, FencedError
from pipeline.metrics import Heartbeat, StageMetrics
from pipeline.streams import UNAVAILABLE, xreadgroup_many
from pipeline.unknowns.store import UnknownStore

from .camera_matcher import (CHECKPOINT_VERSION, GROUP, CameraMatcher, checkpoint_key, lease_key,
                             progress_key)

log = logging.getLogger("facetrail.matcher")

__all__ = ["CHECKPOINT_VERSION", "GROUP", "CameraMatcher", "MatcherWorker", "checkpoint_key", "lease_key",
           "progress_key", "run"]

SCAN_EVERY_S = 15.0   # how often to look for embeddings streams of cameras that are not registered
IDLE_RELEASE_S = 30.0  # an unregistered camera without frames for this long is released


def make_searcher(r: redis.Redis, settings: Settings):
    """The gallery search the stage calls: the replicated FAISS index, kept current in the background."""
    from index.replica import GalleryReplica

    from pipeline.unknowns.negatives import NegativeFilter

    replica = GalleryReplica(r, settings).start_background()
    negatives = NegativeFilter(r, settings)

    def search(vectors):
        return negatives.apply(vectors, replica.search(vectors, max(2, settings.gallery.top_k)))

    search.replica = replica  # type: ignore[attr-defined]
    search.name_of = lambda iid: replica.names.get(iid)  # type: ignore[attr-defined]  # (names is replaced on reload)
    return search


def _configured(settings: Settings, registry: CameraRegistry) -> set[str]:
    cams = {c.name for c in settings.cameras}
    try:
        cams.update(registry.names())
    except redis.RedisError:
        pass
    return cams


def _scan_streams(r: redis.Redis, settings: Settings) -> set[str]:  # r: the embeddings (transient) server
    """Cameras with a non-empty embeddings stream (e.g. one left with work after its camera was removed).
    Read from the index the embedders keep (pipeline/discovery.py): done rarely (SCAN_EVERY_S), the registry is
    read every second."""
    from pipeline.discovery import stream_cameras

    return stream_cameras(r, settings)  # the index the embedders keep, not a SCAN


def _fair_share(r: redis.Redis, settings: Settings, n_cams: int) -> int:
    from pipeline.metrics import alive_count

    live = max(1, alive_count(r, settings, "matcher"))
    return max(1, math.ceil(n_cams / live))


class MatcherWorker:
    """The matcher's loop state: the cameras it owns (a CameraMatcher each) and its periodic chores."""

    def __init__(self, settings: Settings, consumer: str, stop: threading.Event, search=None):
        self.settings, self.consumer, self.stop = settings, consumer, stop
        self.r = r = connect(settings)
        self.rt = transient_client(settings, r)  # embeddings:{camera}
        # commits (events, checkpoints, leases) on a client only this loop's thread uses: WAIT covers the writes of
        # the connection it is sent on, and a pool shared with the sink or gallery threads could hand it another one
        self.rc = connect(settings)
        self.store = EventStore(self.rc, settings)
        self.registry = CameraRegistry(r, settings)
        self.search = search or make_searcher(r, settings)
        self.metrics = StageMetrics(r, settings, "matcher", consumer)
        self.heartbeat = Heartbeat(r, settings, "matcher", consumer)
        self.dispatcher = None
        if settings.sinks.in_matcher:
            sinks = build_sinks(settings, stop)
            if sinks:
                self.dispatcher = SinkDispatcher(r, settings, sinks, consumer=consumer, stop=stop).start()
        self.runners: dict[str, CameraMatcher] = {}
        self.unknowns = UnknownStore(r, settings) if settings.unknowns.enabled else None
        self.last_cluster = self.last_discover = self.last_scan = self.last_sweep = 0.0
        self.scanned: set[str] = set()

    def drop(self, cam: str, why: str, level: int = logging.WARNING) -> None:
        runner = self.runners.pop(cam, None)
        if runner is not None:
            log.log(level, "camera=%s matcher=%s: giving up the camera (%s)", cam, self.consumer, why)
            runner.release()

    # ---- cameras ----------------------------------------------------------------------------------------
    def discover(self, now: float) -> None:
        """Once a second: let idle unregistered cameras go, take the leases of cameras up to a fair share."""
        if now - self.last_discover < 1.0:
            return
        self.last_discover = now
        if self.last_scan == 0.0 or now - self.last_scan >= SCAN_EVERY_S:
            self.last_scan = now
            self.scanned = _scan_streams(self.rt, self.settings)
        configured = _configured(self.settings, self.registry)
        cams = sorted(c for c in configured | self.scanned if c)
        for cam, rn in list(self.runners.items()):  # a finished, unregistered camera: let it go
            if cam not in configured and not len(rn.buffer) and now - rn.last_frame > IDLE_RELEASE_S:
                self.scanned.discard(cam)
                try:
                    rn.close()
                except FencedError as e:
                    log.warning("camera=%s: %s", cam, e)
                self.drop(cam, "idle and no longer registered", logging.INFO)
        share = _fair_share(self.r, self.settings, len(cams))
        for cam in cams:
            if cam not in self.runners and len(self.runners) < share:
                self.take(cam)

    def take(self, cam: str) -> None:
        runner = CameraMatcher(self.rc, self.settings, cam, self.consumer, self.search, self.store)
        try:
            if runner.acquire():
                self.runners[cam] = runner
                runner.flush()
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:  # noqa: BLE001 - one bad camera must not stop the others
            log.exception("camera=%s matcher=%s: taking over failed", cam, self.consumer)
            self.drop(cam, "error while taking over")
            runner.release()

    def sweep(self, now: float) -> None:
        """Retention sweeps of events and unknowns, by one matcher at a time (a lock key)."""
        ev = self.settings.events
        if now - self.last_sweep < ev.sweep_interval_s:
            return
        self.last_sweep = now
        if self.r.set(key(self.settings, "events", "sweep_lock"), self.consumer, nx=True,
                      ex=max(1, int(ev.sweep_interval_s))):
            self.store.sweep()
            if self.unknowns is not None:
                self.unknowns.sweep()

    # ---- frames -----------------------------------------------------------------------------------------
    def read(self) -> None:
        """One XREADGROUP over the owned cameras' streams; each entry to its camera's reorder buffer."""
        by_stream = {rn.stream: rn for rn in self.runners.values()}
        resp = xreadgroup_many(self.rt, GROUP, self.consumer, {s: ">" for s in by_stream},
                               count=self.settings.workers.batch_max * 4, block_ms=100)
        for stream, rows in resp or []:
            rn = by_stream[stream.decode() if isinstance(stream, bytes) else stream]
            for mid, fields in rows:
                rn.feed(mid.decode() if isinstance(mid, bytes) else mid, (fields or {}).get(b"m"))

    def apply(self) -> int:
        """Flush every owned camera (apply what is in order, commit). Returns frames applied."""
        applied = 0
        for cam, rn in list(self.runners.items()):
            try:
                applied += rn.flush()
            except FencedError as e:
                self.drop(cam, str(e))
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception:  # noqa: BLE001 - the checkpoint is intact; retake the camera from it
                log.exception("camera=%s matcher=%s: applying frames failed", cam, self.consumer)
                self.metrics.errors += 1
                self.drop(cam, "error while applying frames")
        return applied

    def chores(self, now: float) -> None:
        """Orphaned entries taken over, applied entries trimmed, skip / late counts into the metrics."""
        for cam, rn in list(self.runners.items()):
            if now - rn.last_reclaim >= 1.0:
                rn.last_reclaim = now
                if rn.reclaim_orphans():
                    log.warning("camera=%s matcher=%s: took over entries a previous owner left pending",
                                cam, self.consumer)
            if now - rn.last_trim >= 10.0:
                rn.last_trim = now
                rn.trim()
        for rn in self.runners.values():  # seqs skipped (gone, or waited for in vain) and late arrivals
            self.metrics.skipped += rn.buffer.skipped - rn.reported[0]
            self.metrics.late += rn.late - rn.reported[1]
            rn.reported = (rn.buffer.skipped, rn.late)

    def cluster(self, now: float) -> None:
        """Cluster the unknown tracks just ended (or any another process left), at least every 2 s."""
        queued = sum(rn.unknowns for rn in self.runners.values())
        if self.unknowns is None or not (queued or now - self.last_cluster >= 2.0):
            return
        self.last_cluster = now
        for rn in self.runners.values():
            rn.unknowns = 0
        try:
            self.unknowns.drain()
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:  # noqa: BLE001 - clustering must never stop the matching
            log.exception("matcher %s: clustering unknown tracks failed", self.consumer)

    def step(self) -> None:
        self.heartbeat.beat()
        now = time.monotonic()
        self.discover(now)
        for cam in list(self.runners):
            if not self.runners[cam].renew():
                self.drop(cam, "lease lost")
        self.sweep(now)
        if not self.runners:
            self.stop.wait(0.2)
            return
        self.read()
        applied = self.apply()
        self.chores(now)
        self.cluster(now)
        if applied:
            self.metrics.batch(applied)
        else:
            self.metrics.maybe_flush()

    def close(self) -> None:
        for rn in list(self.runners.values()):
            try:
                rn.flush(force=True)
            except (redis.RedisError, FencedError):
                pass
            rn.release()
        if self.dispatcher is not None:
            self.dispatcher.join(timeout=5)
        replica = getattr(self.search, "replica", None)
        if replica is not None:
            replica.stop()
        self.metrics.maybe_flush(force=True)
        self.heartbeat.clear()


def run(settings: Settings, *, consumer: str, stop: threading.Event, search=None) -> None:
    """The matcher worker loop, until `stop` is set (graceful: the batch in hand is committed, leases freed)."""
    w = MatcherWorker(settings, consumer, stop, search)
    backoff = 0.1
    w.heartbeat.beat(force=True)
    log.info("matcher %s: started", consumer)
    try:
        while not stop.is_set():
            try:
                w.step()
                backoff = 0.1
            except UNAVAILABLE as e:  # incl. a cluster failover (caught before ResponseError: CLUSTERDOWN is one)
                w.metrics.errors += 1
                log.warning("matcher %s: redis unavailable (%s); retrying in %.1fs", consumer, e, backoff)
                w.runners.clear()  # the checkpoint is the truth: reload it when we get back
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                for cam in list(w.runners):  # a camera's stream was deleted: re-create groups on reacquire
                    w.drop(cam, "stream deleted")
    finally:
        w.close()
        log.info("matcher %s: stopped", consumer)


def main(argv: list[str] | None = None) -> int:
    """`python -m workers.matcher [--consumer NAME]`: run one matcher until SIGTERM/SIGINT."""
    import argparse
    import signal

    from pipeline.config import load_settings

    p = argparse.ArgumentParser(prog="workers.matcher")
    p.add_argument("--consumer", default=None)
    p.add_argument("-v", "--verbose", action="count", default=0)
    a = p.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(a.verbose, 2)],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from .base import default_consumer

    run(load_settings(), consumer=a.consumer or default_consumer("matcher"), stop=stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

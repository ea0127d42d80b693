"""Grabber role: cameras (RTSP, HTTP(S) MJPEG/HLS, files, webcams) -> frames:{camera}.

One process can own every camera (a thread each), but each camera has exactly one reader: a Redis lease
per camera (SET NX PX, renewed, fencing token checked inside the frame-push Lua), so a second grabber process
takes over only when the first one dies. Cameras come from the registry in Redis (pipeline.cameras) and are
followed live through cameras:changes, so `facetrail camera add|remove` needs no restart.

This module is the worker: leases, one reader thread per camera, the loop that follows the registry. Reading a
camera is in pipeline/: a file is pushed once to its EOS (pipeline/sources.py: every frame, or --fps sampling
by stream time, backpressure instead of drops), a live camera is read until stopped (pipeline/livesource.py:
reconnect, stall watchdog, wall-clock sampling, stream clock, motion gate before the JPEG), and frames are
numbered and pushed by pipeline/publisher.FramePublisher."""
from __future__ import annotations

import logging
import threading

import redis

from pipeline.backbone import connect
from pipeline.cameras import CameraRegistry, Lease, grabber_lease_key, is_file_source
from pipeline.config import CameraConfig, Settings
from pipeline.livesource import LiveSource
from pipeline.metrics import Heartbeat, StageMetrics
from pipeline.publisher import LEASE_TTL_MS, LeaseLost
from pipeline.sources import CameraStatus, run_file_camera

log = logging.getLogger("facetrail.grabber")


class CameraRunner(threading.Thread):
    """Reads one camera while this process holds its lease."""

    def __init__(self, r: redis.Redis, settings: Settings, cam: CameraConfig, lease: Lease, consumer: str):
        super().__init__(name=f"grab-{cam.name}", daemon=True)
        self.r = r
        self.settings = settings
        self.cam = cam
        self.lease = lease
        self.consumer = consumer
        self.stop = threading.Event()
        self.status = CameraStatus(CameraRegistry(r, settings), cam.name, consumer)
        self.metrics = StageMetrics(r, settings, "grabber", f"{consumer}:{cam.name}")
        self.ended = False
        self.lease_lost = False

    def run(self) -> None:
        token = self.lease.token or ""
        try:
            if is_file_source(self.cam.url):
                self.ended = run_file_camera(self.r, self.settings, self.cam, token=token, status=self.status,
                                             stop=self.stop)
            else:
                LiveSource(self.r, self.settings, self.cam, token=token, status=self.status, metrics=self.metrics,
                           stop=self.stop).run()
        except LeaseLost as e:
            self.lease_lost = True
            log.warning("%s", e)
        except Exception as e:  # a camera thread never dies silently
            log.exception("camera %s: grabber thread failed", self.cam.name)
            self.status.set("error", error=f"{type(e).__name__}: {e}")


class Grabber:
    """Owns every enabled, non-external camera whose lease it can get; follows the registry live."""

    def __init__(self, settings: Settings, consumer: str, r: redis.Redis | None = None):
        self.settings = settings
        self.consumer = consumer
        self.r = r or connect(settings)
        self.registry = CameraRegistry(self.r, settings)
        self.runners: dict[str, CameraRunner] = {}
        self.ended: dict[str, CameraConfig] = {}
        self.heartbeat = Heartbeat(self.r, settings, "grabber", consumer)

    def _stop_runner(self, name: str, why: str) -> None:
        runner = self.runners[name]
        log.info("camera %s: stopping reader (%s)", name, why)
        runner.stop.set()
        runner.join(timeout=3.0)
        if runner.is_alive():  # stuck in an open/read: the released lease fences off any frame it still pushes
            log.warning("camera %s: reader thread did not stop in time", name)
        runner.lease.release()
        del self.runners[name]

    def step(self) -> None:
        cams = {c.name: c for c in self.registry.list() if c.enabled and not c.external}
        for name in list(self.runners):
            runner = self.runners[name]
            if name not in cams:
                self._stop_runner(name, "removed")
            elif cams[name] != runner.cam:
                self._stop_runner(name, "config changed")
            elif runner.ended:
                self.ended[name] = runner.cam
                self._stop_runner(name, "file finished")
            elif runner.lease_lost:
                self._stop_runner(name, "lease lost")
            elif not runner.is_alive():
                self._stop_runner(name, "thread exited")
        for name in list(self.ended):
            if name not in cams or cams[name] != self.ended[name]:
                self.ended.pop(name)
        for name, cam in cams.items():
            if name in self.runners or self.ended.get(name) == cam:
                continue
            lease = Lease(self.r, grabber_lease_key(self.settings, name), self.consumer, LEASE_TTL_MS)
            if lease.acquire():
                log.info("camera %s: lease acquired (fence %d) by %s", name, lease.fence, self.consumer)
                self.registry.set_status(name, None, fence=lease.fence)
                runner = CameraRunner(self.r, self.settings, cam, lease, self.consumer)
                self.runners[name] = runner
                runner.start()

    def _renew_leases(self, stop: threading.Event) -> None:
        """Renew every held camera lease on its own clock, so a slow step (a reader that takes long to stop)
        never lets the others expire."""
        while not stop.wait(LEASE_TTL_MS / 4000):
            for runner in list(self.runners.values()):
                if runner.lease_lost or runner.stop.is_set():
                    continue
                try:
                    if not runner.lease.renew():
                        log.warning("camera %s: lease lost (taken over or expired)", runner.cam.name)
                        runner.lease_lost = True
                        runner.stop.set()
                except redis.RedisError as e:
                    log.warning("camera %s: cannot renew lease: %s", runner.cam.name, e)

    def run(self, stop: threading.Event) -> None:
        last_id = self.registry.last_change_id()
        backoff = 0.2
        log.info("grabber %s: started", self.consumer)
        renewer_stop = threading.Event()
        renewer = threading.Thread(target=self._renew_leases, args=(renewer_stop,), daemon=True,
                                   name=f"{self.consumer}-leases")
        renewer.start()
        try:
            while not stop.is_set():
                try:
                    self.heartbeat.beat()
                    self.step()
                    last_id, cmds = self.registry.wait_change(last_id, block_ms=500)
                    for c in cmds:
                        if c.op == "add":
                            self.ended.pop(c.name, None)  # re-adding a finished file reads it again
                    backoff = 0.2
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    log.warning("grabber %s: redis unavailable (%s); retrying in %.1fs", self.consumer, e, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            for name in list(self.runners):
                self._stop_runner(name, "shutdown")
            renewer_stop.set()
            self.heartbeat.clear()
            log.info("grabber %s: stopped", self.consumer)


def run(settings: Settings, *, consumer: str, stop: threading.Event) -> None:
    Grabber(settings, consumer).run(stop)

"""A live camera (RTSP, HTTP(S) MJPEG/HLS, webcam) read while its grabber holds the lease (workers/grabber.py).

Opened by pipeline/sources.open_capture (low-latency FFmpeg options, or PyAV), sampled to the camera's fps by
wall clock (streamtime.FrameSampler), stamped with a stream time that never goes back (streamtime.StreamClock:
one epoch a connection), a watchdog on time since the last frame (status `stalled`), a check for frames that lag
real time (buffered during a short freeze), reconnect with exponential backoff capped at
workers.reconnect_max_s, frames dropped oldest-first (and counted) when the detectors fall behind. With
motion.at = grabber (default) the sampled frames pass the camera's motion gate (pipeline/motion.GrabberGate)
before the JPEG: a still frame is published without pixels (FrameMsg v2), and with the PyAV reader an idle
camera decodes keyframes only (pipeline/decode.AvCapture.set_idle)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import redis

from .cameras import redact_url
from .config import CameraConfig, Settings
from .metrics import StageMetrics
from .motion import GrabberGate, hot_key
from .publisher import FramePublisher
from .sources import CameraStatus, SourceError, open_capture
from .streamtime import FrameSampler, StreamClock

log = logging.getLogger("facetrail.grabber")

LAG_CHECKS = 3


@dataclass
class _Lag:
    """One connection's frames against real time: wall time and pts of its first frame, the least lag seen."""
    wall: float | None = None
    pts: float = 0.0
    least: float = 0.0


@dataclass
class _Window:
    """The fps written to the camera's status once a second."""
    start: float
    frames: int = 0
    reported: float = 0.0


class LiveSource:
    """Reads one live camera until `stop` is set (a lease lost ends it with publisher.LeaseLost)."""

    def __init__(self, r: redis.Redis, settings: Settings, cam: CameraConfig, *, token: str, status: CameraStatus,
                 metrics: StageMetrics, stop: threading.Event):
        self.r = r
        self.settings = settings
        self.cam = cam
        self.status = status
        self.registry = status.registry
        self.metrics = metrics
        self.stop = stop
        self.pub = FramePublisher(r, settings, cam.name, token=token)
        self.clock = StreamClock(r, settings, cam.name)
        self._last_frame = time.monotonic()
        self._connected = False
        self._stalled = threading.Event()  # set by the watchdog: drop this connection, reconnect
        # reconnects for frames that lag real time (a short freeze); a camera whose pts does not follow real
        # time would trip it again and again, so after LAG_CHECKS in a row without a stall the check is switched off
        self._lag_checks_left = LAG_CHECKS
        self.gate: GrabberGate | None = None  # motion gate before the JPEG (motion.at = grabber)
        if settings.motion.enabled and settings.motion.at == "grabber":
            hk = hot_key(settings, cam.name)
            self.gate = GrabberGate(settings, cam.name, lambda: r.get(hk))

    # -- connections ------------------------------------------------------------------------------------------
    def run(self) -> None:
        wd = threading.Thread(target=self._watchdog, name=f"watchdog-{self.cam.name}", daemon=True)
        wd.start()
        attempt = 0
        opened_before = False
        self.status.set("connecting", error="")
        while not self.stop.is_set():
            cap = self._open(attempt)
            if cap is None:
                attempt += 1
                continue
            if opened_before:
                self.r.hincrby(self.registry.status_key(self.cam.name), "reconnects", 1)
            opened_before = True
            got = self._connection(cap)
            if self.stop.is_set():
                break
            attempt = 0 if got else attempt + 1
            delay = self._backoff(attempt)
            log.info("camera %s: stream ended or read failed after %d frame(s); reconnect in %.2fs",
                     self.cam.name, got, delay)
            self.status.set("error", error=f"read failed; reconnect in {delay:.2f}s")
            self.stop.wait(delay)
        self.stop.set()  # ends the watchdog

    def _backoff(self, attempt: int) -> float:
        return min(self.settings.workers.reconnect_max_s, 0.25 * (2 ** attempt))

    def _open(self, attempt: int):
        """The source opened, or None after waiting out the backoff of a failed open."""
        try:
            return open_capture(self.cam.url, self.settings,
                                sample_period_s=1.0 / self.cam.fps if self.cam.fps else 0.0)
        except SourceError as e:
            delay = self._backoff(attempt)
            log.info("camera %s: %s; retry in %.2fs", self.cam.name, e, delay)
            self.status.set("error", error=f"{e}; retry in {delay:.2f}s")
            self.stop.wait(delay)
            return None

    def _connection(self, cap) -> int:
        """Reads one opened connection until it ends; the number of frames it gave."""
        log.info("camera %s: opened %s", self.cam.name, redact_url(self.cam.url))
        self.clock.new_epoch()
        if self._stalled.is_set():
            self._lag_checks_left = LAG_CHECKS  # a real freeze happened: the lag check proved nothing wrong
        self._stalled.clear()
        self._last_frame = time.monotonic()
        self._connected = True
        try:
            return self._read(cap)
        finally:
            self._connected = False
            cap.release()

    def _watchdog(self) -> None:
        limit = self.settings.workers.watchdog_s
        while not self.stop.wait(0.1):
            if not self._connected or self.status.state not in ("live",):
                continue
            idle = time.monotonic() - self._last_frame
            if idle > limit and not self._stalled.is_set():
                # one stall per outage: the state stays `stalled` (no flapping) until frames flow again on a
                # new connection; the reader drops this connection at its next return from the source, and
                # frames the source buffered meanwhile are never published (they would carry stale times)
                log.warning("camera %s: no frame for %.1fs (watchdog %.1fs): stalled, reconnecting",
                            self.cam.name, idle, limit)
                self._stalled.set()
                self.status.set("stalled", stalled_at=time.time(), error=f"no frame for {idle:.1f}s; reconnecting")
                try:
                    self.r.hincrby(self.registry.status_key(self.cam.name), "stalls", 1)
                except redis.RedisError:
                    pass

    # -- frames -----------------------------------------------------------------------------------------------
    def _read(self, cap) -> int:
        sampler = FrameSampler.by_wall_clock(self.cam.fps)
        lag = _Lag()
        window = _Window(start=time.monotonic())
        got = 0
        while not self.stop.is_set():
            if not cap.grab():
                return got
            if self._stalled.is_set():  # the watchdog gave up on this connection while grab() was blocked
                log.info("camera %s: frames after a stall on the old connection dropped; reconnecting",
                         self.cam.name)
                return got
            now_m = time.monotonic()
            if self._lagging(lag, time.time(), cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0):
                return got
            self._last_frame = now_m
            got += 1
            if got == 1 or self.status.state != "live":
                log.info("camera %s: live", self.cam.name)
                self.status.set("live", live_at=time.time(), error="")
            if not sampler.take(now_m):
                continue
            ok, img = cap.retrieve()
            if not ok or img is None:
                continue
            was_idle = getattr(cap, "idle", False)  # PyAV reader of an idle camera: keyframes only
            captured_at = self._publish(cap, img, now_m)
            if was_idle and not getattr(cap, "idle", False):
                sampler.restart(now_m)  # woken: the grid was laid on keyframes (see FrameSampler.restart)
            self._report(window, now_m, captured_at)
        return got

    def _lagging(self, lag: _Lag, wall: float, pts_raw: float) -> bool:
        """Does the source hand out frames from the past (buffered while it froze for less than the watchdog)?
        They would be published under the current time: drop them, reconnect."""
        if lag.wall is None:
            lag.wall, lag.pts, lag.least = wall, pts_raw, 0.0
            return False
        if pts_raw <= lag.pts:
            return False
        limit = self.settings.workers.watchdog_s
        behind = (wall - lag.wall) - (pts_raw - lag.pts)
        lag.least = min(lag.least, behind)
        drift = behind - lag.least
        if self._lag_checks_left > 0 and drift > limit:
            self._lag_checks_left -= 1
            log.warning("camera %s: frames lag real time by %.1fs (buffered during a freeze): "
                        "reconnecting%s", self.cam.name, drift,
                        "" if self._lag_checks_left else "; this camera's pts does not follow real time, "
                                                         "the check is off until it does")
            return True
        if self._lag_checks_left < LAG_CHECKS and wall - lag.wall > 60.0 and drift < limit / 2:
            self._lag_checks_left = LAG_CHECKS  # a minute in step with real time: earlier ones were real freezes
        return False

    def _publish(self, cap, img: np.ndarray, now_m: float) -> float:
        """One sampled frame through the motion gate into frames:{camera}; its capture time."""
        captured_at = time.time()
        raw = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        gated = None
        if self.gate is not None:  # the gate runs on real time: hold, hot and refresh are real-time spans
            gated, replay = self.gate.step(cap, now_m, img)
            if not gated:
                self.metrics.motion_skipped += 1
            for old_raw, old_img in replay:  # woken from keyframes-only: the stretch before this keyframe
                at = captured_at - max(0.0, raw - old_raw)  # when it was live, for honest latencies
                self.pub.publish(old_img, captured_at=at, pts=self.clock.stamp(old_raw, at), mode="drop",
                                 epoch=self.clock.epoch, gated=True)
                self.metrics.batch(1)
        pts = self.clock.stamp(raw, captured_at)
        self.pub.publish(img, captured_at=captured_at, pts=pts, mode="drop", epoch=self.clock.epoch, gated=gated)
        self.metrics.batch(1)
        return captured_at

    def _report(self, window: _Window, now_m: float, captured_at: float) -> None:
        window.frames += 1
        if now_m - window.reported >= 1.0:
            fps = window.frames / max(1e-6, now_m - window.start)
            window.start, window.frames, window.reported = now_m, 0, now_m
            self.metrics.drops = self.pub.drops
            self.registry.set_status(self.cam.name, None, last_frame_at=captured_at, fps=round(fps, 2),
                                     frames=self.pub.frames, owner=self.status.owner)

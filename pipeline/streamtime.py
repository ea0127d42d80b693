"""Time of a camera's frames: which frames a source keeps (FrameSampler) and the stream time a live frame carries
(StreamClock, with its epochs). Used by pipeline/sources.py (files, `process` on a URL) and pipeline/livesource.py
(live cameras)."""
from __future__ import annotations

import logging

import redis

from .config import Settings
from .keys import key

log = logging.getLogger("facetrail.grabber")


class FrameSampler:
    """Keeps frames `period` seconds apart (period 0: every frame), on whatever clock take(t) is given.

    A frame is kept when t has reached the next due time, less `early` (a frame may come that much early and
    still count). Then the due time moves one period on. Two ways to do that for a frame that came late:
    - grid (files, by stream time): the due times stay on the grid origin + k * period; a late frame moves the
      due time to the first grid point after it;
    - resync (live sources, by wall clock): the grid starts at the first frame, and a frame late by a whole
      period or more restarts it at that frame (the source stalled: catching up would only burst)."""

    def __init__(self, period: float, *, early: float, resync: bool, origin: float | None = None):
        self.period = period
        self.early = early
        self.resync = resync
        self._due = origin  # None: the first frame starts the grid

    @classmethod
    def by_stream_time(cls, fps: float | None) -> "FrameSampler":
        """Files: every frame, or `fps` of them by their pts, on a grid from stream time 0."""
        return cls(1.0 / fps if fps else 0.0, early=1e-6, resync=False, origin=0.0)

    @classmethod
    def by_wall_clock(cls, fps: float | None) -> "FrameSampler":
        """Live sources: `fps` frames a second of real time (a frame up to a fifth of a period early counts)."""
        period = 1.0 / fps if fps else 0.0
        return cls(period, early=0.2 * period, resync=True)

    def restart(self, t: float) -> None:
        """Lay the grid afresh from a frame kept at t (the next is due a period later). Live sources call it when
        the frames stop coming at the keyframe cadence of an idle camera (pipeline/decode.AvCapture.set_idle):
        the keyframe that woke the camera came up to a keyframe interval late on the old grid, and catching up
        from there would keep the very next frame too (two samples one frame apart)."""
        if self.period:
            self._due = t + self.period

    def take(self, t: float) -> bool:
        if not self.period:
            return True
        due = self._due
        if due is not None and t + self.early < due:
            return False
        if due is None:
            self._due = t + self.period
        elif self.resync:
            self._due = due + self.period if t - due < self.period else t + self.period
        else:
            due += self.period
            while due <= t:
                due += self.period
            self._due = due
        return True


class StreamClock:
    """Stream time of a live camera that never goes back, and its epoch.

    FFmpeg's pts restarts near zero at every reconnect (and a camera may reset it on its own), so raw pts would
    send time backwards and the tracker would glue the faces after an outage onto the tracks before it. Here
    each epoch (a connection, or the stretch after a gap) maps pts onto a per-camera timeline:
    t = base + (pts - pts0), where base = the last published t + the wall time that passed since it. So the
    timeline keeps real durations (a 20 s outage is a 20 s jump, longer than tracking.max_age_s) and is
    monotonic per camera. The state lives in Redis (<p>:camera:{name}:clock), so a grabber that takes a camera
    over continues the timeline with a new epoch instead of restarting it."""

    def __init__(self, r: redis.Redis, settings: Settings, camera: str):
        self.r = r
        self.key = key(settings, "camera", camera, "clock")
        self.camera = camera
        raw = {}
        try:
            raw = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in r.hgetall(self.key).items()}
        except (redis.RedisError, ValueError):
            pass
        self.epoch = int(raw.get("epoch", -1))  # the first frame of this reader starts a new epoch
        self.last_t: float | None = raw.get("t")
        self.last_wall: float | None = raw.get("wall")
        self._pts0: float | None = None  # None: the next frame starts an epoch
        self._base = 0.0
        self._elapsed = 0.0
        self._prev_raw: float | None = None
        self._saved = 0.0

    def new_epoch(self) -> None:
        """The next frame starts a new epoch (a reconnect, a stall)."""
        self._pts0 = None

    def stamp(self, pts: float | None, wall: float) -> float:
        """Stream time of a frame with this pts, read at wall-clock time `wall`. Where the source's pts does not
        advance (some MJPEG/HTTP sources report 0 or a constant), the wall clock advances the time instead."""
        raw = pts if pts is not None and pts >= 0 else None
        back = raw is not None and self._prev_raw is not None and raw + 1e-3 < self._prev_raw
        if self._pts0 is None or back:
            if back:
                log.warning("camera %s: stream time went back (pts %.3f after %.3f): new epoch", self.camera,
                            raw, self._prev_raw)
            self.epoch += 1
            if self.last_t is None:
                self._base = 0.0
            else:
                self._base = self.last_t + max(1e-3, wall - (self.last_wall or wall))
            self._pts0 = 0.0
            self._elapsed = 0.0  # stream seconds since this epoch's first frame
            self._save(wall, force=True)
        elif raw is not None and self._prev_raw is not None and raw > self._prev_raw:
            self._elapsed += raw - self._prev_raw
        else:  # no usable pts: real time
            self._elapsed += max(0.0, wall - (self.last_wall or wall))
        self._prev_raw = raw
        t = self._base + self._elapsed
        if self.last_t is not None and t <= self.last_t:
            t = self.last_t + 1e-3  # same pts twice, or rounding: still strictly forward
        self.last_t, self.last_wall = t, wall
        self._save(wall)
        return t

    def _save(self, wall: float, force: bool = False) -> None:
        if not force and wall - self._saved < 1.0:
            return
        self._saved = wall
        try:
            self.r.hset(self.key, mapping={"epoch": self.epoch, "t": self.last_t if self.last_t is not None else 0.0,
                                           "wall": wall})
        except redis.RedisError as e:
            log.warning("camera %s: cannot save the stream clock: %s", self.camera, e)

"""MotionGate: run the face detector only on frames where something moves (Frigate's trick).

Most cameras are empty most of the time, and then YuNet's pass is the whole cost of a frame. Per camera, a
small grey copy of each frame (`motion.width` px wide, blurred) is compared with a running-average background;
the frame goes to the detector when the changed pixels cover at least `motion.min_area` of it. It also goes
when the camera is *hot* (a face was found within `tracking.max_age_s` of stream time: a person standing still
makes no motion but must stay tracked), when it is the camera's first frame or the source restarted, and at
least every `motion.refresh_s` (a face that slipped in without motion is never missed for longer). A frame
passed over is sent on with no faces, so the matcher still sees every seq; detectors count them
(`motion_skipped`). Cost: about 0.1 ms a frame at 160 px (bench/eval_motion.py).

Live cameras are gated in their grabber (motion.at = grabber, `GrabberGate`), before the frame is JPEG-encoded:
a still frame travels as a FrameMsg v2 without pixels, so an empty camera costs no JPEG encode, no JPEG decode
and almost no Redis traffic. The grabber cannot see faces, so the detector marks a camera hot in Redis
(`hot_key`, a key that lives tracking.max_age_s after the last face) and the grabber polls it once a second;
frames also keep going for motion.hold_s after the last motion (the detector's delay in marking it hot)."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class _Cam:
    bg: np.ndarray       # running-average background, float32
    last_t: float        # stream time of the last frame seen
    detected_t: float    # stream time of the last frame sent to the detector
    face_t: float        # stream time of the last frame with a face
    moved_t: float = -1e18  # stream time of the last frame with motion


class MotionGate:
    MAX_CAMERAS = 1024

    def __init__(self, *, width: int = 160, threshold: int = 25, min_area: float = 0.002, alpha: float = 0.2,
                 refresh_s: float = 5.0, hot_s: float = 2.0, hold_s: float = 0.0):
        self.width, self.threshold, self.min_area = width, threshold, min_area
        self.alpha, self.refresh_s, self.hot_s, self.hold_s = alpha, refresh_s, hot_s, hold_s
        self.cams: OrderedDict[str, _Cam] = OrderedDict()

    @classmethod
    def from_settings(cls, settings) -> "MotionGate":
        m = settings.motion
        return cls(width=m.width, threshold=m.threshold, min_area=m.min_area, alpha=m.alpha,
                   refresh_s=m.refresh_s, hot_s=settings.tracking.max_age_s)

    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s = self.width / float(w)
        small = cv2.resize(image, (self.width, max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def moving(self, camera: str, t: float, image: np.ndarray) -> bool:
        """Should this frame (the camera's frames in stream order) go to the detector?"""
        grey = self._small(image)
        cam = self.cams.get(camera)
        if cam is None or t < cam.last_t - 1.0 or cam.bg.shape != grey.shape:  # new camera / source restarted
            self.cams[camera] = _Cam(bg=grey.astype(np.float32), last_t=t, detected_t=t, face_t=-1e18)
            self.cams.move_to_end(camera)
            while len(self.cams) > self.MAX_CAMERAS:
                self.cams.popitem(last=False)
            return True
        self.cams.move_to_end(camera)
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(cam.bg))
        changed = np.count_nonzero(diff > self.threshold) / float(diff.size)
        cv2.accumulateWeighted(grey, cam.bg, self.alpha)
        cam.last_t = max(cam.last_t, t)
        if changed >= self.min_area:
            cam.moved_t = t
        go = (t - cam.moved_t <= self.hold_s or t - cam.face_t <= self.hot_s or t - cam.detected_t >= self.refresh_s)
        if go:
            cam.detected_t = t
        return go

    def faces_seen(self, camera: str, t: float) -> None:
        """A face was found at stream time t: the camera stays hot for hot_s."""
        cam = self.cams.get(camera)
        if cam is not None:
            cam.face_t = max(cam.face_t, t)


def hot_key(settings, camera: str) -> str:
    """Set by detectors whenever they find a face on the camera, to the wall-clock time until which the camera is
    hot (now + tracking.max_age_s; the key expires then too); read by its grabber."""
    from pipeline.backbone import key

    return key(settings, "camera", camera, "hot")


class GrabberGate:
    """The motion gate of one live camera, in its grabber: moving(t, image) says whether the sampled frame goes
    to the detector (t: the frame's time on a monotonic clock). hot() (a Redis read) gives the time until which
    the camera is hot (on `clock`, by default the wall clock; 0 or None = not hot) and is asked at most every
    poll_s."""

    def __init__(self, settings, camera: str, hot, *, poll_s: float = 1.0, clock=None):
        import time

        m = settings.motion
        self.idle_keyframes = m.idle_keyframes
        self.gate = MotionGate(width=m.width, threshold=m.threshold, min_area=m.min_area, alpha=m.alpha,
                               refresh_s=m.refresh_s, hot_s=0.0, hold_s=m.hold_s)
        self.camera = camera
        self.hot = hot
        self.poll_s = poll_s
        self.clock = clock or time.time
        self._polled = -1e18
        self._hot_until = 0.0
        self.skipped = 0
        self.awake = True

    def moving(self, t: float, image: np.ndarray) -> bool:
        now = self.clock()
        if now - self._polled >= self.poll_s:
            self._polled = now
            try:
                self._hot_until = float(self.hot() or 0.0)
            except Exception:  # Redis unreachable: count the camera hot rather than lose faces
                self._hot_until = now + self.poll_s
        hot = now < self._hot_until
        go = self.gate.moving(self.camera, t, image) or hot
        cam = self.gate.cams[self.camera]
        # awake (full decoding wanted): motion within hold_s or hot; a refresh alone leaves the camera idle
        self.awake = hot or t - cam.moved_t <= self.gate.hold_s
        if not go:
            self.skipped += 1
        return go

    def step(self, cap, now: float, image: np.ndarray) -> tuple[bool, list]:
        """The grabber's per-sampled-frame call: (does this frame go to the detector, frames to publish before it).
        With an idle-capable reader (pipeline/decode.AvCapture) the camera decodes keyframes only while it is not
        awake; waking on a keyframe returns the sampled frames of the stretch before it, decoded from its packets."""
        go = self.moving(now, image)
        replay = []
        if self.idle_keyframes and getattr(cap, "idle_capable", False):
            replay = cap.set_idle(not self.awake)
        return go, replay

"""FramePublisher: numbers a camera's frames and pushes them into frames:{camera}, bounded and fenced by the
camera's grabber lease (the Lua push in pipeline/framepush.py). Used by the grabber (workers/grabber.py, through
pipeline/sources.py and pipeline/livesource.py) and by `facetrail process`."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import redis

from .backbone import transient_client
from .cameras import CameraRegistry, grabber_lease_key
from .config import Settings
from .engine.framecodec import encode_frame
from .framepush import FramePusher, LeaseMirror
from .messages import FrameMsg, FrameRef
from .metrics import drops_key
from .keys import StreamNames

log = logging.getLogger("facetrail.grabber")

LEASE_TTL_MS = 5000


class LeaseLost(RuntimeError):
    pass


class FramePublisher:
    """Numbers frames (seq continues across runs of a camera, never reused) and pushes them bounded."""

    def __init__(self, r: redis.Redis, settings: Settings, camera: str, *, token: str = "",
                 rt: redis.Redis | None = None):
        """r: the durable server (registry, lease, seq, counters); rt: where frames go (backbone.transient_client;
        default r). On a separate transient server the push is fenced by a mirror of the lease token."""
        self.r = r
        self.rt = rt if rt is not None else transient_client(settings, r)
        self.settings = settings
        self.camera = camera
        self.token = token
        self.names = StreamNames.of(settings)
        self.registry = CameraRegistry(r, settings)
        self.pusher = FramePusher(self.rt, durable=r)
        self.lease_key = grabber_lease_key(settings, camera)
        # a separate transient server, or a Redis Cluster (the lease is in the control plane's slot, the frames in
        # the camera's): the push is fenced by a mirror of the lease token beside the frames stream
        self.mirror = (LeaseMirror(r, self.rt, self.lease_key, LEASE_TTL_MS,
                                   mirror_key=self.names.lease_mirror(camera, self.lease_key))
                       if self.rt is not r or self.names.cluster else None)
        self.stream = self.names.frames(camera)
        self.seq = self.registry.next_seq(camera)
        if self.rt is not r:  # the transient copy is exact when that server survived; the durable one is >= last-1
            v = self.rt.get(self.registry.seq_key(camera))
            self.seq = max(self.seq, int(v) if v else 0)
        self.first_seq = self.seq
        self.frames = 0
        self.drops = 0
        self.size = (0, 0)

    def _push(self, msg: FrameMsg, mode: str, stop: threading.Event | None) -> int:
        payload = msg.encode()
        delay = 0.005
        lease_key = self.lease_key if self.mirror is None else self.mirror.key
        if self.mirror is not None and self.token:
            if not self.mirror.refresh(self.token):
                raise LeaseLost(f"camera {self.camera}: grabber lease taken over by another process")
        while True:
            res = self.pusher.push(stream=self.stream, seq_key=self.registry.seq_key(self.camera),
                                   status_key=self.registry.status_key(self.camera),
                                   lease_key=lease_key,
                                   drops_key=drops_key(self.settings), maxlen=self.settings.workers.frames_maxlen,
                                   payload=payload, next_seq=msg.frame.seq + 1, mode=mode, token=self.token,
                                   gone_key=self.names.gone(self.camera), seq=msg.frame.seq)
            if res == -2:
                raise LeaseLost(f"camera {self.camera}: grabber lease taken over by another process")
            if res >= 0:
                if self.rt is not self.r:
                    self.r.set(self.registry.seq_key(self.camera), msg.frame.seq + 1)  # durable copy of the seq
                if res:
                    self.drops += res
                    log.warning("camera %s: detectors behind, dropped %d oldest frame(s)", self.camera, res)
                return res
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped while waiting for room in the frames stream")
            time.sleep(delay)  # 'wait' mode and the stream is full: backpressure
            delay = min(delay * 2, 0.05)

    def publish(self, img: np.ndarray, *, captured_at: float, pts: float | None, mode: str = "drop",
                stop: threading.Event | None = None, epoch: int = 0, gated: bool | None = None) -> int:
        """gated: None = no motion gate here (FrameMsg v1, as ever); True = the grabber's motion gate passed it;
        False = it did not: the frame goes without pixels (FrameMsg v2, still), no JPEG is encoded."""
        h, w = img.shape[:2]
        self.size = (w, h)
        ref = FrameRef(camera=self.camera, seq=self.seq, captured_at=captured_at, pts=pts, width=w, height=h,
                       epoch=epoch)
        if gated is False:
            msg = FrameMsg(v=2, frame=ref, jpeg=b"", still=True)
        else:
            msg = FrameMsg(frame=ref, jpeg=encode_frame(img, self.settings.workers.jpeg_quality),
                           **({"v": 2, "gated": True} if gated else {}))
        self._push(msg, mode, stop)
        self.seq += 1
        self.frames += 1
        return ref.seq

    def publish_eos(self, stop: threading.Event | None = None) -> int:
        w, h = self.size
        ref = FrameRef(camera=self.camera, seq=self.seq, captured_at=time.time(), pts=None, width=w, height=h,
                       eos=True)
        self._push(FrameMsg(frame=ref, jpeg=b""), "wait", stop)
        self.seq += 1
        log.info("camera %s: EOS seq=%d after %d frame(s)", self.camera, ref.seq, self.frames)
        return ref.seq

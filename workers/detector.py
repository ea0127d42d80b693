"""Detector role: frames:{camera} (every registered camera, group "detectors") -> faces.

Stage: pipeline.stages.DetectStage.process(frames) -> FacesMsg per frame (zero-face frames included, EOS passed
through; motion gate and re-embedding gate inside). The worker marks cameras with a face hot in Redis for their
grabber's motion gate and, with workers.reembed_shared, gives the stage a SharedReembedGate (slots in Redis).
Worker: batch across cameras -> stage -> emit faces + XACK (+ XDEL of the frame) in one Lua call per frame,
guarded by the done-marker done:detect:{camera}:{seq}, so a redelivered frame never yields a second FacesMsg."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import redis

from pipeline.backbone import connect, transient_client
from pipeline.cameras import CameraRegistry
from pipeline.config import Settings
from pipeline.engine.framecodec import decode_frame
from pipeline.messages import FrameMsg
from pipeline.metrics import Heartbeat, StageMetrics
from pipeline.motion import hot_key
from pipeline.stages import DetectStage
from pipeline.streams import ConsumingEmitter, StreamNames
from pipeline.tracking.reembed_shared import SharedReembedGate

from .base import BatchReader, Entry, apply_cv_threads, dead_letter, run_loop

log = logging.getLogger("facetrail.detector")

GROUP = "detectors"


def frame_streams(registry: CameraRegistry, names: StreamNames):
    return lambda: [names.frames(c) for c in registry.names()]


class DetectorWorker:
    def __init__(self, settings: Settings, consumer: str, r: redis.Redis | None = None,
                 stage: DetectStage | None = None):
        self.settings = settings
        self.consumer = consumer
        self.r = r or connect(settings)
        self.rt = transient_client(settings, self.r)  # frames and faces: the transient server
        self.names = StreamNames.of(settings)
        self.registry = CameraRegistry(self.r, settings)
        if stage is None and settings.workers.reembed_shared:  # one gate per camera for every detector
            stage = DetectStage(settings, gate=SharedReembedGate.from_settings(self.rt, settings))
        self.stage = stage or DetectStage(settings)
        self.emitter = ConsumingEmitter(self.rt, settings.workers.done_marker_ttl_s)
        self.metrics = StageMetrics(self.r, settings, "detector", consumer)
        self.heartbeat = Heartbeat(self.r, settings, "detector", consumer)
        self.reader = BatchReader(self.rt, settings, GROUP, consumer, frame_streams(self.registry, self.names),
                                  role="detector", hb=self.r)
        self._faces_full_logged = 0.0
        m = settings.motion
        self.hot_ms = int(1000 * settings.tracking.max_age_s) if m.enabled and m.at == "grabber" else 0
        self._lag_at = 0.0

    def faces_has_room(self) -> bool:
        """Backpressure: while the embedders are behind, stop taking frames (they back up and drop at the
        source, counted there) instead of growing the faces stream without bound."""
        now = time.monotonic()
        if now - self._lag_at >= 1.0:  # lag = frames waiting in every camera's stream
            self._lag_at = now
            pipe = self.rt.pipeline(transaction=False)
            for s in self.reader.streams:
                pipe.xlen(s)
            self.metrics.lag = sum(pipe.execute()) if self.reader.streams else 0
        if len(self.names.all_faces) == 1:
            n = self.rt.xlen(self.names.faces)
        else:  # faces sharded (Redis Cluster): the fullest shard decides
            pipe = self.rt.pipeline(transaction=False)
            for s in self.names.all_faces:
                pipe.xlen(s)
            n = max(pipe.execute())
        if n < self.settings.workers.faces_maxlen:
            return True
        if time.monotonic() - self._faces_full_logged > 10:
            self._faces_full_logged = time.monotonic()
            log.warning("%s: faces stream holds %d entries (>= faces_maxlen); pausing", self.consumer, n)
        return False

    def handle(self, batch: list[Entry]) -> None:
        decoded: list[tuple[str, str, FrameMsg, np.ndarray | None]] = []
        for stream, msg_id, payload in batch:
            msg = None
            try:
                msg = FrameMsg.decode(payload)
                img = None
                if not msg.frame.eos and not msg.still:  # a still frame has no pixels: nothing to detect
                    img = decode_frame(msg.jpeg)
                    if img is None:
                        raise ValueError("frame JPEG does not decode")
            except ValueError as e:
                self.metrics.errors += 1
                dead_letter(self.r, self.settings, "detector", stream, msg_id, str(e), payload,
                            camera=msg.frame.camera if msg else None, seq=msg.frame.seq if msg else None,
                            rt=self.rt)
                self.rt.xack(stream, GROUP, msg_id)
                self.rt.xdel(stream, msg_id)  # kept in the dead-letter stream; no longer counts as backlog
                continue
            decoded.append((stream, msg_id, msg, img))
        if not decoded:
            return
        skipped, still = self.stage.skipped, self.stage.motion_skipped
        results = self.stage.process([(m, img) for _, _, m, img in decoded])
        self.metrics.skipped += self.stage.skipped - skipped
        self.metrics.motion_skipped += self.stage.motion_skipped - still
        if self.hot_ms:  # cameras with a face: hot for their grabber's motion gate (pipeline/motion.GrabberGate)
            hot = {m.frame.camera for (_, _, m, _), f in zip(decoded, results) if f.faces}
            if hot:
                pipe = self.r.pipeline(transaction=False)
                until = round(time.time() + self.hot_ms / 1000.0, 3)
                for cam in hot:
                    pipe.set(hot_key(self.settings, cam), until, px=self.hot_ms)
                pipe.execute()
        items = []
        for (stream, msg_id, msg, _), faces in zip(decoded, results):
            out = self.names.faces_for(msg.frame.camera)
            marker = self.names.done("detect", f"{msg.frame.camera}:{msg.frame.seq}", near=out)
            items.append((marker, stream, GROUP, msg_id, [(out, faces.encode(), 0)]))
        fresh = self.emitter.emit_many(items)
        dup = len(fresh) - sum(fresh)
        if dup:
            log.info("%s: %d redelivered frame(s) were already done; acked without output", self.consumer, dup)
        now = time.time()
        lat = [now - m.frame.captured_at for _, _, m, _ in decoded if not m.frame.eos]
        self.metrics.batch(len(decoded), latency_ms=1000 * sum(lat) / len(lat) if lat else None)
        for _, msg_id, msg, _ in decoded:
            log.debug("%s: frame %s:%d (%s) -> faces", self.consumer, msg.frame.camera, msg.frame.seq, msg_id)

    def run(self, stop: threading.Event) -> None:
        run_loop("detector", self.consumer, stop, self.reader, self.handle, self.metrics, self.heartbeat,
                 before_read=self.faces_has_room)


def run(settings: Settings, *, consumer: str, stop: threading.Event) -> None:
    apply_cv_threads(settings)
    DetectorWorker(settings, consumer).run(stop)

"""Embedder role: faces (group "embedders") -> embeddings:{camera}.

Stage: pipeline.stages.EmbedStage.process(faces_msgs) -> EmbeddingsMsg per frame (one embedder call per batch;
a face without a crop gets an empty embedding). Worker: emit + XACK (+ XDEL) per frame in one Lua call guarded by
done:embed:{camera}:{seq}; every frame (zero-face and EOS included) reaches embeddings:{camera} exactly once."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import redis

from pipeline.backbone import connect, transient_client
from pipeline.config import Settings
from pipeline.discovery import StreamIndex
from pipeline.messages import FacesMsg
from pipeline.metrics import Heartbeat, StageMetrics
from pipeline.stages import EmbedStage
from pipeline.streams import ConsumingEmitter, StreamNames

from .base import BatchReader, Entry, apply_cv_threads, dead_letter, run_loop

log = logging.getLogger("facetrail.embedder")

GROUP = "embedders"


class EmbedderWorker:
    def __init__(self, settings: Settings, consumer: str, r: redis.Redis | None = None,
                 stage: EmbedStage | None = None):
        self.settings = settings
        self.consumer = consumer
        self.r = r or connect(settings)
        self.rt = transient_client(settings, self.r)  # faces and embeddings: the transient server
        self.names = StreamNames.of(settings)
        self.stage = stage or EmbedStage(settings)
        # faces in, embeddings out, done:embed markers: all on the transient server, one Lua call per frame
        self.emitter = ConsumingEmitter(self.rt, settings.workers.done_marker_ttl_s)
        self.streams_index = StreamIndex(self.rt, settings)  # which cameras have an embeddings stream (matcher)
        self.metrics = StageMetrics(self.r, settings, "embedder", consumer)
        self.heartbeat = Heartbeat(self.r, settings, "embedder", consumer)
        self.reader = BatchReader(self.rt, settings, GROUP, consumer, lambda: self.names.all_faces,
                                  role="embedder", hb=self.r)

    def handle(self, batch: list[Entry]) -> None:
        good: list[tuple[str, str, FacesMsg, list[np.ndarray | None]]] = []
        for stream, msg_id, payload in batch:
            msg = None
            try:
                msg = FacesMsg.decode(payload)
                crops = self.stage.crops_of(msg)
            except ValueError as e:
                self.metrics.errors += 1
                dead_letter(self.r, self.settings, "embedder", stream, msg_id, str(e), payload,
                            camera=msg.frame.camera if msg else None, seq=msg.frame.seq if msg else None,
                            rt=self.rt)
                self.rt.xack(stream, GROUP, msg_id)
                self.rt.xdel(stream, msg_id)  # kept in the dead-letter stream; no longer counts as backlog
                continue
            good.append((stream, msg_id, msg, crops))
        if not good:
            return
        results = self.stage.process([g[2] for g in good], [g[3] for g in good])
        maxlen = self.settings.workers.embeddings_maxlen
        items = []
        for (stream, msg_id, msg, _), emb in zip(good, results):
            cam = msg.frame.camera
            out = self.names.embeddings(cam)
            items.append((self.names.done("embed", f"{cam}:{msg.frame.seq}", near=out), stream, GROUP, msg_id,
                          [(out, emb.encode(), maxlen)]))
        fresh = self.emitter.emit_many(items)
        self.streams_index.note(g[2].frame.camera for g in good)
        dup = len(fresh) - sum(fresh)
        if dup:
            log.info("%s: %d redelivered message(s) were already done; acked without output", self.consumer, dup)
        now = time.time()
        lat = [now - g[2].frame.captured_at for g in good if not g[2].frame.eos]
        self.metrics.batch(len(good), latency_ms=1000 * sum(lat) / len(lat) if lat else None)
        if self.metrics.batches % 8 == 0:
            self.metrics.lag = sum(self.rt.xlen(s) for s in self.names.all_faces)

    def run(self, stop: threading.Event) -> None:
        run_loop("embedder", self.consumer, stop, self.reader, self.handle, self.metrics, self.heartbeat)


def run(settings: Settings, *, consumer: str, stop: threading.Event) -> None:
    apply_cv_threads(settings)
    EmbedderWorker(settings, consumer).run(stop)

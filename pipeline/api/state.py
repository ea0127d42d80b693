"""The API's per-process state (`app.state.ft`, read by routes through pipeline.api.deps.state): one Redis
client, the API-key store, the face engine (loaded once; calls serialised by a lock because the OpenCV DNN
objects are not thread-safe) and, on first use, the gallery replica."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from .keys import ApiKeys

log = logging.getLogger("facetrail.api")


@dataclass
class ApiState:
    settings: Settings
    redis: Any
    keys: ApiKeys
    keys_required: bool
    started: float = field(default_factory=time.time)
    engine_lock: threading.Lock = field(default_factory=threading.Lock)
    gallery_lock: threading.RLock = field(default_factory=threading.RLock)
    unknowns: Any = None  # pipeline.unknowns.store.UnknownStore, made by routers.unknowns.unknown_store
    _engine: Any = None
    _gallery: Any = None
    _init_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self):
        """The FaceEngine (models loaded on first use). Hold engine_lock while calling it."""
        if self._engine is None:
            with self._init_lock:
                if self._engine is None:
                    from ..engine.engine import FaceEngine

                    eng = FaceEngine(self.settings)
                    eng.detector, eng.embedder  # noqa: B018 - load both models now, not mid-request
                    self._engine = eng
        return self._engine

    def with_gallery(self, fn):
        """Run fn(replica) under the gallery lock. The replica (index.replica.GalleryReplica) is opened on first
        use; it has no background thread: every search syncs from the change log first (a few hundred
        microseconds), so a change made through this API is visible to its next request. One lock, because
        two concurrent syncs of one replica could apply the log out of order."""
        with self.gallery_lock:
            if self._gallery is None:
                self._gallery = _open_gallery(self)
            return fn(self._gallery)

    def close(self) -> None:
        g, self._gallery = self._gallery, None
        if g is not None:
            try:
                g.stop()
            except Exception:  # noqa: BLE001
                log.exception("closing the gallery replica failed")
        try:
            self.redis.close()
        except Exception:  # noqa: BLE001
            pass


def _open_gallery(state: ApiState):
    from index.replica import GalleryReplica

    return GalleryReplica(state.redis, state.settings).start()

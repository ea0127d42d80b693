"""The FastAPI application: `create_app(settings)`. One router per resource under pipeline/api/routers/.

The lifespan holds one Redis client, the API-key store, the face engine (loaded once; calls serialised by a
lock because the OpenCV DNN objects are not thread-safe) and, on first use, the gallery replica."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from ..backbone import connect
from ..config import Settings
from .auth import keys_required, require_api_key
from .errors import RequestContextMiddleware, install_error_handlers
from .keys import ApiKeys

log = logging.getLogger("facetrail.api")

API_VERSION = "1"


@dataclass
class ApiState:
    settings: Settings
    redis: Any
    keys: ApiKeys
    keys_required: bool
    started: float = field(default_factory=time.time)
    engine_lock: threading.Lock = field(default_factory=threading.Lock)
    gallery_lock: threading.RLock = field(default_factory=threading.RLock)
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


def max_body_bytes(settings: Settings) -> int:
    per_file = int(settings.api.max_upload_mb * 1024 * 1024)
    return per_file * settings.api.max_files + 1024 * 1024


def create_app(settings: Settings, *, redis_client=None) -> FastAPI:
    """Build the app. The Redis connection is opened here (a clear BackboneError if it is unreachable)."""
    r = redis_client if redis_client is not None else connect(settings)
    state = ApiState(settings=settings, redis=r, keys=ApiKeys(r, settings),
                     keys_required=keys_required(settings.api.require_keys, settings.api.host))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("api ready host=%s port=%s keys_required=%s", settings.api.host, settings.api.port,
                 state.keys_required)
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="facetrail", version=API_VERSION, lifespan=lifespan, openapi_url=None,
        description="Face-recognition video analytics: match events, the gallery of enrolled people, cameras, and "
                    "identify/verify on still images. Every route but /healthz needs an API key "
                    "(`X-API-Key` or `Authorization: Bearer`) unless the server binds to loopback only. "
                    "Errors are JSON: `{\"error\": {\"code\", \"message\"}, \"request_id\"}`.",
    )
    app.state.ft = state
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body=max_body_bytes(settings))

    from .routers import cameras, events, faces, gallery, health, unknowns

    app.include_router(health.router)
    auth = [Depends(require_api_key)]
    app.include_router(faces.router, prefix="/v1", dependencies=auth)
    app.include_router(gallery.router, prefix="/v1", dependencies=auth)
    app.include_router(events.router, prefix="/v1", dependencies=auth)
    app.include_router(cameras.router, prefix="/v1", dependencies=auth)
    app.include_router(unknowns.router, prefix="/v1", dependencies=auth)
    app.include_router(health.metrics_router, dependencies=auth)

    # The schema is served behind the same key as the data routes (only /healthz is open); /docs is a static
    # page that loads it, so in a keyed deployment fetch /openapi.json with the key instead.
    @app.get("/openapi.json", include_in_schema=False, dependencies=auth)
    def openapi_schema():
        return JSONResponse(app.openapi())

    from fastapi.responses import RedirectResponse
    from fastapi.staticfiles import StaticFiles

    from ..ui.routes import STATIC_DIR
    from ..ui.routes import router as ui_router

    app.include_router(ui_router)  # pages check the key or UI session themselves (login redirect, not 401)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/ui/events", status_code=307)

    @app.get("/docs", include_in_schema=False)
    def docs_page():
        # self-contained (no CDN): Swagger UI's assets from a CDN left /docs blank on an offline box
        from fastapi.responses import HTMLResponse

        from .docs_page import offline_docs_html

        return HTMLResponse(offline_docs_html("facetrail API"))

    return app

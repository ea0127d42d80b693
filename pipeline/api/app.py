"""The FastAPI application: `create_app(settings)`. One router per resource under pipeline/api/routers/.

The lifespan holds the ApiState (pipeline/api/state.py): one Redis client, the API-key store, the face engine
and, on first use, the gallery replica; it closes them at shutdown."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from ..backbone import connect
from ..config import Settings
from .auth import keys_required, require_api_key
from .errors import RequestContextMiddleware, install_error_handlers
from .keys import ApiKeys
from .state import ApiState

log = logging.getLogger("facetrail.api")

API_VERSION = "1"


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
    _include_api(app)
    _include_ui(app)
    return app


def _include_api(app: FastAPI) -> None:
    """/healthz (open), the /v1 routers, /metrics and /openapi.json (behind the API key)."""
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


def _include_ui(app: FastAPI) -> None:
    """The web UI's pages and static files, / (to the events page) and the offline /docs page."""
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

"""The API as a role: `run(settings, consumer=..., stop=...)` serves until `stop` is set (used by
`facetrail up`); `serve_forever(settings)` is `facetrail api`."""
from __future__ import annotations

import logging
import threading

import uvicorn

from pipeline.api import create_app
from pipeline.config import Settings

log = logging.getLogger("facetrail.api")


def _server(settings: Settings) -> uvicorn.Server:
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.api.host, port=settings.api.port, log_level="warning",
                            access_log=False, server_header=False, timeout_graceful_shutdown=5,
                            limit_concurrency=256)
    return uvicorn.Server(config)


def run(settings: Settings, *, consumer: str = "api", stop: threading.Event) -> None:
    """Serve the API until stop is set. Safe to call from a non-main thread (no signal handlers there)."""
    server = _server(settings)

    def _watch() -> None:
        stop.wait()
        server.should_exit = True

    threading.Thread(target=_watch, name=f"{consumer}-stop", daemon=True).start()
    log.info("api %s listening on %s:%s", consumer, settings.api.host, settings.api.port)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        server.started = False
    if not server.started and not stop.is_set():
        raise RuntimeError(f"API server could not start on {settings.api.host}:{settings.api.port}")


def serve_forever(settings: Settings) -> int:
    server = _server(settings)
    print(f"facetrail API on http://{settings.api.host}:{settings.api.port} (docs at /docs)", flush=True)
    server.run()
    return 0 if server.started else 1

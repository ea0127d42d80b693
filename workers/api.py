"""The API as a role: `run(settings, consumer=..., stop=...)` serves until `stop` is set (`facetrail up` runs it
as `facetrail worker api`); `serve_forever(settings)` is `facetrail api`."""
from __future__ import annotations

import logging
import threading
from typing import Any

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


def _heartbeat(server: uvicorn.Server, settings: Settings, consumer: str, stop: threading.Event) -> None:
    """Beat as role `api` (seen in /healthz and /metrics) while the server is up."""
    from pipeline.metrics import Heartbeat

    app: Any = server.config.app  # the FastAPI app _server built (uvicorn types it as any ASGI app)
    hb = Heartbeat(app.state.ft.redis, settings, "api", consumer)
    while not stop.wait(min(1.0, settings.workers.heartbeat_s)):
        if server.started:
            hb.beat()
    hb.clear()


def run(settings: Settings, *, consumer: str = "api", stop: threading.Event) -> None:
    """Serve the API until stop is set. Safe to call from a non-main thread (uvicorn then installs no signal
    handlers). Raises RuntimeError when the server cannot start (e.g. the port is taken)."""
    server = _server(settings)
    done = threading.Event()

    def _watch() -> None:
        while not (stop.wait(0.2) or done.is_set()):
            pass
        server.should_exit = True

    threading.Thread(target=_watch, name=f"{consumer}-stop", daemon=True).start()
    hb_stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(server, settings, consumer, hb_stop), name=f"{consumer}-hb",
                     daemon=True).start()
    log.info("api %s listening on %s:%s", consumer, settings.api.host, settings.api.port)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        if server.started or stop.is_set():
            raise
    finally:
        done.set()
        hb_stop.set()
    if not server.started and not stop.is_set():
        raise RuntimeError(f"API server could not start on {settings.api.host}:{settings.api.port} "
                           f"(port in use or address not available?)")


def serve_forever(settings: Settings) -> int:
    server = _server(settings)
    print(f"facetrail API on http://{settings.api.host}:{settings.api.port} (docs at /docs)", flush=True)
    try:
        server.run()
    except SystemExit:
        pass
    if not server.started:
        from pipeline.errors import UserError

        raise UserError(f"cannot serve on {settings.api.host}:{settings.api.port} (port in use or address not "
                        f"available?)")
    return 0

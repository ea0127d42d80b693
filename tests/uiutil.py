"""Helpers for the web UI's browser tests and bench/bench_ui.py: Debian's chromium driven by Playwright through
executable_path (Playwright's own browser download is never used), and the API app served by a real uvicorn on
a free loopback port in a thread."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}


def chromium_path() -> str | None:
    """FACETRAIL_CHROMIUM, else Debian's chromium on PATH."""
    cand = os.environ.get("FACETRAIL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return cand if os.access(cand, os.X_OK) else None


def launch(pw, path: str):
    return pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(settings, port: int | None = None, wrap=None):
    """create_app(settings) under uvicorn on 127.0.0.1; yields the base URL. Whether keys are required follows
    settings.api (host, require_keys), not the address actually bound. wrap(app) -> ASGI app, to put a stub in
    front of some routes."""
    import uvicorn

    from pipeline.api.app import create_app

    port = port or _free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(wrap(app) if wrap else app, host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=2))
    t = threading.Thread(target=server.run, name=f"uvicorn:{port}", daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not t.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(15)


def screenshot(page, name: str) -> Path | None:
    """Save a PNG under $FACETRAIL_UI_SCREENSHOTS (unset: nothing is written). README images come from here."""
    d = os.environ.get("FACETRAIL_UI_SCREENSHOTS")
    if not d:
        return None
    p = Path(d) / f"{name}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(p), full_page=False)
    return p

"""Web UI benchmark: /ui/events with 10,000 events in the store.

Fills a private Redis with N synthetic events (EventStore.commit, each with its own snapshot JPEG of a realistic
size), serves the app with uvicorn on loopback, and loads /ui/events in Debian's chromium (Playwright,
executable_path) with a cold cache, several times:
  - page weight: bytes of every response the page loads (HTML, CSS, JS, the /v1/events page, thumbnails), by kind
  - first contentful paint (the browser's paint timing) and first event row in the DOM, from navigation start
  - the /v1/events?limit=50 request alone (server time, 20 tries)

Writes bench/results/ui.json. Usage:
    .venv/bin/python bench/bench_ui.py [--events 10000] [--runs 5]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import cv2  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from pipeline.backbone import redis_server_binary  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.events.model import Event  # noqa: E402
from pipeline.events.store import EventStore  # noqa: E402
from uiutil import DESKTOP, chromium_path, launch, serve  # noqa: E402

# the first event row's arrival, timed in the page (an init script is not subject to the page's CSP)
FIRST_ROW = """
window.__firstRow = null;
new MutationObserver((m, obs) => {
  if (document.querySelector('#events .ev')) { window.__firstRow = performance.now(); obs.disconnect(); }
}).observe(document, {childList: true, subtree: true});
"""


def snapshot_jpeg(i: int) -> bytes:
    """A face-thumbnail-like JPEG: the matcher's snapshot is the track's best face crop, workers.thumb_px (96)
    on the long side, at workers.jpeg_quality (85)."""
    rng = np.random.default_rng(i)
    img = np.zeros((96, 80, 3), np.uint8)
    img[:] = np.linspace(40, 200, 80, dtype=np.uint8)[None, :, None]
    img = cv2.add(img, rng.integers(0, 40, img.shape, dtype=np.uint8))
    cv2.circle(img, (40, 44), 28, (150, 170, 200), -1)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def fill(settings, n: int) -> int:
    r = redis.Redis.from_url(settings.redis.url)
    store = EventStore(r, settings)
    names = ["alice", "bob", "carol", "dave", None, None]
    t0 = time.time() - n * 6.0
    snap_bytes = 0
    batch = []
    for i in range(n):
        name = names[i % len(names)]
        t = t0 + i * 6.0
        sid = f"bench{i}"
        jpeg = snapshot_jpeg(i % 50)
        snap_bytes += len(jpeg)
        store.put_snapshot(sid, jpeg)
        batch.append(Event.make("identity.matched" if name else "track.ended", f"cam{i % 4}", f"cam{i % 4}:{i}:0",
                                f"id-{name}" if name else None, identity=name, score=0.6 + (i % 30) / 100,
                                first_seen=t - 4, last_seen=t, frames=20, seq=i, snapshot_id=sid, created_at=t))
        if len(batch) == 500:
            store.commit(batch)
            batch = []
    if batch:
        store.commit(batch)
    return snap_bytes // max(1, n)


def kind(url: str, ctype: str) -> str:
    if "/snapshot" in url:
        return "thumbnails"
    if url.endswith(".css") or ".css?" in url:
        return "css"
    if ".js" in url:
        return "js"
    if "/v1/" in url:
        return "api_json"
    return "html" if "text/html" in ctype else "other"


def measure(browser, base: str) -> dict:
    ctx = browser.new_context(viewport=DESKTOP)  # a fresh context: cold cache every run
    page = ctx.new_page()
    page.add_init_script(FIRST_ROW)
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}

    def on_response(resp):
        if resp.url.startswith(base) and "/stream" not in resp.url:
            try:
                n = len(resp.body())
            except Exception:  # noqa: BLE001 - a redirect or aborted response has no body
                return
            k = kind(resp.url, resp.headers.get("content-type", ""))
            sizes[k] = sizes.get(k, 0) + n
            counts[k] = counts.get(k, 0) + 1

    page.on("response", on_response)
    page.goto(base + "/ui/events", wait_until="load")
    page.wait_for_function("() => window.__firstRow !== null", timeout=60_000)
    page.wait_for_load_state("networkidle")
    t = page.evaluate("""() => ({
        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
        first_row: window.__firstRow,
        dom_content_loaded: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
        rows: document.querySelectorAll('#events .ev').length})""")
    ctx.close()
    return {**t, "bytes": sizes, "requests": counts, "total_bytes": sum(sizes.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ui.json"))
    args = ap.parse_args()
    chromium = chromium_path()
    if chromium is None:
        print("chromium is missing (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(200):
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            settings = load_settings([], env={"FACETRAIL_REDIS_URL": url, "FACETRAIL_DATA_DIR": tmp})
            t0 = time.perf_counter()
            snap_avg = fill(settings, args.events)
            fill_s = time.perf_counter() - t0
            with serve(settings) as base, sync_playwright() as p:
                api_ms = []
                with httpx.Client(base_url=base) as c:
                    for _ in range(20):
                        t = time.perf_counter()
                        c.get("/v1/events", params={"limit": 50, "order": "desc"}).raise_for_status()
                        api_ms.append((time.perf_counter() - t) * 1000)
                browser = launch(p, chromium)
                runs = [measure(browser, base) for _ in range(args.runs)]
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)

    def med(k):
        return round(statistics.median(r[k] for r in runs), 1)

    result = {
        "events_in_store": args.events, "rows_rendered": runs[0]["rows"], "runs": args.runs,
        "page_weight_bytes": {"total": int(statistics.median(r["total_bytes"] for r in runs)),
                              **{k: v for k, v in sorted(runs[0]["bytes"].items())}},
        "requests": runs[0]["requests"],
        "snapshot_avg_bytes": snap_avg,
        "first_contentful_paint_ms": med("fcp"), "first_row_ms": med("first_row"),
        "dom_content_loaded_ms": med("dom_content_loaded"),
        "first_row_ms_all": [round(r["first_row"], 1) for r in runs],
        "api_events_page_ms_p50": round(statistics.median(api_ms), 1),
        "fill_s": round(fill_s, 1),
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "platform": platform.platform()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())

"""Fuzz the REST API in-process (real Redis, real models, nothing stubbed): at least 10,000 malformed or random
requests built from our own OpenAPI document (every route and method, fuzzed path/query/header/body values, forged
image headers, broken multipart) plus raw garbage. The server must never answer 5xx, every error must be our JSON
shape, and it must still answer /healthz at the end."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import urllib.parse
import zlib

import cv2
import httpx
import numpy as np
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from pipeline.api import create_app
from pipeline.events.model import Event
from pipeline.events.store import EventStore

# at least 10,000 requests reach the server in all: (FAST - 400) + (STRUCT - 50) + (RAW - 400) >= 10,000
# (a few generated requests are refused by the HTTP client itself, e.g. non-ASCII header values)
FAST_EXAMPLES = int(os.environ.get("FUZZ_FAST_EXAMPLES", 8600))
STRUCT_EXAMPLES = int(os.environ.get("FUZZ_STRUCT_EXAMPLES", 450))
RAW_EXAMPLES = int(os.environ.get("FUZZ_RAW_EXAMPLES", 1900))
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
CTYPES = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "text/plain", "application/json",
          "application/octet-stream", "", "image/jpeg; charset=utf-8", "multipart/form-data", "image/"]
printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
anytext = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def forged_png(w: int, h: int, tail: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + tail


def forged_jpeg(w: int, h: int, tail: bytes) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + sof + tail


def forged_bmp(w: int, h: int, tail: bytes) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54 + len(tail), 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0,
                                                                                  len(tail), 0, 0, 0, 0) + tail


def forged_webp(w: int, h: int, tail: bytes) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (w - 1 & 0xFFFFFF).to_bytes(3, "little") + \
        (h - 1 & 0xFFFFFF).to_bytes(3, "little") + tail
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


_small = cv2.imencode(".png", np.full((24, 24, 3), 120, np.uint8))[1].tobytes()
_small_jpg = cv2.imencode(".jpg", np.full((24, 24, 3), 60, np.uint8))[1].tobytes()

dims = st.integers(min_value=0, max_value=70_000)
image_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(forged_png, dims, dims, st.binary(max_size=64)),
    st.builds(forged_jpeg, st.integers(0, 65_535), st.integers(0, 65_535), st.binary(max_size=64)),
    st.builds(forged_bmp, st.integers(-70_000, 70_000), st.integers(-70_000, 70_000), st.binary(max_size=64)),
    st.builds(forged_webp, st.integers(1, 16_384), st.integers(1, 16_384), st.binary(max_size=64)),
    st.builds(lambda n: _small[:n], st.integers(0, len(_small))),
    st.builds(lambda n: _small_jpg[:n], st.integers(0, len(_small_jpg))),
    st.just(_small), st.just(b""),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | anytext,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(anytext, children, max_size=4),
    max_leaves=10)
json_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"name": st.one_of(anytext, st.integers(), st.none())},
                          optional={"url": st.one_of(anytext, st.just("rtsp://u:p@h/s")), "fps": json_values,
                                    "enabled": json_values, "extra": json_values}),
)
param_values = st.one_of(printable, anytext, st.integers().map(str), st.floats().map(str),
                         st.sampled_from(["", "0", "-1", "1e309", "nan", "true", "$", "0-0", "1h", "2026-13-45",
                                          "ftk_00000000_xxxxxxxxxxxxxxxxxxxxxxxx", "../../etc/passwd", "%00",
                                          "track.ended", "asc", "desc", "99999999999999999999-1"]))


def _spec_routes(app) -> list[tuple[str, str, list[dict]]]:
    out = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            out.append((path, method.upper(), op.get("parameters", [])))
    return out


@st.composite
def multipart(draw):
    files = []
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(["image", "images", "a", "b", "file", "name"]) | printable)
        files.append((field, (draw(printable), draw(image_bytes), draw(st.sampled_from(CTYPES) | printable))))
    data = draw(st.dictionaries(st.sampled_from(["name", "face", "largest", "flip", "skip_bad", "metadata",
                                                 "threshold"]) | printable,
                                param_values, max_size=4))
    return {"files": files or None, "data": data or None}


@st.composite
def spec_request(draw, routes):
    path, method, params = draw(st.sampled_from(routes))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(METHODS))
    url = path
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    for p in params:
        name = p["name"]
        if p["in"] == "path":
            v = draw(param_values | st.sampled_from(["obama", "door", "0123abcd", "1"]))
            url = url.replace("{" + name + "}", urllib.parse.quote(v, safe="") or "%20")
        elif p["in"] == "query" and draw(st.booleans()):
            for v in draw(st.lists(param_values, min_size=1, max_size=2)):
                query.append((name, v))
        elif p["in"] == "header" and draw(st.booleans()):
            headers[name] = draw(printable)
    for k, v in draw(st.lists(st.tuples(printable, param_values), max_size=2)):
        query.append((k, v))
    if path == "/v1/events/stream":
        query.append(("idle_timeout", "0.02"))  # a valid live tail would otherwise (rightly) stay open
    kind = draw(st.sampled_from(["none", "json", "multipart", "raw"]))
    body: dict = {}
    if kind == "json":
        body = {"content": json.dumps(draw(json_bodies)).encode(), "ctype": "application/json"}
    elif kind == "multipart":
        body = draw(multipart())
    elif kind == "raw":
        body = {"content": draw(st.binary(max_size=400) | image_bytes),
                "ctype": draw(st.sampled_from(CTYPES + ["multipart/form-data; boundary=zz",
                                                       "application/x-www-form-urlencoded"]) | printable)}
    return method, url, query, headers, body



# ---- a fast generator driven by one hypothesis-seeded Random: composite strategies cost ~15 ms per example,
# ---- this costs ~0.1 ms, so the bulk of the 10,000 requests goes through it (failures print the seed)
NASTY = ["", " ", "0", "-1", "1e309", "nan", "inf", "true", "null", "$", "0-0", "1h", "2026-13-45T99:99", "ftk_x",
         "../../etc/passwd", "%00", "\x00", "track.ended", "asc", "desc", "99999999999999999999-1", "obama", "door",
         "0123abcd", "a" * 300, "😀", "名前", "<script>", "' OR 1=1 --", "{}", "[]", "%", "%%", "?", "#", "/", "..",
         "9" * 40, "-0", "0x10", "1_000", "\r\nX-Injected: 1"]


def rnd_text(rnd, n=24) -> str:
    kind = rnd.random()
    if kind < 0.4:
        return rnd.choice(NASTY)
    if kind < 0.7:
        return "".join(chr(rnd.randint(32, 126)) for _ in range(rnd.randint(0, n)))
    if kind < 0.85:
        return str(rnd.choice([rnd.randint(-10**6, 10**6), rnd.random() * 10 ** rnd.randint(-5, 30),
                               rnd.randint(0, 2**64)]))
    return "".join(chr(rnd.choice([rnd.randint(0x80, 0xD7FF), rnd.randint(0xE000, 0x10FFFF)]))
                   for _ in range(rnd.randint(1, 8)))


def rnd_json(rnd, depth=0):
    k = rnd.random()
    if depth > 2 or k < 0.5:
        return rnd.choice([None, True, False, rnd.randint(-2**70, 2**70), rnd.random() * 1e6, rnd_text(rnd)])
    if k < 0.75:
        return [rnd_json(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    d = {rnd_text(rnd, 8): rnd_json(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}
    if rnd.random() < 0.5:
        d["name"] = rnd.choice([rnd_text(rnd), "door", "cam-1", 5, None])
        if rnd.random() < 0.6:
            d["url"] = rnd.choice([rnd_text(rnd), "rtsp://u:p@h/s", "file:///dev/zero", ""])
    return d


def rnd_image(rnd) -> bytes:
    k = rnd.randrange(8)
    tail = rnd.randbytes(rnd.randint(0, 64))
    big = rnd.choice([0, 1, 7, 640, 2000, 4000, 65_535, 70_000, 2**31 - 1])
    w, h = rnd.choice([rnd.randint(0, 5000), big]), rnd.choice([rnd.randint(0, 5000), big])
    if k == 0:
        return forged_png(w, h, tail)
    if k == 1:
        return forged_jpeg(min(w, 65_535), min(h, 65_535), tail)
    if k == 2:
        return forged_bmp(min(w, 2**31 - 1) * rnd.choice([1, -1]), min(h, 2**31 - 1) * rnd.choice([1, -1]), tail)
    if k == 3:
        return forged_webp(max(1, min(w, 16_384)), max(1, min(h, 16_384)), tail)
    if k == 4:
        good = rnd.choice([_small, _small_jpg])
        return good[:rnd.randint(0, len(good))]
    if k == 5:
        good = bytearray(rnd.choice([_small, _small_jpg]))
        for _ in range(rnd.randint(1, 8)):
            good[rnd.randrange(len(good))] = rnd.randrange(256)
        return bytes(good)
    if k == 6:
        return rnd.choice([_small, b""])
    return rnd.randbytes(rnd.randint(0, 300))


def rnd_request(rnd, routes):
    path, method, params = rnd.choice(routes)
    if rnd.random() < 0.1:
        method = rnd.choice(METHODS)
    url = path
    query, headers = [], {}
    for p in params:
        if p["in"] == "path":
            url = url.replace("{" + p["name"] + "}", urllib.parse.quote(rnd_text(rnd), safe="") or "%20")
        elif p["in"] == "query" and rnd.random() < 0.5:
            query += [(p["name"], rnd_text(rnd)) for _ in range(rnd.randint(1, 2))]
        elif p["in"] == "header" and rnd.random() < 0.5:
            headers[p["name"]] = rnd_text(rnd)
    if rnd.random() < 0.2:
        query.append((rnd_text(rnd, 8), rnd_text(rnd)))
    if path == "/v1/events/stream":
        query.append(("idle_timeout", "0.02"))  # a valid live tail would otherwise (rightly) stay open
    kind = rnd.randrange(4)
    body: dict = {}
    if kind == 1:
        body = {"content": json.dumps(rnd_json(rnd)).encode(), "ctype": "application/json"}
    elif kind == 2:
        files = [(rnd.choice(["image", "images", "a", "b", "file", "name", rnd_text(rnd, 6)]),
                  (rnd_text(rnd, 12), rnd_image(rnd), rnd.choice(CTYPES + [rnd_text(rnd, 10)])))
                 for _ in range(rnd.randint(0, 3))]
        data = {rnd.choice(["name", "face", "largest", "flip", "skip_bad", "metadata", "threshold",
                            rnd_text(rnd, 6)]): rnd_text(rnd) for _ in range(rnd.randint(0, 3))}
        body = {"files": files or None, "data": data or None}
    elif kind == 3:
        body = {"content": rnd.choice([rnd.randbytes(rnd.randint(0, 400)), rnd_image(rnd)]),
                "ctype": rnd.choice(CTYPES + ["multipart/form-data; boundary=zz", "application/x-www-form-urlencoded",
                                              rnd_text(rnd, 20)])}
    return method, url, query, headers, body


ERROR_KEYS = {"error", "request_id"}


def _check(r: httpx.Response, method: str) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400 and method != "HEAD":
        body = r.json()
        assert set(body) == ERROR_KEYS and body["error"]["code"] and body["error"]["message"], body
        assert "Traceback" not in r.text


class Client:
    """httpx over ASGI on one event loop: no thread hop per request, so 10k requests fit the time budget."""

    def __init__(self, app):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

    def request(self, method, url, **kw) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, url, **kw))

    def get(self, url, **kw) -> httpx.Response:
        return self.request("GET", url, **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()
        self.app.state.ft.close()


@contextlib.contextmanager
def in_process(settings):
    c = Client(create_app(settings))
    try:
        yield c
    finally:
        c.close()


def _seed(client, settings) -> None:
    store = EventStore(client.app.state.ft.redis, settings)
    store.put_snapshot("fz", _small_jpg)
    store.add([Event.make("identity.matched", "door", f"door:{i}:0", "id1", identity="obama", score=0.6,
                          first_seen=1e9 + i, last_seen=1e9 + i, seq=i, snapshot_id="fz") for i in range(3)])


def _send(client, key: str, req, auth: str, garbage: str, stats: dict) -> None:
    method, url, query, headers, body = req
    headers = dict(headers)
    if auth == "key":
        headers["X-API-Key"] = key
    elif auth == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif auth == "garbage":
        headers["X-API-Key"] = garbage
    kw: dict = {"params": query, "headers": headers}
    if "content" in body:
        kw["content"] = body["content"]
        headers["Content-Type"] = body["ctype"]
    elif body:
        kw["files"], kw["data"] = body.get("files"), body.get("data")
    try:
        r = client.request(method, url, **kw)
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError, ValueError, TypeError):
        return  # the client refused to build it; nothing reached the server
    stats["n"] += 1
    stats["by_status"][r.status_code] = stats["by_status"].get(r.status_code, 0) + 1
    _check(r, method)


AUTH = ["key", "key", "key", "key", "bearer", "none", "garbage"]


def _fuzz_app(settings, require_keys: str = "always"):
    settings.api.require_keys = require_keys
    settings.api.max_pixels = 4_000_000
    settings.api.max_upload_mb = 0.5
    return in_process(settings)


def _finish(client, key: str, stats: dict, minimum: int, label: str) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/events", headers={"X-API-Key": key}).status_code == 200
    print(f"{label}: {stats['n']} requests, statuses {sorted(stats['by_status'].items())}")
    assert stats["n"] >= minimum, stats
    # the fuzzer got past auth and validation often enough to exercise the handlers
    assert sum(n for s, n in stats["by_status"].items() if s < 300) >= minimum * 0.05, stats


def test_fuzz_openapi_random(settings):
    """The bulk: FAST_EXAMPLES requests from the OpenAPI routes, each built from a hypothesis-seeded Random."""
    stats = {"n": 0, "by_status": {}}
    with _fuzz_app(settings) as client:
        _seed(client, settings)
        _, key = client.app.state.ft.keys.create("fuzz")
        routes = _spec_routes(client.app)
        assert len(routes) >= 15

        @hsettings(max_examples=FAST_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(rnd=st.randoms(use_true_random=True))
        def run(rnd):
            _send(client, key, rnd_request(rnd, routes), rnd.choice(AUTH), rnd_text(rnd), stats)

        run()
        _finish(client, key, stats, FAST_EXAMPLES - 400, "openapi random fuzz")


def test_fuzz_openapi_strategies(settings):
    """Fewer requests, drawn from composable hypothesis strategies (shrinks to a minimal failing request)."""
    stats = {"n": 0, "by_status": {}}
    with _fuzz_app(settings) as client:
        _seed(client, settings)
        _, key = client.app.state.ft.keys.create("fuzz")
        routes = _spec_routes(client.app)

        @hsettings(max_examples=STRUCT_EXAMPLES, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))
        @given(req=spec_request(routes), auth=st.sampled_from(AUTH), garbage=printable)
        def run(req, auth, garbage):
            _send(client, key, req, auth, garbage, stats)

        run()
        _finish(client, key, stats, STRUCT_EXAMPLES - 50, "openapi strategy fuzz")


def test_fuzz_raw_garbage(settings):
    """Paths, methods, headers and bodies that are not in the OpenAPI document at all."""
    stats = {"n": 0, "by_status": {}}
    with _fuzz_app(settings, require_keys="never") as client:

        @hsettings(max_examples=RAW_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(rnd=st.randoms(use_true_random=True))
        def run(rnd):
            segs = [rnd.choice(["v1", "events", "gallery", "cameras", "identify", "verify", "stream", "snapshot",
                                "templates", "thumbnail", "healthz", "metrics", "docs", "..", ".", "%2e%2e", "%00",
                                "openapi.json", rnd_text(rnd, 10)]) for _ in range(rnd.randint(0, 5))]
            url = "/" + "/".join(urllib.parse.quote(x, safe="%") for x in segs)
            token = "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz-_0123456789") for _ in range(rnd.randint(1, 12)))
            headers = {rnd.choice(["X-API-Key", "Authorization", "X-Request-ID", "Accept", "Last-Event-ID",
                                   "Range", "Content-Length", "Transfer-Encoding", token]):
                       "".join(chr(rnd.randint(32, 126)) for _ in range(rnd.randint(0, 30))) if rnd.random() < 0.7
                       else rnd_text(rnd) for _ in range(rnd.randint(0, 3))}
            ctype = rnd.choice(CTYPES + ["multipart/form-data; boundary=b", rnd_text(rnd, 12)])
            body = {"content": rnd.choice([rnd.randbytes(rnd.randint(0, 500)), rnd_image(rnd)]), "ctype": ctype}
            _send(client, "", (rnd.choice(METHODS), url, [], headers, body), "none", "", stats)

        run()
        assert client.get("/healthz").status_code == 200
    print(f"raw fuzz: {stats['n']} requests, statuses {sorted(stats['by_status'].items())}")
    assert stats["n"] >= RAW_EXAMPLES - 400, stats

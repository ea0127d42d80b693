"""REST API against a real private Redis and the real models: auth, uploads, every endpoint, paging, errors."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipeline.api import create_app
from pipeline.api.keys import ApiKeyError
from pipeline.events.model import Event
from pipeline.events.store import EventStore

from conftest import RedisProc, free_port

PY = sys.executable


def _client(settings, **api) -> TestClient:
    for k, v in api.items():
        setattr(settings.api, k, v)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(settings):
    settings.api.require_keys = "never"
    with _client(settings) as c:
        yield c


def _jpeg(path) -> bytes:
    return path.read_bytes()


def _err(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "request_id"}, body
    assert body["request_id"] == r.headers["x-request-id"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body
    return body


def _event(i: int, *, camera="door", type_="identity.matched", identity="alice", identity_id="id-alice",
           snapshot_id=None, ts=1_700_000_000.0) -> Event:
    return Event.make(type_, camera, f"{camera}:{i}:0", identity_id if type_ == "identity.matched" else None,
                      identity=identity if type_ == "identity.matched" else None, score=0.5 + i / 1000,
                      first_seen=ts + i, last_seen=ts + i, frames=3, seq=i, snapshot_id=snapshot_id)


# ------------------------------------------------------------------------------------------------- auth / keys
def test_keys_required_missing_wrong_revoked(settings):
    with _client(settings, require_keys="always") as c:
        st = c.app.state.ft
        rec, raw = st.keys.create("ci")
        _err(c.get("/v1/gallery"), 401, "missing_api_key")
        assert c.get("/v1/gallery").headers["www-authenticate"].startswith("Bearer")
        _err(c.get("/v1/gallery", headers={"X-API-Key": "nonsense"}), 401, "invalid_api_key")
        wrong_secret = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
        _err(c.get("/v1/gallery", headers={"X-API-Key": wrong_secret}), 401, "invalid_api_key")
        unknown_id = "ftk_00000000_" + raw.split("_", 2)[2]
        _err(c.get("/v1/gallery", headers={"X-API-Key": unknown_id}), 401, "invalid_api_key")
        assert c.get("/v1/gallery", headers={"X-API-Key": raw}).status_code == 200
        assert c.get("/v1/events", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
        assert c.get("/metrics", headers={"X-API-Key": raw}).status_code == 200
        # only /healthz is open: the schema needs the key too
        _err(c.get("/openapi.json"), 401, "missing_api_key")
        assert "/v1/events" in c.get("/openapi.json", headers={"X-API-Key": raw}).json()["paths"]
        assert c.get("/healthz").status_code == 200 and c.head("/healthz").status_code == 200
        _err(c.get("/metrics"), 401)
        # uploads are refused before they are read when the key is missing
        _err(c.post("/v1/identify", files={"image": ("a.jpg", b"\xff\xd8\xff", "image/jpeg")}), 401)
        # /healthz never needs a key
        assert c.get("/healthz").status_code == 200
        # at rest only a hash: the plaintext key is nowhere in Redis
        dump = b"".join(v for v in st.redis.hvals(st.keys.hkey))
        assert raw.encode() not in dump and raw.split("_", 2)[2].encode() not in dump
        st.keys.revoke("ci")
        _err(c.get("/v1/gallery", headers={"X-API-Key": raw}), 401, "invalid_api_key")
        # a new key with the same name works; the revoked one stays revoked
        _, raw2 = st.keys.create("ci")
        assert c.get("/v1/gallery", headers={"X-API-Key": raw2}).status_code == 200
        _err(c.get("/v1/gallery", headers={"X-API-Key": raw}), 401)


def test_require_keys_auto_depends_on_bind_address(settings):
    with _client(settings, require_keys="auto", host="127.0.0.1") as c:
        assert c.get("/v1/gallery").status_code == 200
    with _client(settings, require_keys="auto", host="0.0.0.0") as c:
        _err(c.get("/v1/gallery"), 401, "missing_api_key")
    with _client(settings, require_keys="never", host="0.0.0.0") as c:
        assert c.get("/v1/gallery").status_code == 200


def test_wrong_key_is_refused_even_when_keys_are_not_required(settings):
    """A loopback-only API needs no key, but a key that is sent and wrong is a mistake to report (401), never
    silently accepted: the client would believe its key works."""
    with _client(settings, require_keys="auto", host="127.0.0.1") as c:
        _err(c.get("/v1/gallery", headers={"X-API-Key": "ft_wrong"}), 401, "invalid_api_key")
        _err(c.get("/v1/gallery", headers={"Authorization": "Bearer ft_wrong"}), 401, "invalid_api_key")
        _, raw = c.app.state.ft.keys.create("ok")
        assert c.get("/v1/gallery", headers={"X-API-Key": raw}).status_code == 200
        assert c.get("/v1/gallery").status_code == 200


def test_apikey_cli_create_list_revoke(settings, cli_env):
    def cli(*args):
        return subprocess.run([PY, "-m", "pipeline.cli", "apikey", *args], env=cli_env, capture_output=True,
                              text=True, timeout=60)

    r = cli("create", "grafana", "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    raw = created["key"]
    assert raw.startswith("ftk_")
    assert cli("create", "grafana").returncode == 2  # a second active key with that name is refused
    with _client(settings, require_keys="always") as c:
        keys = c.app.state.ft.keys
        assert [(k.name, k.active) for k in keys.list()] == [("grafana", True)]
        assert c.get("/v1/cameras", headers={"X-API-Key": raw}).status_code == 200
        r = cli("revoke", "grafana")
        assert r.returncode == 0, r.stderr
        _err(c.get("/v1/cameras", headers={"X-API-Key": raw}), 401, "invalid_api_key")
        with pytest.raises(ApiKeyError, match="no active API key"):
            keys.revoke("grafana")
    rows = [json.loads(x) for x in cli("list", "--json").stdout.splitlines()]
    assert [(k["name"], k["active"], k["id"]) for k in rows] == [("grafana", False, created["id"])]
    assert rows[0]["revoked"] and all("key" not in k and "sha256" not in k for k in rows)
    assert rows[0]["last_used"] >= rows[0]["created"]


# ------------------------------------------------------------------------------------------------- uploads
@pytest.mark.parametrize("path", ["/v1/identify", "/v1/gallery", "/v1/verify"])
def test_bad_uploads(settings, faces_dir, path):
    good = (faces_dir / "face_recognition" / "obama_small.jpg").read_bytes()
    field = {"/v1/identify": "image", "/v1/gallery": "images", "/v1/verify": "b"}[path]
    data = {"name": "someone"} if path == "/v1/gallery" else None

    def post(fname, content, ctype, **kw):
        files = [(field, (fname, content, ctype))]
        if path == "/v1/verify":
            files.insert(0, ("a", ("good.jpg", good, "image/jpeg")))
        return c.post(path, data=data, files=files, **kw)

    with _client(settings, require_keys="never", max_upload_mb=0.25, max_pixels=20_000_000) as c:
        _err(post("bad.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg at all", "image/jpeg"), 422, "bad_image")
        _err(post("trunc.jpg", good[: len(good) // 3], "image/jpeg"), 422, "bad_image")
        _err(post("noise.png", np.random.default_rng(1).bytes(5000), "image/png"), 422, "bad_image")
        _err(post("zero.jpg", b"", "image/jpeg"), 422, "empty_image")
        _err(post("huge.jpg", good + b"\0" * 300_000, "image/jpeg"), 413, "payload_too_large")
        _err(post("doc.txt", b"hello", "text/plain"), 415, "unsupported_media_type")
        _err(post("x.gif", b"GIF89a\x01\x00\x01\x00", "image/gif"), 415, "unsupported_media_type")
        _err(post("obama.jpg", good, "application/octet-stream"), 415, "unsupported_media_type")
        # a TIFF sent as image/png: the bytes decide, and TIFF is not accepted
        ok, tif = cv2.imencode(".tiff", np.zeros((8, 8, 3), np.uint8))
        _err(post("x.png", tif.tobytes(), "image/png"), 415, "unsupported_media_type")
        # 100 megapixels, ~100 KB compressed: refused from the header, never decoded
        ok, png = cv2.imencode(".png", np.zeros((10_000, 10_000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok and len(png) < 250_000
        body = _err(post("big.png", png.tobytes(), "image/png"), 413, "too_many_pixels")
        assert "10000x10000" in body["error"]["message"]
        # the whole request over the cap (declared Content-Length) and streamed without a length
        cap = c.app.state.ft.settings.api
        too_big = int(cap.max_upload_mb * 2**20 * cap.max_files + 2**20) + 10
        _err(c.post(path, content=b"x" * too_big, headers={"content-type": "multipart/form-data; boundary=x"}),
             413, "payload_too_large")

        def chunks():
            for _ in range(too_big // 65536 + 2):
                yield b"y" * 65536

        _err(c.post(path, content=chunks(), headers={"content-type": "multipart/form-data; boundary=y"}),
             413, "payload_too_large")
        _err(c.post(path, content=b"not multipart", headers={"content-type": "text/plain"}), 422)
        # nothing was enrolled by any of that, and a good image still works
        assert c.get("/v1/gallery").json() == []
        r = post("obama.jpg", good, "image/jpeg")
        assert r.status_code in (200, 201), r.text


def test_verify_same_as_cli(client, cli_env, faces_dir):
    fr = faces_dir / "face_recognition"
    pairs = [("obama.jpg", "obama2.jpg"), ("obama.jpg", "biden.jpg")]
    got = []
    for x, y in pairs:
        r = client.post("/v1/verify", files={"a": (x, (fr / x).read_bytes(), "image/jpeg"),
                                             "b": (y, (fr / y).read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        got.append(r.json())
        out = subprocess.run([PY, "-m", "pipeline.cli", "verify", "--json", str(fr / x), str(fr / y)], env=cli_env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        cli = json.loads(out.stdout)
        assert {k: v for k, v in got[-1].items() if k not in "ab"} == {k: v for k, v in cli.items() if k not in "ab"}
        assert (got[-1]["a"], got[-1]["b"]) == (x, y)
    assert got[0]["same"] is True and got[1]["same"] is False
    r = client.post("/v1/verify", data={"threshold": "0.99"},
                    files={"a": ("a.jpg", (fr / "obama.jpg").read_bytes(), "image/jpeg"),
                           "b": ("b.jpg", (fr / "obama2.jpg").read_bytes(), "image/jpeg")})
    assert r.json()["same"] is False and r.json()["threshold"] == 0.99
    blank = cv2.imencode(".png", np.full((80, 80, 3), 128, np.uint8))[1].tobytes()
    body = _err(client.post("/v1/verify", files={"a": ("a.jpg", (fr / "obama.jpg").read_bytes(), "image/jpeg"),
                                                 "b": ("blank.png", blank, "image/png")}), 422, "no_face")
    assert "blank.png" in body["error"]["message"]
    _err(client.post("/v1/verify", files={"a": ("a.jpg", (fr / "obama.jpg").read_bytes(), "image/jpeg")}), 422)
    _err(client.post("/v1/verify", data={"threshold": "2"},
                     files={"a": ("a.jpg", b"x", "image/jpeg"), "b": ("b.jpg", b"x", "image/jpeg")}), 422)


def test_internal_error_is_json_without_traceback(settings):
    app = create_app(settings)

    @app.get("/v1/boom")
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    settings.api.require_keys = "never"
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/v1/boom")
        body = _err(r, 500, "internal_error")
        assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
        assert body["request_id"] in body["error"]["message"]
        assert c.get("/healthz").status_code == 200


def test_redis_down_gives_503(tmp_path, models_dir):
    from pipeline.config import load_settings

    rp = RedisProc(tmp_path).start()
    s = load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path / "d"), "FACETRAIL_MODELS_DIR": str(models_dir),
                               "FACETRAIL_REDIS_URL": rp.url})
    s.api.require_keys = "never"
    s.redis.socket_timeout_s = 2
    with _client(s) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        rp.stop()
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "down"
        _err(c.get("/v1/gallery"), 503, "unavailable")


# ------------------------------------------------------------------------------------------------- identify
def test_enroll_identify_same_as_cli(client, settings, cli_env, faces_dir):
    train = faces_dir / "face_recognition" / "knn_examples" / "train"
    for person in ("obama", "biden"):
        photos = sorted((train / person).glob("*.jp*g"))[:2]
        files = [("images", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
        r = client.post("/v1/gallery", data={"name": person, "metadata": json.dumps({"team": "x"})}, files=files)
        assert r.status_code == 201, r.text
        assert r.json()["added"] >= 1 and r.json()["refused"] == []
    photo = faces_dir / "face_recognition" / "two_people.jpg"
    r = client.post("/v1/identify", files={"image": ("two_people.jpg", photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    api = r.json()
    assert sorted(f["identity"] for f in api["faces"]) == ["biden", "obama"]
    out = subprocess.run([PY, "-m", "pipeline.cli", "identify", "--json", str(photo)], env=cli_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    assert api["faces"] == cli["faces"]
    # a person enrolled through the API is found by the next request (rename too)
    assert client.patch("/v1/gallery/obama", json={"name": "Barack"}).status_code == 200
    r = client.post("/v1/identify", files={"image": ("t.jpg", photo.read_bytes(), "image/jpeg")})
    assert sorted(f["identity"] for f in r.json()["faces"]) == ["Barack", "biden"]
    # a photo of nobody enrolled
    r = client.post("/v1/identify", files={"image": ("x.png", cv2.imencode(".png", np.full((64, 64, 3), 90,
                                                                                         np.uint8))[1].tobytes(),
                                                     "image/png")})
    assert r.status_code == 200 and r.json()["faces"] == []


# ------------------------------------------------------------------------------------------------- gallery
def test_gallery_crud_and_delete_purges_events(client, settings, faces_dir):
    fr = faces_dir / "face_recognition"
    r = client.post("/v1/gallery", data={"name": "obama"},
                    files=[("images", ("o.jpg", (fr / "obama.jpg").read_bytes(), "image/jpeg")),
                           ("images", ("o2.jpg", (fr / "obama2.jpg").read_bytes(), "image/jpeg"))])
    assert r.status_code == 201, r.text
    obama = r.json()
    assert obama["images"] == 2 and obama["templates"] == obama["added"] == 2
    # the same photo again adds nothing
    r = client.post("/v1/gallery", data={"name": "obama"},
                    files=[("images", ("o.jpg", (fr / "obama.jpg").read_bytes(), "image/jpeg"))])
    assert r.status_code == 201 and r.json()["added"] == 0 and r.json()["templates"] == 2
    # several faces: refused unless told which one
    two = (fr / "two_people.jpg").read_bytes()
    body = _err(client.post("/v1/gallery", data={"name": "pair"}, files=[("images", ("2.jpg", two, "image/jpeg"))]),
                422, "enroll_refused")
    assert "faces found" in body["error"]["message"]
    r = client.post("/v1/gallery", data={"name": "biden", "largest": "true"},
                    files=[("images", ("2.jpg", two, "image/jpeg"))])
    assert r.status_code == 201, r.text
    # skip_bad enrolls the good photos and lists the refused ones
    r = client.post("/v1/gallery", data={"name": "biden", "skip_bad": "true"},
                    files=[("images", ("b.jpg", (fr / "biden.jpg").read_bytes(), "image/jpeg")),
                           ("images", ("bad.jpg", b"\xff\xd8\xffjunk", "image/jpeg"))])
    assert r.status_code == 201 and len(r.json()["refused"]) == 1
    assert [p["name"] for p in client.get("/v1/gallery").json()] == ["biden", "obama"]
    _err(client.post("/v1/gallery", data={"name": "x", "metadata": "[1]"},
                     files=[("images", ("o.jpg", (fr / "obama.jpg").read_bytes(), "image/jpeg"))]), 422)
    _err(client.post("/v1/gallery", data={"name": "  "},
                     files=[("images", ("o.jpg", (fr / "obama.jpg").read_bytes(), "image/jpeg"))]), 422)

    detail = client.get(f"/v1/gallery/{obama['id']}").json()
    assert detail["name"] == "obama" and len(detail["template_list"]) == 2
    thumb = client.get(f"/v1/gallery/obama/templates/{detail['template_list'][0]['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR) is not None
    _err(client.get("/v1/gallery/obama/templates/999999/thumbnail"), 404)
    _err(client.get("/v1/gallery/nobody"), 404, "not_found")
    _err(client.patch("/v1/gallery/obama", json={"name": "biden"}), 409, "conflict")
    _err(client.patch("/v1/gallery/nobody", json={"name": "x"}), 404)
    _err(client.patch("/v1/gallery/obama", json={"nom": "x"}), 422)
    assert client.patch("/v1/gallery/obama", json={"name": "Barack Obama"}).json()["id"] == obama["id"]

    # events of the person (and every event of their tracks) go with them, snapshots too
    store = EventStore(client.app.state.ft.redis, settings)
    store.put_snapshot("snap1", cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    mine = _event(1, identity="obama", identity_id=obama["id"], snapshot_id="snap1")  # from before the rename
    started = Event.make("track.started", "door", mine.track_id, None, first_seen=mine.first_seen,
                         last_seen=mine.first_seen, seq=0)
    other = _event(2, identity="biden", identity_id="someone-else")
    assert store.add([started, mine, other]) == 3
    assert client.get(f"/v1/events/{mine.id}/snapshot").status_code == 200
    # as `facetrail events --identity`: the current name finds the person's events from before the rename
    found = client.get("/v1/events", params={"identity": "Barack Obama"}).json()["events"]
    assert [e["id"] for e in found] == [mine.id]
    _err(client.get("/v1/events", params={"identity": "x", "unknown": "true"}), 422)
    r = client.delete("/v1/gallery/Barack Obama")
    assert r.status_code == 200 and r.json() == {"id": obama["id"], "name": "Barack Obama", "templates": 2}
    _err(client.get(f"/v1/events/{mine.id}"), 404)
    _err(client.get(f"/v1/events/{started.id}"), 404)
    _err(client.get(f"/v1/events/{mine.id}/snapshot"), 404)
    assert store.snapshot("snap1") is None
    assert client.get(f"/v1/events/{other.id}").status_code == 200
    _err(client.delete("/v1/gallery/Barack Obama"), 404)
    assert [p["name"] for p in client.get("/v1/gallery").json()] == ["biden"]


# ------------------------------------------------------------------------------------------------- events
def test_events_query_filters_paging_snapshot(client, settings):
    store = EventStore(client.app.state.ft.redis, settings)
    jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 200, np.uint8))[1].tobytes()
    store.put_snapshot("s7", jpeg)
    evs = [_event(i, camera="door" if i % 2 else "yard", identity="alice" if i % 3 else "bob",
                  identity_id="ida" if i % 3 else "idb", snapshot_id="s7" if i == 7 else None) for i in range(25)]
    evs.append(_event(100, camera="door", type_="track.ended"))
    assert store.add(evs) == 26

    def all_pages(**params):
        got, cursor, pages = [], None, 0
        while True:
            q = dict(params, **({"cursor": cursor} if cursor else {}))
            r = client.get("/v1/events", params=q)
            assert r.status_code == 200, r.text
            body = r.json()
            got += [e["id"] for e in body["events"]]
            pages += 1
            cursor = body["next_cursor"]
            if not cursor:
                return got, pages

    ids, pages = all_pages(limit=10)
    assert len(ids) == 26 and len(set(ids)) == 26 and pages == 3
    assert ids[0] == evs[-1].id  # newest first by default
    asc, _ = all_pages(limit=7, order="asc")
    assert asc == list(reversed(ids))
    door, _ = all_pages(camera="door", limit=4)
    assert set(door) == {e.id for e in evs if e.camera == "door"}
    bob, _ = all_pages(identity="BOB")
    assert set(bob) == {e.id for e in evs if e.identity == "bob"}
    ended, _ = all_pages(type="track.ended")
    assert ended == [evs[-1].id]
    unknown, _ = all_pages(unknown="true")
    assert unknown == [evs[-1].id]
    two_types, _ = all_pages(type=["track.ended", "identity.matched"], limit=100)
    assert len(two_types) == 26
    window, _ = all_pages(since=str(1_700_000_000 + 10), until="2023-11-14T22:13:40Z", order="asc")
    assert window == [e.id for e in evs[10:21]]
    recent, _ = all_pages(since="30d")
    assert recent == []
    scored, _ = all_pages(min_score=0.52)
    assert set(scored) == {e.id for e in evs if e.score >= 0.52}

    one = client.get(f"/v1/events/{evs[7].id}").json()
    assert one == json.loads(evs[7].encode())
    snap = client.get(f"/v1/events/{evs[7].id}/snapshot")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg" and snap.content == jpeg
    _err(client.get(f"/v1/events/{evs[6].id}/snapshot"), 404)
    _err(client.get("/v1/events/0123abcd"), 404, "not_found")
    _err(client.get("/v1/events/not-hex!"), 422)
    for bad in ({"limit": 0}, {"limit": 5000}, {"type": "nope"}, {"order": "up"}, {"cursor": "%%%"},
                {"since": "yesterday"}, {"min_score": "high"}, {"camera": "../x"}):
        _err(client.get("/v1/events", params=bad), 422)


def test_events_stream_sse(client, settings):
    store = EventStore(client.app.state.ft.redis, settings)
    store.add([_event(i, camera="door" if i % 2 else "yard") for i in range(6)])

    def read_sse(params, n):
        out = []
        with client.stream("GET", "/v1/events/stream", params=params) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            block = {}
            for line in r.iter_lines():
                if line.startswith(":"):
                    continue
                if not line:
                    if block:
                        out.append(block)
                        block = {}
                    continue
                k, _, v = line.partition(": ")
                block[k] = v
        assert len(out) == n
        return out

    replay = read_sse({"after": "0", "camera": "door", "limit": 3}, 3)
    assert [json.loads(b["data"])["camera"] for b in replay] == ["door"] * 3
    assert all(b["event"] == "identity.matched" and b["id"] for b in replay)
    # resume after the first one with Last-Event-ID
    with client.stream("GET", "/v1/events/stream", params={"limit": 1, "camera": "door"},
                       headers={"Last-Event-ID": replay[0]["id"]}) as r:
        text = "".join(r.iter_text())
    assert f"id: {replay[1]['id']}" in text
    # live: only events committed after the request are sent
    stop = threading.Event()

    def producer():
        i = 100
        while not stop.is_set() and i < 200:
            store.add([_event(i, camera="door")])
            i += 1
            stop.wait(0.1)

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    try:
        live = read_sse({"limit": 2, "camera": "door"}, 2)
    finally:
        stop.set()
        t.join(5)
    assert all(json.loads(b["data"])["seq"] >= 100 for b in live)
    assert read_sse({"after": "$", "idle_timeout": 0.5}, 0) == []
    _err(client.get("/v1/events/stream", params={"after": "bogus"}), 422)


# ------------------------------------------------------------------------------------------------- cameras
def test_cameras_add_list_remove(client, settings):
    from pipeline.cameras import CameraRegistry

    reg = CameraRegistry(client.app.state.ft.redis, settings)
    mark = reg.last_change_id()
    r = client.post("/v1/cameras", json={"name": "door", "url": "rtsp://admin:hunter2@10.0.0.5/s1", "fps": 5})
    assert r.status_code == 201, r.text
    assert r.json()["url"] == "rtsp://admin:***@10.0.0.5/s1" and "hunter2" not in r.text
    _err(client.post("/v1/cameras", json={"name": "door", "url": "rtsp://x/y"}), 409, "conflict")
    _err(client.post("/v1/cameras", json={"name": "bad name", "url": "rtsp://x/y"}), 422)
    _err(client.post("/v1/cameras", json={"name": "c2"}), 422)
    _err(client.post("/v1/cameras", json={"name": "c2", "url": "rtsp://x", "fps": -1}), 422)
    _err(client.post("/v1/cameras", content=b"{not json", headers={"content-type": "application/json"}), 422)
    reg.set_status("door", "live", fps=4.9, frames=120, last_frame_at=time.time())
    cams = client.get("/v1/cameras").json()
    assert [c["name"] for c in cams] == ["door"]
    assert cams[0]["status"]["state"] == "live" and cams[0]["status"]["frames"] == 120
    assert client.get("/v1/cameras/door").json()["fps"] == 5
    health = client.get("/healthz").json()
    assert health["cameras"]["door"]["state"] == "live"
    assert health["status"] == "degraded"  # a camera to watch and no pipeline workers alive
    # running grabbers learn about the change from the registry's change stream
    _, cmds = reg.wait_change(mark, 100)
    assert [(c.op, c.name) for c in cmds] == [("add", "door")]
    assert client.delete("/v1/cameras/door").status_code == 204
    _err(client.delete("/v1/cameras/door"), 404)
    _err(client.get("/v1/cameras/door"), 404)
    assert client.get("/v1/cameras").json() == []


# ------------------------------------------------------------------------------------------------- health / metrics
def test_healthz_and_metrics(client, settings):
    from pipeline.cameras import CameraRegistry
    from pipeline.metrics import Heartbeat, StageMetrics

    r = client.app.state.ft.redis
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["redis"]["ok"] is True
    assert h.headers["x-content-type-options"] == "nosniff"
    assert client.head("/healthz").status_code == 200
    CameraRegistry(r, settings).set_status("door", "live", fps=7.5, frames=10, drops=3)
    from pipeline.config import CameraConfig

    CameraRegistry(r, settings).add(CameraConfig(name="door", url="rtsp://x/y"))
    m = StageMetrics(r, settings, "detector", "det-1")
    m.batch(12, latency_ms=40)
    m.count("errors", 2)
    m.maybe_flush(force=True)
    for role in ("grabber", "embedder", "matcher"):
        Heartbeat(r, settings, role, f"{role}-1").beat(force=True)
    Heartbeat(r, settings, "detector", "det-1").beat(force=True)  # /metrics lists live workers only
    EventStore(r, settings).add([_event(1), _event(2), _event(3, type_="track.ended")])
    text = client.get("/metrics").text
    assert 'facetrail_stage_frames_total{consumer="det-1",stage="detector"} 12.0' in text
    assert 'facetrail_stage_errors_total{consumer="det-1",stage="detector"} 2.0' in text
    assert 'facetrail_stage_latency_seconds{consumer="det-1",stage="detector"} 0.04' in text
    assert 'facetrail_camera_fps{camera="door"} 7.5' in text
    assert 'facetrail_camera_drops_total{camera="door"} 3.0' in text
    assert 'facetrail_events_total{type="identity.matched"} 2.0' in text
    assert 'facetrail_events_total{type="track.ended"} 1.0' in text
    assert 'facetrail_queue_depth{stream="ft:faces"}' in text
    assert 'facetrail_workers{role="detector"} 1.0' in text
    # counting is incremental: a second scrape after one more event adds exactly one
    EventStore(r, settings).add([_event(4)])
    assert 'facetrail_events_total{type="identity.matched"} 3.0' in client.get("/metrics").text
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["workers"]["detector"]["alive"] == 1


# ------------------------------------------------------------------------------------------------- serving
def test_worker_role_serves_until_stopped(settings):
    from workers.api import run

    settings.api.port = free_port()
    settings.api.require_keys = "never"
    stop = threading.Event()
    errors = []

    def target():
        try:
            run(settings, consumer="api-test", stop=stop)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    url = f"http://127.0.0.1:{settings.api.port}/healthz"
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline and status is None:
        try:
            status = httpx.get(url, timeout=2).status_code
        except httpx.HTTPError:
            time.sleep(0.05)
    assert status == 200
    assert httpx.get(url.replace("/healthz", "/docs"), timeout=5).status_code == 200
    assert "/v1/events" in httpx.get(url.replace("/healthz", "/openapi.json"), timeout=5).json()["paths"]
    # it reports itself as a live `api` worker
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "api" not in httpx.get(url, timeout=5).json()["workers"]:
        time.sleep(0.1)
    assert httpx.get(url, timeout=5).json()["workers"]["api"]["consumers"] == ["api-test"]
    # a second server on the same port fails loudly instead of pretending to serve
    with pytest.raises(RuntimeError, match="could not start"):
        run(settings, consumer="api-dup", stop=threading.Event())
    stop.set()
    t.join(30)
    assert not t.is_alive() and not errors


def test_cli_api_command_serves(cli_env):
    port = free_port()
    env = dict(cli_env, FACETRAIL_API__REQUIRE_KEYS="always")
    p = subprocess.Popen([PY, "-m", "pipeline.cli", "api", "--host", "127.0.0.1", "--port", str(port)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        ok = None
        while time.monotonic() < deadline and ok is None and p.poll() is None:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.05)
        assert ok is not None and ok.status_code == 200, p.stderr.read() if p.poll() is not None else ""
        r = httpx.get(f"http://127.0.0.1:{port}/v1/gallery", timeout=5)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    finally:
        p.terminate()
        p.wait(20)
    bad = subprocess.run([PY, "-m", "pipeline.cli", "api", "--port", "70000"], env=cli_env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--port" in bad.stderr

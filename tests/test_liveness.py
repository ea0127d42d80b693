"""Liveness through the real stages (YuNet -> SFace -> MatcherStage with the analyzers), on shots made from the
shared photos at test time (bench/livegen.py): a face on a turning 3D head is live, the same photo moved flat
(a print, a phone with a bezel) is a spoof, a face that does not move is undetermined; under the per-camera gate
a spoof (or, by default, an undetermined) track ends `spoof_suspected` and names nobody. The bench
(bench/eval_liveness.py) measures APCER/BPCER on other photos and seeds."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bench.livegen import Shot, StagePipeline, render
from pipeline.analyzers import FaceBuffer
from pipeline.analyzers.liveness import Liveness
from pipeline.config import Settings, load_settings
from pipeline.events.model import Event
from pipeline.messages import MessageVersionError


def make_settings(models_dir, **over) -> Settings:
    d = load_settings([], env={"FACETRAIL_MODELS_DIR": str(models_dir)}).model_dump()
    d.update(over)
    return Settings.model_validate(d)


@pytest.fixture(scope="module")
def env(faces_dir, models_dir):
    fr = faces_dir / "face_recognition"
    photos = {"obama": str(fr / "obama.jpg"), "biden": str(fr / "biden.jpg")}

    def settings(**liveness):
        return make_settings(models_dir, analyzers={"liveness": liveness})

    base = settings()
    pipe = StagePipeline(base)
    from bench.clipgen import _detector

    det = _detector(models_dir)
    shots = {
        "live_obama": render(Shot("live", photos["obama"], 11), det),
        "live_biden": render(Shot("live", photos["biden"], 12), det),
        "print_obama": render(Shot("spoof", photos["obama"], 13, border="paper"), det),
        "phone_biden": render(Shot("spoof", photos["biden"], 14, border="bezel", screen=True), det),
        "bare_biden": render(Shot("spoof", photos["biden"], 15), det),
    }
    still = render(Shot("live", photos["obama"], 16, frames=2), det)[0]
    shots["still_obama"] = [still.copy() for _ in range(30)]
    return pipe, pipe.enroll(photos), shots, settings


def run(env, shot: str, **liveness):
    pipe, search, shots, settings = env
    from pipeline.stages import MatcherStage

    st = MatcherStage.from_settings(shot, search, settings(**liveness))
    events, _ = pipe.run(shot, shots[shot], search, stage=st)
    ended = [e for e in events if e.type == "track.ended"]
    assert len(ended) == 1, [(e.type, e.track_id) for e in events]
    return events, ended[0]


@pytest.mark.parametrize("shot,who", [("live_obama", "obama"), ("live_biden", "biden")])
def test_turning_head_is_live_and_named(env, shot, who):
    events, end = run(env, shot)
    assert end.liveness.verdict == "live", end.liveness
    assert end.liveness.score >= 0.8 and end.status is None
    assert end.identity == who
    assert Event.decode(end.encode()).liveness == end.liveness and json.loads(end.encode())["v"] == 2


@pytest.mark.parametrize("shot,who", [("print_obama", "obama"), ("phone_biden", "biden"), ("bare_biden", "biden")])
def test_flat_photo_is_a_spoof_and_the_gate_names_nobody(env, shot, who):
    events, end = run(env, shot)  # no gate: the verdict is reported, the photo is (wrongly) named as before
    assert end.liveness.verdict == "spoof", end.liveness
    assert end.identity == who and any(e.type == "identity.matched" for e in events)
    events, end = run(env, shot, required=True)
    assert end.status == "spoof_suspected" and end.liveness.verdict == "spoof"
    assert end.identity is None and end.identity_id is None and end.score is None and end.votes == {}
    assert not [e for e in events if e.type == "identity.matched" or e.identity is not None]


def test_gate_names_a_live_track_once_it_is_judged_live(env):
    events, end = run(env, "live_obama", required=True)
    assert end.status is None and end.identity == "obama"
    types = [e.type for e in events]
    assert types == ["track.started", "identity.matched", "track.ended"]
    assert events[0].identity is None  # held back until the liveness verdict
    assert events[1].seq < end.seq - 10  # judged live while the face was still there, not only at the end
    _, ungated = run(env, "live_obama")
    assert ungated.liveness == end.liveness  # the end verdict is the same either way


def test_a_still_face_is_undetermined_and_the_policy_decides(env):
    events, end = run(env, "still_obama")
    assert end.liveness.verdict == "undetermined" and end.identity == "obama"
    _, end = run(env, "still_obama", required=True)  # default: undetermined = deny
    assert end.status == "spoof_suspected" and end.identity is None
    _, end = run(env, "still_obama", required=True, undetermined="allow")
    assert end.status is None and end.identity == "obama"


def test_per_camera_gate_overrides_the_default(models_dir):
    from pipeline.analyzers.hook import TrackAnalyzers

    s = make_settings(models_dir, cameras=[{"name": "door", "url": "rtsp://x", "liveness": {"required": True}},
                                           {"name": "hall", "url": "rtsp://y"}],
                      analyzers={"liveness": {"enabled": False}})
    door = TrackAnalyzers.from_settings("door", s)
    assert door.gated and [a.name for a in door.analyzers] == ["liveness"]  # the gate brings its analyzer
    assert TrackAnalyzers.from_settings("hall", s) is None


def test_matcher_takes_the_gate_from_the_camera_registry(settings):
    """A matcher whose own config does not list the camera (another host, a minimal config) still applies the gate
    the registry holds for it: what runs wins over the file."""
    import redis

    from pipeline.cameras import CameraRegistry
    from pipeline.config import CameraConfig
    from pipeline.events.store import EventStore
    from workers.camera_matcher import CameraMatcher

    r = redis.Redis.from_url(settings.redis.url)
    reg = CameraRegistry(r, settings)
    reg.add(CameraConfig(name="door", url="rtsp://x", liveness={"required": True}))
    reg.add(CameraConfig(name="hall", url="rtsp://y"))
    assert not settings.cameras and not settings.analyzers.liveness.required
    store = EventStore(r, settings)
    door = CameraMatcher(r, settings, "door", "m1", lambda vecs: [], store)
    hall = CameraMatcher(r, settings, "hall", "m1", lambda vecs: [], store)
    assert door.stage.analyzers is not None and door.stage.analyzers.gated
    assert hall.stage.analyzers is None or not hall.stage.analyzers.gated


def test_real_heads_of_the_hamilton_clip_are_live(env, faces_dir):
    pipe, search, _, _ = env
    cap = cv2.VideoCapture(str(faces_dir / "face_recognition" / "short_hamilton_clip.mp4"))
    frames, i = [], 0
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        if i % 3 == 0 and 80 <= i < 250:  # Miranda on screen, turning his head
            frames.append(fr)
        i += 1
    events, _ = pipe.run("hamilton", frames, search, fps=29.97 / 3)
    ended = sorted((e for e in events if e.type == "track.ended"), key=lambda e: -e.frames)
    assert ended and ended[0].frames >= 20
    assert ended[0].liveness.verdict == "live", ended[0].liveness


def test_event_without_analyzers_stays_v1_byte_for_byte_and_versions_are_checked():
    ev = Event.make("track.ended", "cam", "cam:1:0", None, first_seen=1.0, last_seen=2.0, seq=3)
    raw = json.loads(ev.encode())
    assert raw["v"] == 1 and "liveness" not in raw and "status" not in raw and "liveness" not in ev.public()
    ev.liveness = Liveness(score=None, verdict="undetermined", reasons=["the face barely moved"])
    assert json.loads(ev.encode())["v"] == 2 and ev.public()["liveness"]["verdict"] == "undetermined"
    bad = dict(raw, v=3)
    with pytest.raises(MessageVersionError):
        Event.decode(json.dumps(bad))


def test_face_buffer_is_bounded_and_spread_over_the_track():
    ok, jpg = cv2.imencode(".jpg", np.full((96, 96), 128, np.uint8))
    buf = FaceBuffer(size=8, min_dt=0.1)
    for i in range(1000):
        buf.add(i * 0.05, jpg.tobytes(), (0, 0, 10, 10), ())
    assert len(buf.items) <= 8
    ts = [t for t, *_ in buf.items]
    assert ts[0] == 0.0 and ts[-1] > 30.0  # the whole 50 s track, not its first or last seconds only


def _stored_events(settings):
    import redis

    from pipeline.events.store import EventStore

    r = redis.Redis.from_url(settings.redis.url)
    evs = []
    for i, (verdict, status) in enumerate([("live", None), ("spoof", None), ("spoof", "spoof_suspected"),
                                           ("undetermined", "spoof_suspected"), (None, None)]):
        e = Event.make("track.ended", "door", f"door:{i}:0", None, first_seen=100.0 + i, last_seen=101.0 + i, seq=i)
        if verdict:
            e.liveness = Liveness(score=1.0, verdict=verdict, reasons=["test"], pairs=5)
        e.status = status
        evs.append(e)
    EventStore(r, settings).add(evs)
    return EventStore(r, settings)


def test_liveness_filter_in_store_cli_and_api(settings, cli_env):
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from pipeline.api import create_app

    store = _stored_events(settings)
    track = lambda evs: sorted(e.track_id for e in evs)  # noqa: E731
    assert track(store.query(liveness="spoof").events) == ["door:1:0", "door:2:0"]
    assert track(store.query(liveness="spoof_suspected").events) == ["door:2:0", "door:3:0"]
    assert len(store.query().events) == 5  # no filter: the v1 event too
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "events", "--json", "--liveness", "live"],
                         env=cli_env, capture_output=True, text=True, timeout=60)
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert res.returncode == 0 and [r["track_id"] for r in rows] == ["door:0:0"]
    assert rows[0]["v"] == 2 and rows[0]["liveness"]["verdict"] == "live"
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "events", "--liveness", "maybe"], env=cli_env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    settings.api.require_keys = "never"
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.get("/v1/events", params={"liveness": "undetermined"})
        assert r.status_code == 200, r.text
        assert [e["track_id"] for e in r.json()["events"]] == ["door:3:0"]
        assert r.json()["events"][0]["status"] == "spoof_suspected"
        assert c.get("/v1/events", params={"liveness": "maybe"}).status_code == 422

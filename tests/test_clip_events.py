"""The Hamilton clip through the real pipeline (`facetrail process`: grabber -> detector -> embedder -> matcher
processes on Redis) with Miranda and Lacamoire enrolled: one matched event or more for each of the two, no event
naming anyone else, unknown-track events for the audience; then `facetrail events` reads them back.

The clip is processed once per test session (about a minute on 2 cores)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import RedisProc

pytestmark = pytest.mark.shared_data

REQUIRED = {"id", "type", "camera", "track_id", "identity", "score", "first_seen", "last_seen"}
MIRANDA, LACAMOIRE = "lin-manuel-miranda", "alex-lacamoire"


def facetrail(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def clip_run(shared_data, models_dir, tmp_path_factory):
    src = shared_data / "faces" / "face_recognition"
    tmp = tmp_path_factory.mktemp("clip")
    rp = RedisProc(tmp).start()
    env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp / "data"), FACETRAIL_MODELS_DIR=str(models_dir),
               FACETRAIL_REDIS_URL=rp.url)
    env.pop("FACETRAIL_CONFIG", None)
    try:
        for name in (MIRANDA, LACAMOIRE):
            res = facetrail(env, "gallery", "enroll", name, str(src / f"{name}.png"))
            assert res.returncode == 0, res.stderr
        res = facetrail(env, "process", str(src / "short_hamilton_clip.mp4"), "--camera", "hamilton", "--json")
        assert res.returncode == 0, res.stderr[-3000:]
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        res = facetrail(env, "events", "--camera", "hamilton", "--limit", "10000", "--json")
        assert res.returncode == 0, res.stderr
        events = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
        yield env, summary, events
    finally:
        rp.stop()


def test_clip_names_both_and_nobody_else(clip_run):
    _env, summary, events = clip_run
    assert summary["matcher_done"] and summary["missing"] == 0
    assert events and all(REQUIRED <= set(e) for e in events)
    matched = [e for e in events if e["type"] == "identity.matched"]
    names = {e["identity"] for e in matched}
    assert MIRANDA in names, matched
    assert LACAMOIRE in names, matched  # via the track's evidence: no single face of him clears the threshold
    assert {e["identity"] for e in events} <= {MIRANDA, LACAMOIRE, None}
    unknown = [e for e in events if e["type"] == "track.ended" and e["identity"] is None]
    assert len(unknown) >= 2  # the audience
    # one event of a type per track (per identity for matches): no spam
    keys = [(e["track_id"], e["type"], e["identity"]) for e in events]
    assert len(keys) == len(set(keys))
    assert len({e["id"] for e in events}) == len(events)
    ended = {e["track_id"] for e in events if e["type"] == "track.ended"}
    assert ended == {e["track_id"] for e in events if e["type"] == "track.started"}


def test_events_cli_filters_on_the_clip(clip_run):
    env, _summary, events = clip_run
    res = facetrail(env, "events", "--identity", LACAMOIRE, "--json")
    got = [json.loads(x) for x in res.stdout.splitlines()]
    assert got and {e["identity"] for e in got} == {LACAMOIRE}
    res = facetrail(env, "events", "--unknown", "--json")
    unk = [json.loads(x) for x in res.stdout.splitlines()]
    assert unk and all(e["identity"] is None and e["type"] == "track.ended" for e in unk)
    res = facetrail(env, "events", "--camera", "hamilton", "--limit", "3", "--json")
    last3 = [json.loads(x) for x in res.stdout.splitlines()]
    assert [e["id"] for e in last3] == [e["id"] for e in events[-3:]]
    res = facetrail(env, "events", "--camera", "hamilton", "--type", "identity.matched")
    assert res.returncode == 0 and res.stdout.count("identity.matched") == \
        sum(1 for e in events if e["type"] == "identity.matched")
    res = facetrail(env, "events", "--since", "not-a-time")
    assert res.returncode == 2 and "not a time" in res.stderr

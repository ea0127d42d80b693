"""`facetrail events` as a subprocess against a real Redis: output contract, filters, --follow."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis

from pipeline.cli.events_cmd import parse_time
from pipeline.events import Event, EventStore

REQUIRED = ["id", "type", "camera", "track_id", "identity", "score", "first_seen", "last_seen"]


def ev(type_, cam, track, ident=None, t=None, score=0.5):
    t = time.time() if t is None else t
    e = Event.make(type_, cam, track, ident if type_ == "identity.matched" else None, identity=ident, score=score,
                   first_seen=t - 1, last_seen=t, frames=4, seq=1)
    e.identity_id = ("id-" + ident) if ident else None
    return e


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "events", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_parse_time():
    assert parse_time("1700000000") == 1700000000.0
    assert parse_time("2023-11-14T22:13:20Z") == 1700000000.0
    assert parse_time("2023-11-14T22:13:20") == 1700000000.0  # no zone = UTC
    assert parse_time("10m", now=1000.0) == 400.0
    assert parse_time("2h", now=10000.0) == 2800.0
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_json_contract_and_filters(settings, cli_env):
    r = redis.Redis.from_url(settings.redis.url)
    now = time.time()
    EventStore(r, settings).add([
        ev("track.ended", "door", "door:1:0", "ann", t=now - 7200),
        ev("track.ended", "door", "door:2:0", None, t=now - 60, score=0.2),
        ev("identity.matched", "yard", "yard:3:0", "bob", t=now - 30, score=0.8)])
    res = cli(cli_env, "--json")
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert res.returncode == 0 and len(rows) == 3
    for row in rows:
        assert all(k in row for k in REQUIRED)
    assert [r_["last_seen"] for r_ in rows] == sorted(r_["last_seen"] for r_ in rows)  # oldest first
    assert [x["identity"] for x in rows] == ["ann", None, "bob"]
    assert [json.loads(x)["track_id"] for x in cli(cli_env, "--json", "--since", "1h").stdout.splitlines()] == \
        ["door:2:0", "yard:3:0"]
    assert [json.loads(x)["track_id"] for x in cli(cli_env, "--json", "--unknown").stdout.splitlines()] == \
        ["door:2:0"]
    assert [json.loads(x)["identity"] for x in cli(cli_env, "--json", "--identity", "BOB").stdout.splitlines()] \
        == ["bob"]
    assert cli(cli_env, "--json", "--min-score", "0.7").stdout.count("\n") == 1
    assert [json.loads(x)["track_id"] for x in cli(cli_env, "--json", "--limit", "1").stdout.splitlines()] == \
        ["yard:3:0"]  # without --since: the newest
    text = cli(cli_env, "--camera", "door").stdout.splitlines()
    assert len(text) == 2 and "(unknown)" in text[1] and "track.ended" in text[0]
    bad = cli(cli_env, "--identity", "x", "--unknown")
    assert bad.returncode == 2 and bad.stderr.startswith("error:")


def test_follow_prints_new_matching_events(settings, cli_env):
    r = redis.Redis.from_url(settings.redis.url)
    store = EventStore(r, settings)
    store.add([ev("track.ended", "door", "door:1:0", "ann")])
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "events", "--follow", "--json",
                             "--camera", "door"], env=cli_env, stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["track_id"] == "door:1:0"
        store.add([ev("track.ended", "yard", "yard:2:0", "bob")])   # another camera: filtered out
        store.add([ev("track.started", "door", "door:3:0")])
        nxt = json.loads(proc.stdout.readline())
        assert nxt["track_id"] == "door:3:0" and nxt["type"] == "track.started"
    finally:
        proc.terminate()
        proc.wait(10)

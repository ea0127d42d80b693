"""`facetrail gallery ...` and `facetrail identify` as a user runs them: subprocesses, real Redis, real models."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from index.store import GalleryStore
from pipeline.backbone import EmbeddedRedis
from pipeline.config import load_settings

from conftest import REPO, RedisProc

FACETRAIL = str(Path(sys.executable).parent / "facetrail")
PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]
# who is in each test photo (johnsnow_test1.jpg is Kit Harington)
EXPECTED = {"alex_lacamoire1.jpg": {"alex_lacamoire"}, "johnsnow_test1.jpg": {"kit_harington"},
            "kit_with_rose.jpg": {"kit_harington", "rose_leslie"}, "obama1.jpg": {"obama"},
            "obama_and_biden.jpg": {"obama", "biden"}}


def run(env, *args, check=True):
    p = subprocess.run([FACETRAIL, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"facetrail {' '.join(map(str, args))} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="module")
def knn(shared_data):
    return shared_data / "faces" / "face_recognition" / "knn_examples"


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory, models_dir, knn):
    """A private Redis with the five knn_examples people enrolled through the CLI."""
    tmp = tmp_path_factory.mktemp("gallery_cli")
    rp = RedisProc(tmp).start()
    env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp / "data"), FACETRAIL_MODELS_DIR=str(models_dir),
               FACETRAIL_REDIS_URL=rp.url)
    env.pop("FACETRAIL_CONFIG", None)
    for person in PEOPLE:
        out = run(env, "gallery", "enroll", person, *sorted((knn / "train" / person).iterdir())).stdout
        assert out.startswith(f"enrolled {person} (")
    yield env
    rp.stop()


def test_identify_knn_test_photos(enrolled, knn, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    photos = sorted((knn / "test").iterdir())
    p = run(enrolled, "identify", *photos, bad, "--json", check=False)
    assert p.returncode == 1  # an unreadable image is reported, the others still answered
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert [x["image"] for x in lines] == [str(f) for f in photos] + [str(bad)]
    assert "error" in lines[-1] and "faces" not in lines[-1]
    for rec in lines[:-1]:
        expected = EXPECTED[Path(rec["image"]).name]
        names = [f["identity"] for f in rec["faces"]]
        assert set(n for n in names if n) == expected, rec  # every enrolled person found, nobody wrong
        assert len([n for n in names if n]) == len(expected), rec  # nobody twice
        for f in rec["faces"]:
            assert set(f) == {"box", "identity", "score", "runner_up", "runner_up_score"}
            assert len(f["box"]) == 4 and isinstance(f["score"], float)
            if f["identity"]:
                assert f["runner_up"] in PEOPLE and f["runner_up"] != f["identity"]
                assert f["score"] > f["runner_up_score"]


def test_list_show_rename_remove_export_import(enrolled, knn, tmp_path):
    rows = [json.loads(x) for x in run(enrolled, "gallery", "list", "--json").stdout.splitlines()]
    assert [r["name"] for r in rows] == PEOPLE
    assert all(set(r) == {"id", "name", "templates", "created", "metadata"} for r in rows)
    assert {r["name"]: r["templates"] for r in rows} == {"alex_lacamoire": 1, "biden": 2, "kit_harington": 2,
                                                         "obama": 2, "rose_leslie": 2}
    show = json.loads(run(enrolled, "gallery", "show", "obama", "--json").stdout)
    assert len(show["template_list"]) == 2 and all(t["thumbnail_bytes"] > 500 for t in show["template_list"])
    # a two-face photo is refused unless told which face; nothing is enrolled
    two = knn / "test" / "obama_and_biden.jpg"
    p = run(enrolled, "gallery", "enroll", "pair", two, check=False)
    assert p.returncode == 2 and "faces found" in p.stderr and "--face" in p.stderr
    assert "pair" not in run(enrolled, "gallery", "list").stdout
    # export, then import into an empty gallery under another key prefix
    dump = tmp_path / "g.json"
    run(enrolled, "gallery", "export", dump)
    other = dict(enrolled, FACETRAIL_REDIS__KEY_PREFIX="copy")
    assert run(other, "gallery", "import", dump).stdout.splitlines()[-1] == "imported 5 person(s), 9 new template(s)"
    assert run(other, "gallery", "import", dump).stdout.splitlines()[-1] == "imported 5 person(s), 0 new template(s)"
    copy = [json.loads(x) for x in run(other, "gallery", "list", "--json").stdout.splitlines()]
    assert [(r["id"], r["name"], r["templates"]) for r in copy] == [(r["id"], r["name"], r["templates"]) for r in rows]
    # rename and remove (in the copy, so the other tests keep their gallery)
    assert run(other, "gallery", "rename", "obama", "barack").stdout.startswith("renamed obama -> barack")
    out = json.loads(run(other, "identify", knn / "test" / "obama1.jpg", "--json").stdout)
    assert out["faces"][0]["identity"] == "barack"
    assert run(other, "gallery", "remove", "barack").stdout.startswith("removed barack (")
    out = json.loads(run(other, "identify", knn / "test" / "obama1.jpg", "--json").stdout)
    assert out["faces"][0]["identity"] is None
    p = run(other, "gallery", "remove", "barack", check=False)
    assert p.returncode == 2 and "no such person" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "facetrail-gallery", "version": 1, "identities": [{"name": "x", "templates": '
                   '[{"embedding": "AAAA"}]}]}')
    p = run(other, "gallery", "import", bad, check=False)
    assert p.returncode == 2 and "malformed" in p.stderr
    assert "x" not in [json.loads(x)["name"] for x in run(other, "gallery", "list", "--json").stdout.splitlines()]


POLLER = textwrap.dedent("""
    import json, sys, time
    import redis
    from index.replica import GalleryReplica
    from pipeline.config import load_settings
    from pipeline.engine.engine import FaceEngine
    from pipeline.engine.imageio import load_image
    s = load_settings()
    r = redis.Redis.from_url(s.redis.url)
    face = FaceEngine(s).analyze([load_image(sys.argv[1])])[0][0]
    rep = GalleryReplica(r, s).start()          # a long-lived process holding the index
    assert rep.identify(face.embedding)[0].name is None
    print("ready", flush=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        d = rep.identify(face.embedding)[0]      # each search first applies new log entries
        if d.name:
            seen = time.time()
            break
        time.sleep(0.01)
    else:
        sys.exit("never saw the enrollment")
    entry = r.xrevrange(rep.store.log_key, count=1)[0][0].decode()
    print(json.dumps({"name": d.name, "lag_s": seen - int(entry.split("-")[0]) / 1000}), flush=True)
""")


def test_enroll_in_one_process_is_seen_by_another_within_a_second(tmp_path, models_dir, knn):
    rp = RedisProc(tmp_path).start()
    try:
        env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp_path / "data"), FACETRAIL_MODELS_DIR=str(models_dir),
                   FACETRAIL_REDIS_URL=rp.url, PYTHONPATH=str(REPO))
        env.pop("FACETRAIL_CONFIG", None)
        poller = subprocess.Popen([sys.executable, "-c", POLLER, str(knn / "test" / "obama1.jpg")], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert poller.stdout.readline().strip() == "ready", poller.stderr.read()
            run(env, "gallery", "enroll", "obama", knn / "train" / "obama" / "obama.jpg")
            out, err = poller.communicate(timeout=120)
        finally:
            poller.kill()
        assert poller.returncode == 0, err
        seen = json.loads(out)
        assert seen["name"] == "obama"
        # lag from the log entry's server timestamp to the other process answering with the new name
        print(f"gallery replication lag: {seen['lag_s'] * 1000:.0f} ms")
        assert seen["lag_s"] < 1.0, seen
    finally:
        rp.stop()


def test_gallery_persists_across_commands_with_the_embedded_redis(tmp_path, models_dir, knn):
    """No redis url: each command starts the data dir's embedded server (AOF on) and stops it when it exits.
    What `gallery enroll` wrote is what the next process, `identify`, finds."""
    data = tmp_path / "data"
    env = dict(os.environ, FACETRAIL_DATA_DIR=str(data), FACETRAIL_MODELS_DIR=str(models_dir))
    for k in ("FACETRAIL_CONFIG", "FACETRAIL_REDIS_URL", "FACETRAIL_REDIS__URL"):
        env.pop(k, None)
    out = run(env, "gallery", "enroll", "obama", knn / "train" / "obama" / "obama.jpg").stdout
    assert out.startswith("enrolled obama (")
    # the first command's server is gone: the second one must read the gallery back from disk
    assert not EmbeddedRedis(data).socket.exists(), "the enroll command's embedded redis-server outlived it"
    assert any((data / "redis").rglob("*.aof")), "the embedded server keeps an append-only file"
    rec = json.loads(run(env, "identify", "--json", knn / "train" / "obama" / "obama2.jpg").stdout)
    assert [f["identity"] for f in rec["faces"]] == ["obama"], rec
    assert rec["faces"][0]["score"] >= 0.5
    # and a photo of someone else is nobody (the gallery holds obama only)
    rec = json.loads(run(env, "identify", "--json", knn / "train" / "biden" / "biden.jpg").stdout)
    assert [f["identity"] for f in rec["faces"]] == [None], rec


CHANGE_POLLER = textwrap.dedent("""
    import json, sys, time
    import redis
    from index.replica import GalleryReplica
    from pipeline.config import load_settings
    from pipeline.engine.engine import FaceEngine
    from pipeline.engine.imageio import load_image
    s = load_settings()
    r = redis.Redis.from_url(s.redis.url)
    emb = FaceEngine(s).analyze([load_image(sys.argv[1])])[0][0].embedding
    rep = GalleryReplica(r, s).start()          # one long-lived replica for the whole test
    d = rep.identify(emb)[0]
    assert d.name == "obama", d
    print("ready", flush=True)

    def wait(pred, what):
        deadline = time.time() + 60
        while time.time() < deadline:
            d = rep.identify(emb)[0]            # each search first applies new log entries
            if pred(d):
                return d, time.time()
            time.sleep(0.005)
        sys.exit("never saw the " + what)

    d, seen = wait(lambda d: d.name != "obama", "rename")
    print(json.dumps({"name": d.name, "seen": seen}), flush=True)
    d, seen = wait(lambda d: d.name is None, "remove")
    left = [m.identity_id for m in rep.search(emb[None, :])[0]]
    print(json.dumps({"name": d.name, "seen": seen, "left": left, "templates": len(rep)}), flush=True)
""")


def test_rename_and_remove_in_one_process_are_seen_by_another_within_a_second(tmp_path, models_dir, knn):
    """A second process holding a replica (no restart, no reload) sees a rename, then a remove, each within 1 s
    of the change being made. The change is made here, in-process, so the bound is measured from just before
    the store call to the moment the other process answered with the new state."""
    rp = RedisProc(tmp_path).start()
    try:
        env = dict(os.environ, FACETRAIL_DATA_DIR=str(tmp_path / "data"), FACETRAIL_MODELS_DIR=str(models_dir),
                   FACETRAIL_REDIS_URL=rp.url, PYTHONPATH=str(REPO))
        env.pop("FACETRAIL_CONFIG", None)
        run(env, "gallery", "enroll", "obama", knn / "train" / "obama" / "obama.jpg")
        s = load_settings([], env={k: v for k, v in env.items() if k.startswith("FACETRAIL_")})
        store = GalleryStore(redis.Redis.from_url(rp.url), s)
        (iid,) = [i.id for i in store.identities()]
        poller = subprocess.Popen([sys.executable, "-c", CHANGE_POLLER, str(knn / "test" / "obama1.jpg")], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert poller.stdout.readline().strip() == "ready", poller.stderr.read()
            t0 = time.time()
            store.rename("obama", "barack")
            line = poller.stdout.readline()
            assert line, poller.stderr.read()
            renamed = json.loads(line)
            t1 = time.time()
            store.remove("barack")
            line = poller.stdout.readline()
            assert line, poller.stderr.read()
            removed = json.loads(line)
            assert poller.wait(60) == 0, poller.stderr.read()
        finally:
            poller.kill()
        assert renamed["name"] == "barack"
        assert removed["name"] is None
        assert iid not in removed["left"] and removed["templates"] == 0, removed  # the vectors went too
        print(f"gallery replication lag: rename {(renamed['seen'] - t0) * 1000:.0f} ms, "
              f"remove {(removed['seen'] - t1) * 1000:.0f} ms")
        assert renamed["seen"] - t0 < 1.0, renamed
        assert removed["seen"] - t1 < 1.0, removed
    finally:
        rp.stop()


def test_identify_on_a_still_is_the_stream_stages_decision(enrolled, knn):
    """pipeline.identify runs the pipeline's stage classes: a still gives the same faces, boxes and decisions as
    the same image as a camera frame through the detector and embedder workers' stages (DetectStage with the
    worker settings, EmbedStage), and as the engine's whole-image path identify used before."""
    import cv2
    import numpy as np

    from index.replica import GalleryReplica
    from pipeline.engine.engine import FaceEngine
    from pipeline.identify import identify_image
    from pipeline.messages import FrameMsg, FrameRef
    from pipeline.stages import DetectStage, EmbedStage

    settings = load_settings([], env={k: v for k, v in enrolled.items() if k.startswith("FACETRAIL_")})
    engine = FaceEngine(settings)
    replica = GalleryReplica(redis.Redis.from_url(settings.redis.url), settings).start()
    n_faces = 0
    for photo in sorted((knn / "test").iterdir()):
        img = cv2.imread(str(photo))
        got = identify_image(engine, replica, img)
        ref = FrameRef(camera="cam", seq=0, captured_at=time.time(), width=img.shape[1], height=img.shape[0])
        faces = DetectStage(settings, engine).process([(FrameMsg(frame=ref, jpeg=b"x"), img)])[0]
        emb = EmbedStage(settings, engine).process([faces])[0]
        assert all(f.embedding for f in emb.faces), "a camera's first frame embeds every face"
        assert len(got) == len(emb.faces) == len(engine.analyze([img])[0])
        if not got:
            continue
        n_faces += len(got)
        stream = replica.identify(np.stack([f.vector() for f in emb.faces]))
        old = engine.analyze([img])[0]
        before = replica.identify(np.stack([f.embedding for f in old]).astype(np.float32))
        for g, f, d, o, b in zip(got, emb.faces, stream, old, before):
            assert g["box"] == [round(v, 1) for v in f.box] == o.box_list()
            assert (g["identity"], g["score"], g["runner_up"]) == (d.name, round(d.score, 4), d.runner_up) \
                == (b.name, round(b.score, 4), b.runner_up)
        assert EXPECTED.get(photo.name, set()) <= {g["identity"] for g in got}
    assert n_faces >= 5

"""Detector and embedder workers on real Redis with the real models: effectively-once under redelivery,
reclaim after `kill -9` of a worker mid-stream, bounded frame streams with every drop counted."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from pipeline.backbone import connect
from pipeline.cameras import CameraRegistry, Lease, grabber_lease_key
from pipeline.config import CameraConfig, Settings
from pipeline.messages import EmbeddingsMsg, FacesMsg, FrameMsg
from pipeline.metrics import drops_key, metrics_key, read_metrics
from pipeline.publisher import FramePublisher, LeaseLost
from pipeline.streams import StreamNames
from workers.detector import DetectorWorker
from workers.embedder import EmbedderWorker

from conftest import CLIP



def clip_frames(faces_dir, n: int, start: int = 0):
    cap = cv2.VideoCapture(str(faces_dir / CLIP))
    out = []
    for i in range(start + n):
        ok, img = cap.read()
        assert ok, f"clip has fewer than {start + n} frames"
        if i >= start:
            out.append(img)
    cap.release()
    return out


def with_workers(settings: Settings, **kw) -> Settings:
    return settings.model_copy(update={"workers": settings.workers.model_copy(update=kw)})


def push(r, settings, camera, frames, *, eos=True, mode="wait"):
    CameraRegistry(r, settings).add(CameraConfig(name=camera, url="test://pushed", external=True))
    pub = FramePublisher(r, settings, camera)
    seqs = [pub.publish(img, captured_at=time.time(), pts=i / 30, mode=mode) for i, img in enumerate(frames)]
    return seqs, (pub.publish_eos() if eos else None)


def read_all(r, stream, model):
    return [model.decode(f[b"m"]) for _, f in r.xrange(stream)]


def test_detector_and_embedder_redelivery_never_duplicates(settings, faces_dir):
    """Consumer A reads frames and stalls; B reclaims them (XAUTOCLAIM) and finishes them; when A finally
    finishes the same frames, nothing new is emitted. Same for the embedder stage."""
    # reembed_s=0: every face is embedded, so every face's vector can be checked below
    s = with_workers(settings, reclaim_idle_ms=100, batch_max=8, batch_wait_ms=0, reembed_s=0)
    r = connect(s)
    names = StreamNames(s.redis.key_prefix)
    seqs, eos = push(r, s, "door", clip_frames(faces_dir, 3))

    a = DetectorWorker(s, "det-a", r=r)
    b = DetectorWorker(s, "det-b", r=r, stage=a.stage)
    batch_a = a.reader.next_batch()
    assert len(batch_a) == 4  # 3 frames + EOS, now pending at det-a
    time.sleep(0.25)
    batch_b = b.reader.next_batch()  # reclaims det-a's idle entries
    assert sorted(e[1] for e in batch_b) == sorted(e[1] for e in batch_a)
    b.handle(batch_b)
    a.handle(batch_a)  # the slow consumer completes too: a redelivery
    faces = read_all(r, names.faces, FacesMsg)
    assert sorted(m.frame.seq for m in faces) == seqs + [eos]
    assert any(m.faces for m in faces), "the clip's first frames show a face"
    assert [m.frame.eos for m in faces if m.frame.seq == eos] == [True]
    assert r.xlen(names.frames("door")) == 0 and r.xpending(names.frames("door"), "detectors")["pending"] == 0

    ea = EmbedderWorker(s, "emb-a", r=r)
    eb = EmbedderWorker(s, "emb-b", r=r, stage=ea.stage)
    batch_a = ea.reader.next_batch()
    time.sleep(0.25)
    batch_b = eb.reader.next_batch()
    assert len(batch_b) == len(batch_a) == 4
    eb.handle(batch_b)
    ea.handle(batch_a)
    embs = read_all(r, names.embeddings("door"), EmbeddingsMsg)
    assert sorted(m.frame.seq for m in embs) == seqs + [eos]
    by_seq = {m.frame.seq: m for m in embs}
    for f in faces:
        got = by_seq[f.frame.seq]
        assert len(got.faces) == len(f.faces)
        for ef in got.faces:
            v = ef.vector()
            assert v.shape == (128,) and abs(float((v * v).sum()) - 1.0) < 1e-3
            assert ef.thumb_jpeg and cv2.imdecode(np.frombuffer(ef.thumb_jpeg, np.uint8), 1) is not None
    assert r.xpending(names.faces, "embedders")["pending"] == 0

    for w in (a, b, ea, eb):
        w.metrics.maybe_flush(force=True)
        w.heartbeat.beat(force=True)  # /metrics lists live workers only
    m = read_metrics(r, s)
    assert m["stages"]["detector"]["total"]["frames"] == 8 and m["stages"]["embedder"]["total"]["frames"] == 8
    assert m["stages"]["detector"]["total"]["reclaimed"] == 0  # set by the run loop, not by handle()
    assert m["queues"][names.frames("door")] == {"length": 0, "pending": 0, "consumers": 2}
    assert m["queues"][names.faces]["length"] == 0


def _worker(role, env, consumer):
    return subprocess.Popen([sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())",
                             "worker", role, "--consumer", consumer], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _pending_of(r, stream, group, consumer) -> int:
    try:
        for c in r.xinfo_consumers(stream, group):
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if name == consumer:
                return int(c["pending"])
    except Exception:
        return 0
    return 0


def _wait(cond, timeout, what, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for p in procs:
            if p.poll() is not None and p.returncode not in (-9,):
                raise AssertionError(f"worker exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill9_workers_midstream_every_frame_exactly_once(settings, cli_env, faces_dir):
    """Two detectors and two embedders as real `facetrail worker` processes; one of each is SIGKILLed while it
    holds frames; the survivors reclaim them and every seq reaches embeddings:{cam} exactly once."""
    env = dict(cli_env, FACETRAIL_WORKERS__RECLAIM_IDLE_MS="800", FACETRAIL_WORKERS__BATCH_MAX="3",
               FACETRAIL_WORKERS__BATCH_WAIT_MS="5")
    s = with_workers(settings, reclaim_idle_ms=800)
    r = connect(s)
    names = StreamNames(s.redis.key_prefix)
    cam = "lobby"
    CameraRegistry(r, s).add(CameraConfig(name=cam, url="test://pushed", external=True))
    roles = {"det-1": "detector", "det-2": "detector", "emb-1": "embedder", "emb-2": "embedder"}
    procs = {c: _worker(role, env, c) for c, role in roles.items()}
    try:
        _wait(lambda: all(r.exists(f"ft:hb:{role}:{c}") for c, role in roles.items()), 60, "worker heartbeats",
              procs.values())
        frames = clip_frames(faces_dir, 24)
        seqs, eos = push(r, s, cam, frames)
        _wait(lambda: _pending_of(r, names.frames(cam), "detectors", "det-1") > 0, 60, "det-1 holding frames",
              procs.values())
        procs["det-1"].send_signal(signal.SIGKILL)
        _wait(lambda: _pending_of(r, names.faces, "embedders", "emb-1") > 0, 60, "emb-1 holding faces",
              procs.values())
        procs["emb-1"].send_signal(signal.SIGKILL)
        # the EOS can overtake the killed workers' frames (those wait reclaim_idle_ms before being redone), so
        # wait for every seq, not for the EOS
        want = set(seqs + [eos])
        _wait(lambda: {m.frame.seq for m in read_all(r, names.embeddings(cam), EmbeddingsMsg)} >= want, 120,
              "every seq and the EOS at embeddings", [procs["det-2"], procs["emb-2"]])
        time.sleep(1.2)  # past another reclaim_idle_ms: would let a late duplicate show up
        got = [m.frame.seq for m in read_all(r, names.embeddings(cam), EmbeddingsMsg)]
        assert sorted(got) == seqs + [eos], "every sampled frame exactly once (no gap, no duplicate)"
        reclaimed = sum(int(r.hget(metrics_key(s, stage, c), "reclaimed") or 0)
                        for stage, c in [("detector", "det-2"), ("embedder", "emb-2")])
        # the killed workers' frames were redone by the survivors
        assert _pending_of(r, names.frames(cam), "detectors", "det-1") == 0
        assert _pending_of(r, names.faces, "embedders", "emb-1") == 0
        assert reclaimed >= 2
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_sigterm_finishes_batch_acks_and_exits(settings, cli_env, faces_dir):
    r = connect(settings)
    names = StreamNames(settings.redis.key_prefix)
    p = _worker("detector", cli_env, "det-term")
    try:
        _wait(lambda: r.exists("ft:hb:detector:det-term"), 60, "heartbeat", [p])
        seqs, eos = push(r, settings, "hall", clip_frames(faces_dir, 6))
        _wait(lambda: r.xlen(names.faces) > 0, 60, "first faces", [p])
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
    assert _pending_of(r, names.frames("hall"), "detectors", "det-term") == 0, "nothing left un-acked"
    done = sorted(m.frame.seq for m in read_all(r, names.faces, FacesMsg))
    left = sorted(FrameMsg.decode(f[b"m"]).frame.seq for _, f in r.xrange(names.frames("hall")))
    assert sorted(done + left) == seqs + [eos], "each frame either finished or still queued, never lost"
    assert not r.exists("ft:hb:detector:det-term")


def test_bounded_frames_stream_drops_oldest_and_counts(settings, faces_dir):
    s = with_workers(settings, frames_maxlen=5)
    r = connect(s)
    names = StreamNames(s.redis.key_prefix)
    frames = clip_frames(faces_dir, 1) * 12
    seqs, _ = push(r, s, "busy", frames, eos=False, mode="drop")
    left = [FrameMsg.decode(f[b"m"]).frame.seq for _, f in r.xrange(names.frames("busy"))]
    assert left == seqs[-5:], "the newest frames stay, the oldest were dropped"
    reg = CameraRegistry(r, s)
    assert reg.status("busy")["drops"] == 7
    assert int(r.get(drops_key(s))) == 7
    # each dropped seq is recorded as gone, so the matcher skips it at once instead of waiting for it
    assert [int(x) for x in r.zrange(names.gone("busy"), 0, -1)] == seqs[:7]
    # 'wait' mode (files) never drops: it blocks until there is room
    pub = FramePublisher(r, s, "busy")
    import threading

    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError):
        pub.publish(frames[0], captured_at=time.time(), pts=None, mode="wait", stop=stop)
    assert reg.status("busy")["drops"] == 7 and r.xlen(names.frames("busy")) == 5


def test_frame_push_is_fenced_by_the_camera_lease(settings, faces_dir):
    r = connect(settings)
    lease = Lease(r, grabber_lease_key(settings, "gate"), "grabber-a", 5000)
    assert lease.acquire()
    other = Lease(r, grabber_lease_key(settings, "gate"), "grabber-b", 5000)
    assert not other.acquire()
    img = clip_frames(faces_dir, 1)[0]
    FramePublisher(r, settings, "gate", token=lease.token).publish(img, captured_at=time.time(), pts=None)
    with pytest.raises(LeaseLost):
        FramePublisher(r, settings, "gate", token="1:stale:token").publish(img, captured_at=time.time(), pts=None)
    first = lease.fence
    lease.release()
    assert other.acquire() and other.fence == first + 1


def test_drops_never_touch_frames_in_flight(settings, faces_dir):
    """Only frames no detector has taken are dropped: a counted drop is a frame that is never processed."""
    s = with_workers(settings, frames_maxlen=4)
    r = connect(s)
    names = StreamNames(s.redis.key_prefix)
    img = clip_frames(faces_dir, 1)[0]
    CameraRegistry(r, s).add(CameraConfig(name="yard", url="test://pushed", external=True))
    pub = FramePublisher(r, s, "yard")
    from pipeline.streams import ensure_group

    ensure_group(r, names.frames("yard"), "detectors")
    for _ in range(3):
        pub.publish(img, captured_at=time.time(), pts=None)
    taken = r.xreadgroup("detectors", "slow", {names.frames("yard"): ">"}, count=2)  # seq 0, 1 in flight
    assert len(taken[0][1]) == 2
    for _ in range(5):
        pub.publish(img, captured_at=time.time(), pts=None)
    left = [FrameMsg.decode(f[b"m"]).frame.seq for _, f in r.xrange(names.frames("yard"))]
    assert left == [0, 1, 6, 7]
    assert CameraRegistry(r, s).status("yard")["drops"] == 4 == pub.drops


def test_frame_codec_decodes_what_opencv_decodes(faces_dir):
    """Frames in transit decode (simplejpeg when installed) to exactly cv2.imdecode's pixels; other image bytes
    still decode through OpenCV; garbage gives None (the detector dead-letters it)."""
    from pipeline.engine.framecodec import decode_frame, encode_frame

    for img in clip_frames(faces_dir, 3, start=40):
        jpeg = encode_frame(img, 85)
        assert np.array_equal(decode_frame(jpeg), cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    png = cv2.imencode(".png", img)[1].tobytes()
    assert np.array_equal(decode_frame(png), img)
    assert decode_frame(b"nope") is None


def test_stages_without_redis(settings, faces_dir):
    """The stages are plain classes: frames in, one FacesMsg per frame (EOS passed through), then embeddings."""
    from pipeline.messages import FrameRef
    from pipeline.stages import DetectStage
    from pipeline.stages import EmbedStage

    imgs = clip_frames(faces_dir, 2)
    frames = [(FrameMsg(frame=FrameRef(camera="c", seq=i, captured_at=0.0, width=640, height=360), jpeg=b"x"), img)
              for i, img in enumerate(imgs)]
    frames.append((FrameMsg(frame=FrameRef(camera="c", seq=2, captured_at=0.0, width=640, height=360, eos=True),
                            jpeg=b""), None))
    det = DetectStage(settings)
    faces = det.process(frames)
    assert [m.frame.seq for m in faces] == [0, 1, 2] and faces[2].frame.eos and not faces[2].faces
    assert faces[0].faces and len(faces[0].crops) == len(faces[0].faces)
    assert all(len(c) == 112 * 112 * 3 for c in faces[0].crops)  # new faces: all cropped for the embedder
    assert all(len(c) in (0, 112 * 112 * 3) for c in faces[1].crops)  # the same faces a moment later may not be
    embs = EmbedStage(settings, det.engine).process(faces)
    assert [len(e.faces) for e in embs] == [len(f.faces) for f in faces]
    assert [bool(f.embedding) for e in embs for f in e.faces] == [bool(c) for m in faces for c in m.crops]
    v = embs[0].faces[0].vector()
    assert v.shape == (128,) and abs(float(np.linalg.norm(v)) - 1) < 1e-3


def test_unreadable_messages_are_dead_lettered_not_lost(settings, faces_dir):
    r = connect(settings)
    names = StreamNames(settings.redis.key_prefix)
    CameraRegistry(r, settings).add(CameraConfig(name="bad", url="test://pushed", external=True))
    stream = names.frames("bad")
    from pipeline.messages import FrameRef

    broken = FrameMsg(frame=FrameRef(camera="bad", seq=7, captured_at=time.time(), width=4, height=4), jpeg=b"nope")
    r.xadd(stream, {"m": broken.encode()})
    r.xadd(stream, {"m": b'{"v": 99, "frame": {}}'})  # a future schema version: refused loudly
    w = DetectorWorker(settings, "det-dl", r=r)
    w.handle(w.reader.next_batch())
    dl = [f for _, f in r.xrange(f"{settings.redis.key_prefix}:deadletter")]
    assert len(dl) == 2 and r.xpending(stream, "detectors")["pending"] == 0
    assert dl[0][b"camera"] == b"bad" and dl[0][b"seq"] == b"7" and b"does not decode" in dl[0][b"error"]
    assert b"unsupported schema version 99" in dl[1][b"error"] and dl[1][b"m"]
    assert r.xlen(names.faces) == 0 and r.xlen(stream) == 0


def test_batches_span_cameras_and_a_busy_one_does_not_starve_others(settings, faces_dir):
    s = with_workers(settings, batch_max=6, batch_wait_ms=50, frames_maxlen=64)
    r = connect(s)
    img = clip_frames(faces_dir, 1)[0]
    push(r, s, "busy", [img] * 20, eos=False)
    push(r, s, "quiet", [img] * 2, eos=False)
    names = StreamNames(s.redis.key_prefix)
    w = DetectorWorker(s, "det-fair", r=r, stage=object())  # the stage is not called here
    batch = w.reader.next_batch()
    cams = [e[0] for e in batch]
    assert cams.count(names.frames("quiet")) == 2, "the quiet camera's frames ride in the first batch"
    assert 6 <= len(batch) <= 8 and cams.count(names.frames("busy")) >= 4

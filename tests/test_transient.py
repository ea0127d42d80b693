"""Frames out of the durable log: frames, faces and embeddings in flight live on a second Redis server with no
persistence (embedded: <data_dir>/redis-transient; or redis.transient_url); the gallery, events, registry and
checkpoints stay on the durable one (AOF). Detector and embedder (real models) carry every frame exactly once
across the two servers, and the frame push stays fenced by the camera lease."""
from __future__ import annotations

import time

import pytest
import redis

from pipeline.backbone import connect, transient_client, transient_redis_url
from pipeline.cameras import CameraRegistry, Lease, grabber_lease_key
from pipeline.config import CameraConfig, load_settings
from pipeline.messages import EmbeddingsMsg
from pipeline.publisher import LEASE_TTL_MS, FramePublisher, LeaseLost
from pipeline.streams import StreamNames
from workers.detector import DetectorWorker
from workers.embedder import EmbedderWorker

from conftest import RedisProc, Running, wait_for
from test_streaming import clip_frames


def _keys(r: redis.Redis) -> set[str]:
    return {k.decode() for k in r.scan_iter("*", count=1000)}


def test_embedded_transient_server_has_no_persistence(tmp_path):
    s = load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path / "data")})
    r = connect(s)
    rt = transient_client(s, r)
    assert rt is not r and transient_redis_url(s) != r.connection_pool.connection_kwargs.get("path")
    assert r.config_get("appendonly")["appendonly"] == "yes"
    assert rt.config_get("appendonly")["appendonly"] == "no" and rt.config_get("save")["save"] == ""
    assert (tmp_path / "data" / "redis-transient").is_dir()
    # an external redis.url without transient_url: one server for both, as before
    ext = load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path / "d2"),
                                 "FACETRAIL_REDIS_URL": transient_redis_url(s)})
    r2 = connect(ext)
    assert transient_client(ext, r2) is r2


@pytest.fixture
def two_servers(tmp_path, redis_url, models_dir):
    (tmp_path / "t").mkdir()
    rt = RedisProc(tmp_path / "t").start()
    s = load_settings([], env={"FACETRAIL_DATA_DIR": str(tmp_path / "data"), "FACETRAIL_MODELS_DIR": str(models_dir),
                               "FACETRAIL_REDIS_URL": redis_url, "FACETRAIL_REDIS__TRANSIENT_URL": rt.url,
                               "FACETRAIL_WORKERS__BATCH_WAIT_MS": "5"})
    yield s
    rt.stop()


def test_frames_and_faces_never_touch_the_durable_server(two_servers, faces_dir):
    s = two_servers
    r, rt = connect(s), transient_client(s)
    assert rt is not r
    names = StreamNames(s.redis.key_prefix)
    cam = "hall"
    CameraRegistry(r, s).add(CameraConfig(name=cam, url="test://pushed", external=True))
    lease = Lease(r, grabber_lease_key(s, cam), "grabber-a", LEASE_TTL_MS)
    assert lease.acquire()
    pub = FramePublisher(r, s, cam, token=lease.token)
    frames = clip_frames(faces_dir, 12)
    seqs = [pub.publish(img, captured_at=time.time(), pts=i / 30, mode="wait") for i, img in enumerate(frames)]
    eos = pub.publish_eos()
    with Running(DetectorWorker(s, "det-t", r=connect(s)), "det"), \
            Running(EmbedderWorker(s, "emb-t", r=connect(s)), "emb"):
        wait_for(lambda: {EmbeddingsMsg.decode(f[b"m"]).frame.seq for _, f in rt.xrange(names.embeddings(cam))}
                 >= set(seqs + [eos]), 120, "every frame at embeddings on the transient server")
    got = sorted(EmbeddingsMsg.decode(f[b"m"]).frame.seq for _, f in rt.xrange(names.embeddings(cam)))
    assert got == seqs + [eos], "every frame exactly once"
    durable, transient = _keys(r), _keys(rt)
    assert not {k for k in durable if k.startswith(("ft:frames:", "ft:faces", "ft:embeddings:", "ft:done:"))}, durable
    assert {names.frames(cam), names.faces, names.embeddings(cam)} <= transient
    # (the transient server keeps a copy of the camera's seq counter and a mirror of the lease, by design)
    assert not {k for k in transient if k.startswith(("ft:cameras", "ft:camera:hall:status", "ft:hb:", "ft:metrics:"))}
    assert rt.xlen(names.frames(cam)) == 0 and rt.xlen(names.faces) == 0, "consumed entries are deleted"
    assert int(r.get(CameraRegistry(r, s).seq_key(cam))) == eos + 1, "the durable copy of the camera's seq"
    # the push on the transient server is fenced by the lease on the durable one: once the new owner has
    # pushed, the old owner's next push is refused (it has not even checked the real lease again yet)
    lease.release()
    other = Lease(r, grabber_lease_key(s, cam), "grabber-b", LEASE_TTL_MS)
    assert other.acquire()
    FramePublisher(r, s, cam, token=other.token).publish(frames[0], captured_at=time.time(), pts=1.0)
    with pytest.raises(LeaseLost):
        pub.publish(frames[0], captured_at=time.time(), pts=1.0)

"""Nothing scans the keyspace (issue 17: no KEYS/SCAN over the whole keyspace, which on a Redis Cluster means
every node): a short streaming path (frames -> detector -> embedder), the matcher's camera discovery and fair
share, heartbeats, /healthz's worker list, /metrics, and gallery snapshots replacing each other, on a single
Redis and on the real local cluster. The servers' own INFO commandstats must show no SCAN and no KEYS call."""
from __future__ import annotations

import time

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

import pipeline.discovery as discovery
from index.store import GalleryStore, NewTemplate
from pipeline.api.prom import families_from
from pipeline.backbone import connect, transient_client
from pipeline.keys import index_key
from pipeline.metrics import Heartbeat, alive_workers, metrics_key, read_metrics
from pipeline.streams import StreamNames
from workers.detector import DetectorWorker
from workers.embedder import EmbedderWorker
from workers.matcher import _fair_share, _scan_streams

from test_matcher import unit
from test_streaming import clip_frames, push, with_workers


def _servers(r) -> list[redis.Redis]:
    if isinstance(r, RedisCluster):
        return [r.get_redis_connection(n) for n in r.get_nodes()]
    return [r]


def _scans(servers) -> dict[str, int]:
    """SCAN and KEYS calls each server has seen since its last CONFIG RESETSTAT."""
    out = {}
    for srv in servers:
        stats = srv.info("commandstats")
        for cmd in ("scan", "keys"):
            n = int(stats.get(f"cmdstat_{cmd}", {}).get("calls", 0))
            if n:
                out[f"{srv.connection_pool.connection_kwargs.get('port')}:{cmd}"] = n
    return out


@pytest.fixture(params=["one-redis", "cluster"])
def any_settings(request):
    return request.getfixturevalue("settings" if request.param == "one-redis" else "cluster_settings")


def test_nothing_scans_the_keyspace(any_settings, faces_dir, monkeypatch):
    s = with_workers(any_settings, reclaim_idle_ms=100, batch_max=64, batch_wait_ms=0, reembed_s=0)
    r = connect(s)
    rt = transient_client(s, r)
    servers = _servers(r)
    assert _servers(rt) == servers or rt is r
    for srv in servers:
        srv.config_resetstat()
    assert _scans(servers) == {}

    push(r, s, "door", clip_frames(faces_dir, 2))
    det = DetectorWorker(s, "det-a", r=r)
    det.handle(det.reader.next_batch())
    emb = EmbedderWorker(s, "emb-a", r=r, stage=None)
    emb.handle(emb.reader.next_batch())
    for w in (det, emb):
        w.heartbeat.beat(force=True)
        w.metrics.maybe_flush(force=True)
    ma, mb = Heartbeat(r, s, "matcher", "mA"), Heartbeat(r, s, "matcher", "mB")
    ma.beat(force=True)
    mb.beat(force=True)

    # the matcher finds the camera by the embedder's index and shares 4 cameras between two live matchers
    assert _scan_streams(rt, s) == {"door"}
    assert _fair_share(r, s, 4) == 2
    mb.clear()
    assert _fair_share(r, s, 4) == 4
    live = {(w["role"], w["consumer"]) for w in alive_workers(r, s)}
    assert {("detector", "det-a"), ("embedder", "emb-a"), ("matcher", "mA")} <= live
    assert ("matcher", "mB") not in live
    assert [w["consumer"] for w in alive_workers(r, s, "matcher")] == ["mA"]
    # a worker gone without clear(): its key expires (not alive at once); its index entry goes a minute later
    r.zadd(index_key(s, "hb"), {"matcher:ghost": time.time() + 1, "matcher:old": time.time() - 61})
    assert [w["consumer"] for w in alive_workers(r, s, "matcher")] == ["mA"]
    assert r.zscore(index_key(s, "hb"), "matcher:old") is None and r.zscore(index_key(s, "hb"), "matcher:ghost")

    m = read_metrics(r, s)
    assert m["stages"]["detector"]["consumers"]["det-a"]["frames"] == 3.0  # 2 frames + EOS
    assert m["stages"]["embedder"]["consumers"]["emb-a"]["frames"] == 3.0
    assert any(f.name == "facetrail_stage_frames" for f in families_from(m))
    # an expired metrics hash leaves /metrics and the index
    r.delete(metrics_key(s, "detector", "det-a"))
    assert "detector" not in read_metrics(r, s)["stages"]
    assert not r.sismember(index_key(s, "metrics"), "detector:det-a")
    # a stream that is gone leaves the streams index once it has not been noted for GONE_AFTER_S
    rt.delete(StreamNames.of(s).embeddings("door"))
    assert _scan_streams(rt, s) == set() and rt.zscore(index_key(s, "streams"), "door") is not None
    monkeypatch.setattr(discovery, "GONE_AFTER_S", -1.0)
    assert _scan_streams(rt, s) == set() and rt.zscore(index_key(s, "streams"), "door") is None

    # gallery snapshots: the replaced generation's chunks are deleted by name
    store = GalleryStore(r, s)
    rng = np.random.default_rng(2)
    vecs = np.stack([unit(rng.standard_normal(128)) for _ in range(3)])
    iid, _ = store.enroll("ann", [NewTemplate(vecs[0])])
    assert store.put_snapshot("1-0", np.arange(3), np.zeros(3, np.int32), vecs, [[iid, "ann"]], trim=False)
    gen1 = r.hget(store.k("snap"), "gen").decode()
    assert r.exists(store.k("snap", gen1, 0))
    assert store.put_snapshot("2-0", np.arange(3), np.zeros(3, np.int32), vecs, [[iid, "ann"]], trim=False)
    assert not r.exists(store.k("snap", gen1, 0)), "the old generation's chunk is deleted"
    assert not store.put_snapshot("1-5", np.arange(3), np.zeros(3, np.int32), vecs, [[iid, "ann"]], trim=False)
    assert len(store.get_snapshot()[1]) == 3

    assert _scans(servers) == {}, "a SCAN or KEYS reached a server"

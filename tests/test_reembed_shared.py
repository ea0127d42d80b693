"""SharedReembedGate: the ReembedGate's rules run in Redis (one Lua call per batch), so two detectors that split a
camera's frames embed what one gate would, where two per-process gates embed more."""
from __future__ import annotations

import random

import redis

from pipeline.tracking.reembed import ReembedGate
from pipeline.tracking.reembed_shared import SharedReembedGate


def walk(n_frames: int = 120, seed: int = 3) -> list[tuple[str, float, list]]:
    """Two cameras at 30 fps: faces walking, one appearing late, quality wobbling, a restart of camera b."""
    rng = random.Random(seed)
    out = []
    for k in range(n_frames):
        t = k / 30.0
        faces = [([100.0 + 2 * k, 100.0 + rng.uniform(-1, 1), 80.0, 80.0], 0.5 + rng.uniform(-0.05, 0.2))]
        if k > 30:
            faces.append(([400.0 - k, 200.0, 60.0, 60.0], 0.4 + rng.uniform(0, 0.1)))
        out.append(("a", t, faces))
        tb = t if k < 80 else t - 2.0  # camera b's source restarts: stream time goes back
        out.append(("b", tb, [([50.0, 50.0, 90.0, 90.0], 0.6)] if k % 7 else []))
    return out


def count(plans: list[list[bool]]) -> int:
    return sum(sum(p) for p in plans)


def test_shared_gate_decides_like_the_local_gate(redis_url):
    r = redis.Redis.from_url(redis_url)
    frames = walk()
    local = ReembedGate(0.1, settle_n=4, settled_s=0.5)
    shared = SharedReembedGate(r, "t1", 0.1, settle_n=4, settled_s=0.5)
    want = [local.plan(c, t, f) for c, t, f in frames]
    got = []
    for i in range(0, len(frames), 7):  # batches of 7 frames: one round trip each
        got += shared.plan_many(frames[i:i + 7])
    assert got == want
    assert 0 < count(got) < sum(len(f) for _, _, f in frames)
    assert r.exists("t1:reembed:a") and r.pttl("t1:reembed:a") > 0


def test_two_detectors_share_one_gate_per_camera(redis_url):
    r = redis.Redis.from_url(redis_url)
    frames = walk(seed=5)
    one = count(ReembedGate(0.1, settle_n=4, settled_s=0.5).plan_many(frames))
    split = [frames[i:i + 4] for i in range(0, len(frames), 4)]  # batches alternate between two detectors
    procs = [ReembedGate(0.1, settle_n=4, settled_s=0.5) for _ in range(2)]
    per_process = sum(count(procs[i % 2].plan_many(b)) for i, b in enumerate(split))
    gates = [SharedReembedGate(r, "t2", 0.1, settle_n=4, settled_s=0.5) for _ in range(2)]
    shared = sum(count(gates[i % 2].plan_many(b)) for i, b in enumerate(split))
    assert per_process > one, "per-process gates that each see half the frames embed more"
    assert shared == one


def test_redis_down_falls_back_to_the_local_gate():
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    g = SharedReembedGate(dead, "t3", 0.1)
    box = [10.0, 10.0, 50.0, 50.0]
    assert g.plan_many([("a", 0.0, [(box, 0.5)]), ("a", 0.03, [(box, 0.5)])]) == [[True], [False]]
    assert g.fallbacks == 1

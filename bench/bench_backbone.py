"""Frames/s through the Redis backbone alone (no models): synthetic 20 KB and 150 KB frames pushed with the
grabber's bounded push (FramePusher) into frames streams of many cameras, read by a detector-like consumer
(read_batch over every camera) that emits a small faces message per frame with the effectively-once emit and
acks/deletes the frame. One redis-server vs a 3-primary Redis Cluster started on this box (tests/redis_cluster.py),
the per-primary share of the load (bytes in, from INFO stats), and a projection of the primaries needed for 1,000
and 10,000 cameras at 5 fps from the measured per-primary figure.

  python bench/bench_backbone.py [--cameras 48] [--frames 3000] [--sizes 20,150] [--json bench/results/backbone.json]

The clients run in this one Python process: on a small box the numbers are bounded by the client, not Redis, so
the projection is a floor on what one primary moves (a conservative node count)."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import redis  # noqa: E402

from pipeline.backbone import connect  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.framepush import FramePusher  # noqa: E402
from pipeline.streams import ConsumingEmitter, StreamNames, ensure_group, read_batch  # noqa: E402


def run_one(url: str, cluster: bool, cameras: int, frames: int, size_kb: int, prefix: str) -> dict:
    env = {"FACETRAIL_REDIS_URL": url, "FACETRAIL_REDIS__KEY_PREFIX": prefix, "FACETRAIL_DATA_DIR": tempfile.mkdtemp()}
    s = load_settings([], env=env)
    r = connect(s)
    names = StreamNames.of(s)
    cams = [f"cam{i:04d}" for i in range(cameras)]
    streams = [names.frames(c) for c in cams]
    for st in streams:
        ensure_group(r, st, "detectors")
    pusher = FramePusher(r)
    emitter = ConsumingEmitter(r, 900)
    payload = os.urandom(size_kb * 1024)
    seqs = {c: 0 for c in cams}
    done = 0
    t0 = time.perf_counter()
    pushed = 0
    while done < frames:
        # push one frame per camera (a 5 fps round), then drain what is there
        for c in cams:
            if pushed >= frames:
                break
            seqs[c] += 1
            pusher.push(stream=names.frames(c), seq_key=names.seq(c), status_key="", lease_key=names.frames(c),
                        drops_key="", maxlen=10_000, payload=payload, next_seq=seqs[c] + 1, mode="wait",
                        gone_key=names.gone(c), seq=seqs[c])
            pushed += 1
        while True:
            batch = read_batch(r, "detectors", "bench", streams, count=8, block_ms=None)  # type: ignore[arg-type]
            if not batch:
                break
            items = []
            for stream, mid, _ in batch:
                cam = stream.split("{")[1].split("}")[0] if cluster else stream.rsplit(":", 1)[1]
                out = names.faces_for(cam)
                items.append((names.done("detect", f"{cam}:{mid}", near=out), stream, "detectors", mid,
                              [(out, b'{"faces":[]}', 10_000)]))
            done += sum(1 for _ in emitter.emit_many(items))
    dt = time.perf_counter() - t0
    return {"fps": round(done / dt, 1), "mb_s": round(done * size_kb / 1024 / dt, 1), "frames": done,
            "seconds": round(dt, 2)}


def node_stats(ports: list[int]) -> dict[int, tuple[int, float]]:
    """(bytes in, CPU seconds used) per redis-server."""
    out = {}
    for p in ports:
        c = redis.Redis(port=p)
        cpu = c.info("cpu")
        out[p] = (int(c.info("stats")["total_net_input_bytes"]),
                  float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))
    return out


def measured(ports: list[int], frames: int, before: dict, after: dict) -> dict:
    """Per node: share of the bytes, CPU seconds, and frames/s per fully used core (frames it carried / CPU s)."""
    moved = {p: after[p][0] - before[p][0] for p in ports}
    cpu = {p: max(1e-6, after[p][1] - before[p][1]) for p in ports}
    tot = max(1, sum(moved.values()))
    share = {p: moved[p] / tot for p in ports}
    return {"share": {str(p): round(share[p], 3) for p in ports},
            "cpu_s": {str(p): round(cpu[p], 2) for p in ports},
            "fps_per_core": {str(p): round(frames * share[p] / cpu[p], 1) for p in ports}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=48)
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--sizes", default="20,150", help="frame sizes in KB")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "backbone.json"), help="where to write results")
    a = ap.parse_args(argv)
    from conftest import RedisProc
    from redis_cluster import LocalCluster

    tmp = Path(tempfile.mkdtemp(prefix="bench-backbone-"))
    (tmp / "single").mkdir()
    single = RedisProc(tmp / "single").start()
    cl = LocalCluster(tmp / "cluster", primaries=3, replicas=0).start()
    out: dict = {"cameras": a.cameras, "frames": a.frames, "cpus": os.cpu_count(), "runs": []}
    try:
        for kb in [int(x) for x in a.sizes.split(",")]:
            b1 = node_stats([single.port])
            one = run_one(single.url, False, a.cameras, a.frames, kb, f"b{kb}")
            one.update(measured([single.port], one["frames"], b1, node_stats([single.port])))
            prim = cl.primaries()
            b3 = node_stats(prim)
            many = run_one(cl.url, True, a.cameras, a.frames, kb, f"b{kb}")
            many.update(measured(prim, many["frames"], b3, node_stats(prim)))
            # capacity of one primary: frames/s per fully used core, the lowest measured (a conservative figure),
            # planned at 50 % CPU so a node can take over a failed one's slots and bursts
            per_node = min(many["fps_per_core"].values())
            need = {str(n): math.ceil(n * 5 / (0.5 * per_node)) for n in (1000, 10_000)}
            row = {"size_kb": kb, "single": one, "cluster3": many, "per_primary_fps_per_core": per_node,
                   "primaries_needed_5fps_at_50pct_cpu": need,
                   "network_mb_s_5fps": {str(n): round(n * 5 * kb / 1024, 1) for n in (1000, 10_000)}}
            out["runs"].append(row)
            print(f"{kb:>4} KB  client-bound rate: single {one['fps']} fps, cluster(3) {many['fps']} fps\n"
                  f"        server CPU: single {one['fps_per_core']} frames/s per core; cluster primaries "
                  f"{many['fps_per_core']} frames/s per core, load share {many['share']}\n"
                  f"        primaries for 1,000 / 10,000 cameras at 5 fps (50 % CPU): "
                  f"{need['1000']} / {need['10000']}  (inbound {row['network_mb_s_5fps']['1000']} / "
                  f"{row['network_mb_s_5fps']['10000']} MB/s)", flush=True)
    finally:
        cl.stop()
        single.stop()
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

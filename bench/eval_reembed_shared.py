"""Faces embedded with 2 detectors: one reembed gate per process (the default) vs one per camera shared through
Redis (workers.reembed_shared), on the Hamilton clip.

    .venv/bin/python bench/eval_reembed_shared.py [--json bench/results/reembed_shared.json]

YuNet runs once over every frame of the clip (29.97 fps, as `facetrail process` pushes it); the detections are
then dealt to the detectors in batches, round robin, the way the frames stream's consumer group hands them out
(a live camera at 5-10 fps gives batches of 1-2 frames; a file pushed as fast as it goes, up to batch_max = 16).
Embedded = faces the gates picked for a new embedding (each costs an alignment, a thumbnail and an SFace pass)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from conftest import RedisProc  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.tracking.reembed import ReembedGate  # noqa: E402
from pipeline.tracking.reembed_shared import SharedReembedGate  # noqa: E402

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"
CLIP = SHARED / "face_recognition" / "short_hamilton_clip.mp4"


def detections(settings) -> list[tuple[str, float, list]]:
    engine = FaceEngine(settings)
    cap = cv2.VideoCapture(str(CLIP))
    fps = cap.get(cv2.CAP_PROP_FPS) or 29.97
    out, i = [], 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        faces = engine.detect([img])[0]
        out.append(("hamilton", i / fps, [([float(v) for v in f.box], float(f.quality or 0.0)) for f in faces]))
        i += 1
    cap.release()
    return out


def embedded(gates, frames, batch: int) -> int:
    n = 0
    for k, start in enumerate(range(0, len(frames), batch)):
        n += sum(sum(p) for p in gates[k % len(gates)].plan_many(frames[start:start + batch]))
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "reembed_shared.json"))
    args = ap.parse_args()
    settings = load_settings()
    frames = detections(settings)
    srv = RedisProc(Path(tempfile.mkdtemp(prefix="ft-reembed-"))).start()
    try:
        import redis

        r = redis.Redis(port=srv.port)
        rows = []
        for batch in (1, 4, 16):
            w = settings.workers
            r.delete(f"b{batch}:reembed:hamilton")
            two_shared = [SharedReembedGate(r, f"b{batch}", w.reembed_s, settle_n=w.reembed_settle_n,
                                            settled_s=w.reembed_settled_s) for _ in range(2)]
            row = {"batch": batch, "one_detector": embedded([ReembedGate.from_config(w)], frames, batch),
                   "two_detectors_per_process": embedded([ReembedGate.from_config(w) for _ in range(2)], frames,
                                                         batch),
                   "two_detectors_shared": embedded(two_shared, frames, batch)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        srv.stop()
    res = {"what": "faces picked for embedding on the Hamilton clip by the reembed gate(s) of 2 detectors "
                   "(bench/eval_reembed_shared.py)", "frames": len(frames),
           "faces": sum(len(f) for _, _, f in frames),
           "reembed": {"s": settings.workers.reembed_s, "settle_n": settings.workers.reembed_settle_n,
                       "settled_s": settings.workers.reembed_settled_s}, "rows": rows}
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

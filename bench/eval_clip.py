"""In-process clip evaluation for tuning (not a benchmark): detect -> gate -> embed -> MatcherStage on the
Hamilton clip with Miranda and Lacamoire enrolled from their photos; prints the embedded-face count and the
events, so detector size and ReembedGate settings can be compared on what they decide, not only on speed.

    .venv/bin/python bench/eval_clip.py [FACETRAIL_SECTION__FIELD=VALUE ...]

e.g. FACETRAIL_WORKERS__REEMBED_SETTLED_S=1.0 or FACETRAIL_MODELS__DETECT_MAX_SIDE=512 (any setting).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from index.replica import Match  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.messages import FrameMsg, FrameRef  # noqa: E402
from pipeline.stages import MatcherStage  # noqa: E402
from pipeline.stages import DetectStage  # noqa: E402
from pipeline.stages import EmbedStage  # noqa: E402

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces" / "face_recognition"
PEOPLE = ("lin-manuel-miranda", "alex-lacamoire")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("overrides", nargs="*", help="FACETRAIL_* env overrides, KEY=VALUE")
    args = ap.parse_args()
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in args.overrides)
    s = load_settings([], env=env)
    eng = FaceEngine(s)
    gallery = []
    for name in PEOPLE:
        img = cv2.imread(str(SHARED / f"{name}.png"))
        gallery.append((name, eng.analyze([img])[0][0].embedding))
    G = np.stack([v for _, v in gallery]).astype(np.float32)

    def search(vectors):
        sims = np.asarray(vectors, np.float32) @ G.T
        return [sorted((Match(n, n, float(sc)) for (n, _), sc in zip(gallery, row)), key=lambda m: -m.score)
                for row in sims]

    det, emb = DetectStage(s, eng), EmbedStage(s, eng)
    match = MatcherStage.from_settings("clip", search, s)
    cap = cv2.VideoCapture(str(SHARED / "short_hamilton_clip.mp4"))
    events, seq, faces, embedded, t0 = [], 0, 0, 0, time.perf_counter()
    while True:
        ok, img = cap.read()
        if not ok:
            break
        ref = FrameRef(camera="clip", seq=seq, captured_at=seq / 29.97, pts=seq / 29.97, width=img.shape[1],
                       height=img.shape[0])
        fm = det.process([(FrameMsg(frame=ref, jpeg=b""), img)])[0]
        em = emb.process([fm])[0]
        faces += len(em.faces)
        embedded += sum(1 for f in em.faces if f.embedding)
        events += match.update(em).events
        seq += 1
    events += match.update(type(em)(frame=FrameRef(camera="clip", seq=seq, captured_at=seq / 29.97, pts=None,
                                                    width=1, height=1, eos=True))).events
    dt = time.perf_counter() - t0
    print(f"frames {seq} faces {faces} embedded {embedded} in {dt:.1f}s ({seq / dt:.1f} fps)")
    for e in events:
        d = e.model_dump()
        if d["type"] != "track.started":
            print(f"  {d['type']:17s} track {d['track_id']:>3} {str(d.get('identity')):20s} "
                  f"score {d.get('score') or 0:.3f}  {d['first_seen']:.2f}-{d['last_seen']:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

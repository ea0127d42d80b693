"""False accepts of the track-level decision rule on degraded copies of every shared photo (issue 15).

bench/eval_hard.py judges the hard clips, with five strangers per set. This script asks the calibration question
for the same rule on more people: every single-face shared photo (deepface 1-25 and the face_recognition
portraits, less the five enrollment photos) is brought down to a far-camera face (34 / 42 / 52 px, Gaussian blur
sigma 0.8 / 1.3 / 1.6, JPEG), pasted on a plain canvas, detected, aligned and embedded as in the pipeline - a
short "track" of `--frames` faces with sub-pixel shifts. Each track is decided by the matcher's own
IdentityVoter (per-face votes at thresholds.match / margin, the track mean at track_match / track_margin, and the
consistent-evidence bar when tracking.track_consistent_match is set):

- **5-person gallery** (bench/eval_hard.py's enrollment): tracks of strangers named (false accepts), the highest
  stranger track mean and lead over the runner-up, and tracks of enrolled people named right / wrong;
- **pairs**: for each of the 300 deepface pairs (both ways), the pair's first photo is added to the gallery as a
  sixth identity X and the second photo's degraded tracks are decided: a different-person pair is a false accept
  when the track is named X (or anyone it is not), a same-person pair is found when it is named X (or the
  person's own enrolled identity).

    .venv/bin/python bench/eval_hard_pairs.py [--label NAME] [FACETRAIL_SECTION__FIELD=V ...]

Results are merged into bench/results/hard_pairs.json under the label.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from clipgen import _detector, head_crop  # noqa: E402
from eval_hard import ENROLL, FACES, FR, KS, KT, enroll, settings_with  # noqa: E402
from index.replica import Match  # noqa: E402
from pipeline.engine.degrade import degraded_crops  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.tracking.identity import IdentityVoter  # noqa: E402
from pipeline.tracking.state import TrackState  # noqa: E402

SIZES, BLURS = (34, 42, 52), (0.8, 1.3, 1.6)
PORTRAITS = {FR + "obama.jpg": "obama", FR + "obama2.jpg": "obama", FR + "obama-720p.jpg": "obama",
             FR + "biden.jpg": "biden", FR + "lin-manuel-miranda.png": "lin", FR + "alex-lacamoire.png": "alex",
             KT + "alex_lacamoire/img1.jpg": "alex", KT + "rose_leslie/img1.jpg": "rose",
             KT + "rose_leslie/img2.jpg": "rose", KT + "kit_harington/john1.jpeg": "kit",
             KT + "kit_harington/john2.jpeg": "kit", KT + "obama/obama.jpg": "obama", KT + "obama/obama2.jpg": "obama",
             KT + "biden/biden2.jpg": "biden", KT + "biden/biden.jpg": "biden", KS + "johnsnow_test1.jpg": "kit",
             KS + "obama1.jpg": "obama", KS + "alex_lacamoire1.jpg": "alex"}


def identities() -> dict[str, str]:
    """photo (relative to faces/) -> person, in eval_hard's names (person_1 = p1, person_13 = p13)."""
    out = dict(PORTRAITS)
    for r in csv.DictReader(open(FACES / "deepface" / "identities.csv")):
        out["deepface/" + r["file"]] = {"person_1": "p1", "person_13": "p13"}.get(r["identity"], r["identity"])
    return out


def degraded_tracks(eng: FaceEngine, photos: dict[str, str], frames: int, seed: int = 5) -> list[dict]:
    """Per photo, size and blur: the embeddings (with quality and score) of `frames` degraded copies."""
    det = _detector(eng.settings.models.dir)
    rng = np.random.default_rng(seed)
    out = []
    for photo, who in sorted(photos.items()):
        crop, face_h = head_crop(str(FACES / photo), det)
        for px in SIZES:
            for blur in BLURS:
                faces, crops = [], []
                for _ in range(frames):
                    s = (px + rng.uniform(-1, 1)) / face_h
                    small = cv2.resize(crop, (max(8, int(crop.shape[1] * s)), max(8, int(crop.shape[0] * s))),
                                       interpolation=cv2.INTER_AREA)
                    small = cv2.GaussianBlur(small, (0, 0), blur)
                    h, w = small.shape[:2]
                    canvas = np.full((3 * h, 3 * w, 3), 120, np.uint8)
                    canvas[h:2 * h, w:2 * w] = small
                    dx, dy = rng.uniform(0, 1, 2)
                    canvas = cv2.warpAffine(canvas, np.float32([[1, 0, dx], [0, 1, dy]]), (3 * w, 3 * h),
                                            borderMode=cv2.BORDER_REPLICATE)
                    canvas = cv2.imdecode(cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 85])[1], 1)
                    found = eng.detect([canvas])[0]
                    if found:
                        f = max(found, key=lambda f: f.box[2] * f.box[3])
                        faces.append(f)
                        crops.append(eng.align(canvas, [f])[0])
                if faces:
                    vecs = eng.embedder.embed(crops)
                    out.append({"photo": photo, "who": who, "px": px, "blur": blur, "vecs": vecs,
                                "q": [(float(f.quality), float(f.score)) for f in faces]})
    return out


def decide(voter: IdentityVoter, gallery: dict[str, np.ndarray], track: dict) -> str | None:
    """The name the matcher's IdentityVoter gives the track: every face searched and voted, the track mean
    searched at the end (as MatcherStage._end does)."""
    names = list(gallery)

    def search(v: np.ndarray) -> list[Match]:
        return sorted((Match(n, n, float((gallery[n] @ v).max())) for n in names), key=lambda m: -m.score)

    data = TrackState()
    for v, (q, sc) in zip(track["vecs"], track["q"]):
        voter.add(data, search(v), q, sc)
        voter.accumulate(data, v, q, sc)
    mean = voter.mean_embedding(data)
    if mean is not None:
        voter.add_mean(data, search(mean))
    return voter.decide(data)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", default="current")
    ap.add_argument("--frames", type=int, default=4, help="faces per degraded track (default %(default)s; the "
                    "voter's track_min_faces is lowered to it when larger)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "hard_pairs.json"))
    ap.add_argument("overrides", nargs="*", help="FACETRAIL_* env overrides, KEY=VALUE")
    args = ap.parse_args()
    s = settings_with(args.overrides)
    eng = FaceEngine(s)
    lowres = tuple(s.gallery.lowres_templates)
    t, th = s.tracking, s.thresholds
    voter = IdentityVoter(th.match, th.margin, t.min_votes, t.vote_ratio, t.track_match, t.track_margin,
                          min(t.track_min_faces, args.frames), t.track_consistent_match, t.track_consistent_margin,
                          t.track_consistent_share)
    t0 = time.time()
    photos = {p: w for p, w in identities().items() if p not in set(ENROLL.values())}
    tracks = degraded_tracks(eng, photos, args.frames)
    gallery = enroll(eng, lowres)
    cache: dict[str, np.ndarray] = {}

    def templates(photo: str) -> np.ndarray:
        if photo not in cache:
            img = cv2.imread(str(FACES / photo))
            crop = eng.align(img, [eng.detect([img])[0][0]])[0]
            cache[photo] = eng.embedder.embed([crop] + degraded_crops(crop, lowres))
        return cache[photo]

    five = {"stranger_tracks": 0, "stranger_named": 0, "enrolled_tracks": 0, "enrolled_named": 0,
            "enrolled_wrong": 0}
    for tr in tracks:
        name = decide(voter, gallery, tr)
        if tr["who"] in gallery:
            five["enrolled_tracks"] += 1
            five["enrolled_named"] += name == tr["who"]
            five["enrolled_wrong"] += name is not None and name != tr["who"]
        else:
            five["stranger_tracks"] += 1
            five["stranger_named"] += name is not None
            m = tr["vecs"].mean(axis=0)
            sc = sorted((float((g @ (m / np.linalg.norm(m))).max()) for g in gallery.values()), reverse=True)
            five["stranger_max_mean"] = round(max(five.get("stranger_max_mean", -1.0), sc[0]), 3)
            five["stranger_max_lead"] = round(max(five.get("stranger_max_lead", -1.0), sc[0] - sc[1]), 3)
    pairs = {"different_tracks": 0, "different_named": 0, "same_tracks": 0, "same_named": 0}
    worst: list[tuple] = []
    by_photo: dict[str, list[dict]] = {}
    for tr in tracks:
        by_photo.setdefault(tr["photo"], []).append(tr)
    for r in csv.DictReader(open(FACES / "deepface" / "pairs.csv")):
        same = r["Decision"] == "Yes"
        for a, b in ((r["file_x"], r["file_y"]), (r["file_y"], r["file_x"])):
            gal = dict(gallery, X=templates("deepface/" + a))
            for tr in by_photo.get("deepface/" + b, []):
                ok = ({"X"} if same else set()) | ({tr["who"]} if tr["who"] in gallery else set())
                name = decide(voter, gal, tr)
                if same:
                    pairs["same_tracks"] += 1
                    pairs["same_named"] += name in ok
                else:
                    pairs["different_tracks"] += 1
                    if name is not None and name not in ok:
                        pairs["different_named"] += 1
                        worst.append((a, b, tr["px"], tr["blur"], name))
    result = {"settings": {"lowres_templates": list(lowres), "track_match": t.track_match,
                           "track_margin": t.track_margin, "track_consistent_match": t.track_consistent_match,
                           "track_consistent_margin": t.track_consistent_margin,
                           "track_consistent_share": t.track_consistent_share, "frames": args.frames},
              "five_person_gallery": five, "pairs_sixth_identity": pairs,
              "pairs_false_accept_rate": round(pairs["different_named"] / max(1, pairs["different_tracks"]), 5),
              "pairs_wrongly_named": [list(w) for w in worst[:20]], "seconds": round(time.time() - t0, 1)}
    print(json.dumps({k: v for k, v in result.items() if k != "pairs_wrongly_named"}))
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[args.label] = {"overrides": args.overrides, **result}
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

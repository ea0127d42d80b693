"""`facetrail detect` and `facetrail verify`: the face engine on still images.

--json output is a contract (one JSON object per line, keys never renamed):
  detect: {"image": path, "width": int, "height": int,
           "faces": [{"box": [x, y, w, h], "score": float, "quality": float, "landmarks": [[x, y] x5]}]}
  verify: {"a": path, "b": path, "similarity": float, "same": bool, "threshold": float}
A bad image or a missing face gives that line with an "error" key instead of the results; the run goes on and
exits 1 at the end. Usage problems (missing CSV, bad columns) exit 2.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from . import UserError
from .common import print_json, settings_from


def register(sub) -> None:
    d = sub.add_parser("detect", help="find faces in still images",
                       description="Detect faces (box, score, quality, 5 landmarks) in each image.")
    d.add_argument("images", nargs="+", metavar="IMG")
    d.add_argument("--json", action="store_true", help="one JSON object per image (stable format)")
    d.add_argument("--draw", type=Path, metavar="OUT.jpg",
                   help="write the image with boxes and landmarks drawn (several images: OUT_<n>.jpg)")
    d.set_defaults(func=detect)

    v = sub.add_parser("verify", help="are two photos the same person? (largest face of each)",
                       description="Cosine similarity of the largest face in A and in B, decided at "
                                   "thresholds.match (or --threshold).")
    v.add_argument("a", nargs="?", metavar="A")
    v.add_argument("b", nargs="?", metavar="B")
    v.add_argument("--pairs", type=Path, metavar="FILE.csv",
                   help="CSV with columns file_x,file_y (paths relative to the CSV's folder); one result per row")
    v.add_argument("--threshold", type=float, help="same-person cosine threshold (default: thresholds.match)")
    v.add_argument("--json", action="store_true", help="one JSON object per pair (stable format)")
    v.set_defaults(func=verify)


def _engine(args):
    from ..engine.engine import FaceEngine
    return FaceEngine(settings_from(args))


def _load(path: str | Path, settings):
    from ..engine.imageio import load_image
    return load_image(path, max_pixels=settings.api.max_pixels)


def _face_json(f) -> dict:
    return {"box": [round(float(v), 1) for v in f.box], "score": round(float(f.score), 4),
            "quality": round(float(f.quality), 4),
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks]}


def _draw(image: np.ndarray, faces, out: Path) -> None:
    img = image.copy()
    t = max(1, round(max(img.shape[:2]) / 400))
    colors = [(0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 255, 0), (255, 0, 0)]
    for f in faces:
        x, y, w, h = (int(round(v)) for v in f.box)
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 255, 0), t)
        for (px, py), c in zip(f.landmarks, colors):
            cv2.circle(img, (int(round(px)), int(round(py))), 2 * t, c, -1)
        cv2.putText(img, f"{f.score:.2f} q{f.quality:.2f}", (x, max(12 * t, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * t, (0, 255, 0), t)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img):
        raise UserError(f"cannot write {out} (use a .jpg or .png name)")


def detect(args) -> int:
    from ..engine.imageio import ImageError
    engine = _engine(args)
    failed = 0
    for n, path in enumerate(args.images):
        try:
            image = _load(path, engine.settings)
        except ImageError as e:
            failed += 1
            if args.json:
                print_json({"image": path, "error": str(e)})
            else:
                print(f"error: {e}", file=sys.stderr)
            continue
        faces = engine.detect([image])[0]
        h, w = image.shape[:2]
        if args.json:
            print_json({"image": path, "width": w, "height": h, "faces": [_face_json(f) for f in faces]})
        else:
            print(f"{path}: {w}x{h}, {len(faces)} face(s)")
            for i, f in enumerate(faces):
                x, y, bw, bh = f.box
                print(f"  #{i} box {x:.0f},{y:.0f} {bw:.0f}x{bh:.0f}  score {f.score:.3f}  quality {f.quality:.2f}")
        if args.draw:
            out = args.draw if len(args.images) == 1 else args.draw.with_name(
                f"{args.draw.stem}_{n}{args.draw.suffix or '.jpg'}")
            _draw(image, faces, out)
    return 1 if failed else 0


def _read_pairs(csv_path: Path) -> list[tuple[str, str]]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            if "file_x" not in cols or "file_y" not in cols:
                raise UserError(f"{csv_path}: needs columns file_x,file_y (found: {','.join(cols) or 'none'})")
            return [((r["file_x"] or "").strip(), (r["file_y"] or "").strip()) for r in reader]
    except OSError as e:
        raise UserError(f"cannot read {csv_path}: {e.strerror or e}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{csv_path}: not a readable CSV ({e})") from None


def verify(args) -> int:
    from ..engine.imageio import ImageError
    if args.pairs and (args.a or args.b):
        raise UserError("give either A B or --pairs FILE.csv, not both")
    if not args.pairs and not (args.a and args.b):
        raise UserError("verify needs two images A B, or --pairs FILE.csv")
    if args.pairs:
        base = args.pairs.parent
        pairs = [(x, y, base / x, base / y) for x, y in _read_pairs(args.pairs)]
    else:
        pairs = [(args.a, args.b, Path(args.a), Path(args.b))]
    engine = _engine(args)
    threshold = engine.threshold if args.threshold is None else float(args.threshold)
    cache: dict[Path, object] = {}

    def embedding(path: Path, shown: str):
        if path not in cache:
            try:
                if not shown:
                    raise ImageError("empty file name in the CSV")
                face = engine.main_face(_load(path, engine.settings))
                cache[path] = face.embedding if face is not None else ImageError(f"{shown}: no face found")
            except ImageError as e:
                cache[path] = e
        got = cache[path]
        if isinstance(got, Exception):
            raise got
        return got

    failed = 0
    for shown_a, shown_b, pa, pb in pairs:
        row: dict = {"a": shown_a, "b": shown_b}
        try:
            ea, eb = embedding(pa, shown_a), embedding(pb, shown_b)
        except ImageError as e:
            failed += 1
            row["error"] = str(e)
            if args.json:
                print_json(row)
            else:
                print(f"error: {shown_a} vs {shown_b}: {e}", file=sys.stderr)
            continue
        sim = float(np.dot(ea, eb))
        row.update(similarity=round(sim, 4), same=bool(sim >= threshold), threshold=threshold)
        if args.json:
            print_json(row)
        else:
            print(f"{'same' if row['same'] else 'different':<9} {sim:.3f} (threshold {threshold})  "
                  f"{shown_a}  {shown_b}")
    return 1 if failed else 0

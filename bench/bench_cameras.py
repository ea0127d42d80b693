"""Cameras per box: how many live 720p30 H.264 RTSP cameras, analysed at 5 fps, one box keeps up with, with motion
gating on and off, and the CPU one camera costs by role.

    .venv/bin/python bench/bench_cameras.py [--modes on on_full off] [--steps 4 8 12] [--steps-off 4 8]
        [--window-s 45] [--json bench/results/cameras.json]     (~30 min)

Cameras: GStreamer's RTSP server (tests/rtsp_server.py --passthrough) serves one pre-encoded clip to every
camera as is (x264, IPPP, a keyframe a second, 4 Mbit/s), so the server costs next to nothing. The clip is
composed with bench/clipgen.py's render(): a static background, and a 20 s loop in which Lin-Manuel Miranda
(enrolled) walks through for 4 s, i.e. a person in view 20 % of the time. Cameras are added to the registry
a fraction of the loop apart, so their visits do not all coincide.

Gating modes (MODES): on = the motion gate in the grabber, before the JPEG (still frames travel without pixels)
and keyframes-only decoding while a camera is idle (PyAV reader); on_full = the same gate, every frame decoded;
detector = the gate in the detector, after the
grabber's JPEG and the detector's JPEG decode (the OpenCV reader; what "on" was before); off = no gate.

For each gating mode, `facetrail up` (grabber, detector, embedder, matcher; one each) runs on a fresh data dir and
cameras are added step by step (N = 1, 2, 4, ...). After a warm-up each step is measured for --window-s:
- dropped frames (the grabber's per-camera drop counter), frames published per camera per second;
- capture->event latency of every track.started / identity.matched event in the window (Event.created_at -
  last_seen: the capture time of the frame that produced it), p50/p99 (track.ended is left out: it waits
  tracking.max_age_s after the last face on purpose);
- person events: every visit that starts and ends inside the window must give an identity.matched track;
- CPU seconds per second by role: grabber (decode + JPEG of sampled frames), detector (JPEG decode, motion gate,
  YuNet, align), embedder (SFace), matcher, Redis (both servers); motion alone is measured in-process on the
  same frames (MotionGate.moving) and reported apart (it is part of the detector's figure).
A step passes with no drop, >= 95 % of the asked fps, p99 < 1 s and no person event missing; the search stops
at the first failing step. In each mode one empty camera (background only) and one with a person always in
view are measured too (1 camera each), each after a window with no camera at all (the workers' idle polling):
`camera_cores` is what the camera adds to that baseline, and busy_over_empty compares both ways.

Measured on whatever box runs it; the README's figures come from a busy, shared 2-core VM."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from clipgen import Visit, render  # noqa: E402
from conftest import RTSP_SERVER, SYS_PY, free_port  # noqa: E402
from pipeline.cameras import CameraRegistry  # noqa: E402
from pipeline.config import CameraConfig, Settings  # noqa: E402
from pipeline.events.model import Event  # noqa: E402
from pipeline.motion import MotionGate  # noqa: E402

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"
PERSON = "lin-manuel-miranda"
PHOTO = SHARED / "face_recognition" / f"{PERSON}.png"
CLI = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]
LOOP_S, VISIT_AT, VISIT_S = 20.0, 8.0, 4.0
SIZE = (1280, 720)
FPS = 5.0
GOP_S = 1.0  # the served clip's keyframe interval
# capture->event p99 limit per mode: an idle camera decoding keyframes only sees a person who walks in at the next
# keyframe, so that first sighting's events come up to a GOP later than with every frame decoded
LATENCY_LIMIT_S = {"on": 1.0 + GOP_S}
MODES = {  # the config each gating mode runs with
    # motion gate in the grabber (before the JPEG) and keyframes-only decoding while idle (PyAV reader)
    "on": {"motion": {"enabled": True, "at": "grabber", "idle_keyframes": True}, "decode": {"reader": "pyav"}},
    # the gate in the grabber, every frame decoded (no wait for a keyframe when someone walks in)
    "on_full": {"motion": {"enabled": True, "at": "grabber", "idle_keyframes": False}, "decode": {"reader": "pyav"}},
    # the gate in the detector (after grabber JPEG + detector JPEG decode), OpenCV reader: the previous "on"
    "detector": {"motion": {"enabled": True, "at": "detector"}, "decode": {"reader": "opencv"}},
    "off": {"motion": {"enabled": False}, "decode": {"reader": "opencv"}},
}


def models_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facetrail" / "models"


def make_clip(tmp: Path, kind: str, loops: int) -> Path:
    """kind: people (a 4 s visit per 20 s loop), empty (background only), busy (a person in view throughout).
    Rendered once (mp4v), then looped `loops` times and encoded to H.264 by GStreamer; cached in tmp."""
    out = tmp / f"{kind}_{SIZE[1]}p30_x{loops}.mp4"
    if out.exists():
        return out
    one = tmp / f"{kind}_loop.mp4"
    visits = {"people": [Visit(PERSON, str(PHOTO), VISIT_AT, VISIT_S, face_px=160)],
              "empty": [Visit(PERSON, str(PHOTO), LOOP_S + 1, 1.0)],  # starts after the loop ends: never shown
              "busy": [Visit(PERSON, str(PHOTO), 0.0, LOOP_S, face_px=160, x0=0.2, x1=0.8)]}[kind]
    render(visits, one, models_dir=models_dir(), size=SIZE, fps=30.0, duration_s=LOOP_S, seed=7)
    # The loop's frames are piped raw into one x264enc, `loops` times over: a `concat` of one decodebin per loop
    # fails to preroll with GStreamer 1.22 beyond ~3 inputs (qtdemux "not-linked").
    w, h = SIZE
    cmd = ["gst-launch-1.0", "-q", "fdsrc", "fd=0", "!", "rawvideoparse", f"width={w}", f"height={h}", "format=bgr",
           "framerate=30/1", "!", "videoconvert", "!", "x264enc", "speed-preset=veryfast", "key-int-max=30",
           "bframes=0", "bitrate=4000", "!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={out}"]
    enc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert enc.stdin is not None
    try:
        for _ in range(loops):
            cap = cv2.VideoCapture(str(one))
            ok, frame = cap.read()
            while ok:
                enc.stdin.write(np.ascontiguousarray(frame).tobytes())
                ok, frame = cap.read()
            cap.release()
    finally:
        enc.stdin.close()
    if enc.wait() != 0:
        out.unlink(missing_ok=True)
        raise RuntimeError(f"gst-launch-1.0 failed ({enc.returncode}) encoding {out}")
    return out


def motion_cost_ms(clip: Path, settings: Settings, frames: int = 60) -> float:
    """CPU ms per sampled frame of the motion gate alone, on this clip's frames at 5 fps."""
    cap = cv2.VideoCapture(str(clip))
    imgs = []
    i = 0
    while len(imgs) < frames:
        ok, img = cap.read()
        if not ok:
            break
        if i % 6 == 0:
            imgs.append(img)
        i += 1
    cap.release()
    gate = MotionGate.from_settings(settings)
    c0 = time.process_time()
    for k, img in enumerate(imgs):
        gate.moving("m", k / FPS, img)
    return 1000 * (time.process_time() - c0) / max(1, len(imgs))


def grabber_split(clip: Path, settings: Settings, seconds: float = 20.0) -> dict:
    """The grabber's CPU split in-process on this clip at 5 fps: decode (grab every frame, retrieve the sampled
    ones, as pipeline/livesource.py does) and the JPEG encoding of sampled frames for the frames stream."""
    from bench_decode import run_mode as decode_run

    from pipeline.engine.framecodec import encode_frame

    dec = decode_run(clip, "cv_grab", FPS, seconds)
    cap = cv2.VideoCapture(str(clip))
    ok, img = cap.read()
    cap.release()
    c0 = time.process_time()
    for _ in range(20):
        encode_frame(img, settings.workers.jpeg_quality)
    jpeg_ms = 1000 * (time.process_time() - c0) / 20
    awake = decode_run(clip, "av_awake", FPS, seconds)
    idle = decode_run(clip, "av_idle", FPS, seconds)
    return {"decode_cores": dec["cores_per_camera"], "decode_cores_pyav_awake": awake["cores_per_camera"],
            "decode_cores_pyav_idle": idle["cores_per_camera"], "jpeg_ms_per_frame": round(jpeg_ms, 2),
            "jpeg_cores": round(jpeg_ms * FPS / 1000, 3)}


class Up:
    """`facetrail up` on a fresh data dir, Miranda enrolled; the RTSP server with `mounts` cameras."""

    def __init__(self, tmp: Path, clip: Path, mounts: int, mode: str):
        self.tmp = tmp / mode
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        data = self.tmp / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
        self.env.update(FACETRAIL_DATA_DIR=str(data), PYTHONPATH=str(REPO))
        subprocess.run(CLI + ["gallery", "enroll", PERSON, str(PHOTO)], env=self.env, check=True,
                       capture_output=True, timeout=300)
        self.port = free_port()
        self.server = subprocess.Popen([SYS_PY, str(RTSP_SERVER), str(clip), str(self.port), "--mounts",
                                        str(mounts), "--passthrough"], stdout=subprocess.PIPE, text=True)
        if self.server.stdout.readline().strip() != "READY":
            raise SystemExit("the RTSP server did not start")
        cfg = self.tmp / "cameras.yaml"
        cfg.write_text(json.dumps(MODES[mode]))
        self.log = open(self.tmp / "up.log", "w")
        self.up = subprocess.Popen(CLI + ["-c", str(cfg), "up", "--role", "grabber", "--role", "detector",
                                          "--role", "embedder", "--role", "matcher"], env=self.env,
                                   stdout=self.log, stderr=subprocess.STDOUT)
        sock = data / "redis" / "redis.sock"
        deadline = time.monotonic() + 180
        while True:
            try:
                if redis.Redis(unix_socket_path=str(sock)).ping():
                    break
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline or self.up.poll() is not None:
                raise SystemExit(f"`facetrail up` did not start; see {self.tmp / 'up.log'}")
            time.sleep(0.5)
        self.r = redis.Redis(unix_socket_path=str(sock))
        self.settings = Settings.model_validate({"redis": {"url": f"unix://{sock}"}})
        self.reg = CameraRegistry(self.r, self.settings)
        self.added: dict[str, float] = {}
        self._wait_workers()

    def _wait_workers(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = {k.decode().split(":")[2] for k in self.r.scan_iter("ft:hb:*")}
            if {"grabber", "detector", "embedder", "matcher"} <= roles:
                return
            time.sleep(1)
        raise SystemExit(f"workers did not all start; see {self.tmp / 'up.log'}")

    def url(self, i: int) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam{i}"

    def add(self, name: str, i: int) -> None:
        self.reg.add(CameraConfig(name=name, url=self.url(i), fps=FPS))
        self.added[name] = time.time()

    def remove(self, name: str) -> None:
        self.reg.remove(name)
        self.added.pop(name, None)

    def wait_live(self, names: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.reg.status(n).get("state") == "live" for n in names):
                return
            time.sleep(0.5)
        raise SystemExit(f"cameras not live: {[(n, self.reg.status(n).get('state')) for n in names]}")

    def cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            procs = [psutil.Process(self.up.pid)] + psutil.Process(self.up.pid).children(recursive=True)
        except psutil.Error:
            return out
        for p in procs:
            try:
                cmd = " ".join(p.cmdline())
                t = p.cpu_times()
            except psutil.Error:
                continue
            role = "redis" if "redis-server" in cmd else (cmd.split(" worker ")[-1].split()[0] if " worker " in cmd
                                                          else "supervisor")
            out[role] = out.get(role, 0.0) + t.user + t.system
        return out

    def status(self, names: list[str]) -> dict[str, dict]:
        return {n: self.reg.status(n) for n in names}

    def close(self) -> None:
        self.up.send_signal(signal.SIGTERM)
        try:
            self.up.wait(60)
        except subprocess.TimeoutExpired:
            self.up.kill()
        self.server.kill()
        self.server.wait(10)
        self.log.close()


def measure(up: Up, names: list[str], window_s: float, *, visits: bool = True, latency_limit_s: float = 1.0,
            fps_check: bool = True) -> dict:
    s0, c0, t0 = up.status(names), up.cpu(), time.time()
    time.sleep(window_s)
    s1, c1, t1 = up.status(names), up.cpu(), time.time()
    time.sleep(3.0)  # events of the window's last frames
    events = [Event.decode(f[b"m"]) for _, f in up.r.xrange("ft:events")]
    events = [e for e in events if e.camera in names and t0 <= e.last_seen <= t1]
    # track.ended waits tracking.max_age_s after the last face by design: its delay is not pipeline latency
    lat = sorted(e.created_at - e.last_seen for e in events if e.created_at and e.type != "track.ended")
    dt = t1 - t0
    per_cam = {}
    missing = 0
    for n in names:
        frames = int(s1[n].get("frames") or 0) - int(s0[n].get("frames") or 0)
        drops = int(s1[n].get("drops") or 0) - int(s0[n].get("drops") or 0)
        matched = {e.track_id for e in events if e.camera == n and e.type == "identity.matched"}
        expected = 0
        if visits:  # visit k of camera n runs from added + k*LOOP + VISIT_AT (+ connect time, < 1 s)
            k = 0
            while True:
                a = up.added[n] + k * LOOP_S + VISIT_AT
                if a > t1:
                    break
                if a >= t0 and a + VISIT_S + 1.0 <= t1:
                    expected += 1
                k += 1
        missing += max(0, expected - len(matched))
        per_cam[n] = {"fps": round(frames / dt, 2), "drops": drops, "visits": expected, "tracks_named": len(matched)}
    cpu = {role: round((c1.get(role, 0.0) - c0.get(role, 0.0)) / dt, 3) for role in c1}
    p = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None)
    res = {"cameras": len(names), "window_s": round(dt, 1), "per_camera": per_cam,
           "drops": sum(c["drops"] for c in per_cam.values()),
           "min_fps": min(c["fps"] for c in per_cam.values()), "events": len(events),
           "latency_p50_s": p(0.5), "latency_p99_s": p(0.99), "person_events_missing": missing,
           "cpu_cores": cpu, "cpu_cores_total": round(sum(cpu.values()), 3),
           "cpu_cores_per_camera": round(sum(cpu.values()) / len(names), 3), "load_avg": os.getloadavg()}
    res["ok"] = (res["drops"] == 0 and (res["min_fps"] >= 0.95 * FPS or not fps_check) and missing == 0
                 and (res["latency_p99_s"] is None or res["latency_p99_s"] < latency_limit_s))
    res["latency_limit_s"] = latency_limit_s
    print(json.dumps(res), flush=True)
    return res


def baseline(up: Up, window_s: float) -> dict:
    """CPU of the whole `facetrail up` with no camera: the workers' idle polling, which no camera adds to."""
    c0, t0 = up.cpu(), time.time()
    time.sleep(window_s)
    c1, dt = up.cpu(), time.time() - t0
    cpu = {role: round((c1.get(role, 0.0) - c0.get(role, 0.0)) / dt, 3) for role in c1}
    return {"window_s": round(dt, 1), "cpu_cores": cpu, "cpu_cores_total": round(sum(cpu.values()), 3)}


def run_mode(tmp: Path, clips: dict[str, Path], steps: list[int], window_s: float, warm_s: float,
             mode: str, single: bool) -> dict:
    up = Up(tmp, clips["people"], max(steps), mode)
    out: dict = {"mode": mode, "config": MODES[mode], "steps": []}
    try:
        names: list[str] = []
        for n in steps:
            stagger = LOOP_S / n
            while len(names) < n:
                names.append(f"cam{len(names)}")
                up.add(names[-1], len(names) - 1)
                up.wait_live([names[-1]])
                if len(names) < n:
                    time.sleep(min(stagger, 5.0))
            time.sleep(warm_s)
            # an idle camera decoding keyframes only publishes a frame per keyframe (1 fps here) by design
            res = measure(up, names, window_s, latency_limit_s=LATENCY_LIMIT_S.get(mode, 1.0),
                          fps_check=not MODES[mode]["motion"].get("idle_keyframes"))
            out["steps"].append(res)
            if not res["ok"]:
                break
        passed = [s["cameras"] for s in out["steps"] if s["ok"]]
        out["max_cameras"] = max(passed) if passed else 0
    finally:
        up.close()
    if single:  # one empty camera, then one with a person always in view; each after a no-camera baseline
        for kind in ("empty", "busy"):
            up = Up(tmp, clips[kind], 1, mode)
            try:
                time.sleep(warm_s)
                base = baseline(up, min(window_s, 30.0))
                up.add(kind, 0)
                up.wait_live([kind])
                time.sleep(warm_s)
                res = measure(up, [kind], window_s, visits=False,
                              fps_check=not MODES[mode]["motion"].get("idle_keyframes"))
                res["no_camera_baseline"] = base
                res["camera_cores"] = round(res["cpu_cores_total"] - base["cpu_cores_total"], 3)
                out[f"one_{kind}_camera"] = res
            finally:
                up.close()
        e, b = out["one_empty_camera"], out["one_busy_camera"]
        out["busy_over_empty"] = {
            "whole_process": round(b["cpu_cores_total"] / max(1e-3, e["cpu_cores_total"]), 2),
            "camera_only": round(b["camera_cores"] / max(1e-3, e["camera_cores"]), 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12])
    ap.add_argument("--window-s", type=float, default=45.0)
    ap.add_argument("--warm-s", type=float, default=8.0)
    ap.add_argument("--modes", nargs="+", default=["on", "on_full", "off"], choices=list(MODES))
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "cameras.json"))
    ap.add_argument("--steps-on", type=int, nargs="+", help="steps for mode on (default --steps)")
    ap.add_argument("--steps-off", type=int, nargs="+", default=[4, 8],
                    help="steps for modes detector and off")
    ap.add_argument("--single", nargs="*", default=None,
                    help="modes that also measure one empty / one busy camera (default: all)")
    args = ap.parse_args()
    steps = {"on": args.steps_on or args.steps, "on_full": args.steps_on or args.steps,
             "detector": args.steps_off, "off": args.steps_off}
    if shutil.which("gst-launch-1.0") is None or not Path(SYS_PY).exists():
        print("bench_cameras: needs GStreamer (gst-launch-1.0, x264enc) and its RTSP server for /usr/bin/python3 "
              "(.ci/system-deps.sh)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.gettempdir()) / "facetrail-bench-cameras"
    tmp.mkdir(exist_ok=True)
    span = max(len(v) for v in steps.values()) * (args.window_s + args.warm_s + 15) + 60
    loops = int(span // LOOP_S) + 1
    clips = {"people": make_clip(tmp, "people", loops), "empty": make_clip(tmp, "empty", 4),
             "busy": make_clip(tmp, "busy", 4)}
    settings = Settings()
    result = {"what": "live 720p30 H.264 RTSP cameras analysed at 5 fps by one `facetrail up` (1 grabber, "
                      "1 detector, 1 embedder, 1 matcher); person in view 20 % of the time (bench/bench_cameras.py)",
              "host": f"{os.cpu_count()} cpus, busy shared VM (other jobs ran meanwhile)",
              "clip": {"size": list(SIZE), "fps": 30, "loop_s": LOOP_S, "visit_s": VISIT_S, "gop": 30},
              "motion_ms_per_frame": {k: round(motion_cost_ms(clips[k], settings), 2) for k in ("people", "empty")},
              "grabber_split": {k: grabber_split(clips[k], settings) for k in ("people", "empty")},
              "window_s": args.window_s, "modes": {}}
    for mode in args.modes:
        result["modes"][mode] = run_mode(tmp, clips, steps.get(mode, args.steps), args.window_s, args.warm_s, mode,
                                         single=args.single is None or mode in args.single)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({m: r.get("max_cameras") for m, r in result["modes"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

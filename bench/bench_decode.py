"""Decode CPU per camera: what sampling a 30 fps H.264 camera at 5 or 10 fps costs with each decoding choice.

    .venv/bin/python bench/bench_decode.py [--seconds 9] [--json bench/results/decode.json]

Clips: the Hamilton clip scaled to 720p30 and 1080p30 and encoded by GStreamer's x264enc like an IP camera
(IPPP, a keyframe a second), plus 1080p30 with 2 non-reference B frames, and 1080p30 with a keyframe every 6
frames (a camera set to a short GOP). Modes, each read as fast as it decodes (CPU seconds per second of video =
cores one camera needs):
- cv_read_all: OpenCV read() of every frame (decode + BGR conversion of all: the naive reader);
- cv_grab: OpenCV grab() every frame, retrieve() the sampled ones (the grabber until now);
- av_none / av_nonref / av_nonkey / av_auto: PyAV (pipeline/decode.py) with skip_frame DEFAULT, NONREF, NONKEY,
  or auto (NONREF, NONKEY once keyframes come at least as often as the sampling period);
- av_awake / av_idle: the reader of a motion-gated camera (motion.idle_keyframes: auto, slice threads only, so
  that a decoder fed keyframes alone hands each out at once): awake (something moves) and idle (keyframes only:
  an empty camera; `sampled` is then the keyframes the motion gate looks at, not frames lost).
`sampled` is how many frames the sampler got, `wanted` how many the fps asks for: fewer = frames lost.
CPU is this process's user+system time (all decoder threads), on whatever else the box is doing."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.decode import AvCapture  # noqa: E402

SHARED = Path(os.environ.get("FACETRAIL_SHARED_DATA", REPO.parent / "shared" / "data")) / "faces"
CLIP = SHARED / "face_recognition" / "short_hamilton_clip.mp4"
CLIPS = {  # name: (height, width, keyframe interval, B frames)
    "720p30_gop30": (720, 1280, 30, 0),
    "1080p30_gop30": (1080, 1920, 30, 0),
    "1080p30_gop30_b2": (1080, 1920, 30, 2),
    "1080p30_gop6": (1080, 1920, 6, 0),
}


def make_clip(out: Path, h: int, w: int, gop: int, bframes: int) -> Path:
    if not out.exists():
        subprocess.run(
            ["gst-launch-1.0", "-q", "filesrc", f"location={CLIP}", "!", "qtdemux", "!", "h264parse", "!",
             "avdec_h264", "!", "videoscale", "!", "videorate", "!", f"video/x-raw,width={w},height={h},framerate=30/1",
             "!", "videoconvert", "!", "x264enc", "speed-preset=veryfast", f"key-int-max={gop}", f"bframes={bframes}",
             "b-pyramid=false", "bitrate=4000", "!", "h264parse", "!", "mp4mux", "!", "filesink",
             f"location={out}"], check=True)
    return out


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def run_mode(path: Path, mode: str, fps: float, seconds: float) -> dict:
    period = 1.0 / fps
    if mode.startswith("cv"):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    elif mode in ("av_awake", "av_idle"):  # the reader of a motion-gated camera (motion.idle_keyframes)
        cap = AvCapture(str(path), skip="auto", sample_period_s=period, idle_capable=True)
    else:
        cap = AvCapture(str(path), skip=mode[3:], sample_period_s=period)
    c0 = _cpu()
    n = sampled = 0
    next_t = 0.0
    t = 0.0
    while True:
        ok = cap.grab()
        if not ok:
            break
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if t > seconds:
            break
        n += 1
        if mode == "av_idle" and n == 1:
            cap.set_idle(True)  # an empty camera: keyframes only from here on
        if mode == "cv_read_all":
            cap.retrieve()
        if t + 1e-6 < next_t:
            continue
        next_t += period
        while next_t <= t:
            next_t += period
        if mode != "cv_read_all":
            cap.retrieve()
        sampled += 1
    cpu = _cpu() - c0
    cap.release()
    dur = min(t, seconds) or 1e-6
    return {"mode": mode, "fps": fps, "decoded": n, "sampled": sampled, "wanted": int(dur * fps) + 1,
            "cpu_s": round(cpu, 3), "cores_per_camera": round(cpu / dur, 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=9.0)
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "decode.json"))
    ap.add_argument("--clips", nargs="*", default=list(CLIPS))
    args = ap.parse_args()
    cv2.setNumThreads(1)
    tmp = Path(tempfile.gettempdir()) / "facetrail-bench-decode"
    tmp.mkdir(exist_ok=True)
    rows = []
    for name in args.clips:
        path = make_clip(tmp / f"{name}.mp4", *CLIPS[name])
        for fps in (5.0, 10.0):
            for mode in ("cv_read_all", "cv_grab", "av_none", "av_nonref", "av_nonkey", "av_auto", "av_awake",
                         "av_idle"):
                if mode == "cv_read_all" and fps == 10.0:
                    continue  # independent of the sampling rate
                row = {"clip": name, **run_mode(path, mode, fps, args.seconds)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"what": "decode CPU per 30 fps H.264 camera by reader and sampling rate (bench/bench_decode.py)",
           "host": f"{platform.node()} {os.cpu_count()} cpus; busy shared VM: other jobs ran meanwhile",
           "seconds_of_video": args.seconds, "rows": rows}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

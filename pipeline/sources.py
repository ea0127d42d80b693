"""Sources of frames: opening a camera, file or webcam (open_capture), and pushing a finite source into
frames:{camera}: push_file (a file, or the grabber's file camera, run_file_camera) and push_stream (`facetrail
process URL`). Live cameras (reconnect, stall watchdog, lag check, motion gate): pipeline/livesource.py. Which
frames are kept and the time they carry: pipeline/streamtime.py.

Live sources: OpenCV's FFmpeg backend with low-latency options (RTSP over TCP, no buffering), or PyAV where
decode.reader says so, with open and read timeouts. Files: every frame (or --fps sampling by stream time), no
pacing, backpressure instead of drops, then an EOS frame (seq one past the last)."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import redis

from .cameras import CameraRegistry, is_file_source, redact_url
from .config import CameraConfig, Settings
from .publisher import FramePublisher
from .streamtime import FrameSampler

log = logging.getLogger("facetrail.grabber")


class SourceError(RuntimeError):
    pass


# OpenCV's FFmpeg backend reads its demuxer options from this variable at every open. Live sources get the
# low-latency set; files get none: `fflags nobuffer` makes FFmpeg lose frames of a file (measured: 215 of 275).
_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
LIVE_OPTIONS = os.environ.get(_ENV) or "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
FILE_OPTIONS = ""


_ORIGINAL = os.environ.get(_ENV)


def _restore_env() -> None:
    if _ORIGINAL is None:
        os.environ.pop(_ENV, None)
    else:
        os.environ[_ENV] = _ORIGINAL


class _OptionsLock:
    """Many live opens may share the live options at once; a file open waits for them and has the variable
    to itself (a hung live open therefore delays file opens of the same process, never other live opens)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._live = 0
        self._file = False

    def open(self, live: bool, fn):
        with self._cond:
            if live:
                self._cond.wait_for(lambda: not self._file)
                self._live += 1
                os.environ[_ENV] = LIVE_OPTIONS
            else:
                self._cond.wait_for(lambda: not self._file and self._live == 0)
                self._file = True
                os.environ[_ENV] = FILE_OPTIONS
        try:
            return fn()
        finally:
            with self._cond:
                if live:
                    self._live -= 1
                else:
                    self._file = False
                if self._live == 0 and not self._file:  # leave the process as we found it: a later
                    _restore_env()                       # plain cv2.VideoCapture(file) must not get these
                self._cond.notify_all()


_options = _OptionsLock()


_CV_HWACCEL = {"none": "VIDEO_ACCELERATION_NONE", "any": "VIDEO_ACCELERATION_ANY",
               "vaapi": "VIDEO_ACCELERATION_VAAPI", "d3d11": "VIDEO_ACCELERATION_D3D11",
               "mfx": "VIDEO_ACCELERATION_MFX"}


def _hw_params(settings: Settings) -> list[int]:
    name = settings.decode.hwaccel
    if name == "none":
        return []
    if name not in _CV_HWACCEL or not hasattr(cv2, _CV_HWACCEL[name]):
        raise SourceError(f"decode.hwaccel={name!r}: OpenCV knows {', '.join(_CV_HWACCEL)}")
    return [cv2.CAP_PROP_HW_ACCELERATION, getattr(cv2, _CV_HWACCEL[name])]


def open_capture(url: str, settings: Settings, *, read_timeout_s: float | None = None,
                 sample_period_s: float = 0.0):
    """A VideoCapture that never blocks forever: open and read timeouts for network sources. A live network
    source is read by PyAV instead where decode.reader says so (pipeline/decode.py: same grab/retrieve surface);
    sample_period_s (the camera's sampling) lets it skip decoding frames no sample needs."""
    w = settings.workers
    if settings.decode.reader == "pyav" and not url.isdigit() and not url.startswith("/dev/video") \
            and not is_file_source(url):
        from .decode import AvCapture

        try:
            return AvCapture(url, skip=settings.decode.skip, sample_period_s=sample_period_s,
                             open_timeout_s=w.open_timeout_s,
                             read_timeout_s=read_timeout_s if read_timeout_s is not None else w.watchdog_s + 2.0,
                             hwaccel=settings.decode.hwaccel,
                             idle_capable=settings.motion.enabled and settings.motion.at == "grabber"
                             and settings.motion.idle_keyframes, max_idle_gap_s=0.8 * w.watchdog_s)
        except Exception as e:  # av.error.*: refused, timed out, not a video
            raise SourceError(f"cannot open {redact_url(url)}: {type(e).__name__}: {e}") from None
    if url.isdigit():  # webcam index
        cap = cv2.VideoCapture(int(url))
    elif url.startswith("/dev/video"):  # webcam device node: V4L2, not FFmpeg
        cap = cv2.VideoCapture(url, cv2.CAP_V4L2)
    else:
        src = url[len("file://"):] if url.startswith("file://") else url
        read_to = read_timeout_s if read_timeout_s is not None else w.watchdog_s + 2.0
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(w.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_to * 1000)]
        if not is_file_source(url):
            params += _hw_params(settings)
        cap = _options.open(not is_file_source(url), lambda: cv2.VideoCapture(src, cv2.CAP_FFMPEG, params))
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {redact_url(url)}")
    return cap


class CameraStatus:
    """A camera's state in its status hash, as its one reader writes it. `stalled` stays until frames flow again:
    a failed reconnect does not turn it into `connecting` or `error` (the error text says what happens)."""

    def __init__(self, registry: CameraRegistry, camera: str, owner: str):
        self.registry = registry
        self.camera = camera
        self.owner = owner
        self.state = ""
        self._lock = threading.Lock()

    def set(self, state: str, **fields) -> None:
        with self._lock:
            if self.state == "stalled" and state in ("connecting", "error"):
                state = "stalled"
            self.state = state
            try:
                self.registry.set_status(self.camera, state, owner=self.owner, **fields)
            except redis.RedisError as e:
                log.warning("camera %s: cannot write status: %s", self.camera, e)


@dataclass
class FileResult:
    camera: str
    frames: int = 0
    first_seq: int = 0
    eos_seq: int = -1
    read: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def push_file(r: redis.Redis, settings: Settings, camera: str, path: str, *, fps: float | None = None,
              stop: threading.Event | None = None, token: str = "",
              on_frame: Callable[[FramePublisher], None] | None = None) -> FileResult:
    """Every frame of a finite source into frames:{camera} (or frames at `fps` by stream time), waiting for
    room rather than dropping, then EOS. Returns the seq range used."""
    t0 = time.monotonic()
    cap = open_capture(path, settings, read_timeout_s=30.0)
    pub = FramePublisher(r, settings, camera, token=token)
    res = FileResult(camera=camera, first_seq=pub.seq)
    sampler = FrameSampler.by_stream_time(fps)
    try:
        while stop is None or not stop.is_set():
            ok, img = cap.read()
            if not ok:
                break
            res.read += 1
            pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if not sampler.take(pts):
                continue
            pub.publish(img, captured_at=time.time(), pts=pts, mode="wait", stop=stop)
            if on_frame is not None:
                on_frame(pub)
    finally:
        cap.release()
    if stop is not None and stop.is_set():
        raise InterruptedError(f"camera {camera}: stopped after {pub.frames} frame(s)")
    if res.read == 0:
        raise SourceError(f"{path}: no decodable video frames")
    res.frames = pub.frames
    res.eos_seq = pub.publish_eos(stop)
    res.seconds = time.monotonic() - t0
    return res


def push_stream(r: redis.Redis, settings: Settings, camera: str, url: str, fps: float | None,
                stop: threading.Event, token: str) -> FileResult:
    """A live URL for `process`: read until the stream ends (or Ctrl-C), sampled to --fps, then EOS."""
    cap = open_capture(url, settings)
    pub = FramePublisher(r, settings, camera, token=token)
    res = FileResult(camera=camera, first_seq=pub.seq)
    sampler = FrameSampler.by_wall_clock(fps)
    try:
        while not stop.is_set():
            if not cap.grab():
                break
            res.read += 1
            if not sampler.take(time.monotonic()):
                continue
            ok, img = cap.retrieve()
            if ok:
                pub.publish(img, captured_at=time.time(), pts=cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, mode="wait",
                            stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        cap.release()
    if res.read == 0:
        raise SourceError(f"{url}: no frames")
    res.frames = pub.frames
    res.eos_seq = pub.publish_eos()
    return res


def run_file_camera(r: redis.Redis, settings: Settings, cam: CameraConfig, *, token: str, status: CameraStatus,
                    stop: threading.Event) -> bool:
    """A file camera of the grabber: pushed once, to its EOS (status `live` with its fps once a second, then
    `ended`), retried with backoff while it cannot be read. True when it ended, False when stopped."""
    status.set("connecting", error="")
    delay = 0.5
    progress = {"t": 0.0, "n": 0, "at": time.monotonic()}

    def on_frame(pub: FramePublisher) -> None:  # status once a second while a file is read
        now = time.monotonic()
        if now - progress["t"] >= 1.0:
            fps = (pub.frames - progress["n"]) / max(1e-6, now - progress["at"])
            progress.update(t=now, n=pub.frames, at=now)
            status.set("live", last_frame_at=time.time(), fps=round(fps, 2), frames=pub.frames)

    while not stop.is_set():
        try:
            res = push_file(r, settings, cam.name, cam.url, fps=cam.fps, stop=stop, token=token, on_frame=on_frame)
            status.set("ended", frames=res.frames, eos_seq=res.eos_seq, error="")
            return True
        except SourceError as e:
            status.set("error", error=str(e))
            stop.wait(delay)
            delay = min(delay * 2, settings.workers.reconnect_max_s)
        except InterruptedError:
            return False
    return False

"""Grabber role: cameras (RTSP, HTTP(S) MJPEG/HLS, files, webcams) -> frames:{camera}.

One process can own every camera (a thread each), but each camera has exactly one reader: a Redis lease
per camera (SET NX PX, renewed, fencing token checked inside the frame-push Lua), so a second grabber process
takes over only when the first one dies. Cameras come from the registry in Redis (pipeline.cameras) and are
followed live through cameras:changes, so `facetrail camera add|remove` needs no restart.

Live sources: OpenCV's FFmpeg backend with low-latency options (RTSP over TCP, no buffering), sampled to the
camera's fps by wall clock, a watchdog on time since the last frame (status `stalled`), reconnect with
exponential backoff capped at workers.reconnect_max_s, frames dropped oldest-first (and counted) when the
detectors fall behind. With motion.at = grabber (default) a live camera's sampled frames pass its motion gate
(pipeline/motion.GrabberGate) before the JPEG: a still frame is published without pixels (FrameMsg v2), and with
the PyAV reader an idle camera decodes keyframes only (pipeline/decode.AvCapture.set_idle).
Files: every frame (or --fps sampling by stream time), no pacing, backpressure instead
of drops, then an EOS frame (seq one past the last)."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from pipeline.backbone import connect, key, transient_client  # noqa: E402
from pipeline.cameras import CameraRegistry, Lease, grabber_lease_key, is_file_source, redact_url  # noqa: E402
from pipeline.config import CameraConfig, Settings  # noqa: E402
from pipeline.engine.framecodec import encode_frame  # noqa: E402
from pipeline.messages import FrameMsg, FrameRef  # noqa: E402
from pipeline.metrics import Heartbeat, StageMetrics, drops_key  # noqa: E402
from pipeline.framepush import FramePusher, LeaseMirror  # noqa: E402
from pipeline.motion import GrabberGate, hot_key  # noqa: E402
from pipeline.streams import StreamNames  # noqa: E402

log = logging.getLogger("facetrail.grabber")

LEASE_TTL_MS = 5000


class SourceError(RuntimeError):
    pass


class LeaseLost(RuntimeError):
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
        from pipeline.decode import AvCapture

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


class FramePublisher:
    """Numbers frames (seq continues across runs of a camera, never reused) and pushes them bounded."""

    def __init__(self, r: redis.Redis, settings: Settings, camera: str, *, token: str = "",
                 rt: redis.Redis | None = None):
        """r: the durable server (registry, lease, seq, counters); rt: where frames go (backbone.transient_client;
        default r). On a separate transient server the push is fenced by a mirror of the lease token."""
        self.r = r
        self.rt = rt if rt is not None else transient_client(settings, r)
        self.settings = settings
        self.camera = camera
        self.token = token
        self.names = StreamNames.of(settings)
        self.registry = CameraRegistry(r, settings)
        self.pusher = FramePusher(self.rt, durable=r)
        self.lease_key = grabber_lease_key(settings, camera)
        # a separate transient server, or a Redis Cluster (the lease is in the control plane's slot, the frames in
        # the camera's): the push is fenced by a mirror of the lease token beside the frames stream
        self.mirror = (LeaseMirror(r, self.rt, self.lease_key, LEASE_TTL_MS,
                                   mirror_key=self.names.lease_mirror(camera, self.lease_key))
                       if self.rt is not r or self.names.cluster else None)
        self.stream = self.names.frames(camera)
        self.seq = self.registry.next_seq(camera)
        if self.rt is not r:  # the transient copy is exact when that server survived; the durable one is >= last-1
            v = self.rt.get(self.registry.seq_key(camera))
            self.seq = max(self.seq, int(v) if v else 0)
        self.first_seq = self.seq
        self.frames = 0
        self.drops = 0
        self.size = (0, 0)

    def _push(self, msg: FrameMsg, mode: str, stop: threading.Event | None) -> int:
        payload = msg.encode()
        delay = 0.005
        lease_key = self.lease_key if self.mirror is None else self.mirror.key
        if self.mirror is not None and self.token:
            if not self.mirror.refresh(self.token):
                raise LeaseLost(f"camera {self.camera}: grabber lease taken over by another process")
        while True:
            res = self.pusher.push(stream=self.stream, seq_key=self.registry.seq_key(self.camera),
                                   status_key=self.registry.status_key(self.camera),
                                   lease_key=lease_key,
                                   drops_key=drops_key(self.settings), maxlen=self.settings.workers.frames_maxlen,
                                   payload=payload, next_seq=msg.frame.seq + 1, mode=mode, token=self.token,
                                   gone_key=self.names.gone(self.camera), seq=msg.frame.seq)
            if res == -2:
                raise LeaseLost(f"camera {self.camera}: grabber lease taken over by another process")
            if res >= 0:
                if self.rt is not self.r:
                    self.r.set(self.registry.seq_key(self.camera), msg.frame.seq + 1)  # durable copy of the seq
                if res:
                    self.drops += res
                    log.warning("camera %s: detectors behind, dropped %d oldest frame(s)", self.camera, res)
                return res
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped while waiting for room in the frames stream")
            time.sleep(delay)  # 'wait' mode and the stream is full: backpressure
            delay = min(delay * 2, 0.05)

    def publish(self, img: np.ndarray, *, captured_at: float, pts: float | None, mode: str = "drop",
                stop: threading.Event | None = None, epoch: int = 0, gated: bool | None = None) -> int:
        """gated: None = no motion gate here (FrameMsg v1, as ever); True = the grabber's motion gate passed it;
        False = it did not: the frame goes without pixels (FrameMsg v2, still), no JPEG is encoded."""
        h, w = img.shape[:2]
        self.size = (w, h)
        ref = FrameRef(camera=self.camera, seq=self.seq, captured_at=captured_at, pts=pts, width=w, height=h,
                       epoch=epoch)
        if gated is False:
            msg = FrameMsg(v=2, frame=ref, jpeg=b"", still=True)
        else:
            msg = FrameMsg(frame=ref, jpeg=encode_frame(img, self.settings.workers.jpeg_quality),
                           **({"v": 2, "gated": True} if gated else {}))
        self._push(msg, mode, stop)
        self.seq += 1
        self.frames += 1
        return ref.seq

    def publish_eos(self, stop: threading.Event | None = None) -> int:
        w, h = self.size
        ref = FrameRef(camera=self.camera, seq=self.seq, captured_at=time.time(), pts=None, width=w, height=h,
                       eos=True)
        self._push(FrameMsg(frame=ref, jpeg=b""), "wait", stop)
        self.seq += 1
        log.info("camera %s: EOS seq=%d after %d frame(s)", self.camera, ref.seq, self.frames)
        return ref.seq


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
              stop: threading.Event | None = None, token: str = "", on_frame=None) -> FileResult:
    """Every frame of a finite source into frames:{camera} (or frames at `fps` by stream time), waiting for
    room rather than dropping, then EOS. Returns the seq range used."""
    t0 = time.monotonic()
    cap = open_capture(path, settings, read_timeout_s=30.0)
    pub = FramePublisher(r, settings, camera, token=token)
    res = FileResult(camera=camera, first_seq=pub.seq)
    period = 1.0 / fps if fps else 0.0
    next_t = 0.0
    try:
        while stop is None or not stop.is_set():
            ok, img = cap.read()
            if not ok:
                break
            res.read += 1
            pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if period:
                if pts + 1e-6 < next_t:
                    continue
                next_t += period
                while next_t <= pts:
                    next_t += period
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


class StreamClock:
    """Stream time of a live camera that never goes back, and its epoch.

    FFmpeg's pts restarts near zero at every reconnect (and a camera may reset it on its own), so raw pts would
    send time backwards and the tracker would glue the faces after an outage onto the tracks before it. Here
    each epoch (a connection, or the stretch after a gap) maps pts onto a per-camera timeline:
    t = base + (pts - pts0), where base = the last published t + the wall time that passed since it. So the
    timeline keeps real durations (a 20 s outage is a 20 s jump, longer than tracking.max_age_s) and is
    monotonic per camera. The state lives in Redis (<p>:camera:{name}:clock), so a grabber that takes a camera
    over continues the timeline with a new epoch instead of restarting it."""

    def __init__(self, r: redis.Redis, settings: Settings, camera: str):
        self.r = r
        self.key = key(settings, "camera", camera, "clock")
        self.camera = camera
        raw = {}
        try:
            raw = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in r.hgetall(self.key).items()}
        except (redis.RedisError, ValueError):
            pass
        self.epoch = int(raw.get("epoch", -1))  # the first frame of this reader starts a new epoch
        self.last_t: float | None = raw.get("t")
        self.last_wall: float | None = raw.get("wall")
        self._pts0: float | None = None  # None: the next frame starts an epoch
        self._base = 0.0
        self._elapsed = 0.0
        self._prev_raw: float | None = None
        self._saved = 0.0

    def new_epoch(self) -> None:
        """The next frame starts a new epoch (a reconnect, a stall)."""
        self._pts0 = None

    def stamp(self, pts: float | None, wall: float) -> float:
        """Stream time of a frame with this pts, read at wall-clock time `wall`. Where the source's pts does not
        advance (some MJPEG/HTTP sources report 0 or a constant), the wall clock advances the time instead."""
        raw = pts if pts is not None and pts >= 0 else None
        back = raw is not None and self._prev_raw is not None and raw + 1e-3 < self._prev_raw
        if self._pts0 is None or back:
            if back:
                log.warning("camera %s: stream time went back (pts %.3f after %.3f): new epoch", self.camera,
                            raw, self._prev_raw)
            self.epoch += 1
            if self.last_t is None:
                self._base = 0.0
            else:
                self._base = self.last_t + max(1e-3, wall - (self.last_wall or wall))
            self._pts0 = 0.0
            self._elapsed = 0.0  # stream seconds since this epoch's first frame
            self._save(wall, force=True)
        elif raw is not None and self._prev_raw is not None and raw > self._prev_raw:
            self._elapsed += raw - self._prev_raw
        else:  # no usable pts: real time
            self._elapsed += max(0.0, wall - (self.last_wall or wall))
        self._prev_raw = raw
        t = self._base + self._elapsed
        if self.last_t is not None and t <= self.last_t:
            t = self.last_t + 1e-3  # same pts twice, or rounding: still strictly forward
        self.last_t, self.last_wall = t, wall
        self._save(wall)
        return t

    def _save(self, wall: float, force: bool = False) -> None:
        if not force and wall - self._saved < 1.0:
            return
        self._saved = wall
        try:
            self.r.hset(self.key, mapping={"epoch": self.epoch, "t": self.last_t if self.last_t is not None else 0.0,
                                           "wall": wall})
        except redis.RedisError as e:
            log.warning("camera %s: cannot save the stream clock: %s", self.camera, e)


class CameraRunner(threading.Thread):
    """Reads one camera while this process holds its lease."""

    def __init__(self, r: redis.Redis, settings: Settings, cam: CameraConfig, lease: Lease, consumer: str):
        super().__init__(name=f"grab-{cam.name}", daemon=True)
        self.r = r
        self.settings = settings
        self.cam = cam
        self.lease = lease
        self.consumer = consumer
        self.stop = threading.Event()
        self.registry = CameraRegistry(r, settings)
        self.metrics = StageMetrics(r, settings, "grabber", f"{consumer}:{cam.name}")
        self.ended = False
        self.lease_lost = False
        self._state = ""
        self._last_frame = time.monotonic()
        self._connected = False
        self._lock = threading.Lock()
        self._stalled = threading.Event()  # set by the watchdog: drop this connection, reconnect
        # reconnects for frames that lag real time (a short freeze); a camera whose pts does not follow real
        # time would trip it again and again, so after 3 in a row without a stall the check is switched off
        self._lag_checks_left = 3
        self.clock: StreamClock | None = None
        self.gate = None  # motion gate before the JPEG (live cameras, motion.at = grabber)
        if settings.motion.enabled and settings.motion.at == "grabber":
            hk = hot_key(settings, cam.name)
            self.gate = GrabberGate(settings, cam.name, lambda: r.get(hk))

    # -- status -----------------------------------------------------------------------------------------------
    def _set_state(self, state: str, **fields) -> None:
        with self._lock:
            if self._state == "stalled" and state in ("connecting", "error"):
                state = "stalled"  # stays stalled until frames flow again; the error text says what happens
            self._state = state
            try:
                self.registry.set_status(self.cam.name, state, owner=self.consumer, **fields)
            except redis.RedisError as e:
                log.warning("camera %s: cannot write status: %s", self.cam.name, e)

    def _watchdog(self) -> None:
        limit = self.settings.workers.watchdog_s
        while not self.stop.wait(0.1):
            if not self._connected or self._state not in ("live",):
                continue
            idle = time.monotonic() - self._last_frame
            if idle > limit and not self._stalled.is_set():
                # one stall per outage: the state stays `stalled` (no flapping) until frames flow again on a
                # new connection; the reader drops this connection at its next return from the source, and
                # frames the source buffered meanwhile are never published (they would carry stale times)
                log.warning("camera %s: no frame for %.1fs (watchdog %.1fs): stalled, reconnecting",
                            self.cam.name, idle, limit)
                self._stalled.set()
                self._set_state("stalled", stalled_at=time.time(), error=f"no frame for {idle:.1f}s; reconnecting")
                try:
                    self.r.hincrby(self.registry.status_key(self.cam.name), "stalls", 1)
                except redis.RedisError:
                    pass

    # -- main -------------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if is_file_source(self.cam.url):
                self._run_file()
            else:
                self._run_live()
        except LeaseLost as e:
            self.lease_lost = True
            log.warning("%s", e)
        except Exception as e:  # a camera thread never dies silently
            log.exception("camera %s: grabber thread failed", self.cam.name)
            self._set_state("error", error=f"{type(e).__name__}: {e}")

    def _run_file(self) -> None:
        self._set_state("connecting", error="")
        delay = 0.5
        progress = {"t": 0.0, "n": 0, "at": time.monotonic()}

        def on_frame(pub: FramePublisher) -> None:  # status once a second while a file is read
            now = time.monotonic()
            if now - progress["t"] >= 1.0:
                fps = (pub.frames - progress["n"]) / max(1e-6, now - progress["at"])
                progress.update(t=now, n=pub.frames, at=now)
                self._set_state("live", last_frame_at=time.time(), fps=round(fps, 2), frames=pub.frames)

        while not self.stop.is_set():
            try:
                res = push_file(self.r, self.settings, self.cam.name, self.cam.url, fps=self.cam.fps, stop=self.stop,
                                token=self.lease.token or "", on_frame=on_frame)
                self._set_state("ended", frames=res.frames, eos_seq=res.eos_seq, error="")
                self.ended = True
                return
            except SourceError as e:
                self._set_state("error", error=str(e))
                self.stop.wait(delay)
                delay = min(delay * 2, self.settings.workers.reconnect_max_s)
            except InterruptedError:
                return

    def _backoff(self, attempt: int) -> float:
        return min(self.settings.workers.reconnect_max_s, 0.25 * (2 ** attempt))

    def _run_live(self) -> None:
        wd = threading.Thread(target=self._watchdog, name=f"watchdog-{self.cam.name}", daemon=True)
        wd.start()
        pub = FramePublisher(self.r, self.settings, self.cam.name, token=self.lease.token or "")
        self.clock = StreamClock(self.r, self.settings, self.cam.name)
        attempt = 0
        opened_before = False
        self._set_state("connecting", error="")
        while not self.stop.is_set():
            try:
                cap = open_capture(self.cam.url, self.settings,
                                   sample_period_s=1.0 / self.cam.fps if self.cam.fps else 0.0)
            except SourceError as e:
                delay = self._backoff(attempt)
                attempt += 1
                log.info("camera %s: %s; retry in %.2fs", self.cam.name, e, delay)
                self._set_state("error", error=f"{e}; retry in {delay:.2f}s")
                self.stop.wait(delay)
                continue
            if opened_before:
                self.r.hincrby(self.registry.status_key(self.cam.name), "reconnects", 1)
            opened_before = True
            log.info("camera %s: opened %s", self.cam.name, redact_url(self.cam.url))
            self.clock.new_epoch()
            if self._stalled.is_set():
                self._lag_checks_left = 3  # a real freeze happened: the lag check proved nothing wrong
            self._stalled.clear()
            self._last_frame = time.monotonic()
            self._connected = True
            try:
                got = self._read_live(cap, pub)
            finally:
                self._connected = False
                cap.release()
            if self.stop.is_set():
                break
            attempt = 0 if got else attempt + 1
            delay = self._backoff(attempt)
            log.info("camera %s: stream ended or read failed after %d frame(s); reconnect in %.2fs",
                     self.cam.name, got, delay)
            self._set_state("error", error=f"read failed; reconnect in {delay:.2f}s")
            self.stop.wait(delay)
        self.stop.set()  # ends the watchdog

    def _read_live(self, cap, pub: FramePublisher) -> int:
        period = 1.0 / self.cam.fps if self.cam.fps else 0.0
        next_emit = 0.0
        got = 0
        win_start, win_frames = time.monotonic(), 0
        last_status = 0.0
        limit = self.settings.workers.watchdog_s
        epoch_wall: float | None = None  # wall time and pts of this connection's first frame
        epoch_pts = min_lag = 0.0
        while not self.stop.is_set():
            if not cap.grab():
                return got
            if self._stalled.is_set():  # the watchdog gave up on this connection while grab() was blocked
                log.info("camera %s: frames after a stall on the old connection dropped; reconnecting",
                         self.cam.name)
                return got
            now_m = time.monotonic()
            wall = time.time()
            pts_raw = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if epoch_wall is None:
                epoch_wall, epoch_pts, min_lag = wall, pts_raw, 0.0
            elif pts_raw > epoch_pts:
                lag = (wall - epoch_wall) - (pts_raw - epoch_pts)
                min_lag = min(min_lag, lag)
                drift = lag - min_lag
                if self._lag_checks_left > 0 and drift > limit:
                    # the source hands out frames from the past (it buffered them while frozen for less than
                    # the watchdog): they would be published under the current time. Drop them: reconnect.
                    self._lag_checks_left -= 1
                    log.warning("camera %s: frames lag real time by %.1fs (buffered during a freeze): "
                                "reconnecting%s", self.cam.name, drift,
                                "" if self._lag_checks_left else "; this camera's pts does not follow real time, "
                                                                 "the check is off until it does")
                    return got
                if self._lag_checks_left < 3 and wall - epoch_wall > 60.0 and drift < limit / 2:
                    self._lag_checks_left = 3  # a minute in step with real time: earlier ones were real freezes
            self._last_frame = now_m
            got += 1
            if got == 1 or self._state != "live":
                log.info("camera %s: live", self.cam.name)
                self._set_state("live", live_at=time.time(), error="")
            if period:
                if now_m + 0.2 * period < next_emit:
                    continue
                next_emit = next_emit + period if next_emit and now_m - next_emit < period else now_m + period
            ok, img = cap.retrieve()
            if not ok or img is None:
                continue
            captured_at = time.time()
            raw = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            gated = None
            if self.gate is not None:  # the gate runs on real time: hold, hot and refresh are real-time spans
                gated, replay = self.gate.step(cap, now_m, img)
                if not gated:
                    self.metrics.motion_skipped += 1
                for old_raw, old_img in replay:  # woken from keyframes-only: the stretch before this keyframe
                    at = captured_at - max(0.0, raw - old_raw)  # when it was live, for honest latencies
                    pub.publish(old_img, captured_at=at, pts=self.clock.stamp(old_raw, at), mode="drop",
                                epoch=self.clock.epoch, gated=True)
                    self.metrics.batch(1)
            pts = self.clock.stamp(raw, captured_at)
            pub.publish(img, captured_at=captured_at, pts=pts, mode="drop", epoch=self.clock.epoch, gated=gated)
            self.metrics.batch(1)
            win_frames += 1
            if now_m - last_status >= 1.0:
                fps = win_frames / max(1e-6, now_m - win_start)
                win_start, win_frames, last_status = now_m, 0, now_m
                self.metrics.drops = pub.drops
                self.registry.set_status(self.cam.name, None, last_frame_at=captured_at, fps=round(fps, 2),
                                         frames=pub.frames, owner=self.consumer)
        return got


class Grabber:
    """Owns every enabled, non-external camera whose lease it can get; follows the registry live."""

    def __init__(self, settings: Settings, consumer: str, r: redis.Redis | None = None):
        self.settings = settings
        self.consumer = consumer
        self.r = r or connect(settings)
        self.registry = CameraRegistry(self.r, settings)
        self.runners: dict[str, CameraRunner] = {}
        self.ended: dict[str, CameraConfig] = {}
        self.heartbeat = Heartbeat(self.r, settings, "grabber", consumer)

    def _stop_runner(self, name: str, why: str) -> None:
        runner = self.runners[name]
        log.info("camera %s: stopping reader (%s)", name, why)
        runner.stop.set()
        runner.join(timeout=3.0)
        if runner.is_alive():  # stuck in an open/read: the released lease fences off any frame it still pushes
            log.warning("camera %s: reader thread did not stop in time", name)
        runner.lease.release()
        del self.runners[name]

    def step(self) -> None:
        cams = {c.name: c for c in self.registry.list() if c.enabled and not c.external}
        for name in list(self.runners):
            runner = self.runners[name]
            if name not in cams:
                self._stop_runner(name, "removed")
            elif cams[name] != runner.cam:
                self._stop_runner(name, "config changed")
            elif runner.ended:
                self.ended[name] = runner.cam
                self._stop_runner(name, "file finished")
            elif runner.lease_lost:
                self._stop_runner(name, "lease lost")
            elif not runner.is_alive():
                self._stop_runner(name, "thread exited")
        for name in list(self.ended):
            if name not in cams or cams[name] != self.ended[name]:
                self.ended.pop(name)
        for name, cam in cams.items():
            if name in self.runners or self.ended.get(name) == cam:
                continue
            lease = Lease(self.r, grabber_lease_key(self.settings, name), self.consumer, LEASE_TTL_MS)
            if lease.acquire():
                log.info("camera %s: lease acquired (fence %d) by %s", name, lease.fence, self.consumer)
                self.registry.set_status(name, None, fence=lease.fence)
                runner = CameraRunner(self.r, self.settings, cam, lease, self.consumer)
                self.runners[name] = runner
                runner.start()

    def _renew_leases(self, stop: threading.Event) -> None:
        """Renew every held camera lease on its own clock, so a slow step (a reader that takes long to stop)
        never lets the others expire."""
        while not stop.wait(LEASE_TTL_MS / 4000):
            for runner in list(self.runners.values()):
                if runner.lease_lost or runner.stop.is_set():
                    continue
                try:
                    if not runner.lease.renew():
                        log.warning("camera %s: lease lost (taken over or expired)", runner.cam.name)
                        runner.lease_lost = True
                        runner.stop.set()
                except redis.RedisError as e:
                    log.warning("camera %s: cannot renew lease: %s", runner.cam.name, e)

    def run(self, stop: threading.Event) -> None:
        last_id = self.registry.last_change_id()
        backoff = 0.2
        log.info("grabber %s: started", self.consumer)
        renewer_stop = threading.Event()
        renewer = threading.Thread(target=self._renew_leases, args=(renewer_stop,), daemon=True,
                                   name=f"{self.consumer}-leases")
        renewer.start()
        try:
            while not stop.is_set():
                try:
                    self.heartbeat.beat()
                    self.step()
                    last_id, cmds = self.registry.wait_change(last_id, block_ms=500)
                    for c in cmds:
                        if c.op == "add":
                            self.ended.pop(c.name, None)  # re-adding a finished file reads it again
                    backoff = 0.2
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    log.warning("grabber %s: redis unavailable (%s); retrying in %.1fs", self.consumer, e, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            for name in list(self.runners):
                self._stop_runner(name, "shutdown")
            renewer_stop.set()
            self.heartbeat.clear()
            log.info("grabber %s: stopped", self.consumer)


def run(settings: Settings, *, consumer: str, stop: threading.Event) -> None:
    Grabber(settings, consumer).run(stop)

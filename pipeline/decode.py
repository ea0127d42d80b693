"""PyAV capture for live cameras: decode only what the codec lets us skip.

The grabber samples a 30 fps camera at a few fps. With OpenCV it grab()s every frame (FFmpeg decodes every one)
and retrieve()s, i.e. converts to BGR, only the sampled ones. What else can be skipped depends on the stream:
- an H.264 P frame is a reference for the frames after it, so in the IPPP streams most IP cameras send no
  frame between two keyframes can be left undecoded without breaking the next ones;
- non-reference frames (B frames without b-pyramid) can be: FFmpeg's skip_frame=NONREF drops them for free;
- keyframes alone (skip_frame=NONKEY) cost a fraction of the decode, but give only as many frames a second as
  the camera sends keyframes.
`AvCapture` therefore decodes with NONREF from the start and switches to NONKEY only once it has seen that the
keyframes come at least as often as the sampling period (decode.skip = "auto"), so no sampled frame is lost.
bench/bench_decode.py measures each choice; its figures are in the README ("Cheaper decoding").

It offers the part of cv2.VideoCapture that pipeline/livesource.py uses (isOpened, grab, retrieve, get(POS_MSEC),
release), so the grabber's read loop does not care which decoder it runs."""
from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger("facetrail.decode")

POS_MSEC = 0  # cv2.CAP_PROP_POS_MSEC


def available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


class AvCapture:
    """One live source decoded by PyAV (FFmpeg). skip: "none", "nonref", "nonkey" or "auto" (see above);
    sample_period_s: the grabber's sampling period (0 = every frame), used by "auto"."""

    KEY_SAMPLES = 3  # keyframe intervals seen before "auto" trusts the GOP length

    MAX_GOP_PACKETS = 600  # packets kept for a wake-up replay (20 s at 30 fps); a longer GOP is not replayed

    def __init__(self, url: str, *, skip: str = "auto", sample_period_s: float = 0.0, open_timeout_s: float = 10.0,
                 read_timeout_s: float = 10.0, options: dict | None = None, hwaccel: str = "none", threads: int = 0,
                 idle_capable: bool = False, max_idle_gap_s: float = 5.0):
        import av

        opts = {"rtsp_transport": "tcp", "fflags": "nobuffer", "flags": "low_delay"} if url.startswith("rtsp") \
            else {}
        opts.update(options or {})
        kw = {}
        if hwaccel != "none":
            from av.codec.hwaccel import HWAccel  # FFmpeg's hwdevice types: vaapi, cuda, qsv, videotoolbox ...
            kw["hwaccel"] = HWAccel(device_type=hwaccel, allow_software_fallback=True)
        self._c = av.open(url, options=opts, timeout=(open_timeout_s, read_timeout_s), **kw)
        self._stream = self._c.streams.video[0]
        ctx = self._stream.codec_context
        if threads:
            ctx.thread_count = threads
        # frame threading holds frames back (one per thread), so a decoder fed keyframes only would hand each one
        # out seconds late: an idle-capable reader uses slice threads (on a many-camera box the cores are busy
        # with other cameras anyway)
        ctx.thread_type = "SLICE" if idle_capable else "AUTO"
        self.idle_capable = idle_capable
        self.idle = False
        self.replayed = 0
        self.max_idle_gap_s = max_idle_gap_s  # keyframes further apart than this: no idle mode (the watchdog)
        self._key_t: float | None = None
        self._gop: list = []       # packets since the last keyframe (the keyframe first)
        self._prev_gop: list = []  # the GOP before it
        self._pending: list = []
        self._prev_t: float | None = None  # pts of the frame grabbed before the current one
        self.skip = skip
        self.period = sample_period_s
        self._mode = "NONREF" if skip in ("nonref", "auto") else ("NONKEY" if skip == "nonkey" else "DEFAULT")
        ctx.skip_frame = self._mode
        self._packets = self._c.demux(self._stream)
        self._frame = None
        self._key_pts: list[float] = []
        self.decoded = 0
        self._lock = threading.Lock()

    # -- the cv2.VideoCapture surface the grabber uses -------------------------------------------------------------
    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return self._c is not None

    def _next_frame(self):
        ctx = self._stream.codec_context
        while not self._pending:
            pkt = next(self._packets)
            if pkt.size == 0 and pkt.dts is None:  # end of the stream: flush the decoder
                self._pending = list(ctx.decode(None))
                if not self._pending:
                    raise StopIteration
                break
            t = float(pkt.pts * self._stream.time_base) if pkt.pts is not None and self._stream.time_base else None
            if pkt.is_keyframe:
                self._prev_gop, self._gop = self._gop, [pkt]
                self._key_t = t
            elif self.idle and t is not None and self._key_t is not None and t - self._key_t > self.max_idle_gap_s:
                # keyframes too rare (or none: intra refresh) for an idle camera to be looked at often enough:
                # decode everything from here on (until the next keyframe the picture may show artefacts)
                log.warning("decode: no keyframe for %.1fs: keyframes-only idle decoding off for this stream",
                            t - self._key_t)
                self.idle_capable = self.idle = False
            elif self._gop and len(self._gop) < self.MAX_GOP_PACKETS:
                self._gop.append(pkt)
            else:
                self._gop = []  # no keyframe seen yet, or a GOP too long to replay
            if self.idle and not pkt.is_keyframe:
                continue  # idle: P/B frames stay undecoded (kept above for a replay)
            self._pending = list(ctx.decode(pkt))
        return self._pending.pop(0)

    def grab(self) -> bool:
        self._prev_t = self._pts() if self._frame is not None else None
        try:
            self._frame = self._next_frame()
        except (StopIteration, EOFError):
            return False
        except Exception as e:  # av.error.*: a read timeout, a broken connection
            log.info("decode: %s: %s", type(e).__name__, e)
            return False
        self.decoded += 1
        if self.skip == "auto" and self._frame.key_frame:
            self._auto(self._pts())
        return True

    def retrieve(self):
        if self._frame is None:
            return False, None
        return True, self._frame.to_ndarray(format="bgr24")

    def read(self):
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop: int) -> float:
        if prop == POS_MSEC:
            return 1000.0 * self._pts()
        return 0.0

    def release(self) -> None:
        with self._lock:
            if self._c is not None:
                self._c.close()
                self._c = None

    def set_idle(self, idle: bool) -> list[tuple[float, np.ndarray]]:
        """Idle: decode keyframes only from the next packet on. Leaving idle right after a keyframe (the grabber saw
        motion in it) decodes the stretch between the keyframe before it and this one from the kept packets, with
        a decoder of its own, and returns its frames sampled every sample_period_s as (pts, BGR image), oldest
        first, so no sampled frame is lost for having been idle."""
        if idle == self.idle:
            return []
        self.idle = idle
        if idle or not self._prev_gop or self._frame is None or not self._frame.key_frame:
            return []
        import av

        t_key = self._pts()
        src = self._stream.codec_context
        ctx = av.CodecContext.create(src.name, "r")
        if src.extradata:
            ctx.extradata = src.extradata
        frames = []
        try:
            for pkt in self._prev_gop + [None]:
                frames += ctx.decode(pkt)
        except Exception as e:  # a broken packet: what decoded is still good
            log.info("decode: replay: %s: %s", type(e).__name__, e)
        self._prev_gop = []
        out: list[tuple[float, np.ndarray]] = []
        last = self._prev_t if self._prev_t is not None else -1e18  # the grabber had every frame up to this one
        next_t = last + self.period
        for f in frames:
            tb = f.time_base if f.time_base is not None else self._stream.time_base
            t = float(f.pts * tb) if f.pts is not None and tb is not None else None
            if t is None or t <= last + 1e-6 or t >= t_key - 0.5 * self.period - 1e-6:
                continue
            if t + 0.2 * self.period >= next_t:
                out.append((t, f.to_ndarray(format="bgr24")))
                next_t = t + self.period
        self.decoded += len(frames)
        self.replayed += len(out)
        return out

    # -- internals ---------------------------------------------------------------------------------------------------
    def _pts(self) -> float:
        f = self._frame
        if f is None or f.pts is None:
            return 0.0
        tb = f.time_base if f.time_base is not None else self._stream.time_base  # flushed frames lack their own
        return float(f.pts * tb) if tb is not None else 0.0

    @property
    def mode(self) -> str:
        return self._mode

    def _auto(self, t: float) -> None:
        """Keyframes only once their spacing (the largest of the last few) fits in the sampling period."""
        self._key_pts.append(t)
        del self._key_pts[:-(self.KEY_SAMPLES + 1)]
        if len(self._key_pts) <= self.KEY_SAMPLES:
            return
        gaps = np.diff(self._key_pts)
        want = "NONKEY" if self.period > 0 and gaps.max() <= self.period * 1.05 else "NONREF"
        if want != self._mode:
            log.info("decode: keyframes every %.2fs, sampling every %.2fs: skip_frame %s", gaps.max(), self.period,
                     want)
            self._mode = want
            self._stream.codec_context.skip_frame = want

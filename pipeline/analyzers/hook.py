"""The matcher's hook into the analyzers: one TrackAnalyzers per camera's MatcherStage.

`observe` keeps a bounded handful of each open track's face thumbnails (the JPEGs the detector made anyway; no
decoding, no work per frame beyond a list append), `end` runs the analyzers once on a confirmed track's faces,
`passes`/`apply` put the results on its `track.ended` and enforce the per-camera liveness gate. Crops live in
memory only (not in the checkpoint): a track resumed by another matcher is judged on the faces seen after the
takeover."""
from __future__ import annotations

import logging
import time

from . import liveness  # noqa: F401 - registers itself
from .base import ANALYZERS, Analyzer, FaceBuffer

log = logging.getLogger("facetrail.analyzers")


def build_analyzers(settings) -> list[Analyzer]:
    """The analyzers settings.analyzers enables, in a stable order."""
    cfg = getattr(settings, "analyzers", None)
    if cfg is None:
        return []
    out: list[Analyzer] = []
    if cfg.liveness.enabled:
        out.append(ANALYZERS.create("liveness", cfg.liveness))
    return out


class TrackAnalyzers:
    MAX_TRACKS = 256  # open tracks with crops kept, per camera (x faces x ~3 KB)

    def __init__(self, camera: str, analyzers: list, *, gated: bool = False, undetermined: str = "deny",
                 faces: int = 12):
        self.camera = camera
        self.analyzers = analyzers
        self.gated = gated
        self.undetermined = undetermined
        self.faces = faces
        self.buffers: dict[str, FaceBuffer] = {}
        self.ms: list[float] = []  # CPU ms per analyzed track (last 100), for the metrics and the bench

    @classmethod
    def from_settings(cls, camera: str, settings, cam=None) -> "TrackAnalyzers | None":
        """cam: the camera's config as the registry holds it (what runs wins over the file); else the file's."""
        cfg = getattr(settings, "analyzers", None)
        if cfg is None:
            return None
        lv = cfg.liveness
        if cam is None:
            cam = next((c for c in settings.cameras if c.name == camera), None)
        gated = cam.liveness.required if cam is not None and cam.liveness is not None else lv.required
        analyzers = build_analyzers(settings)
        if gated and not any(a.field == "liveness" for a in analyzers):
            analyzers.append(ANALYZERS.create("liveness", lv))  # the gate needs it even when it is not listed
        if not analyzers:
            return None
        return cls(camera, analyzers, gated=gated, undetermined=lv.undetermined, faces=lv.faces)

    def reset(self) -> None:
        self.buffers.clear()

    def observe(self, track_id: str, det, t: float) -> None:
        p = det.payload
        thumb = getattr(p, "thumb_jpeg", None)
        if not thumb:
            return
        buf = self.buffers.get(track_id)
        if buf is None:
            buf = self.buffers[track_id] = FaceBuffer(size=self.faces)
            while len(self.buffers) > self.MAX_TRACKS:  # a backstop: every ended track pops its own buffer
                self.buffers.pop(next(iter(self.buffers)))
        buf.add(t, thumb, det.box, getattr(p, "landmarks", ()) or ())

    def live_now(self, track_id: str, every: int = 3, min_faces: int = 5) -> bool:
        """Under the gate, before the track ends: is it live already? Judged on the crops so far, once at least
        `min_faces` are kept and then after every `every` new ones (the buffer's spacing doubles as it fills, so
        a long track is checked a logarithmic number of times). Only `live` opens the gate early; anything else
        waits for the track's end."""
        buf = self.buffers.get(track_id)
        if buf is None or len(buf.items) < min_faces or buf.added - buf.checked < every:
            return False
        buf.checked = buf.added
        lv = next((a for a in self.analyzers if a.field == "liveness"), None)
        if lv is None:
            return False
        t0 = time.process_time()
        try:
            res = lv.analyze(buf.samples())
        except Exception:  # noqa: BLE001 - fail closed: the track waits for its end, the frame is not lost
            log.exception("camera=%s track=%s: early liveness check failed", self.camera, track_id)
            return False
        finally:
            self.ms = (self.ms + [(time.process_time() - t0) * 1000])[-100:]
        return res.verdict == "live"

    def end(self, track_id: str, started: bool) -> dict | None:
        buf = self.buffers.pop(track_id, None)
        if not started:
            return None
        t0 = time.process_time()
        faces = buf.samples() if buf is not None else []
        found = {}
        for a in self.analyzers:
            try:
                found[a.field] = a.analyze(faces)
            except Exception:  # noqa: BLE001 - an analyzer must never stop the matching
                log.exception("camera=%s track=%s: analyzer %s failed", self.camera, track_id, a.name)
        self.ms = (self.ms + [(time.process_time() - t0) * 1000])[-100:]
        return found

    def passes(self, found: dict | None) -> bool:
        """The gate: without it every track passes; with it only a live one (or an undetermined one, if allowed)."""
        if not self.gated:
            return True
        lv = (found or {}).get("liveness")
        if lv is None:
            return False
        return lv.verdict == "live" or (lv.verdict == "undetermined" and self.undetermined == "allow")

    def apply(self, ended, found: dict, spoof: bool) -> None:
        for k, v in found.items():
            setattr(ended, k, v)
        if spoof:
            ended.status = "spoof_suspected"
            ended.identity = ended.identity_id = ended.score = None
            ended.votes = {}
            log.warning("camera=%s track=%s: liveness %s (%s): spoof_suspected, named nobody", self.camera,
                        ended.track_id, ended.liveness.verdict if ended.liveness else "missing",
                        "; ".join(ended.liveness.reasons) if ended.liveness else "no liveness result")

"""MatcherStage: one camera's frames, in seq order -> track / identity events.

`update(msg)` takes the next EmbeddingsMsg (the caller restores order with ReorderBuffer) and returns the
events it caused plus the snapshot JPEGs to keep. It is deterministic in its input (stream time only) and
its whole state is JSON (`to_state`/`from_state`), which is what lets a matcher checkpoint after each batch
and another matcher resume there after a crash without losing or repeating an event.

Lifecycle per track: `track.started` once it has `min_track_frames` faces (a one-frame false detection makes
no event), `identity.matched` once per identity the track is named by, `track.ended` when the track has had
no face for `max_age_s` of stream time, or at end of stream. Unconfirmed tracks end silently."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..engine.types import Faces
from ..events.model import Event
from ..messages import EmbeddingsMsg
from ..analyzers.hook import TrackAnalyzers
from ..unknowns.model import TrackFace, TrackFaces, pack_vector, unpack_vector
from ..tracking.identity import Candidate, IdentityVoter, face_weight
from ..tracking.state import BestFace, Snap, TrackState
from ..tracking.tracker import Detection, FaceTracker, Track

log = logging.getLogger("facetrail.matcher.stage")

SearchFn = Callable[[np.ndarray], Sequence[Sequence[Candidate]]]


@dataclass
class StageOutput:
    events: list[Event] = field(default_factory=list)
    snapshots: dict[str, bytes] = field(default_factory=dict)  # snapshot id -> JPEG
    crops: dict[str, bytes] = field(default_factory=dict)  # best-face crops (same id space and store as snapshots)
    tracks: list[TrackFaces] = field(default_factory=list)  # ended tracks' best faces (unknown visitors, feedback)

    def extend(self, other: "StageOutput") -> None:
        self.events += other.events
        self.snapshots.update(other.snapshots)
        self.crops.update(other.crops)
        self.tracks += other.tracks


class MatcherStage:
    def __init__(self, camera: str, search: SearchFn, *, match: float, margin: float, min_votes: int = 1,
                 vote_ratio: float = 2.0, track_match: float | None = None, track_margin: float = 0.1,
                 track_min_faces: int = 8, consistent_match: float | None = None, consistent_margin: float = 0.2,
                 consistent_share: float = 0.8, min_track_frames: int = 3, iou_threshold: float = 0.3,
                 appearance_threshold: float = 0.4, appearance_veto: float = 0.15, max_age_s: float = 2.0,
                 clock: Callable[[], float] = time.time, name_of: Callable[[str], str | None] | None = None,
                 faces_per_track: int = 3, crop_min_quality: float = 0.0, analyzers=None):
        self.camera = camera
        self.search = search
        self.voter = IdentityVoter(match, margin, min_votes, vote_ratio, track_match, track_margin, track_min_faces,
                                   consistent_match, consistent_margin, consistent_share)
        self.min_track_frames = min_track_frames
        self.tracker = FaceTracker(camera, iou_threshold=iou_threshold, appearance_threshold=appearance_threshold,
                                   appearance_veto=appearance_veto, max_age_s=max_age_s)
        self.clock = clock
        # identity id -> its current gallery name, None once removed (renames and removals reach live tracks)
        self.name_of = name_of
        self.faces_per_track = faces_per_track
        self.crop_min_quality = crop_min_quality  # crops below it could never be clustered or enrolled
        self.last_seq: int | None = None
        self.epoch: int | None = None  # stream epoch and time of the last frame (gap / reconnect detection)
        self.last_t: float | None = None
        self.analyzers = analyzers  # TrackAnalyzers (pipeline/analyzers/hook.py) or None

    @classmethod
    def from_settings(cls, camera: str, search: SearchFn, settings, **kw) -> "MatcherStage":
        t = settings.tracking
        cam_cfg = kw.pop("camera_config", None)  # the registry's config of the camera (its liveness gate)
        analyzers = kw.pop("analyzers", None) or TrackAnalyzers.from_settings(camera, settings, cam_cfg)
        return cls(camera, search, match=settings.thresholds.match, margin=settings.thresholds.margin,
                   min_votes=t.min_votes, vote_ratio=t.vote_ratio, track_match=t.track_match,
                   track_margin=t.track_margin, track_min_faces=t.track_min_faces,
                   consistent_match=t.track_consistent_match, consistent_margin=t.track_consistent_margin,
                   consistent_share=t.track_consistent_share, min_track_frames=t.min_track_frames,
                   iou_threshold=t.iou_threshold, appearance_threshold=t.appearance_threshold,
                   appearance_veto=t.appearance_veto, max_age_s=t.max_age_s,
                   faces_per_track=settings.unknowns.faces_per_track,
                   crop_min_quality=settings.unknowns.min_quality,
                   analyzers=analyzers, **kw)

    def _refresh_names(self, d: TrackState) -> None:
        """Drop votes for identities removed from the gallery meanwhile; pick up renames."""
        if self.name_of is None:
            return
        for iid in list(d.votes):
            name = self.name_of(iid)
            if name is None:
                del d.votes[iid]
            else:
                d.votes[iid].name = name
        for k in ("mean", "named"):
            m = getattr(d, k)
            if m:
                name = self.name_of(m.id)
                if name is None:
                    setattr(d, k, None)
                else:
                    m.name = name
        now = d.identity_id
        if now is not None and now not in d.votes and not (d.named is not None and d.named.id == now):
            d.identity_id, d.by = None, None

    # ---- events ---------------------------------------------------------------------------------------
    def _event(self, type_: str, tr: Track, seq: int, identity_id: str | None = None) -> Event:
        d = tr.data
        iid, name, score, votes = IdentityVoter.summary(d)
        if type_ == "identity.matched":
            assert identity_id is not None
            name, score = IdentityVoter.named(d, identity_id)
            iid = identity_id
        elif type_ == "track.started" and iid is None:
            score = None  # no closest-similarity on a start: nothing has been decided yet
        key = iid if type_ == "identity.matched" else None
        ev = Event.make(type_, self.camera, tr.track_id, key, identity=name, score=score,
                        first_seen=d.first_cap, last_seen=d.last_cap, frames=d.frames, seq=seq,
                        snapshot_id=d.snap.id if d.snap else None, votes=votes, created_at=round(self.clock(), 3))
        ev.identity_id = iid
        return ev

    def _end(self, tr: Track, seq: int, out: StageOutput) -> None:
        d = tr.data
        found = self.analyzers.end(tr.track_id, d.started) if self.analyzers else None
        if not d.started:
            return
        self._refresh_names(d)
        if d.en != d.mean_at:
            self._search_mean(d)  # the final track mean: the whole track's evidence
            if not (self.analyzers and self.analyzers.gated):
                self._announce(tr, seq, out)
        # a track the gate already let through (live before its end, and named) stays named
        spoof = self.analyzers is not None and not d.live_ok and not self.analyzers.passes(found)
        if self.analyzers is not None and self.analyzers.gated and not spoof:
            self._announce(tr, seq, out, final=True)  # the name held back until the liveness verdict
        ended = self._event("track.ended", tr, seq)
        if found is not None and self.analyzers is not None:
            self.analyzers.apply(ended, found, spoof)
        out.events.append(ended)
        if spoof:
            return  # names nobody, and a photo held up is no unknown visitor to cluster
        rec = self._track_faces(tr, ended)
        if rec is not None:
            out.tracks.append(rec)

    def _track_faces(self, tr: Track, ended: Event) -> TrackFaces | None:
        """The ended track's evidence kept after it: its quality-weighted mean and best faces. Unknown tracks
        go to the unknown-visitor clusters; every track's record lets a "wrong person" correction use it."""
        d = tr.data
        best = d.best
        if not best:
            return None
        mean: np.ndarray
        if d.esum is not None:
            mean = np.asarray(d.esum, np.float32)
        else:
            mean = unpack_vector(best[0].e) * best[0].k
            for f in best[1:]:
                mean = mean + unpack_vector(f.e) * f.k
        n = float(np.linalg.norm(mean))
        if not n > 0:
            return None
        return TrackFaces(track_id=tr.track_id, camera=self.camera, first_seen=ended.first_seen,
                          last_seen=ended.last_seen, frames=ended.frames, identity_id=ended.identity_id,
                          identity=ended.identity, closest=d.closest, snapshot_id=ended.snapshot_id,
                          mean=pack_vector(mean / n), n=int(d.en if d.esum is not None else len(best)),
                          faces=[TrackFace(id=f.id, k=f.k, q=f.q, e=f.e) for f in best])

    def _search_mean(self, d: TrackState) -> None:
        mean = self.voter.mean_embedding(d)
        if mean is None:
            return
        d.mean_at = d.en
        self.voter.add_mean(d, list(self.search(mean[None, :])[0]))

    def _announce(self, tr: Track, seq: int, out: StageOutput, final: bool = False) -> None:
        d = tr.data
        self._refresh_names(d)
        iid = self.voter.decide(d)
        if self.analyzers is not None and self.analyzers.gated and not final and not d.live_ok:
            # liveness required: no name before the track is judged live (checked as its crops come in)
            if iid is None or not d.started or not self.analyzers.live_now(tr.track_id):
                return
            d.live_ok = True
        if d.started and iid is not None and iid not in d.emitted:
            d.emitted.append(iid)
            out.events.append(self._event("identity.matched", tr, seq, iid))
            name, score = IdentityVoter.named(d, iid)
            log.info("camera=%s track=%s matched %s (score %.3f, frame %d, by %s)", self.camera, tr.track_id,
                     name, score, seq, d.by)

    # ---- frames ---------------------------------------------------------------------------------------
    def update(self, msg: EmbeddingsMsg) -> StageOutput:
        out = StageOutput()
        fr = msg.frame
        self.last_seq = fr.seq
        if fr.eos:
            for tr in self.tracker.end_all():
                self._end(tr, fr.seq, out)
            return out
        t = fr.stream_time
        self._new_epoch_ends_tracks(fr.epoch, t, fr.seq, out)
        for tr in self.tracker.expire(t):
            self._end(tr, fr.seq, out)
        faces = list(msg.faces)
        if not faces:
            return out
        fa = Faces.from_msg(faces)
        with_vec = [int(i) for i in np.flatnonzero(fa.embedded)]
        results: dict[int, list[Candidate]] = {}
        if with_vec:
            found = self.search(fa.embeddings[with_vec])
            results = {i: list(c) for i, c in zip(with_vec, found)}
        dets = [Detection(index=f.index, box=[float(x) for x in fa.boxes[i]],
                          embedding=fa.embeddings[i] if i in results else None, quality=float(fa.quality[i]),
                          score=float(fa.scores[i]), payload=f) for i, f in enumerate(faces)]
        pos = {id(f): i for i, f in enumerate(faces)}
        assigned, _created = self.tracker.update(fr.seq, t, dets)
        for tr, det in assigned:
            self._observe(tr, det, results.get(pos[id(det.payload)], []), fr.seq, fr.captured_at, out)
        return out

    def _new_epoch_ends_tracks(self, epoch: int, t: float, seq: int, out: StageOutput) -> None:
        """A reconnect (new epoch) or stream time that went back ends every open track first: a face after an
        outage is a new visit, never glued onto a track from before it (that is how false matches were made).
        A gap longer than max_age_s ends them through tracker.expire(t)."""
        jumped_back = self.last_t is not None and t < self.last_t
        if (self.epoch is not None and epoch != self.epoch) or jumped_back:
            ended = self.tracker.end_all()
            if ended:
                log.info("camera=%s seq=%d: %s (epoch %s -> %s, t %.3f -> %.3f): ending %d open track(s)",
                         self.camera, seq, "stream time went back" if jumped_back else "new stream epoch",
                         self.epoch, epoch, self.last_t if self.last_t is not None else -1.0, t, len(ended))
            for tr in ended:
                self._end(tr, seq, out)
        self.epoch, self.last_t = epoch, t

    def _observe(self, tr: Track, det: Detection, cands: list[Candidate], seq: int, cap: float,
                 out: StageOutput) -> None:
        d = tr.data
        if d.first_cap is None:
            d.first_cap = cap
        d.last_cap = cap
        d.frames += 1
        if self.analyzers is not None:
            self.analyzers.observe(tr.track_id, det, cap)
        self.voter.add(d, cands, det.quality, det.score)
        if self.voter.accumulate(d, det.embedding, det.quality, det.score):
            self._search_mean(d)
        # snapshot: the best face so far (quality, then size), replaced only on a clear improvement
        side = math.sqrt(max(det.box[2] * det.box[3], 1.0))
        key = round(face_weight(det.quality, det.score) * min(1.0, side / 112.0), 6)
        thumb = getattr(det.payload, "thumb_jpeg", None)
        sid = f"{self.camera}:{seq}:{det.index}"
        if thumb and (d.snap is None or key > d.snap.q * 1.1):
            d.snap = Snap(sid, key)
            out.snapshots[sid] = thumb
        if thumb and det.embedding is not None:
            self._keep_best(d, sid, key, det, thumb, out)
        if not d.started and d.frames >= self.min_track_frames:
            d.started = True
            self._refresh_names(d)
            self.voter.decide(d)  # track.started names the person when that is already known
            started = self._event("track.started", tr, seq)
            if self.analyzers is not None and self.analyzers.gated and not d.live_ok:
                started.identity = started.identity_id = started.score = None  # named at the end, if live
                started.votes = {}
            out.events.append(started)
        self._announce(tr, seq, out)

    def _keep_best(self, d: TrackState, sid: str, key: float, det: Detection, thumb: bytes,
                   out: StageOutput) -> None:
        """The track's `faces_per_track` best embedded faces (by the snapshot key), with their crops."""
        best = d.best
        if len(best) >= self.faces_per_track and key <= min(f.k for f in best):
            return
        best.append(BestFace(sid, key, round(float(det.quality), 4),
                             pack_vector(np.asarray(det.embedding, np.float32))))
        best.sort(key=lambda f: -f.k)
        del best[self.faces_per_track:]
        if any(f.id == sid for f in best) and sid not in out.snapshots and det.quality >= self.crop_min_quality:
            out.crops[sid] = thumb

    def end_all(self) -> StageOutput:
        """End every open track now (a camera that went away without an end of stream)."""
        out = StageOutput()
        for tr in self.tracker.end_all():
            self._end(tr, self.last_seq or 0, out)
        return out

    # ---- checkpoint -----------------------------------------------------------------------------------
    def to_state(self) -> dict:
        return {"tracks": self.tracker.to_state(), "last_seq": self.last_seq, "epoch": self.epoch,
                "last_t": self.last_t}

    def load_state(self, state: dict) -> None:
        self.tracker.load_state(state.get("tracks", []))
        if self.analyzers is not None:
            self.analyzers.reset()  # face crops are not checkpointed: tracks resumed here judge what follows
        self.last_seq = state.get("last_seq")
        self.epoch = state.get("epoch")
        self.last_t = state.get("last_t")

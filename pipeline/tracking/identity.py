"""Identity per track by quality-weighted voting.

Every face of a track is searched in the gallery; a face votes for an identity only when the open-set rule
accepts it (cosine >= thresholds.match and a margin over the runner-up identity). Its vote weighs by face
quality. The track is named once the leading identity has at least `min_votes` votes and `vote_ratio` times
the weight of the runner-up; faces that match nobody do not vote against a name, so a track can start unknown
and move to a name when evidence arrives (a profile that turns to the camera). Faces that match nobody only
count toward the track staying unknown when no identity ever qualifies.

Track-level evidence: when no single face clears the per-face rule (small, blurred or near-profile faces),
the quality-weighted mean embedding of the track's faces is searched once the track has `track_min_faces`
faces; it names the track when it clears `track_match` with `track_margin` over the runner-up. Averaging
many faces removes per-frame noise, so this rule can ask for a lower cosine than one face needs (on the
Hamilton clip: Lacamoire at the piano, 20 faces, mean 0.42 vs best single face 0.44 < 0.48; audience tracks
stay <= 0.30).

Consistent evidence (opt-in, `tracking.track_consistent_match`): a track mean below `track_match` may still name
the track when it clears that lower bar with a larger lead (`track_consistent_margin`) and at least
`track_consistent_share` of the track's embedded faces had that identity as their own top-1 candidate. Measured
with bench/eval_hard_pairs.py (degraded tracks of every shared photo, and the deepface pairs with the pair's
photo as a sixth identity): it names more enrolled people at 34-52 px but also names a few different-person
pairs, so it is off by default (README "Hard footage").

State lives in the track's typed TrackState (state.py), which the matcher checkpoints as JSON."""
from __future__ import annotations

import numpy as np

from index.replica import Match as Candidate  # the gallery's open-set rule and result type: identify, the API and
from index.replica import decide as _shared_decide  # the matcher agree

from .state import Named, TrackState, Vote


def decide_open_set(cands: list[Candidate], match: float, margin: float) -> Candidate | None:
    """The accepted candidate of one face's search result (best first), by the gallery's open-set rule:
    score >= match and a margin over the runner-up identity."""
    if not cands:
        return None
    ranked = sorted(cands, key=lambda c: -c.score)
    d = _shared_decide(ranked, match, margin)
    return ranked[0] if d.identity_id is not None else None


def face_weight(quality: float, det_score: float) -> float:
    """Quality in [0, 1] when the detector gives one, else the detection score; never zero."""
    q = quality if quality > 0 else det_score
    return max(0.05, min(1.0, float(q)))


class IdentityVoter:
    def __init__(self, match: float, margin: float, min_votes: int = 1, vote_ratio: float = 2.0,
                 track_match: float | None = None, track_margin: float = 0.1, track_min_faces: int = 8,
                 consistent_match: float | None = None, consistent_margin: float = 0.2,
                 consistent_share: float = 0.8):
        self.match = match
        self.margin = margin
        self.min_votes = min_votes
        self.vote_ratio = vote_ratio
        self.track_match = track_match
        self.track_margin = track_margin
        self.track_min_faces = track_min_faces
        self.consistent_match = consistent_match
        self.consistent_margin = consistent_margin
        self.consistent_share = consistent_share

    # ---- track-level evidence: the quality-weighted mean embedding of the track ----------------------------
    def accumulate(self, data: TrackState, embedding, quality: float, det_score: float) -> bool:
        """Add a face to the track's weighted embedding sum; True when the mean is due for a search
        (every 4th face once the track has track_min_faces)."""
        if self.track_match is None or embedding is None:
            return False
        w = face_weight(quality, det_score)
        es = data.esum
        vec = [round(float(x) * w, 6) for x in embedding]
        data.esum = vec if es is None else [round(a + b, 6) for a, b in zip(es, vec)]
        data.en += 1
        return data.en >= self.track_min_faces and (data.en - self.track_min_faces) % 4 == 0

    def mean_embedding(self, data: TrackState) -> np.ndarray | None:
        es = data.esum
        if es is None or data.en < self.track_min_faces:
            return None
        v = np.asarray(es, np.float32)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else None

    def add_mean(self, data: TrackState, cands: list[Candidate]) -> Candidate | None:
        """The search result of the track's mean embedding: accepted with track_match / track_margin."""
        acc = decide_open_set(cands, self.track_match, self.track_margin) if self.track_match is not None else None
        if acc is None and self.track_match is not None and self.consistent_match is not None:
            acc = self._consistent(data, cands)
        data.mean = None if acc is None else Named(acc.identity_id, acc.name, round(float(acc.score), 6))
        if cands:
            data.closest = round(max(data.closest, max(c.score for c in cands)), 6)
        return acc

    def _consistent(self, data: TrackState, cands: list[Candidate]) -> Candidate | None:
        """The track mean's top candidate by the consistent-evidence bar: its score >= consistent_match, a lead of
        consistent_margin, and the top-1 of at least consistent_share of the track's searched faces."""
        assert self.consistent_match is not None
        acc = decide_open_set(cands, self.consistent_match, self.consistent_margin)
        if acc is None:
            return None
        n = sum(data.top1.values())
        return acc if n >= self.track_min_faces and data.top1.get(acc.identity_id, 0) >= self.consistent_share * n \
            else None

    def add(self, data: TrackState, cands: list[Candidate], quality: float, det_score: float) -> Candidate | None:
        """Record one face's search result; returns the accepted candidate (a vote) or None."""
        if cands:
            data.closest = round(max(data.closest, max(c.score for c in cands)), 6)
            if self.consistent_match is not None:  # per-identity count of faces it was the top-1 of
                top = max(cands, key=lambda c: c.score).identity_id
                data.top1[top] = data.top1.get(top, 0) + 1
        acc = decide_open_set(cands, self.match, self.margin)
        if acc is None:
            return None
        v = data.votes.setdefault(acc.identity_id, Vote(acc.name))
        v.name = acc.name
        v.w = round(v.w + face_weight(quality, det_score), 6)
        v.n += 1
        v.best = round(max(v.best, acc.score), 6)
        return acc

    def decide(self, data: TrackState) -> str | None:
        """The identity id the track is named by now (None = unknown). Face votes come first: the leader
        needs `min_votes` votes and `vote_ratio` times the runner-up's weight; a name stays until another
        identity outweighs it so. Without a face-vote name, an accepted track mean names the track."""
        ranked = sorted(data.votes.items(), key=lambda kv: (-kv[1].w, kv[0]))
        if ranked:
            top_id, top = ranked[0]
            runner_w = ranked[1][1].w if len(ranked) > 1 else 0.0
            if top.n >= self.min_votes and top.w >= self.vote_ratio * runner_w and top.w > 0:
                data.identity_id, data.by = top_id, "faces"
                return top_id
            if data.by == "faces":
                return data.identity_id  # sticky
        if data.mean:
            m = data.mean
            data.identity_id, data.by, data.named = m.id, "track", Named(m.id, m.name, m.score)
        return data.identity_id  # None, or an earlier track-mean name (sticky)

    @staticmethod
    def summary(data: TrackState) -> tuple[str | None, str | None, float | None, dict[str, float]]:
        """(identity_id, name, score, votes-by-name) for events."""
        votes = {v.name: v.w for v in data.votes.values()}
        iid = data.identity_id
        if iid is None:
            return None, None, data.closest, votes
        if data.by == "track":
            assert data.named is not None
            return iid, data.named.name, data.named.score, votes
        v = data.votes[iid]
        return iid, v.name, v.best, votes

    @staticmethod
    def named(data: TrackState, iid: str) -> tuple[str, float]:
        """(name, score) of an identity the track is or was named by."""
        if iid in data.votes:
            v = data.votes[iid]
            return v.name, v.best
        assert data.named is not None
        return data.named.name, data.named.score

"""A small deterministic camera for the checkpoint-compatibility tests (test_tracking, test_matcher): frames, a
gallery search and the stage settings that fill every field of a track's state (votes, track mean, consistent
top-1 counts, snapshot, best faces). tests/data/matcher_checkpoint_v1.json was written from it by the matcher
code of checkpoint v1 (before the typed track state): its checkpoint after CUT frames and the events that code
made on the whole run. Imports only what both versions have (messages, the gallery's Match)."""
from __future__ import annotations

import numpy as np

from index.replica import Match
from pipeline.messages import EmbeddedFace, EmbeddingsMsg, FrameRef

CAM = "ckcam"
N = 90     # frames; EOS at seq N
CUT = 40   # the checkpoint was taken with seqs 0..CUT-1 applied
STAGE_KW = dict(match=0.5, margin=0.05, min_track_frames=3, max_age_s=1.0, track_match=0.35, track_margin=0.05,
                track_min_faces=4, consistent_match=0.3, consistent_margin=0.1, consistent_share=0.6,
                faces_per_track=3)


def _unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def world():
    """(frames, search): ann walks through 0..69 (noisy: named by its track mean), a stranger 20..59
    (nobody), bob 50..84 (named); EOS at N."""
    rng = np.random.default_rng(20)
    people = {n: _unit(rng.normal(size=128)) for n in ("ann", "bob", "stranger")}
    gallery = {"id-ann": ("ann", _unit(people["ann"] + 0.3 * _unit(rng.normal(size=128)))),
               "id-bob": ("bob", _unit(people["bob"] + 0.3 * _unit(rng.normal(size=128))))}

    def search(vecs):
        return [sorted((Match(i, n, float(np.dot(g, v))) for i, (n, g) in gallery.items()), key=lambda c: -c.score)
                for v in vecs]

    def face(i, who, x, noise, q):
        e = _unit(people[who] + noise * _unit(rng.normal(size=128)))
        return EmbeddedFace(index=i, box=[x, 80.0, 70.0, 70.0], landmarks=[0.0] * 10, score=0.9, quality=q,
                            thumb_jpeg=b"\xff\xd8%d" % i, embedding=e.astype("<f4").tobytes())

    msgs = []
    for s in range(N + 1):
        faces = []
        if s < 70:
            faces.append(face(len(faces), "ann", 100.0 + s, 3.0, round(0.4 + 0.005 * s, 3)))
        if 20 <= s < 60:
            faces.append(face(len(faces), "stranger", 400.0, 0.3, 0.7))
        if 50 <= s < 85:
            faces.append(face(len(faces), "bob", 250.0, 0.4, 0.8))
        ref = FrameRef(camera=CAM, seq=s, captured_at=7000.0 + s / 30, pts=s / 30, width=640, height=360,
                       eos=(s == N))
        msgs.append(EmbeddingsMsg(frame=ref, faces=[] if s == N else faces))
    return msgs, search


def event_key(e) -> list:
    return [e.id, e.type, e.track_id, e.identity_id, e.identity, e.score, e.frames, e.first_seen, e.last_seen,
            e.snapshot_id, e.votes]

"""Matcher stage without Redis: reorder buffer, tracker, per-track identity voting (synthetic inputs)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.messages import EmbeddedFace, EmbeddingsMsg, FrameRef
from pipeline.stages import MatcherStage
from pipeline.tracking import Candidate, FaceTracker, IdentityVoter, ReorderBuffer, decide_open_set
from pipeline.tracking.state import TrackState
from pipeline.tracking.tracker import Detection, iou

RNG = np.random.default_rng(7)


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def rand_unit():
    return unit(RNG.normal(size=128))


def near(base, noise=0.3):
    """Same person: cosine to base ~0.9."""
    return unit(base + noise * unit(RNG.normal(size=128)))


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


# ---- reorder ------------------------------------------------------------------------------------------
def test_reorder_releases_in_order():
    clock = FakeClock()
    buf = ReorderBuffer(0, timeout_s=2.0, clock=clock)
    got = []
    for s in [2, 0, 3, 1, 5, 4]:
        buf.push(s, f"f{s}")
        got += [seq for seq, _ in buf.pop_ready()]
    assert got == [0, 1, 2, 3, 4, 5]
    assert not buf.push(3, "again")  # already released: refused
    assert buf.late == 1


def test_reorder_skips_missing_after_timeout():
    clock = FakeClock()
    buf = ReorderBuffer(0, timeout_s=2.0, clock=clock)
    buf.push(0, "a")
    buf.push(2, "c")
    assert [s for s, _ in buf.pop_ready()] == [0]
    clock.t = 1.9
    assert buf.pop_ready() == []
    clock.t = 2.1
    assert [s for s, _ in buf.pop_ready()] == [2]
    assert buf.skipped == 1
    assert not buf.push(1, "b")  # the straggler is too late now


def test_reorder_unknown_start_waits_then_takes_lowest():
    clock = FakeClock()
    buf = ReorderBuffer(None, timeout_s=1.0, clock=clock, floor=100)
    buf.push(105, "x")
    buf.push(104, "y")
    assert buf.pop_ready() == []
    clock.t = 1.5
    assert [s for s, _ in buf.pop_ready()] == [104, 105]
    buf.restart(200)
    assert not buf.push(150, "stale")
    buf.push(200, "z")  # the floor itself starts at once
    assert [s for s, _ in buf.pop_ready()] == [200]


# ---- tracker ------------------------------------------------------------------------------------------
def test_iou():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(1.0)
    assert iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0
    assert iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)


def test_tracker_follows_moving_faces_and_vetoes_scene_cut():
    a, b, c = rand_unit(), rand_unit(), rand_unit()
    tr = FaceTracker("cam", max_age_s=1.0)
    ids = []
    for i in range(10):  # two faces moving right, 30 fps
        t = i / 30
        out, _ = tr.update(i, t, [Detection(0, [100 + 3 * i, 100, 60, 60], near(a), 0.9, 0.9),
                                  Detection(1, [400 - 3 * i, 120, 50, 50], near(b), 0.9, 0.9)])
        ids.append(tuple(t_.track_id for t_, _ in out))
    assert len(set(ids)) == 1 and len(set(ids[0])) == 2
    # scene cut: a different person at the same place is a new track, not a continuation
    out, created = tr.update(10, 10 / 30, [Detection(0, [130, 100, 60, 60], near(c), 0.9, 0.9)])
    assert created and out[0][0].track_id == "cam:10:0"
    # stream time, not wall clock: nothing expires until max_age_s of stream time passed
    assert tr.expire(10 / 30 + 0.5) == []
    gone = tr.expire(10 / 30 + 1.01)
    assert {g.track_id for g in gone} == {"cam:0:0", "cam:0:1", "cam:10:0"}


def test_tracker_state_roundtrip():
    a = rand_unit()
    tr = FaceTracker("cam")
    tr.update(0, 0.0, [Detection(0, [10, 10, 50, 50], near(a), 0.9, 0.9)])
    tr.update(1, 0.033, [Detection(0, [12, 10, 50, 50], near(a), 0.9, 0.9)])
    state = json.loads(json.dumps(tr.to_state()))
    tr2 = FaceTracker("cam")
    tr2.load_state(state)
    d = Detection(0, [14, 10, 50, 50], near(a), 0.9, 0.9)
    o1, _ = tr.update(2, 0.066, [d])
    o2, _ = tr2.update(2, 0.066, [d])
    assert o1[0][0].track_id == o2[0][0].track_id == "cam:0:0"
    assert tr.to_state() == tr2.to_state()


# ---- identity voting ----------------------------------------------------------------------------------
def test_decide_open_set_threshold_and_margin():
    assert decide_open_set([Candidate("1", "ann", 0.6), Candidate("2", "bob", 0.3)], 0.45, 0.05).name == "ann"
    assert decide_open_set([Candidate("1", "ann", 0.40)], 0.45, 0.05) is None          # below threshold
    assert decide_open_set([Candidate("1", "ann", 0.60), Candidate("2", "bob", 0.58)], 0.45, 0.05) is None
    assert decide_open_set([], 0.45, 0.05) is None


def test_voting_moves_from_unknown_to_name_and_needs_min_votes():
    v = IdentityVoter(0.45, 0.05, min_votes=2)
    d = TrackState()
    for _ in range(5):  # profile faces: nothing clears the threshold
        v.add(d, [Candidate("1", "ann", 0.3)], quality=0.4, det_score=0.8)
        assert v.decide(d) is None
    v.add(d, [Candidate("1", "ann", 0.55)], quality=0.9, det_score=0.9)
    assert v.decide(d) is None  # one vote < min_votes
    v.add(d, [Candidate("1", "ann", 0.6)], quality=0.9, det_score=0.9)
    assert v.decide(d) == "1"
    assert IdentityVoter.summary(d)[1:3] == ("ann", 0.6)


def test_voting_is_quality_weighted():
    v = IdentityVoter(0.45, 0.05, min_votes=1, vote_ratio=2.0)
    d = TrackState()
    v.add(d, [Candidate("2", "bob", 0.5)], quality=0.1, det_score=0.9)  # blurry, low weight
    v.add(d, [Candidate("2", "bob", 0.5)], quality=0.1, det_score=0.9)
    v.add(d, [Candidate("1", "ann", 0.7)], quality=0.9, det_score=0.9)  # one sharp face outweighs both
    assert v.decide(d) == "1"


def test_consistent_evidence_names_a_low_track_mean_only_with_a_lead_and_a_consistent_top1():
    """tracking.track_consistent_match: a track mean under track_match names the track when it clears the lower
    bar with the larger lead and its identity was the top-1 of enough faces; off (None) it never does."""
    def feed(v, cands_per_face):
        d = TrackState()
        for cands in cands_per_face:
            v.add(d, cands, quality=0.5, det_score=0.9)
        v.add_mean(d, [Candidate("1", "ann", 0.32), Candidate("2", "bob", 0.10)])  # mean 0.32, lead 0.22
        return v.decide(d)

    steady = [[Candidate("1", "ann", 0.3), Candidate("2", "bob", 0.1)]] * 10
    mixed = steady[:5] + [[Candidate("2", "bob", 0.3), Candidate("1", "ann", 0.1)]] * 5
    kw = dict(track_match=0.40, track_margin=0.1, track_min_faces=8)
    assert feed(IdentityVoter(0.45, 0.05, **kw), steady) is None                     # off: 0.32 < 0.40
    on = dict(kw, consistent_match=0.30, consistent_margin=0.2, consistent_share=0.8)
    assert feed(IdentityVoter(0.45, 0.05, **on), steady) == "1"                      # lead 0.22, top-1 10/10
    assert feed(IdentityVoter(0.45, 0.05, **on), mixed) is None                      # top-1 only 5/10
    assert feed(IdentityVoter(0.45, 0.05, **dict(on, consistent_margin=0.25)), steady) is None  # lead too small
    assert feed(IdentityVoter(0.45, 0.05, **on), steady[:4]) is None                 # fewer than track_min_faces


def test_consistent_evidence_settings_reach_the_stage_and_default_off():
    from pipeline.config import load_settings

    off = MatcherStage.from_settings("cam", lambda v: [], load_settings([], env={}))
    assert off.voter.consistent_match is None
    on = MatcherStage.from_settings("cam", lambda v: [], load_settings([], env={
        "FACETRAIL_TRACKING__TRACK_CONSISTENT_MATCH": "0.3", "FACETRAIL_TRACKING__TRACK_CONSISTENT_MARGIN": "0.25",
        "FACETRAIL_TRACKING__TRACK_CONSISTENT_SHARE": "0.9"}))
    assert (on.voter.consistent_match, on.voter.consistent_margin, on.voter.consistent_share) == (0.3, 0.25, 0.9)


# ---- the stage: events ---------------------------------------------------------------------------------
def frame(seq, faces, fps=30.0, eos=False):
    ref = FrameRef(camera="cam", seq=seq, captured_at=1000.0 + seq / fps, pts=seq / fps, width=640, height=360,
                   eos=eos)
    return EmbeddingsMsg(frame=ref, faces=[
        EmbeddedFace(index=i, box=box, landmarks=[0.0] * 10, score=0.9, quality=q, thumb_jpeg=b"jpeg%d" % seq,
                     embedding=np.asarray(e, "<f4").tobytes()) for i, (box, e, q) in enumerate(faces)])


def gallery_search(gallery: dict[str, np.ndarray]):
    def search(vecs):
        return [sorted((Candidate(n, n, float(np.dot(g, v))) for n, g in gallery.items()), key=lambda c: -c.score)
                for v in vecs]
    return search


def test_stage_one_match_per_track_unknown_track_and_end_of_stream():
    ann, stranger = rand_unit(), rand_unit()
    gallery = {"ann": near(ann, 0.2), "bob": rand_unit()}
    st = MatcherStage("cam", gallery_search(gallery), match=0.45, margin=0.05, min_track_frames=3, max_age_s=0.5)
    events = []
    for i in range(40):
        faces = [([100 + i, 100, 80, 80], near(ann), 0.5 + 0.01 * i)]
        if 10 <= i < 20:
            faces.append(([400, 100, 60, 60], near(stranger), 0.8))
        out = st.update(frame(i, faces))
        events += out.events
    events += st.update(frame(40, [], eos=True)).events
    kinds = [(e.type, e.track_id, e.identity) for e in events]
    assert kinds.count(("identity.matched", "cam:0:0", "ann")) == 1  # no spam: once per track
    assert ("track.started", "cam:0:0", "ann") in kinds  # already known when the track is announced
    assert ("track.ended", "cam:0:0", "ann") in kinds
    # the stranger: started, ended unknown after max_age_s of stream time (before EOS), never matched
    stranger_ev = [e for e in events if e.track_id == "cam:10:1"]
    assert [e.type for e in stranger_ev] == ["track.started", "track.ended"]
    assert stranger_ev[1].identity is None and stranger_ev[1].seq < 40
    assert stranger_ev[1].frames == 10
    ended = [e for e in events if e.type == "track.ended" and e.track_id == "cam:0:0"][0]
    assert ended.frames == 40 and ended.first_seen == 1000.0
    # quality rises by 0.01 a frame from 0.5: the snapshot moves only on a >10 % better face
    # (0.5 -> 0.56 @6 -> 0.62 @12 -> 0.69 @19 -> 0.76 @26 -> 0.84 @34; 0.89 @39 is not > 0.924)
    assert ended.snapshot_id == "cam:34:0"
    assert len({e.id for e in events}) == len(events)


def test_snapshot_is_the_tracks_best_face_replaced_only_on_a_clear_improvement():
    """The kept snapshot is the best face of its track by quality x size (faces under 112 px count less), and
    a later face replaces it only when it is more than 10 % better. The id names (camera, seq, face index)."""
    a, b = rand_unit(), rand_unit()
    big_a, small_a, big_b = [100, 100, 120, 120], [132, 132, 56, 56], [400, 100, 120, 120]
    # seq: (faces in frame order as (box, embedding, quality)); A is person a, B person b
    script = {
        0: [(big_a, a, 0.5), (big_b, b, 0.6)],    # A: first face -> cam:0:0; B -> cam:0:1
        1: [(big_a, a, 0.4), (big_b, b, 0.6)],    # A worse: kept
        2: [(big_a, a, 0.7), (big_b, b, 0.6)],    # A clearly better (0.7 > 1.1 x 0.5): cam:2:0
        3: [(big_a, a, 0.75), (big_b, b, 0.6)],   # A marginally better (0.75 < 1.1 x 0.7): kept
        4: [(small_a, a, 0.9), (big_b, b, 0.8)],  # A sharp but small (0.9 x 56/112 = 0.45): kept; B: cam:4:1
        5: [(big_b, b, 0.6), (big_a, a, 0.9)],    # A clearly better, now the frame's 2nd face: cam:5:1
        6: [(big_a, a, 0.97), (big_b, b, 0.85)],  # both marginally better (< 10 %): kept
    }
    st = MatcherStage("cam", gallery_search({}), match=0.45, margin=0.05, min_track_frames=3, max_age_s=1.0)
    events, snaps = [], []
    for seq, faces in script.items():
        out = st.update(frame(seq, faces))
        events += out.events
        snaps.append(sorted(out.snapshots))
        for sid, jpeg in out.snapshots.items():
            assert jpeg == b"jpeg%d" % int(sid.split(":")[1]), "the JPEG kept is that face's thumbnail"
    events += st.update(frame(7, [], eos=True)).events
    assert snaps == [["cam:0:0", "cam:0:1"], [], ["cam:2:0"], [], ["cam:4:1"], ["cam:5:1"], []]
    started = {e.track_id: e.snapshot_id for e in events if e.type == "track.started"}
    ended = {e.track_id: e.snapshot_id for e in events if e.type == "track.ended"}
    assert set(ended) == {"cam:0:0", "cam:0:1"}, "one track per person (the small face stayed on A's track)"
    assert started == {"cam:0:0": "cam:2:0", "cam:0:1": "cam:0:1"}  # the best so far when the track started
    assert ended == {"cam:0:0": "cam:5:1", "cam:0:1": "cam:4:1"}
    # the snapshot survives a checkpoint: a resumed stage keeps it and applies the same rule
    st2 = MatcherStage("cam", gallery_search({}), match=0.45, margin=0.05, min_track_frames=3, max_age_s=1.0)
    st = MatcherStage("cam", gallery_search({}), match=0.45, margin=0.05, min_track_frames=3, max_age_s=1.0)
    for seq in range(4):
        st.update(frame(seq, script[seq]))
    st2.load_state(json.loads(json.dumps(st.to_state())))
    assert sorted(st2.update(frame(4, script[4])).snapshots) == ["cam:4:1"]
    assert sorted(st2.update(frame(5, script[5])).snapshots) == ["cam:5:1"]


def test_stage_short_false_detection_makes_no_event_and_replay_is_identical():
    a = rand_unit()
    search = gallery_search({"ann": near(a, 0.2)})

    def run(split: int | None):
        st = MatcherStage("cam", search, match=0.45, margin=0.05, min_track_frames=3, max_age_s=0.5,
                          clock=lambda: 0.0)
        evs = []
        msgs = [frame(i, [([50 + i, 50, 70, 70], near(a, 0.0), 0.7)] if i < 20 else
                        ([([300, 200, 40, 40], rand_unit(), 0.5)] if i == 25 else [])) for i in range(40)]
        for i, m in enumerate(msgs):
            if split is not None and i == split:  # failover: a new stage from the checkpoint JSON
                state = json.loads(json.dumps(st.to_state()))
                st = MatcherStage("cam", search, match=0.45, margin=0.05, min_track_frames=3, max_age_s=0.5,
                                  clock=lambda: 0.0)
                st.load_state(state)
            evs += st.update(m).events
        return evs

    straight, resumed = run(None), run(11)
    assert [e.model_dump() for e in straight] == [e.model_dump() for e in resumed]
    assert {e.track_id for e in straight} == {"cam:0:0"}  # the one-frame face at seq 25 made no event


def test_track_mean_names_a_track_no_single_face_could():
    """Lacamoire's case: every face is below the per-face threshold, the track's mean embedding is not."""
    alex = rand_unit()
    gallery = {"alex": alex, "lin": rand_unit()}
    # faces of alex, each with cosine exactly 0.42 to the enrolled face (below 0.48), noise orthogonal to it

    def face_of(base, cos):
        n = rand_unit()
        n = unit(n - np.dot(n, base) * base)
        return unit(cos * base + np.sqrt(1 - cos ** 2) * n)

    faces = [face_of(alex, 0.42) for _ in range(12)]
    single = [float(np.dot(f, alex)) for f in faces]
    assert max(single) < 0.48
    mean = unit(np.mean(faces, axis=0))
    assert float(np.dot(mean, alex)) > 0.45

    def run(track_match):
        st = MatcherStage("cam", gallery_search(gallery), match=0.48, margin=0.05, track_match=track_match,
                          track_min_faces=8, min_track_frames=3, max_age_s=1.0)
        evs = []
        for i, f in enumerate(faces):
            evs += st.update(frame(i, [([100, 100, 40, 40], f, 0.3)])).events
        evs += st.update(frame(len(faces), [], eos=True)).events
        return evs

    on = run(0.38)
    matched = [e for e in on if e.type == "identity.matched"]
    assert [e.identity for e in matched] == ["alex"] and matched[0].frames == 8
    assert [e.identity for e in on if e.type == "track.ended"] == ["alex"]
    off = run(None)  # without track-level evidence the track stays unknown
    assert [e.identity for e in off if e.type == "track.ended"] == [None]
    assert not [e for e in off if e.type == "identity.matched"]
    # a stranger's track mean stays unknown
    st = MatcherStage("cam", gallery_search(gallery), match=0.48, margin=0.05, track_match=0.38,
                      track_min_faces=8, min_track_frames=3, max_age_s=1.0)
    stranger = rand_unit()
    evs = []
    for i in range(12):
        evs += st.update(frame(i, [([100, 100, 40, 40], face_of(stranger, 0.7), 0.3)])).events
    evs += st.update(frame(12, [], eos=True)).events
    assert [e.identity for e in evs if e.type == "track.ended"] == [None]


def test_removed_identity_no_longer_names_a_live_track_and_renames_apply():
    ann = rand_unit()
    gallery = {"ann": near(ann, 0.2)}
    current = {"ann": "ann"}
    st = MatcherStage("cam", gallery_search(gallery), match=0.45, margin=0.05, min_track_frames=3, max_age_s=1.0,
                      name_of=current.get)
    evs = []
    for i in range(5):
        evs += st.update(frame(i, [([100, 100, 80, 80], near(ann), 0.8)])).events
    assert [e.identity for e in evs if e.type == "identity.matched"] == ["ann"]
    current["ann"] = "ann-marie"  # renamed: later events carry the new name
    evs += st.update(frame(5, [([100, 100, 80, 80], near(ann), 0.8)])).events
    del gallery["ann"], current["ann"]  # removed from the gallery while the track is still on screen
    for i in range(6, 10):
        evs += st.update(frame(i, [([100, 100, 80, 80], near(ann), 0.8)])).events
    evs += st.update(frame(10, [], eos=True)).events
    ended = [e for e in evs if e.type == "track.ended"]
    assert len(ended) == 1 and ended[0].identity is None and ended[0].identity_id is None


def test_rename_reaches_the_end_event():
    ann = rand_unit()
    current = {"ann": "ann"}
    st = MatcherStage("cam", gallery_search({"ann": near(ann, 0.2)}), match=0.45, margin=0.05, min_track_frames=3,
                      max_age_s=1.0, name_of=current.get)
    for i in range(5):
        st.update(frame(i, [([100, 100, 80, 80], near(ann), 0.8)]))
    current["ann"] = "ann-marie"
    ended = [e for e in st.update(frame(5, [], eos=True)).events if e.type == "track.ended"]
    assert [(e.identity, e.identity_id) for e in ended] == [("ann-marie", "ann")]


def test_stage_resumes_from_a_checkpoint_the_v1_code_wrote():
    """tests/data/matcher_checkpoint_v1.json: the matcher checkpoint (track state as a free dict, v1) and the events
    the code before the typed track state made on tests/ckpt_world.py. The typed stage makes the same events on
    the whole run, and resumed from the v1 checkpoint it makes exactly the old run's remaining ones."""
    import pathlib

    from ckpt_world import CAM, CUT, STAGE_KW, event_key, world

    fixture = json.loads((pathlib.Path(__file__).parent / "data" / "matcher_checkpoint_v1.json").read_text())
    old_events, ck = fixture["events"], json.loads(fixture["checkpoint"])
    assert ck["v"] == 1 and all("data" in t and "state" not in t for t in ck["stage"]["tracks"])
    msgs, search = world()
    as_json = lambda evs: json.loads(json.dumps([event_key(e) for e in evs]))  # noqa: E731
    full = MatcherStage(CAM, search, clock=lambda: 0.0, **STAGE_KW)
    head = [e for m in msgs[:CUT] for e in full.update(m).events]
    tail = [e for m in msgs[CUT:] for e in full.update(m).events]
    assert as_json(head + tail) == old_events
    assert {e[1] for e in old_events[len(head):]} >= {"identity.matched", "track.ended"}
    resumed = MatcherStage(CAM, search, clock=lambda: 0.0, **STAGE_KW)
    resumed.load_state(ck["stage"])
    assert any(tr.data.by == "track" and tr.data.named is not None for tr in resumed.tracker.tracks.values())
    assert as_json([e for m in msgs[CUT:] for e in resumed.update(m).events]) == old_events[len(head):]
    # and the v2 state (typed, under "state") round-trips through JSON to the same tracks
    again = MatcherStage(CAM, search, clock=lambda: 0.0, **STAGE_KW)
    again.load_state(ck["stage"])
    v2 = json.loads(json.dumps(again.to_state()))
    assert all("state" in t and "data" not in t for t in v2["tracks"])
    back = MatcherStage(CAM, search, clock=lambda: 0.0, **STAGE_KW)
    back.load_state(v2)
    assert back.to_state() == v2


def test_faces_arrays_from_a_message_keep_every_value():
    """pipeline.engine.types.Faces (what MatcherStage reads a message's faces into): row i is face i, the values
    exactly the message's, an empty embedding is no embedding (its row zeros, `embedded` False)."""
    from pipeline.engine.types import Faces

    a, b = rand_unit(), rand_unit()
    msg = frame(3, [([10.5, 20.25, 30.0, 40.0], a, 0.7), ([1.0, 2.0, 3.0, 4.0], b, 0.3),
                    ([5.0, 6.0, 7.0, 8.0], b, 0.1)])
    msg.faces[1].embedding = b""
    fa = Faces.from_msg(msg.faces)
    assert len(fa) == 3 and fa.embeddings.shape == (3, 128) and fa.embeddings.dtype == np.float32
    assert fa.embedded.tolist() == [True, False, True]
    assert fa.boxes.tolist() == [f.box for f in msg.faces] and fa.quality.tolist() == [0.7, 0.3, 0.1]
    assert np.array_equal(fa.embeddings[0], msg.faces[0].vector()) and not fa.embeddings[1].any()
    assert np.array_equal(fa.embeddings[2], msg.faces[2].vector())
    empty = Faces.from_msg([])
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and not empty.embedded.any()

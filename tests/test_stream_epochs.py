"""Time that never goes back, without a camera: the grabber's StreamClock (monotonic stream time and epochs across
reconnects), the matcher stage ending every open track at a new epoch or a time jump back (no track spans an
outage), and the reorder buffer waiting for an in-flight seq while skipping one recorded as gone."""
from __future__ import annotations

import numpy as np

from pipeline.backbone import connect
from pipeline.messages import EmbeddedFace, EmbeddingsMsg, FrameRef
from pipeline.streams import StreamNames, all_gone, mark_gone
from pipeline.stages import MatcherStage
from pipeline.streamtime import StreamClock
from pipeline.tracking import ReorderBuffer

from test_tracking import FakeClock, gallery_search, near, rand_unit


def test_stream_clock_is_monotonic_across_reconnects_and_keeps_outage_length(settings):
    r = connect(settings)
    c = StreamClock(r, settings, "cam")
    wall = 1000.0
    ts = [c.stamp(pts, wall + pts) for pts in (0.0, 0.2, 0.4)]  # first connection: pts 0..0.4
    assert ts == [0.0, 0.2, 0.4] and c.epoch == 0
    c.new_epoch()  # reconnect after a 20 s outage: FFmpeg's pts restarts near zero
    t = c.stamp(0.05, wall + 20.4)
    assert c.epoch == 1 and abs(t - 20.4) < 1e-6, "the outage's wall time is kept"
    assert c.stamp(0.25, wall + 20.6) > t
    # pts that jumps back within a connection (a camera resetting its clock) also starts an epoch
    t2 = c.stamp(0.0, wall + 20.8)
    assert c.epoch == 2 and t2 > 20.6
    # a new reader of the camera (grabber restart or takeover) continues the timeline from Redis
    c2 = StreamClock(r, settings, "cam")
    t3 = c2.stamp(0.0, wall + 30.0)
    assert c2.epoch == 3 and t3 > t2


def _frame(seq, t, epoch, faces):
    ref = FrameRef(camera="cam", seq=seq, captured_at=1000.0 + t, pts=t, width=640, height=360, epoch=epoch)
    return EmbeddingsMsg(frame=ref, faces=[
        EmbeddedFace(index=i, box=box, landmarks=[0.0] * 10, score=0.9, quality=0.8, thumb_jpeg=b"j",
                     embedding=np.asarray(e, "<f4").tobytes()) for i, (box, e) in enumerate(faces)])


def _run(frames, max_age_s=30.0):
    ann = rand_unit()
    st = MatcherStage("cam", gallery_search({"ann": near(ann, 0.2)}), match=0.45, margin=0.05,
                      min_track_frames=3, max_age_s=max_age_s)
    events = []
    for seq, (t, epoch) in enumerate(frames):
        events += st.update(_frame(seq, t, epoch, [([100, 100, 80, 80], near(ann))])).events
    return st, events


def test_new_epoch_ends_every_open_track_even_within_max_age():
    # 10 frames, a reconnect 3 s later (max_age_s is 30 s), 10 more frames of the same face at the same place
    frames = [(i / 5, 0) for i in range(10)] + [(5.0 + i / 5, 1) for i in range(10)]
    st, events = _run(frames)
    started = [e for e in events if e.type == "track.started"]
    ended = [e for e in events if e.type == "track.ended"]
    assert len(started) == 2, "the face after the reconnect is a new track"
    assert len(ended) == 1 and ended[0].track_id == started[0].track_id and ended[0].seq == 10
    assert ended[0].last_seen < 1000.0 + 5.0
    # epoch and time are part of the checkpoint: a matcher resuming from it still sees the next epoch change
    st2 = MatcherStage("cam", gallery_search({}), match=0.45, margin=0.05, min_track_frames=3, max_age_s=30.0)
    st2.load_state(st.to_state())
    assert st2.epoch == 1 and st2.last_t == frames[-1][0]


def test_stream_time_going_back_ends_every_open_track():
    frames = [(10.0 + i / 5, 0) for i in range(10)] + [(0.5 + i / 5, 0) for i in range(10)]  # same epoch
    _, events = _run(frames)
    assert [e.type for e in events].count("track.started") == 2
    assert [e.seq for e in events if e.type == "track.ended"] == [10]


def test_same_epoch_short_gap_keeps_the_track():
    frames = [(i / 5, 0) for i in range(20)]
    _, events = _run(frames)
    assert [e.type for e in events].count("track.started") == 1
    assert not [e for e in events if e.type == "track.ended"]


def test_reorder_waits_for_an_in_flight_seq_but_skips_a_gone_one():
    gone: set[int] = set()
    clock = FakeClock()
    buf = ReorderBuffer(0, timeout_s=2.0, clock=clock, max_wait_s=30.0,
                        can_skip=lambda lo, hi: all(q in gone for q in range(lo, hi)))
    buf.push(0, "a")
    buf.push(2, "c")
    assert [s for s, _ in buf.pop_ready()] == [0]
    clock.t = 10.0  # seq 1 is in flight (held by a killed worker): waited for past the timeout
    assert buf.pop_ready() == []
    assert buf.push(1, "b"), "the frame that was in flight is applied, not refused as late"
    assert [s for s, _ in buf.pop_ready()] == [1, 2]
    buf.push(4, "e")
    gone.add(3)  # dropped at the source: skipped after the timeout
    clock.t = 12.5
    assert [s for s, _ in buf.pop_ready()] == [4] and buf.skipped == 1
    buf.push(6, "g")  # seq 5 never comes and is not recorded: skipped once max_wait_s has passed
    clock.t = 40.0
    assert buf.pop_ready() == []
    clock.t = 73.0
    assert [s for s, _ in buf.pop_ready()] == [6] and buf.skipped == 2


def test_gone_set_records_source_drops(settings):
    r = connect(settings)
    names = StreamNames(settings.redis.key_prefix)
    assert not all_gone(r, names, "cam", 3, 5)
    mark_gone(r, names, "cam", [3, 4])
    assert all_gone(r, names, "cam", 3, 5) and not all_gone(r, names, "cam", 3, 6)


def test_stream_clock_falls_back_to_wall_time_when_pts_does_not_advance(settings):
    """Some MJPEG/HTTP sources report pts 0 (or a constant) for every frame: time still advances, in real time,
    and that is no reason for a new epoch."""
    c = StreamClock(connect(settings), settings, "mjpeg")
    ts = [c.stamp(0.0, 1000.0 + i * 0.5) for i in range(5)]
    assert ts == [0.0, 0.5, 1.0, 1.5, 2.0] and c.epoch == 0
    assert c.stamp(None, 1003.0) == 3.0 and c.epoch == 0
